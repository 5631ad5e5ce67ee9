"""Theory sweep training: 10 configurations trained as one batched model against the same 10
trained one after another.

    .venv/bin/python benchmarks/theory_batching.py [--profile quick] [--steps 300] [--repeats 3]
        [--batch-size B] [--hidden-widths 32,32] [--threads N] [--device cpu|cuda]

Both arms run clipaudit's own trainer (:class:`clipaudit.theory.training.BatchedSimulation`) on the
same 10 configurations of the paper's sweep (selection prefixes {1}..{1-5} and perturbation
prefixes {1}..{1-5} of the full text, independent latents, seed 0) under the same profile: the
batched arm builds one group of 10, the sequential arm a group of 1 per configuration (which is
exactly one plain model per configuration: padding only exists between configurations). Each arm
trains ``--steps`` steps of every configuration (batch size and encoder widths are the profile's
unless given: smaller models show where batching pays, when per-step overhead dominates); the rate
is configuration-steps per second, wall clock, medians over ``--repeats`` runs; the ratio is
batched over sequential. Writes benchmarks/out/theory_batching.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from clipaudit.theory import Scenario, TrainingSettings, default_sweep, training_profile
from clipaudit.theory.training import BatchedSimulation

OUT = Path(__file__).resolve().parent / "out" / "theory_batching.json"


def configurations() -> list[Scenario]:
    sweep = default_sweep(seeds=[0], latents=["independent"])
    selection = [s for s in sweep if not s.perturbed][:5]
    perturbation = [s for s in sweep if s.perturbed][:5]
    return selection + perturbation


def train_seconds(groups: list[list[Scenario]], training: TrainingSettings) -> float:
    started = time.perf_counter()
    for group in groups:
        BatchedSimulation(group, training).train()
    if training.device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument(
        "--hidden-widths", default=None, help="comma-separated encoder widths, e.g. 32,32"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    widths = tuple(int(w) for w in args.hidden_widths.split(",")) if args.hidden_widths else None
    training = dataclasses.replace(
        training_profile(
            args.profile, device=args.device, batch_size=args.batch_size, hidden_widths=widths
        ),
        steps=args.steps,
        chunk_steps=min(25, args.steps),
    )
    scenarios = configurations()
    arms = {"batched": [scenarios], "sequential": [[s] for s in scenarios]}
    seconds: dict[str, list[float]] = {arm: [] for arm in arms}
    train_seconds([scenarios[:1]], dataclasses.replace(training, steps=5))  # warm-up
    for repeat in range(args.repeats):
        for arm, groups in arms.items():
            seconds[arm].append(train_seconds(groups, training))
            rate = len(scenarios) * args.steps / seconds[arm][-1]
            print(
                f"  {arm:10s} run {repeat + 1}: {seconds[arm][-1]:7.1f} s, {rate:8.1f} config-steps/s"
            )
    medians = {arm: statistics.median(values) for arm, values in seconds.items()}
    rates = {arm: len(scenarios) * args.steps / medians[arm] for arm in arms}
    ratio = rates["batched"] / rates["sequential"]
    print(
        f"\n{len(scenarios)} configurations x {args.steps} steps, profile {args.profile} "
        f"(batch {training.batch_size}, widths {training.hidden_widths}), device {args.device}, "
        f"{torch.get_num_threads()} threads"
    )
    for arm in arms:
        print(f"  {arm:10s} {medians[arm]:7.1f} s   {rates[arm]:8.1f} config-steps/s")
    print(f"  batched / sequential: {ratio:.2f}x (target >= 4x on CPU)")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d"),
                "machine": platform.platform(),
                "processor": platform.processor(),
                "threads": torch.get_num_threads(),
                "training": dataclasses.asdict(training),
                "configurations": [s.name for s in scenarios],
                "seconds": seconds,
                "median_seconds": medians,
                "config_steps_per_second": rates,
                "ratio": ratio,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

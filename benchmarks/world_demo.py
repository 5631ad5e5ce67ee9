"""The embedded demo's world at its default size: render, train, count, classify, with the time of
each stage and whether the paper's finding shows.

    .venv/bin/python benchmarks/world_demo.py [--out benchmarks/out/world_demo] [--seed 0]
        [--steps N] [--threads N] [--image-size S] [--patch-size P]

Stages, each timed wall clock and CPU (all threads): rendering the world (training pictures,
held-out pictures, captions), training the tiny CLIP, measured coverage of the training captions
(clipaudit's curated matcher), zero-shot awareness on the held-out pictures
(:func:`clipaudit.zeroshot.evaluate_model` on :func:`clipaudit.images.open_images`, the model
loaded by :func:`clipaudit.models.load_model`). Prints the audit table and the targets of issue 14:
Color and Shape macro-F1 >= 0.8, the never-captioned group within 0.1 of chance, the perturbed
group below its twin, Spearman(coverage, macro-F1) >= 0.8 over all groups, render + train within
210 s. The CPU time of a stage is what it would take one core; on a shared machine it also tells
how much of the wall time was spent waiting. Writes ``benchmarks/out/world_demo.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import time
from pathlib import Path

from clipaudit.world import (
    TrainSettings,
    WorldSettings,
    measured_coverage,
    render_world,
    spearman,
    train_world_model,
    world_registry,
    zeroshot_scores,
)

HERE = Path(__file__).resolve().parent
RENDER_TRAIN_BUDGET_S = 210


class Stopwatch:
    """Wall and CPU seconds of named stages."""

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, float]] = {}

    def __call__(self, name: str):
        watch = self

        class _Stage:
            def __enter__(self) -> None:
                self.wall, self.cpu = time.perf_counter(), time.process_time()

            def __exit__(self, *exc: object) -> None:
                watch.stages[name] = {
                    "wall_s": round(time.perf_counter() - self.wall, 2),
                    "cpu_s": round(time.process_time() - self.cpu, 2),
                }

        return _Stage()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "out" / "world_demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--patch-size", type=int, default=None)
    args = parser.parse_args()

    world_settings = WorldSettings(seed=args.seed)
    if args.image_size:
        world_settings = dataclasses.replace(world_settings, image_size=args.image_size)
    train_settings = TrainSettings(device="cpu", threads=args.threads)
    for field, value in (("steps", args.steps), ("patch_size", args.patch_size)):
        if value is not None:
            train_settings = dataclasses.replace(train_settings, **{field: value})
    shutil.rmtree(args.out, ignore_errors=True)
    load_before = os.getloadavg()
    watch = Stopwatch()

    with watch("render"):
        world = render_world(world_settings, args.out / "world")
    with watch("train"):
        model = train_world_model(world, args.out / "model", train_settings)
    registry = world_registry()
    with watch("coverage"):
        coverage = measured_coverage(world, registry)
    with watch("zeroshot"):
        scores = zeroshot_scores(world, model.config, model.checkpoint)

    f1 = dict(zip(scores["group"], scores["macro_f1"], strict=True))
    rows = []
    for group in registry.groups:
        rates = world.info["rates"][group.name]
        rows.append(
            {
                "group": group.name,
                "chance": 1 / len(registry.concepts_in(group.name)),
                "selection": rates["chosen_selection"],
                "perturbation": rates["chosen_perturbation"],
                "true_mention_rate": round(rates["true_mention_rate"], 4),
                "coverage": round(coverage[group.name], 4),
                "macro_f1": round(f1[group.name], 4),
            }
        )
    rho = spearman([r["coverage"] for r in rows], [r["macro_f1"] for r in rows])
    unperturbed = [r for r in rows if r["perturbation"] == 0]
    rho_unperturbed = spearman(
        [r["coverage"] for r in unperturbed], [r["macro_f1"] for r in unperturbed]
    )
    never = [r for r in rows if r["selection"] == 0]
    render_train_s = watch.stages["render"]["wall_s"] + watch.stages["train"]["wall_s"]
    targets = {
        "Color and Shape macro-F1 >= 0.8": min(f1["Color"], f1["Shape"]) >= 0.8,
        "never-captioned within 0.1 of chance": all(
            abs(r["macro_f1"] - r["chance"]) <= 0.1 for r in never
        ),
        "perturbed Background below its twin Color": f1["Background"] < f1["Color"],
        "Spearman >= 0.8": rho >= 0.8,
        f"render + train <= {RENDER_TRAIN_BUDGET_S} s": render_train_s <= RENDER_TRAIN_BUDGET_S,
    }

    print(f"{'group':16} {'chance':>6} {'sel':>5} {'pert':>5} {'true':>6} {'cover':>6} {'F1':>6}")
    for r in rows:
        print(
            f"{r['group']:16} {r['chance']:6.3f} {r['selection']:5.2f} {r['perturbation']:5.2f} "
            f"{r['true_mention_rate']:6.3f} {r['coverage']:6.3f} {r['macro_f1']:6.3f}"
        )
    print(f"Spearman(coverage, macro-F1): {rho:.3f} all groups, {rho_unperturbed:.3f} unperturbed")
    for name, stage in watch.stages.items():
        print(f"{name:9} wall {stage['wall_s']:7.1f} s   cpu {stage['cpu_s']:7.1f} s")
    print(
        f"training: {train_settings.steps} steps, "
        f"{model.record['seconds_per_step'] * 1000:.0f} ms/step wall, "
        f"{model.record['timings']['train_cpu_s'] / train_settings.steps * 1000:.0f} ms/step CPU, "
        f"{model.record['threads']} threads, final loss {model.record['final_loss']:.3f}"
    )
    for name, met in targets.items():
        print(f"target {name}: {'met' if met else 'NOT met'}")

    result = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cores": os.cpu_count(),
            "load_before": load_before,
            "load_after": os.getloadavg(),
        },
        "world": world_settings.describe(),
        "training": train_settings.describe(),
        "threads": model.record["threads"],
        "n_parameters": model.record["n_parameters"],
        "stages": watch.stages,
        "training_record": model.record["timings"],
        "groups": rows,
        "spearman": rho,
        "spearman_unperturbed": rho_unperturbed,
        "targets": targets,
    }
    target = HERE / "out" / "world_demo.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()

"""World sweep training: K copies of the world's open_clip CLIP trained as one vmapped model
against the same K trained one after another.

    .venv/bin/python benchmarks/world_sweep_batching.py [--models 5] [--steps 20] [--repeats 3]
        [--threads N] [--device cpu|cuda] [--image-size 32] [--patch-size 8]

Both arms run the world's model (:class:`clipaudit.world.TrainSettings` defaults: open_clip's
``CLIP``, ``ClipLoss``, fused AdamW) on the same pictures with a different caption tensor per
model, as a selection sweep does. The batched arm stacks the K models' weights
(``torch.func.stack_module_state``) and runs ``vmap`` over ``functional_call`` of one CLIP, with
one AdamW over the stacked weights (AdamW is element-wise, so this is K AdamWs). The rate is
model-steps per second, wall clock, median over ``--repeats`` runs after one warm-up step; the
ratio is batched over sequential. Writes ``benchmarks/out/world_sweep_batching.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch
from open_clip.loss import ClipLoss
from torch.func import functional_call, stack_module_state, vmap

from clipaudit.world import TrainSettings
from clipaudit.world.training import build_model, make_optimizer

OUT = Path(__file__).resolve().parent / "out" / "world_sweep_batching.json"
CONTEXT = 21  # the longest caption of the default world, in tokens


def inputs(models: int, settings: TrainSettings, size: int, device: torch.device):
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(settings.batch_size, 3, size, size, generator=generator)
    tokens = torch.randint(1, 49406, (models, settings.batch_size, CONTEXT), generator=generator)
    tokens[..., 0] = 49406
    tokens[..., 12] = 49407
    tokens[..., 13:] = 0
    return pixels.to(device), tokens.to(device)


def sequential_seconds(models, optimizers, pixels, tokens, steps, device) -> float:
    loss_fn = ClipLoss()
    started = time.perf_counter()
    for _ in range(steps):
        for model, optimizer, text in zip(models, optimizers, tokens, strict=True):
            loss = loss_fn(*model(pixels, text))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def batched_seconds(step, steps, device) -> float:
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--patch-size", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    settings = TrainSettings()
    if args.patch_size:
        settings = TrainSettings(patch_size=args.patch_size)
    config = settings.model_config(args.image_size, CONTEXT)
    pixels, tokens = inputs(args.models, settings, args.image_size, device)

    models = [build_model(config, seed=0).to(device) for _ in range(args.models)]
    optimizers = [make_optimizer(m, settings) for m in models]

    stacked, buffers = stack_module_state([build_model(config, 0) for _ in range(args.models)])
    stacked = {k: v.to(device).requires_grad_() for k, v in stacked.items()}
    buffers = {k: v.to(device) for k, v in buffers.items()}
    template = copy.deepcopy(models[0]).to("meta")
    loss_fn = ClipLoss()

    def one_model(params, model_buffers, text):
        return loss_fn(*functional_call(template, (params, model_buffers), (pixels, text)))

    losses = vmap(one_model)
    # the same weight-decay split, with one more (leading) axis on every tensor
    decay = [p for n, p in stacked.items() if p.ndim > 2 and not ("ln" in n or "bias" in n)]
    rest = [p for p in stacked.values() if all(p is not q for q in decay)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": rest}],
        lr=settings.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
        weight_decay=0.0,
        fused=True,
    )

    def batched_step() -> None:
        loss = losses(stacked, buffers, tokens).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    fallback: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batched_step()
        fallback = sorted({str(w.message).split(".")[0] for w in caught})
    sequential_seconds(models, optimizers, pixels, tokens, 1, device)

    rates = {"sequential": [], "batched": []}
    cpu = {"sequential": [], "batched": []}
    for _ in range(args.repeats):
        mark = time.process_time()
        seconds = sequential_seconds(models, optimizers, pixels, tokens, args.steps, device)
        cpu["sequential"].append(time.process_time() - mark)
        rates["sequential"].append(args.models * args.steps / seconds)
        mark = time.process_time()
        seconds = batched_seconds(batched_step, args.steps, device)
        cpu["batched"].append(time.process_time() - mark)
        rates["batched"].append(args.models * args.steps / seconds)
    median = {arm: statistics.median(values) for arm, values in rates.items()}
    ratio = median["batched"] / median["sequential"]
    for arm in rates:
        print(
            f"{arm:10} {median[arm]:7.2f} model-steps/s  (runs: "
            f"{', '.join(f'{r:.2f}' for r in rates[arm])}; CPU s per model-step "
            f"{statistics.median(cpu[arm]) / (args.models * args.steps):.3f})"
        )
    print(f"batched / sequential: {ratio:.2f}x")
    for message in fallback:
        print(f"vmap warned: {message}")
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": {
            "platform": platform.platform(),
            "cores": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "device": str(device),
            "load": os.getloadavg(),
        },
        "args": vars(args),
        "model_steps_per_s": rates,
        "median": median,
        "ratio_batched_over_sequential": ratio,
        "cpu_s": cpu,
        "vmap_warnings": fallback,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

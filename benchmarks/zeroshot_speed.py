"""Zero-shot speed: clipaudit against CLIP_benchmark on the same JPEG folder, model and templates.

    .venv/bin/python benchmarks/zeroshot_speed.py [--device cpu|cuda] [--model ViT-B-32]
        [--n-images 2000] [--subset N] [--batch-size 128] [--workers N] [--repeats 3] [--no-commands]

Both tools get the same images (seeded 640x480 JPEG photos-like scenes, generated once and cached
under benchmarks/data/; ``--subset`` takes the first N of them, 1/10 per concept), the same model
(random weights: speed does not depend on them), the same class texts (the bare concept names,
clipaudit's ``--templates none``: on CPU, text encoding is not negligible), the same
batch size and decoding workers, and the same arithmetic (fp32 on CPU; fp16 autocast on CUDA, which
is what CLIP_benchmark's AMP is there). Figures, medians over ``--repeats`` runs:

- "loop": a loaded model -> metrics, i.e. decoding, preprocessing, image encoding, text classifier
  and scores: clipaudit's ``evaluate_model`` (embedding cache off) against CLIP_benchmark's
  ``zeroshot_classification.evaluate`` with the DataLoader its command builds (webdataset shards,
  one per worker, written from the same files by its own ``convert_dataset``);
- clipaudit with ``--jpeg-draft`` (JPEGs decoded at reduced size), and with a warm embedding cache;
- "command" (once, unless --no-commands): the whole ``clipaudit zeroshot`` and ``clip_benchmark eval``
  commands, interpreter start, imports, model creation and output writing included.

The ratio is clipaudit's images/s over CLIP_benchmark's. Writes benchmarks/out/zeroshot_speed.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from peer import REPO, peer_versions, run_peer

DATA = REPO / "benchmarks" / "data"
REPORT = REPO / "benchmarks" / "out" / "zeroshot_speed.json"
GROUP = "Animal"
TEMPLATE = "{}"  # templates "none": both tools encode exactly the ten concept names


def image_folder(n_images: int, subset: int | None, concepts: list[str]) -> Path:
    """The generated JPEG folder (made once), or a folder of links to its first ``subset`` images."""
    from tests.tiny_clip import write_image_folder

    full = DATA / f"speed-{n_images}-640x480"
    if not (full / "complete").exists():
        shutil.rmtree(full, ignore_errors=True)
        per_concept = math.ceil(n_images / len(concepts))
        print(f"writing {per_concept * len(concepts)} JPEGs of 640x480 to {full} (once)")
        write_image_folder(
            full, {GROUP: dict.fromkeys(concepts, per_concept)}, size=(640, 480), seed=0
        )
        (full / "complete").touch()
    if subset is None:
        return full
    part = DATA / f"speed-{n_images}-640x480-first{subset}"
    shutil.rmtree(part, ignore_errors=True)
    for concept in concepts:
        folder = part / GROUP / concept
        folder.mkdir(parents=True)
        for file in sorted((full / GROUP / concept).iterdir())[: subset // len(concepts)]:
            (folder / file.name).symlink_to(file)
    return part


def main() -> int:
    from clipaudit.zeroshot import default_workers

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if _has_cuda() else "cpu")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--n-images", type=int, default=2000)
    parser.add_argument("--subset", type=int, default=None, help="use only the first N images")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-commands", action="store_true", help="skip timing the whole commands")
    args = parser.parse_args()

    import torch

    from clipaudit.embedding_cache import EmbeddingCache
    from clipaudit.images import open_images
    from clipaudit.models import ModelSpec, load_model
    from clipaudit.registry import load_registry
    from clipaudit.zeroshot import cache_key, evaluate_model

    registry = load_registry().select([GROUP])
    concepts = [c.name for c in registry.concepts]
    folder = image_folder(args.n_images, args.subset, concepts)
    precision = "fp16" if args.device.startswith("cuda") else "fp32"
    images = open_images(folder, registry)
    n = len(images.records)
    print(
        f"{n} images, {args.model} (random weights), {args.device} {precision}, batch {args.batch_size}, "
        f"{args.workers} workers, {args.repeats} repeats"
    )

    def timed(loaded, **options) -> list[float]:
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            evaluate_model(loaded, images, registry, **common, **options)
            if loaded.device.type == "cuda":
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - start)
        return seconds

    common = dict(templates="none", batch_size=args.batch_size, workers=args.workers)
    loaded = load_model(ModelSpec(args.model), device=args.device, precision=precision)
    results = {
        "clipaudit loop": timed(loaded),
        "clipaudit loop, --jpeg-draft": timed(loaded, jpeg_draft=True),
    }
    with tempfile.TemporaryDirectory() as cache_dir:
        cache = EmbeddingCache(cache_dir, cache_key(loaded, False, None))
        evaluate_model(loaded, images, registry, cache=cache, **common)  # fill it
        results["clipaudit loop, warm cache"] = timed(loaded, cache=cache)
    del loaded  # free its memory before CLIP_benchmark loads its own copy

    job = {
        "model": args.model,
        "pretrained": "",
        "device": args.device,
        "amp": precision == "fp16",
        "batch_size": args.batch_size,
        "num_workers": args.workers,
        "cli": not args.no_commands,
        "timed_evaluate": args.repeats,
        "tasks": [
            {
                "name": "speed",
                "root": str(DATA / "speed-clip_benchmark"),
                "images": [[r.path, concepts.index(r.concept)] for r in images.records],
                "classnames": concepts,
                "templates": [TEMPLATE.replace("{}", "{c}")],
                "max_count": math.ceil(
                    n / max(args.workers, 1)
                ),  # one shard per worker: all of them busy
            }
        ],
    }
    shutil.rmtree(DATA / "speed-clip_benchmark", ignore_errors=True)
    peer = run_peer(job, DATA / "speed-clip_benchmark-job")["speed"]
    results["CLIP_benchmark loop"] = peer["evaluate_seconds"]

    if not args.no_commands:
        out = REPO / "benchmarks" / "out" / "speed-run"
        shutil.rmtree(out, ignore_errors=True)
        command = [
            sys.executable,
            "-m",
            "clipaudit",
            "zeroshot",
            "--model",
            args.model,
            "--images",
            str(folder),
            "--groups",
            GROUP,
            "--templates",
            "none",
            "--device",
            args.device,
            "--precision",
            precision,
            "--batch-size",
            str(args.batch_size),
            "--workers",
            str(args.workers),
            "--no-cache",
            "--quiet",
            "--out",
            str(out),
        ]
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        results["clipaudit command"] = [time.perf_counter() - start]
        results["CLIP_benchmark command"] = [peer["cli_seconds"]]

    rates = {name: n / statistics.median(seconds) for name, seconds in results.items()}
    print(f"\n{'':34s} {'median s':>9s} {'images/s':>9s}  runs (s)")
    for name, seconds in results.items():
        print(
            f"{name:34s} {statistics.median(seconds):9.2f} {rates[name]:9.1f}  {', '.join(f'{s:.2f}' for s in seconds)}"
        )
    ratios = {
        "loop": rates["clipaudit loop"] / rates["CLIP_benchmark loop"],
        "loop, --jpeg-draft": rates["clipaudit loop, --jpeg-draft"] / rates["CLIP_benchmark loop"],
    }
    if "clipaudit command" in rates:
        ratios["command"] = rates["clipaudit command"] / rates["CLIP_benchmark command"]
    print(
        "\nclipaudit / CLIP_benchmark images/s: "
        + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items())
    )

    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(
        json.dumps(
            {
                "n_images": n,
                "image_size": "640x480 JPEG",
                "model": f"{args.model} (random weights)",
                "device": args.device,
                "device_name": torch.cuda.get_device_name()
                if args.device.startswith("cuda")
                else platform.processor(),
                "cpu_count": os.cpu_count(),
                "precision": precision,
                "batch_size": args.batch_size,
                "workers": args.workers,
                "seconds": results,
                "images_per_s": rates,
                "ratios": ratios,
                "peer_versions": peer_versions(),
                "accuracy_check": {"CLIP_benchmark acc1": peer["evaluate_metrics"]["acc1"]},
            },
            indent=2,
        )
    )
    print(f"report: {REPORT.relative_to(REPO)}")
    return 0


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())

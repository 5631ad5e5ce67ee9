"""CLIP_benchmark's side of the comparisons; runs with the peer venv's python, never with clipaudit's.

    python peer_clip_benchmark.py JOB.json RESULT.json

JOB holds ``model`` (an open_clip name as CLIP_benchmark's ``--model`` takes it, e.g.
``local-dir:PATH`` or ``ViT-B-32``), ``pretrained``, ``device``, ``amp``, ``batch_size``,
``num_workers``, ``cli`` (default true), ``per_image``, ``timed_evaluate`` (how many timed runs) and
``tasks``: each ``{name, root, images:
[[path, label]], classnames, templates, class_prompts, max_count}`` with templates in
CLIP_benchmark's ``{c}`` form, and ``class_prompts`` (optional) the texts of each class when classes
have several prompts (CLIP_benchmark's class-specific prompts, as for CuPL). For each task this script

1. writes CLIP_benchmark's webdataset layout under ``root`` with its own
   ``clip_benchmark.webdataset_builder.convert_dataset`` (image files copied byte for byte);
2. unless ``cli`` is false, runs the ``clip_benchmark eval`` command on it and keeps its metrics JSON
   and its wall time;
3. when ``per_image`` is set, recomputes per-image logits with CLIP_benchmark's own
   ``zero_shot_classifier`` and ``run_classification`` (the functions its ``evaluate`` calls), since
   its command line reports only aggregate metrics;
4. ``timed_evaluate`` times, that many times, CLIP_benchmark's ``evaluate`` (text classifier, image loop,
   metrics) on a loaded model with the DataLoader its command line builds: the speed comparison's
   "model loaded -> metrics" scope, without interpreter start, imports and model creation.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path


class Samples(list):
    """(path, label) pairs with the ``classes`` and ``templates`` convert_dataset writes beside the shards."""


def export(task: dict) -> Path | None:
    """Write the task's webdataset layout; return its custom template file, if it needs one."""
    from clip_benchmark.webdataset_builder import convert_dataset, path_to_bytes

    samples = Samples((path, label) for path, label in task["images"])
    samples.classes = task["classnames"]
    samples.templates = task["templates"]
    convert_dataset(
        samples,
        "test",
        task["root"],
        transform=path_to_bytes,
        image_format="jpg",
        max_count=task.get("max_count", 10_000),
        verbose=False,
    )
    if not task.get("class_prompts"):
        return None
    custom = Path(task["root"]) / "class_prompts.json"
    custom.write_text(json.dumps({task["name"]: task["class_prompts"]}, indent=2))
    return custom


def run_cli(job: dict, task: dict, custom: Path | None) -> tuple[dict, float]:
    output = Path(task["root"]) / "clip_benchmark_result.json"
    command = [
        str(Path(sys.executable).with_name("clip_benchmark")),
        "eval",
        "--dataset",
        f"wds/{task['name']}",
        "--dataset_root",
        task["root"],
        "--task",
        "zeroshot_classification",
        "--model",
        job["model"],
        "--pretrained",
        job["pretrained"],
        "--batch_size",
        str(job["batch_size"]),
        "--num_workers",
        str(job["num_workers"]),
        "--output",
        str(output),
        "--quiet",
    ]
    command += ["--custom_template_file", str(custom)] if custom else []
    command += [] if job["amp"] else ["--no_amp"]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return json.loads(output.read_text())["metrics"], time.perf_counter() - start


def library_run(job: dict, task: dict, custom: Path | None) -> dict:
    """Per-image predictions and/or a timed ``evaluate``, with the model and data loaded as its CLI does."""
    import torch
    from clip_benchmark.datasets.builder import build_dataset
    from clip_benchmark.metrics import zeroshot_classification as zsc
    from clip_benchmark.models import load_clip

    device, amp = job["device"], job["amp"]
    model, transform, tokenizer = load_clip(
        model_type="open_clip",
        model_name=job["model"],
        pretrained=job["pretrained"],
        cache_dir=None,
        device=device,
    )
    model.eval()
    dataset = build_dataset(
        dataset_name=f"wds/{task['name']}",
        root=task["root"],
        transform=transform,
        split="test",
        custom_template_file=str(custom) if custom else None,
    )

    def loader(workers: int) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            dataset.batched(job["batch_size"]), batch_size=None, num_workers=workers
        )

    found = {}
    if job.get("per_image"):
        classifier = zsc.zero_shot_classifier(
            model, tokenizer, dataset.classes, dataset.templates, device, amp=amp
        )
        logits, _ = zsc.run_classification(model, classifier, loader(0), device, amp=amp)
        found["predictions"] = logits.argmax(dim=1).tolist()
    found["evaluate_seconds"] = []
    for _ in range(job.get("timed_evaluate", 0)):
        start = time.perf_counter()
        found["evaluate_metrics"] = zsc.evaluate(
            model,
            loader(job["num_workers"]),
            tokenizer,
            dataset.classes,
            dataset.templates,
            device,
            amp=amp,
        )
        found["evaluate_seconds"].append(time.perf_counter() - start)
    return found


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    results = {}
    for task in job["tasks"]:
        custom = export(task)
        results[task["name"]] = {}
        if job.get("cli", True):
            metrics, seconds = run_cli(job, task, custom)
            results[task["name"]] = {"metrics": metrics, "cli_seconds": seconds}
        if job.get("per_image") or job.get("timed_evaluate"):
            results[task["name"]].update(library_run(job, task, custom))
    Path(sys.argv[2]).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

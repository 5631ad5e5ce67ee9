"""Peer agreement: clipaudit's zero-shot results against CLIP_benchmark's on the same checkpoint,
images and prompts, both in fp32.

    .venv/bin/python benchmarks/clip_benchmark_agreement.py [--groups Animal,Emotion] [--per-concept 12]
        [--templates none,simple,ensemble] [--seed 7]

It writes seeded JPEGs as ``<group>/<concept>/`` folders and a seeded tiny OpenCLIP checkpoint (as a
config JSON + safetensors for clipaudit, and as open_clip's ``local-dir`` layout for CLIP_benchmark,
same weights), runs ``clipaudit zeroshot`` per template setting, then, per group, writes
CLIP_benchmark's webdataset layout from the same image files (its own ``convert_dataset``, with
``classnames.txt`` and ``zeroshot_classification_templates.txt`` (as ``{c}``) holding the class names
and templates clipaudit prompted with; where concepts have several prompts, CLIP_benchmark's
class-specific prompts file with every prompt x template text of each class) and runs
``clip_benchmark eval --no_amp`` on it (CLIP_benchmark lives in a separate venv, see peer.py). It
prints both results side by side: per-image top-1 predictions identical or not, clipaudit's accuracy
and mean per-class recall against CLIP_benchmark's ``acc1`` and ``mean_per_class_recall``. Exit status
0 when everything agrees.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys

from peer import REPO, peer_versions, run_peer

WORK = REPO / "benchmarks" / "data" / "agreement"
REPORT = REPO / "benchmarks" / "out" / "clip_benchmark_agreement.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", default="Animal,Emotion")
    parser.add_argument("--per-concept", type=int, default=12, help="images per concept")
    parser.add_argument("--templates", default="none,simple,ensemble")
    parser.add_argument(
        "--seed", type=int, default=7, help="seed of the tiny model's weights and of the images"
    )
    args = parser.parse_args()

    import pandas as pd

    from clipaudit import metrics
    from clipaudit.models import ModelSpec, slug
    from clipaudit.registry import load_registry
    from clipaudit.zeroshot import ZeroShotSettings, run_zeroshot
    from tests.tiny_clip import (
        write_image_folder,
        write_tiny_checkpoint,
        write_tiny_config,
        write_tiny_local_dir,
    )

    registry = load_registry().select(args.groups.split(","))
    shutil.rmtree(WORK, ignore_errors=True)
    layout = {
        g.name: {c.name: args.per_concept for c in registry.concepts_in(g.name)}
        for g in registry.groups
    }
    write_image_folder(WORK / "images", layout, size=(96, 72), seed=args.seed)
    config = write_tiny_config(WORK / "model")
    checkpoint = write_tiny_checkpoint(
        WORK / "model" / f"tiny-seed{args.seed}.safetensors", seed=args.seed
    )
    local_dir = write_tiny_local_dir(WORK / "model" / "local-dir", seed=args.seed)

    rows, all_agree = [], True
    for setting in args.templates.split(","):
        run = run_zeroshot(
            ZeroShotSettings(
                models=(ModelSpec(str(config), str(checkpoint)),),
                images=str(WORK / "images"),
                out=WORK / "clipaudit" / setting,
                registry="cai2025",
                groups=tuple(g.name for g in registry.groups),
                templates=setting,
                device="cpu",
                precision="fp32",
                cache_dir=None,
                workers=1,
            ),
            progress=False,
        )
        predictions = pd.read_parquet(run.out / "predictions.parquet")
        tasks = []
        for group in registry.groups:
            concepts = registry.concepts_in(group.name)
            templates = run.manifest["templates"]["by_group"][group.name]
            prompts = {c.name: (c.name,) if setting == "none" else c.prompts for c in concepts}
            ours = predictions[predictions["group"] == group.name]
            number = {c.name: i for i, c in enumerate(concepts)}
            several = any(len(p) > 1 for p in prompts.values())
            tasks.append({
                "name": f"{setting}-{slug(group.name)}",
                "root": str(WORK / "clip_benchmark" / f"{setting}-{slug(group.name)}"),
                "images": [[p, number[c]] for p, c in zip(ours["path"], ours["concept"], strict=True)],
                # one prompt per concept: class names + templates files, CLIP_benchmark's usual input;
                # several: its class-specific prompts (every prompt x template text of each class)
                "classnames": [c.name if several else prompts[c.name][0] for c in concepts],
                "templates": [t.replace("{}", "{c}") for t in templates],
                "class_prompts": {
                    name: [t.format(p) for p in texts for t in templates] for name, texts in prompts.items()
                } if several else None,
            })
        peer = run_peer(
            {
                "model": f"local-dir:{local_dir}",
                "pretrained": "local-dir",
                "device": "cpu",
                "amp": False,
                "batch_size": 64,
                "num_workers": 0,
                "per_image": True,
                "tasks": tasks,
            },
            WORK / "clip_benchmark",
        )
        for group, task in zip(registry.groups, tasks, strict=True):
            ours = predictions[predictions["group"] == group.name]
            names = [c.name for c in registry.concepts_in(group.name)]
            theirs = [names[i] for i in peer[task["name"]]["predictions"]]
            y_true, y_pred = ours["concept"].tolist(), ours["predicted"].tolist()
            scores = run.groups.set_index("group").loc[group.name]
            row = {
                "templates": setting,
                "group": group.name,
                "n_images": len(y_true),
                "n_templates": len(task["templates"]),
                "class_prompts": task["class_prompts"] is not None,
                "identical_top1": sum(a == b for a, b in zip(y_pred, theirs, strict=True)),
                "clipaudit_accuracy": float(scores["accuracy"]),
                "clip_benchmark_acc1": peer[task["name"]]["metrics"]["acc1"],
                "clipaudit_mean_per_class_recall": metrics.mean_per_class_recall(y_true, y_pred),
                "clip_benchmark_mean_per_class_recall": peer[task["name"]]["metrics"][
                    "mean_per_class_recall"
                ],
                "clipaudit_macro_f1": float(scores["macro_f1"]),
            }
            row["agree"] = (
                row["identical_top1"] == row["n_images"]
                and abs(row["clipaudit_accuracy"] - row["clip_benchmark_acc1"]) < 1e-12
                and abs(
                    row["clipaudit_mean_per_class_recall"]
                    - row["clip_benchmark_mean_per_class_recall"]
                )
                < 1e-12
            )
            all_agree &= row["agree"]
            rows.append(row)

    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.drop(columns=["clipaudit_macro_f1"]).to_string(index=False))
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(
        json.dumps(
            {
                "model": f"tiny OpenCLIP ({config.name}), seeded random weights (seed {args.seed}), fp32, cpu",
                "peer_versions": peer_versions(),
                "rows": rows,
                "all_agree": all_agree,
            },
            indent=2,
        )
    )
    verdict = "IDENTICAL" if all_agree else "DIFFERENT"
    print(
        f"{verdict}: per-image top-1, accuracy = acc1, mean per-class recall (report: {REPORT.relative_to(REPO)})"
    )
    return 0 if all_agree else 1


if __name__ == "__main__":
    sys.exit(main())

"""Peer agreement: clipaudit's zero-shot results against CLIP_benchmark's on the same checkpoint,
images and prompts, both in fp32.

    .venv/bin/python benchmarks/clip_benchmark_agreement.py [--groups Animal,Emotion]
        [--per-concept 12] [--templates none,simple,ensemble] [--train-steps 50] [--seed 7]

What it does:

1. writes seeded JPEGs as ``<group>/<concept>/`` folders (each concept's shapes have a hue of their
   own), and a tiny OpenCLIP model trained for ``--train-steps`` steps on other images of the same
   kind, saved once as safetensors: clipaudit loads it as config JSON + checkpoint, CLIP_benchmark as
   open_clip's ``local-dir`` layout (same bytes). Brief training makes predictions vary from image
   to image with small margins (a random model predicts one class for everything, which would make
   agreement trivial);
2. runs clipaudit's zero-shot audit per template setting (fp32, CPU, no embedding cache);
3. per setting and group, writes CLIP_benchmark's webdataset layout from the same image files with
   its own ``convert_dataset``: ``classnames.txt`` and ``zeroshot_classification_templates.txt`` (as
   ``{c}``) hold the class names and templates clipaudit prompted with; where concepts have several
   prompts, CLIP_benchmark's class-specific prompts file holds every prompt x template text of each
   class. Then it runs ``clip_benchmark eval --no_amp`` on it (CLIP_benchmark lives in a separate
   venv, see peer.py), and recomputes per-image predictions with its own functions;
4. prints both results side by side: per-image top-1 identical or not, clipaudit's accuracy and mean
   per-class recall against CLIP_benchmark's ``acc1`` and ``mean_per_class_recall``; writes
   ``benchmarks/out/clip_benchmark_agreement.json``. Exit status 0 when everything agrees.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys

from peer import REPO, peer_versions, run_peer

WORK = REPO / "benchmarks" / "data" / "agreement"
REPORT = REPO / "benchmarks" / "out" / "clip_benchmark_agreement.json"
TRAINING_TEMPLATES = ("{}", "a photo of a {}.", "a bad photo of a {}.", "a close-up photo of a {}.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", default="Animal,Emotion")
    parser.add_argument("--per-concept", type=int, default=12, help="test images per concept")
    parser.add_argument("--templates", default="none,simple,ensemble")
    parser.add_argument("--train-steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7, help="seed of the images and the model")
    args = parser.parse_args()

    import pandas as pd

    from clipaudit import metrics
    from clipaudit.models import ModelSpec
    from clipaudit.registry import load_registry
    from clipaudit.text import slug
    from clipaudit.zeroshot import ZeroShotSettings, run_zeroshot
    from tests import tiny_clip

    registry = load_registry().select(args.groups.split(","))
    shutil.rmtree(WORK, ignore_errors=True)
    layout = {
        g.name: {c.name: args.per_concept for c in registry.concepts_in(g.name)}
        for g in registry.groups
    }
    tiny_clip.write_image_folder(
        WORK / "images", layout, size=(96, 72), seed=args.seed, concept_colours=True
    )
    training = tiny_clip.write_image_folder(
        WORK / "training",
        {g: {c: 30 for c in concepts} for g, concepts in layout.items()},
        size=(96, 72),
        seed=args.seed + 1,
        concept_colours=True,
    )
    texts = {
        c.name: [
            t.format(p) for p in dict.fromkeys((c.name, *c.prompts)) for t in TRAINING_TEMPLATES
        ]
        for c in registry.concepts
    }
    config = tiny_clip.write_tiny_config(WORK / "model")
    checkpoint = tiny_clip.train_tiny_checkpoint(
        WORK / "model" / "tiny-trained.safetensors",
        [(p, p.parent.name) for p in training],
        texts,
        steps=args.train_steps,
        seed=args.seed,
    )
    local_dir = tiny_clip.write_tiny_local_dir(WORK / "model" / "local-dir", checkpoint=checkpoint)

    ours, tasks = {}, []
    for setting in args.templates.split(","):
        run = run_zeroshot(
            ZeroShotSettings(
                models=(ModelSpec(str(config), str(checkpoint)),),
                images=str(WORK / "images"),
                out=WORK / "clipaudit" / setting,
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
        for group in registry.groups:
            concepts = registry.concepts_in(group.name)
            templates = run.manifest["templates"]["by_group"][group.name]
            prompts = {c.name: (c.name,) if setting == "none" else c.prompts for c in concepts}
            several = any(len(p) > 1 for p in prompts.values())
            name = f"{setting}-{slug(group.name)}"
            ours[name] = (
                predictions[predictions["group"] == group.name],
                run.groups.set_index("group").loc[group.name],
            )
            number = {c.name: i for i, c in enumerate(concepts)}
            tasks.append(
                {
                    "name": name,
                    "setting": setting,
                    "group": group.name,
                    "root": str(WORK / "clip_benchmark" / name),
                    "images": [
                        [p, number[c]]
                        for p, c in zip(
                            ours[name][0]["path"], ours[name][0]["concept"], strict=True
                        )
                    ],
                    # one prompt per concept: its usual class names + templates files; several: its
                    # class-specific prompts (every prompt x template text of each class)
                    "classnames": [c.name if several else prompts[c.name][0] for c in concepts],
                    "templates": [t.replace("{}", "{c}") for t in templates],
                    "class_prompts": (
                        {
                            c: [t.format(p) for p in texts_of for t in templates]
                            for c, texts_of in prompts.items()
                        }
                        if several
                        else None
                    ),
                }
            )
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

    rows = []
    for task in tasks:
        predictions, scores = ours[task["name"]]
        names = [c.name for c in registry.concepts_in(task["group"])]
        theirs = [names[i] for i in peer[task["name"]]["predictions"]]
        y_true, y_pred = predictions["concept"].tolist(), predictions["predicted"].tolist()
        margins = [s[0] - s[1] for s in predictions["top5_scores"]]
        row = {
            "templates": task["setting"],
            "group": task["group"],
            "n_images": len(y_true),
            "n_predicted_classes": len(set(y_pred)),
            "median_top1_margin": float(pd.Series(margins).median()),
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
                row["clipaudit_mean_per_class_recall"] - row["clip_benchmark_mean_per_class_recall"]
            )
            < 1e-12
        )
        rows.append(row)

    table = pd.DataFrame(rows).rename(
        columns=lambda c: c.replace("clip_benchmark", "CB").replace("clipaudit", "ours")
    )
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.precision", 4):
        print(table.drop(columns=["ours_macro_f1"]).to_string(index=False))
    all_agree = all(row["agree"] for row in rows)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(
        json.dumps(
            {
                "model": f"tiny OpenCLIP ({config.name}), trained {args.train_steps} steps (seed {args.seed}), fp32, cpu",
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

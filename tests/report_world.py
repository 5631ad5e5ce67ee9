"""A small audit world for the report's tests, notebook and browser check.

A caption corpus mentions some concepts of the built-in registry often, some rarely and some never
(two captions carry HTML that must stay inert in the report); labelled images exist for a few
groups; a tiny OpenCLIP model is trained on image-caption pairs drawn as often as the captions
mention each concept (so it knows what its captions say, as the paper finds), and a second one keeps
seeded random weights. :func:`build_audit_runs` writes one coverage run and one zero-shot run per
model, and returns their paths.
"""

from __future__ import annotations

import random
from pathlib import Path

# concepts with images, per group (the registry's names); "bird" has captions but no images
IMAGED = {
    "Animal": ["dog", "cat", "horse"],
    "Color": ["red", "blue", "green", "yellow"],
    "Texture": ["glossy", "rough", "fuzzy"],
    "Emotion": ["tired", "surprised", "proud"],
    "Stereotype": ["slacker", "privileged", "exotic look"],
}
# how many captions mention each concept (out of N_CAPTIONS); unlisted imaged concepts: never
MENTIONS = {
    "dog": 120,
    "cat": 90,
    "horse": 40,
    "bird": 30,
    "red": 80,
    "blue": 60,
    "green": 25,
    "yellow": 6,
    "glossy": 5,
    "fuzzy": 1,
    "tired": 4,
    "proud": 2,
    "slacker": 1,
}
N_CAPTIONS = 400
IMAGES_PER_CONCEPT = 6
# captions are untrusted web text: these two must render as text in the report, never run
INJECTED = [
    "<script>window.__pwned=1</script> a rough wall",
    '<img src=x onerror="window.__pwned=2"> a rough stone',
]
INJECTED_CONCEPT = "rough"


def world_captions(seed: int = 0) -> list[str]:
    """N_CAPTIONS captions; each concept in MENTIONS is said in exactly that many of them."""
    rng = random.Random(seed)
    slots: list[list[str]] = [[] for _ in range(N_CAPTIONS - len(INJECTED))]
    for concept, count in MENTIONS.items():
        for index in rng.sample(range(len(slots)), count):
            slots[index].append(concept)
    captions = []
    for words in slots:
        # one concept per group at most would be more natural, but the counts are what matter
        captions.append(f"a photo with {' and '.join(words)}" if words else "a photo of something")
    return [*captions, *INJECTED]


def build_audit_runs(root: str | Path, *, seed: int = 0) -> dict[str, str]:
    """Write the corpus, images, both models and the three runs under ``root``; returns paths:
    ``coverage``, ``zeroshot_trained``, ``zeroshot_random``, ``images``, ``root``."""
    import pandas as pd

    from clipaudit.coverage import count_coverage
    from clipaudit.models import ModelSpec
    from clipaudit.zeroshot import run_zeroshot
    from tests.tiny_clip import (
        train_tiny_checkpoint,
        write_image_folder,
        write_tiny_checkpoint,
        write_tiny_config,
    )

    root = Path(root)
    corpus = root / "corpus.parquet"
    pd.DataFrame({"caption": world_captions(seed)}).to_parquet(corpus)
    coverage = root / "web-captions"
    count_coverage([corpus], "cai2025", coverage, workers=1, progress=False)

    images = root / "images"
    layout = {
        group: dict.fromkeys(concepts, IMAGES_PER_CONCEPT) for group, concepts in IMAGED.items()
    }
    paths = write_image_folder(images, layout, seed=seed, concept_colours=True)
    # training pairs as often as the captions mention each concept: unmentioned ones never
    by_concept: dict[str, list[Path]] = {}
    for path in paths:
        by_concept.setdefault(path.parent.name, []).append(path)
    pairs = [
        (path, concept)
        for concept, count in MENTIONS.items()
        if concept in by_concept
        for path in by_concept[concept] * max(1, count // 10)
    ]
    texts = {concept: [concept] for _, concept in pairs}
    models = root / "models"
    config = write_tiny_config(models)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model trains fastest on one thread (and on a busy machine)
    try:
        trained = train_tiny_checkpoint(
            models / "trained.safetensors", pairs, texts, steps=150, batch_size=32, seed=seed
        )
    finally:
        torch.set_num_threads(threads)
    untrained = write_tiny_checkpoint(models / "random.safetensors", seed=seed + 1)
    runs = {}
    for name, checkpoint in (("trained", trained), ("random", untrained)):
        out = root / f"zeroshot-{name}"
        run_zeroshot(
            ModelSpec(str(config), str(checkpoint)),
            images,
            out,
            groups=tuple(IMAGED),
            cache_dir=None,
            workers=0,
            device="cpu",
            batch_size=64,
            progress=False,
        )
        runs[f"zeroshot_{name}"] = str(out)
    return {"root": str(root), "coverage": str(coverage), "images": str(images), **runs}

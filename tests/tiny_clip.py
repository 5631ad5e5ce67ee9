"""A tiny OpenCLIP model and tiny labelled images, for tests and benchmarks that cannot download.

The model is a real open_clip ``CLIP`` (ViT image tower, transformer text tower, OpenAI tokenizer)
with a few hundred thousand parameters, registered from a config JSON; weights are seeded random
ones written as a checkpoint (safetensors, or a state-dict ``.pt``) or as open_clip's ``local-dir``
layout (what CLIP_benchmark loads with ``--model local-dir:PATH``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 8, "heads": 2, "layers": 1},
}


def write_tiny_config(folder: str | Path, name: str = "tiny-clip") -> Path:
    """Write the tiny model config as ``folder/<name>.json`` (``--model`` takes the path)."""
    path = Path(folder) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(TINY_CONFIG, indent=2))
    return path


def tiny_state_dict(seed: int = 0) -> dict:
    """Seeded random weights of the tiny model (independent of open_clip's registry)."""
    import open_clip
    import torch

    torch.manual_seed(seed)
    return open_clip.CLIP(**TINY_CONFIG).state_dict()


def write_tiny_checkpoint(path: str | Path, seed: int = 0) -> Path:
    """Write seeded tiny weights to ``path``: safetensors for ``.safetensors``, else a state-dict ``.pt``."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in tiny_state_dict(seed).items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def write_tiny_local_dir(
    folder: str | Path, seed: int = 0, checkpoint: str | Path | None = None
) -> Path:
    """open_clip's local-dir layout: ``open_clip_config.json`` plus ``open_clip_model.safetensors``
    (seeded random weights, or a copy of the safetensors ``checkpoint``)."""
    import shutil

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": TINY_CONFIG, "preprocess_cfg": {}}, indent=2)
    )
    if checkpoint is None:
        write_tiny_checkpoint(folder / "open_clip_model.safetensors", seed)
    else:
        shutil.copyfile(checkpoint, folder / "open_clip_model.safetensors")
    return folder


def write_image_folder(
    root: str | Path,
    layout: Mapping[str, Mapping[str, int]],
    *,
    size: tuple[int, int] = (40, 30),
    seed: int = 0,
    suffix: str = "jpg",
    concept_colours: bool = False,
) -> list[Path]:
    """Write ``ROOT/<group>/<concept>/<n>.<suffix>``, ``layout[group][concept] = n`` images.

    Each image is a seeded random scene: a background colour, three coloured shapes, some noise. With
    ``concept_colours`` the shapes take a hue of their own for each concept of a group, so that a
    model can learn to tell the concepts apart (see :func:`train_tiny_checkpoint`).
    """
    import colorsys

    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    width, height = size
    paths = []
    for group, concepts in layout.items():
        for position, (concept, count) in enumerate(concepts.items()):
            hue = position / max(len(concepts), 1)
            folder = Path(root) / group / concept
            folder.mkdir(parents=True, exist_ok=True)
            for number in range(count):
                image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, 3)))
                draw = ImageDraw.Draw(image)
                for _ in range(3):
                    x0, x1 = sorted(rng.integers(0, width, 2).tolist())
                    y0, y1 = sorted(rng.integers(0, height, 2).tolist())
                    shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
                    if concept_colours:
                        rgb = colorsys.hsv_to_rgb(hue, 0.9, rng.uniform(0.6, 1.0))
                        fill = tuple(int(255 * v) for v in rgb)
                        x0, y0 = min(x0, width // 3), min(y0, height // 3)  # large enough to see
                        x1, y1 = max(x1, 2 * width // 3), max(y1, 2 * height // 3)
                    else:
                        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
                    shape((x0, y0, x1 + 1, y1 + 1), fill=fill)
                pixels = np.asarray(image, dtype=np.int16) + rng.integers(
                    -20, 21, (height, width, 3)
                )
                path = folder / f"{number:03d}.{suffix}"
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
                paths.append(path)
    return paths


def write_animal_audit_inputs(root: str | Path) -> tuple[Path, object]:
    """The smallest audit's images and model under ``root``: six Animal images (two dogs, two
    cats, two horses) in ``root/images`` and a tiny random model as a ``clipaudit.ModelSpec``."""
    import clipaudit

    root = Path(root)
    write_image_folder(root / "images", {"Animal": {"dog": 2, "cat": 2, "horse": 2}})
    spec = clipaudit.ModelSpec(
        str(write_tiny_config(root / "models")),
        str(write_tiny_checkpoint(root / "models" / "random.safetensors")),
    )
    return root / "images", spec


def train_tiny_checkpoint(
    path: str | Path,
    images: Sequence[tuple[Path, str]],
    texts: Mapping[str, Sequence[str]],
    *,
    steps: int = 300,
    batch_size: int = 64,
    seed: int = 0,
) -> Path:
    """Train the tiny model contrastively on ``(image path, concept)`` pairs for a few seconds and
    save it (safetensors): each image is paired with one of ``texts[concept]`` drawn at random, and
    images of the same concept in a batch all count as matches. The result recognises concepts by
    their :func:`write_image_folder` ``concept_colours``, well but not perfectly: its predictions vary
    from image to image, which makes comparing two tools' per-image predictions meaningful.
    """
    import open_clip
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_CONFIG)
    preprocess = open_clip.image_transform(TINY_CONFIG["vision_cfg"]["image_size"], is_train=False)
    tokenizer = open_clip.SimpleTokenizer(context_length=TINY_CONFIG["text_cfg"]["context_length"])
    pixels = torch.stack([preprocess(Image.open(p).convert("RGB")) for p, _ in images])
    concepts = sorted(texts)
    labels = torch.tensor([concepts.index(c) for _, c in images])
    tokens = [tokenizer(list(texts[c])) for c in concepts]
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        batch = torch.randint(len(images), (batch_size,), generator=generator)
        batch_labels = labels[batch]
        picks = [
            int(torch.randint(len(tokens[c]), (1,), generator=generator))
            for c in batch_labels.tolist()
        ]
        text = torch.stack(
            [tokens[c][k] for c, k in zip(batch_labels.tolist(), picks, strict=True)]
        )
        logits = (
            model.logit_scale.exp()
            * model.encode_image(pixels[batch], normalize=True)
            @ model.encode_text(text, normalize=True).T
        )
        same = (batch_labels[:, None] == batch_labels[None, :]).float()
        targets = same / same.sum(dim=1, keepdim=True)
        loss = (
            -(targets * logits.log_softmax(dim=1)).sum(1).mean()
            - (targets * logits.log_softmax(dim=0)).sum(0).mean()
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def hub_snapshot(cache: str | Path, repo: str, commit: str) -> Path:
    """The folder of commit ``commit`` of the model repo ``repo`` in the Hugging Face hub cache
    ``cache``, made and named by ``refs/main`` (what a download of the repo's newest commit
    leaves); write the repo's files into it, e.g. with :func:`write_tiny_local_dir`."""
    repo_folder = Path(cache) / f"models--{repo.replace('/', '--')}"
    snapshot = repo_folder / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo_folder / "refs").mkdir(exist_ok=True)
    (repo_folder / "refs" / "main").write_text(commit)
    return snapshot

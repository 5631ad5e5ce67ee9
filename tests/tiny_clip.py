"""A tiny OpenCLIP model and tiny labelled images, for tests and benchmarks that cannot download.

The model is a real open_clip ``CLIP`` (ViT image tower, transformer text tower, OpenAI tokenizer)
with a few hundred thousand parameters, registered from a config JSON; weights are seeded random
ones written as a checkpoint (safetensors, or a state-dict ``.pt``) or as open_clip's ``local-dir``
layout (what CLIP_benchmark loads with ``--model local-dir:PATH``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
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


def write_tiny_local_dir(folder: str | Path, seed: int = 0) -> Path:
    """open_clip's local-dir layout: ``open_clip_config.json`` plus ``open_clip_model.safetensors``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": TINY_CONFIG, "preprocess_cfg": {}}, indent=2)
    )
    write_tiny_checkpoint(folder / "open_clip_model.safetensors", seed)
    return folder


def write_image_folder(
    root: str | Path,
    layout: Mapping[str, Mapping[str, int]],
    *,
    size: tuple[int, int] = (40, 30),
    seed: int = 0,
    suffix: str = "jpg",
) -> list[Path]:
    """Write ``ROOT/<group>/<concept>/<n>.<suffix>`` random-noise images: ``layout[group][concept] = n``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for group, concepts in layout.items():
        for concept, count in concepts.items():
            folder = Path(root) / group / concept
            folder.mkdir(parents=True, exist_ok=True)
            for number in range(count):
                pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
                path = folder / f"{number:03d}.{suffix}"
                Image.fromarray(pixels).save(path)
                paths.append(path)
    return paths

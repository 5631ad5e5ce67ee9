"""Weights that do not fit the model config are refused before anything runs: the check reads the
checkpoint's tensor names and shapes (a safetensors header, a memory-mapped state dict) and compares
them with the model built on torch's meta device, allocating no weights."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from clipaudit.errors import ModelError
from clipaudit.models import ModelSpec, load_model
from clipaudit.zeroshot import check_model_specs
from tests.tiny_clip import TINY_CONFIG, tiny_state_dict, write_image_folder, write_tiny_config


def write_config(folder: Path, name: str, **changes: object) -> Path:
    """The tiny config with top-level ``changes`` and ``vision_cfg.X``/``text_cfg.X`` ones."""
    config = json.loads(json.dumps(TINY_CONFIG))
    for key, value in changes.items():
        tower, _, field = key.rpartition("__")
        (config[tower] if tower else config)[field] = value
    path = folder / f"{name}.json"
    path.write_text(json.dumps(config))
    return path


def save(state: dict, path: Path) -> Path:
    """``state`` as safetensors or, for another suffix, with ``torch.save``."""
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


def test_weights_of_another_config_are_refused_before_the_audit_counts_a_caption(tmp_path):
    import clipaudit

    write_tiny_config(tmp_path)
    wide = write_config(tmp_path, "wide", embed_dim=2 * TINY_CONFIG["embed_dim"])
    weights = save(tiny_state_dict(seed=3), tmp_path / "seed3.safetensors")
    images = tmp_path / "images"
    write_image_folder(images, {"Animal": {"dog": 1, "cat": 1}})
    out = tmp_path / "audit"
    with pytest.raises(ModelError) as caught:
        clipaudit.run_audit(
            ["a dog", "a cat"], images, (str(wide), str(weights)), out,
            progress=False, echo=lambda _: None,
            zeroshot={"cache_dir": None, "device": "cpu", "workers": 0},
        )  # fmt: skip
    assert not (out / "coverage").exists()  # refused before the captions are counted
    message = str(caught.value)
    text_width, embed_dim = TINY_CONFIG["text_cfg"]["width"], TINY_CONFIG["embed_dim"]
    assert f"checkpoint {str(weights)!r}" in message
    assert f"model config {str(wide)!r}" in message
    # the first tensor that differs, in the model's order, with both shapes
    assert (
        f"text_projection is ({text_width}, {embed_dim}) in the checkpoint but "
        f"({text_width}, {2 * embed_dim}) in the model"
    ) in message
    assert "--model" in message and "--pretrained" in message


def fitting_forms(folder: Path) -> dict[str, tuple[Path, Path]]:
    """(config, checkpoint) pairs open_clip loads although names or shapes differ from the
    model's state dict: it strips "module.", unwraps "state_dict", reshapes logit_scale, adds a
    missing logit_bias, moves an old CLIP's text tower, resizes position embeddings."""
    tiny = write_tiny_config(folder)
    state = tiny_state_dict(seed=3)
    module = {f"module.{k}": v for k, v in state.items()}
    return {
        "safetensors": (tiny, save(state, folder / "plain.safetensors")),
        "pt": (tiny, save(state, folder / "plain.pt")),
        "pth wrapped": (tiny, save({"state_dict": state, "epoch": 3}, folder / "wrapped.pth")),
        "module. bin": (tiny, save({"state_dict": module}, folder / "ddp.bin")),
        "module. safetensors": (tiny, save(module, folder / "ddp.safetensors")),
        "logit_scale 1-d": (
            tiny,
            save({**state, "logit_scale": state["logit_scale"].reshape(1)}, folder / "ls.pt"),
        ),
        "no logit_bias": (write_config(folder, "biased", init_logit_bias=-10.0), folder / "plain.pt"),
        "custom text": (write_config(folder, "custom", custom_text=True), folder / "plain.pt"),
        "larger images": (write_config(folder, "big", vision_cfg__image_size=48), folder / "plain.pt"),
        "shorter context": (write_config(folder, "short", text_cfg__context_length=20), folder / "plain.pt"),
    }  # fmt: skip


def unfitting_forms(folder: Path) -> dict[str, tuple[Path, Path, str]]:
    """(config, checkpoint, what the refusal names) pairs open_clip refuses to load."""
    tiny = write_tiny_config(folder)
    state = tiny_state_dict(seed=3)
    narrow_text = write_config(folder, "narrow", text_cfg__width=16)
    deep = write_config(folder, "deep", vision_cfg__layers=3)
    lacking = {k: v for k, v in state.items() if k != "ln_final.bias"}
    return {
        "embed_dim": (
            write_config(folder, "wide", embed_dim=64),
            save(state, folder / "plain.safetensors"),
            "text_projection is (8, 32) in the checkpoint but (8, 64) in the model",
        ),
        "text width": (
            narrow_text, folder / "plain.safetensors", "positional_embedding is (32, 8) in the "
            "checkpoint but (32, 16) in the model",
        ),
        "one layer more": (
            deep, folder / "plain.safetensors",
            "the model has 12 tensors the checkpoint lacks, e.g. 'visual.transformer.resblocks.2.",
        ),
        "a tensor lacking": (
            tiny, save(lacking, folder / "lacking.pt"),
            "the model has 1 tensor the checkpoint lacks, e.g. 'ln_final.bias'",
        ),
        "a tensor more": (
            tiny, save({**state, "extra.weight": torch.ones(2)}, folder / "extra.safetensors"),
            "the checkpoint has 1 tensor the model lacks, e.g. 'extra.weight'",
        ),
    }  # fmt: skip


def test_every_checkpoint_open_clip_loads_passes_the_check(tmp_path):
    for form, (config, checkpoint) in fitting_forms(tmp_path).items():
        spec = ModelSpec(str(config), str(checkpoint))
        check_model_specs([spec])  # raises for a refused form
        assert load_model(spec, device="cpu").info["checkpoint_sha256"], form


def test_every_checkpoint_open_clip_refuses_is_refused_by_the_check_naming_the_tensors(tmp_path):
    for form, (config, checkpoint, said) in unfitting_forms(tmp_path).items():
        spec = ModelSpec(str(config), str(checkpoint))
        with pytest.raises(ModelError, match="does not fit the architecture") as caught:
            check_model_specs([spec])
        assert said in str(caught.value), form
        # open_clip refuses it as well: the check refuses nothing the load would take
        with pytest.raises(ModelError, match="does not fit the architecture"):
            load_model(spec, device="cpu")


def write_header_only_safetensors(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    """A safetensors file of fp32 tensors of ``shapes`` whose data is a hole in a sparse file:
    the header of a model of any size, without writing its weights."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 4 * int(torch.Size(shape).numel())
        header[name] = {
            "dtype": "F32",
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)) + encoded)
        handle.truncate(8 + len(encoded) + offset)
    return path


def meta_shapes(architecture: str) -> dict[str, tuple[int, ...]]:
    import open_clip

    with torch.device("meta"):
        model = open_clip.create_model(architecture, device="meta")
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def test_a_builtin_architecture_is_checked_without_allocating_its_weights(tmp_path):
    b32 = write_header_only_safetensors(tmp_path / "b32.safetensors", meta_shapes("ViT-B-32"))
    b16 = write_header_only_safetensors(tmp_path / "b16.safetensors", meta_shapes("ViT-B-16"))
    check_model_specs([ModelSpec("ViT-B-32", str(b32))])
    with pytest.raises(ModelError) as caught:
        check_model_specs([ModelSpec("ViT-B-32", str(b16))])
    # the 16-pixel patches' position embedding open_clip resizes; their stem it cannot
    assert (
        "visual.conv1.weight is (768, 3, 16, 16) in the checkpoint but (768, 3, 32, 32) in the "
        "model"
    ) in str(caught.value)
    assert "model config" not in str(caught.value)  # a built-in architecture has no file

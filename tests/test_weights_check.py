"""Weights that do not fit the model config are refused before anything runs: the check reads the
checkpoint's tensor names and shapes (a safetensors header, a memory-mapped state dict) and compares
them with the model built on torch's meta device, allocating no weights."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
import torch

from clipaudit.errors import ModelError
from clipaudit.models import ModelSpec, load_model
from clipaudit.zeroshot import check_model_specs
from tests.tiny_clip import (
    TINY_CONFIG,
    hub_snapshot,
    tiny_state_dict,
    write_image_folder,
    write_tiny_config,
    write_tiny_local_dir,
)


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


def narrow_text_weights(path: Path) -> Path:
    """Weights of the tiny model with a text tower twice as wide: another config's."""
    import open_clip

    config = json.loads(json.dumps(TINY_CONFIG))
    config["text_cfg"]["width"] = 2 * TINY_CONFIG["text_cfg"]["width"]
    torch.manual_seed(0)
    return save(open_clip.CLIP(**config).state_dict(), path)


def folder_forms(folder: Path) -> dict[str, tuple[Path, str]]:
    """local-dir folders open_clip would load wrongly or fail on late, with what the refusal says."""
    text_width = TINY_CONFIG["text_cfg"]["width"]
    wrong = write_tiny_local_dir(folder / "wrong")
    narrow_text_weights(wrong / "open_clip_model.safetensors")
    empty = write_tiny_local_dir(folder / "empty")
    (empty / "open_clip_model.safetensors").unlink()
    pt_only = write_tiny_local_dir(folder / "pt-only")
    (pt_only / "open_clip_model.safetensors").rename(pt_only / "open_clip_model.pt")
    corrupt = write_tiny_local_dir(folder / "corrupt")
    weights = corrupt / "open_clip_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return {
        "wrong widths": (
            wrong,
            f"weights file {str(wrong / 'open_clip_model.safetensors')!r} does not fit the "
            f"model_cfg of {str(wrong / 'open_clip_config.json')!r}: positional_embedding is "
            f"(32, {2 * text_width}) in the checkpoint but (32, {text_width}) in the model",
        ),
        "no weights": (empty, f"local-dir folder {str(empty)!r} has no weights file"),
        "a .pt open_clip does not look for": (
            pt_only, "has no weights file (open_clip looks for *.safetensors, *.bin, *.pth; "
            "found open_clip_model.pt)",
        ),
        "corrupt": (corrupt, f"checkpoint {str(weights)!r} is no readable safetensors file"),
    }  # fmt: skip


def test_a_local_dir_folder_whose_weights_would_not_load_is_refused_before_any_image(tmp_path):
    """A folder without weights would run with random ones, silently; one with weights of another
    config would fail only once the images are indexed (and an audit's coverage counted)."""
    for form, (folder, said) in folder_forms(tmp_path).items():
        with pytest.raises(ModelError) as caught:
            check_model_specs([ModelSpec(f"local-dir:{folder}")])
        assert said in str(caught.value), form
        assert "local-dir" in str(caught.value), form


def test_a_local_dir_folders_refusal_comes_before_the_audit_counts_a_caption(tmp_path):
    import clipaudit

    folder, said = folder_forms(tmp_path)["wrong widths"]
    images = tmp_path / "images"
    write_image_folder(images, {"Animal": {"dog": 1, "cat": 1}})
    out = tmp_path / "audit"
    with pytest.raises(ModelError, match="does not fit") as caught:
        clipaudit.run_audit(
            ["a dog", "a cat"], images, f"local-dir:{folder}", out,
            progress=False, echo=lambda _: None,
            zeroshot={"cache_dir": None, "device": "cpu", "workers": 0},
        )  # fmt: skip
    assert said in str(caught.value)
    assert not (out / "coverage").exists()
    # the fix names both files: the weights to replace, or the config to change
    assert "open_clip_config.json" in str(caught.value) and "--model" in str(caught.value)


def test_local_dir_weights_are_found_as_open_clip_finds_them(tmp_path):
    """open_clip prefers open_clip_model.safetensors over a .bin: a wrong .bin beside fitting
    safetensors loads, and a pickled .bin alone is read as tensors only."""
    folder = write_tiny_local_dir(tmp_path / "both")
    narrow_text_weights(folder / "open_clip_pytorch_model.bin")
    check_model_specs([ModelSpec(f"local-dir:{folder}")])
    bin_only = write_tiny_local_dir(tmp_path / "bin-only")
    (bin_only / "open_clip_model.safetensors").unlink()
    save(tiny_state_dict(seed=1), bin_only / "open_clip_pytorch_model.bin")
    check_model_specs([ModelSpec(f"local-dir:{bin_only}")])
    narrow_text_weights(bin_only / "open_clip_pytorch_model.bin")
    with pytest.raises(ModelError, match=r"open_clip_pytorch_model.bin' does not fit"):
        check_model_specs([ModelSpec(f"local-dir:{bin_only}")])


def test_a_cached_hub_model_with_weights_of_another_config_is_refused_offline(offline_hub):
    cache, tried = offline_hub
    snapshot = write_tiny_local_dir(hub_snapshot(cache, "clipaudit-tests/tiny", "a" * 40))
    check_model_specs([ModelSpec("hf-hub:clipaudit-tests/tiny")])  # fits: passes
    narrow_text_weights(snapshot / "open_clip_model.safetensors")
    with pytest.raises(ModelError) as caught:
        check_model_specs([ModelSpec("hf-hub:clipaudit-tests/tiny")])
    message = str(caught.value)
    assert f"weights file {str(snapshot / 'open_clip_model.safetensors')!r} does not fit" in message
    assert "hf-hub:clipaudit-tests/tiny" in message and "positional_embedding" in message
    assert tried == []  # the cache alone: nothing asked of the network


def test_online_a_misfit_cached_hub_model_passes_when_the_hub_has_a_newer_commit(
    offline_hub, monkeypatch
):
    """Online, the load downloads the hub's newest commit, which may fit: the cached one is
    refused only when it is the newest, or the hub does not answer (the load reads the cache)."""
    from huggingface_hub import constants

    from clipaudit import hub

    cache, _ = offline_hub
    snapshot = write_tiny_local_dir(hub_snapshot(cache, "clipaudit-tests/tiny", "a" * 40))
    narrow_text_weights(snapshot / "open_clip_model.safetensors")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    asked = []
    for head, refused in (("b" * 40, False), ("a" * 40, True), (None, True)):
        monkeypatch.setattr(hub, "hub_head", lambda repo, head=head: asked.append(repo) or head)
        if refused:
            with pytest.raises(ModelError, match="does not fit"):
                check_model_specs([ModelSpec("hf-hub:clipaudit-tests/tiny")])
        else:
            check_model_specs([ModelSpec("hf-hub:clipaudit-tests/tiny")])
    assert asked == ["clipaudit-tests/tiny"] * 3


def test_a_local_dir_config_without_model_cfg_is_refused_naming_it(tmp_path):
    folder = write_tiny_local_dir(tmp_path / "flat")
    config = folder / "open_clip_config.json"
    config.write_text(json.dumps(TINY_CONFIG))  # a bare model config, not open_clip's layout
    with pytest.raises(
        ModelError, match=re.escape(f"{str(config)!r} has no model_cfg (got ['embed_dim'")
    ):
        check_model_specs([ModelSpec(f"local-dir:{folder}")])
    config.write_text("{")
    with pytest.raises(ModelError, match=re.escape(f"{str(config)!r} is not a readable JSON file")):
        check_model_specs([ModelSpec(f"local-dir:{folder}")])

"""A model left out of a zero-shot rerun ("dropped") keeps its results until the run's checks
pass: a rerun that fails leaves them on disk, for the next call that gives the model again."""

from __future__ import annotations

import json

import pytest
import torch

from clipaudit.errors import RunFailedError
from clipaudit.models import ModelSpec
from clipaudit.zeroshot import run_zeroshot
from tests.test_zeroshot import count_encoded_images
from tests.tiny_clip import (
    tiny_state_dict,
    write_image_folder,
    write_tiny_checkpoint,
    write_tiny_config,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[ModelSpec, ModelSpec, ModelSpec]:
    """Two good tiny models and one whose NaN weights make every embedding NaN (it evaluates no
    group)."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("models")
    config = str(write_tiny_config(folder))
    good = [
        ModelSpec(config, str(write_tiny_checkpoint(folder / f"{name}.safetensors", seed)))
        for name, seed in (("a", 1), ("b", 2))
    ]
    broken = folder / "nan.safetensors"
    save_file(
        {
            k: (torch.full_like(v, float("nan")) if v.is_floating_point() else v).contiguous()
            for k, v in tiny_state_dict(seed=3).items()
        },
        str(broken),
    )
    return (*good, ModelSpec(config, str(broken)))


def _run(models, images, out):
    return run_zeroshot(
        models, images, out, cache_dir=None, workers=0, device="cpu", progress=False
    )


def _unit_labels(out) -> list[str]:
    return sorted(json.loads(p.read_text())["label"] for p in (out / "units").glob("*.json"))


def _unit_files(out) -> dict[str, bytes]:
    units = out / "units"
    return {str(p.relative_to(units)): p.read_bytes() for p in units.rglob("*") if p.is_file()}


def test_a_failed_rerun_keeps_the_dropped_models_results_for_the_next_call(
    models, tmp_path, monkeypatch
):
    a, b, nan = models
    images, out = str(tmp_path / "img"), tmp_path / "run"
    write_image_folder(tmp_path / "img", {"Color": {"red": 2, "blue": 2}}, size=(8, 8))
    first = _run([a, b], images, out)
    assert first.manifest["status"] == "complete"
    assert _unit_labels(out) == sorted([a.label, b.label])
    made = _unit_files(out)

    # both checks of a finished run fail, each with a model left out
    with pytest.raises(RunFailedError, match=r"no group could be evaluated"):
        _run([nan], images, out)  # a and b left out
    with pytest.raises(RunFailedError, match=rf"model {nan.label} evaluated no group"):
        _run([a, nan], images, out)  # b left out
    assert json.loads((out / "manifest.json").read_text())["status"] == "failed"
    assert _unit_labels(out) == sorted([a.label, b.label, nan.label])
    kept = _unit_files(out)
    assert {name: kept[name] for name in made} == made  # unchanged, not written again

    counts = count_encoded_images(monkeypatch)
    again = _run([a, b], images, out)
    assert counts == []  # both taken from their units: nothing loaded, nothing encoded
    assert again.manifest["status"] == "complete" and again.models == [a.label, b.label]
    assert [m["n_resumed"] for m in again.manifest["models"]] == [4, 4]
    # the broken model, left out of a run that passed its checks, is the one deleted now
    assert again.manifest["dropped_models"] == [nan.label]
    assert _unit_labels(out) == sorted([a.label, b.label])


def test_images_a_model_failed_after_decoding_are_not_said_to_be_undecodable(models, tmp_path):
    """A group whose images all decoded, but whose embeddings the model made NaN, was said to
    have "all 4 images undecodable", sending the user to the images instead of the model."""
    a, _, nan = models
    images = tmp_path / "img"
    write_image_folder(images, {"Color": {"red": 2, "blue": 2}}, size=(8, 8))
    (images / "Animal" / "dog").mkdir(parents=True)
    (images / "Animal" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    with pytest.raises(RunFailedError, match=rf"model {nan.label} evaluated no group"):
        _run([a, nan], str(images), tmp_path / "run")
    reasons = {}
    for path in (tmp_path / "run" / "units").glob("*.json"):
        record = json.loads(path.read_text())
        reasons[record["label"]] = {g["group"]: g["reason"] for g in record["skipped_groups"]}
    assert reasons[nan.label]["Color"] == "all 4 images failed"
    assert reasons[nan.label]["Animal"] == "its one image undecodable"  # never decoded
    assert reasons[a.label]["Animal"] == "its one image undecodable"
    assert "Color" not in reasons[a.label]

"""A zero-shot run resumed or extended with another spelling of its image source lists the images
as its first call did, whatever the source: a Hugging Face ``save_to_disk`` folder (paths
``SOURCE#ROW``), webdataset shards whose members are named ``./KEY.jpg`` (as ``tar -C DIR .``
writes them), or a folder reached through a trailing slash, a link or ``..``."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from clipaudit.models import ModelSpec
from clipaudit.zeroshot import run_zeroshot
from tests.tiny_clip import write_image_folder, write_tiny_checkpoint, write_tiny_config

LAYOUT = {"Color": {"red": 2, "blue": 2}}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[ModelSpec, ModelSpec, ModelSpec]:
    folder = tmp_path_factory.mktemp("models")
    config = str(write_tiny_config(folder))
    return tuple(
        ModelSpec(config, str(write_tiny_checkpoint(folder / f"{name}.safetensors", seed)))
        for name, seed in (("a", 1), ("b", 2), ("c", 3))
    )


def _run(models, images, out):
    return run_zeroshot(
        models, images, out, cache_dir=None, workers=0, device="cpu", progress=False
    )


def _paths(run) -> dict[str, list[str]]:
    """Each model's predicted image paths, sorted."""
    return {m: sorted(rows["path"]) for m, rows in run.predictions().groupby("model")}


def _added_elsewhere(models, first: str, second: str, where: Path, out: Path, monkeypatch):
    """A run of the first model made in ``where`` with ``first``, and the second model added from
    another directory with ``second``: the predictions' paths after each call."""
    monkeypatch.chdir(where)
    made = _paths(_run(models[:1], first, out))  # read now: a run's predictions are read lazily
    monkeypatch.chdir(out.parent)
    return made, _paths(_run(models[:2], second, out))


def test_a_saved_dataset_given_by_another_path_keeps_its_rows_paths(models, tmp_path, monkeypatch):
    import datasets

    images = write_image_folder(tmp_path / "img", LAYOUT, size=(8, 8))
    rows = {
        "image": [{"bytes": p.read_bytes(), "path": None} for p in images],
        "label": [p.parent.name for p in images],
    }
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")})
    data = tmp_path / "data"
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(data / "ds"))

    made, both = _added_elsewhere(
        models, "ds", str(data / "ds"), data, tmp_path / "run", monkeypatch
    )
    expected = [f"ds#{row}" for row in range(4)]
    assert made == {models[0].label: expected}
    assert both == {models[0].label: expected, models[1].label: expected}


def test_shard_members_named_from_dot_keep_their_names_under_another_spelling(
    models, tmp_path, monkeypatch
):
    """``tar -C DIR -cf a.tar .`` names its members ``./000.jpg``: their paths are
    ``a.tar/./000.jpg``, which a path joined by pathlib would shorten to ``a.tar/000.jpg``."""
    images = write_image_folder(tmp_path / "img", LAYOUT, size=(8, 8))
    data = tmp_path / "data"
    data.mkdir()
    with tarfile.open(data / "a.tar", "w") as tar:
        for n, path in enumerate(images):
            for name, payload in (
                (f"./{n:03d}.jpg", path.read_bytes()),
                (f"./{n:03d}.txt", path.parent.name.encode()),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))

    made, both = _added_elsewhere(
        models, "a.tar", str(data / "a.tar"), data, tmp_path / "run", monkeypatch
    )
    expected = [f"a.tar/./{n:03d}.jpg" for n in range(4)]
    assert made == {models[0].label: expected}
    assert both == {models[0].label: expected, models[1].label: expected}


@pytest.mark.parametrize(
    "calls",
    [
        [("img", "."), (".", "link"), (".", "sub/../img/")],
        [(".", "img/"), ("img", "."), (".", "sub/../link")],
    ],
    ids=["dot-first", "dot-later"],
)
def test_a_folder_given_three_ways_in_a_row_keeps_the_first_spelling(
    models, tmp_path, monkeypatch, calls
):
    """Each call (made in a folder, with a spelling of the images) adds a model: every model's
    predictions name the images as the first call did, where "." (whose files pathlib names
    without "./"), a link, ".." and a trailing slash each spell the folder."""
    write_image_folder(tmp_path / "img", LAYOUT, size=(8, 8))
    (tmp_path / "link").symlink_to(tmp_path / "img")
    (tmp_path / "sub").mkdir()
    for n, (where, images) in enumerate(calls, start=1):
        monkeypatch.chdir(tmp_path / where)
        last = _run(models[:n], images, tmp_path / "run")
    first = str(Path(calls[0][1]))
    expected = sorted(
        str(Path(first) / "Color" / c / f"{n:03d}.jpg") for c in ("red", "blue") for n in range(2)
    )
    assert _paths(last) == {m.label: expected for m in models}
    assert last.manifest["settings"]["images"] == first  # "img/" is "img"
    assert last.manifest["inputs"]["images"]["source"] == first

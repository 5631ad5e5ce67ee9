"""Runs where some or all of the work failed: what they record, and what the report makes of it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from clipaudit.errors import RunFolderError
from clipaudit.models import ModelSpec
from clipaudit.report import build_report
from clipaudit.zeroshot import ZeroShotRun, run_zeroshot
from tests.tiny_clip import write_image_folder, write_tiny_checkpoint, write_tiny_config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> ModelSpec:
    folder = tmp_path_factory.mktemp("tiny-model")
    return ModelSpec(
        str(write_tiny_config(folder)), str(write_tiny_checkpoint(folder / "a.safetensors"))
    )


@pytest.fixture(scope="module")
def animals_and_broken_colours(tiny, tmp_path_factory) -> Path:
    """A complete zero-shot run: Animal's 4 images are fine, Color's 3 are all corrupt."""
    root = tmp_path_factory.mktemp("mixed")
    write_image_folder(root / "img", {"Animal": {"dog": 2, "cat": 2}}, size=(8, 8))
    for concept, count in (("red", 2), ("green", 1)):
        folder = root / "img" / "Color" / concept
        folder.mkdir(parents=True)
        for number in range(count):
            (folder / f"{number}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    zeroshot(tiny, root / "img", root / "run")
    return root / "run"


def zeroshot(tiny: ModelSpec, images: Path, out: Path) -> ZeroShotRun:
    return run_zeroshot(
        (tiny,), str(images), out, cache_dir=None, workers=0, device="cpu", progress=False
    )


def test_a_group_whose_every_image_failed_is_not_said_to_have_none(animals_and_broken_colours):
    """Color was given 3 images, all undecodable: its skip reason says so, never "no images",
    which is what a group without a folder (Clothing) gets, and what a report would repeat."""
    manifest = json.loads((animals_and_broken_colours / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    reasons = {s["group"]: s["reason"] for s in manifest["skipped_groups"]}
    assert reasons["Color"] == "all 3 images undecodable"
    assert reasons["Clothing"] == "no images"
    scored = pd.read_csv(animals_and_broken_colours / "groups.csv")
    assert list(scored["group"]) == ["Animal"]


def test_a_report_of_a_run_that_scored_nothing_for_a_listed_model_names_it(
    animals_and_broken_colours, tmp_path
):
    """A complete run whose groups table has no row of a model its manifest lists (every image
    failed for it in a clipaudit that still completed such runs, or a table cut short) is refused
    naming the model, never reported without it ("no zero-shot run given")."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(animals_and_broken_colours, run)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["models"].append({**manifest["models"][0], "label": "tiny-clip@broken"})
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        RunFolderError, match=r"no row of model 'tiny-clip@broken'.*run the command"
    ):
        build_report([run], tmp_path / "report", n_bootstrap=0)
    empty_tables(run)  # no model scored at all
    with pytest.raises(RunFolderError, match=r"no row of model 'tiny-clip@a'"):
        build_report([run], tmp_path / "report", n_bootstrap=0)


def empty_tables(run: Path) -> None:
    for name in ("groups", "concepts"):
        pd.read_csv(run / f"{name}.csv").iloc[:0].to_csv(run / f"{name}.csv", index=False)


def test_a_complete_run_whose_tables_lost_their_rows_writes_them_again_when_rerun(
    tiny, animals_and_broken_colours, tmp_path
):
    """Rerun, a complete run whose tables hold no row was taken as done (and the summary table
    of no model failed with a traceback): its tables are written again from its units."""
    import shutil

    root = animals_and_broken_colours.parent
    run = tmp_path / "run"
    shutil.copytree(animals_and_broken_colours, run)
    empty_tables(run)
    again = zeroshot(tiny, root / "img", run)
    assert list(again.groups["group"]) == ["Animal"]
    assert list(pd.read_csv(run / "groups.csv")["group"]) == ["Animal"]


def test_a_jpeg_too_large_even_at_reduced_scale_names_its_own_size_too(tmp_path):
    """A 128x96 JPEG drafted to cover the model's 32 pixels (64x48) and still over the limit was
    named "64x48" alone: the file the user looks at is 128x96."""
    import io

    from PIL import Image

    from clipaudit.images import BadImage, decode_image

    data = io.BytesIO()
    Image.new("RGB", (128, 96), (200, 10, 10)).save(data, "JPEG")
    with pytest.raises(
        BadImage,
        match=r"too large: 64x48 = 3072 pixels exceeds the decompression-bomb limit of "
        r"100 even decoded at reduced scale from 128x96 \(raise it with --max-pixels",
    ):
        decode_image(data.getvalue(), max_pixels=100, scaled_side=32)

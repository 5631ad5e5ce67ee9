"""Zero-shot messages and resumes: one line for the groups with images not evaluated (the CLI, the
audit and a failed run say the same words), a run made from another working directory resumed,
and a model dropped from a run that was stopped part-way."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from clipaudit.errors import RunFailedError, RunFolderError, Stopped
from clipaudit.models import ModelSpec
from clipaudit.zeroshot import run_zeroshot
from tests.test_zeroshot import count_encoded_images
from tests.tiny_clip import write_image_folder, write_tiny_checkpoint, write_tiny_config

FIX = (
    "--all-concepts (all_concepts=True) classifies the images of one concept among all of its "
    "group's concepts"
)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[ModelSpec, ModelSpec]:
    folder = tmp_path_factory.mktemp("models")
    config = str(write_tiny_config(folder))
    return tuple(
        ModelSpec(config, str(write_tiny_checkpoint(folder / f"{name}.safetensors", seed)))
        for name, seed in (("a", 1), ("b", 2))
    )


def _run(models, images, out, **options):
    options = {"cache_dir": None, "workers": 0, "device": "cpu", "progress": False, **options}
    return run_zeroshot(models, images, out, **options)


# --------------------------------------------------------------------------- one line


def test_the_cli_and_the_audit_say_the_same_line_of_groups_not_evaluated(capsys):
    from clipaudit.audit import _echo_left_out
    from clipaudit.cli.zeroshot import _print_skipped

    one_concept = [
        {"group": f"G{n}", "reason": f"only 'c{n}' has images; 2 concepts are needed"}
        for n in range(1, 7)
    ]
    manifest = {
        "skipped_groups": [{"group": "Clothing", "reason": "no images"}, *one_concept],
        "skipped_concepts": [],
        "settings": {"groups": None},
    }
    shown = "; ".join(f"G{n}: only 'c{n}' has images; 2 concepts are needed" for n in range(1, 6))
    expected = f"6 groups with images not evaluated: {shown} ...; {FIX}"

    _print_skipped(manifest)
    printed = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert expected in printed
    said: list[str] = []
    _echo_left_out(SimpleNamespace(manifest=manifest, reused=False), Path("m.json"), said.append)
    assert said == [f"    {expected}"]  # it listed all 6 where the CLI listed 5


def test_the_line_has_no_fix_without_a_group_of_one_concept_and_none_without_such_groups():
    from clipaudit.zeroshot import unscored_groups_line

    undecodable = {"group": "Vehicle", "reason": "all 2 images undecodable"}
    assert unscored_groups_line([undecodable, {"group": "Color", "reason": "no images"}]) == (
        "1 group with images not evaluated: Vehicle: all 2 images undecodable"
    )
    assert unscored_groups_line([{"group": "Color", "reason": "no images"}]) is None


def test_a_run_that_evaluated_no_group_names_the_groups_with_images_not_those_without(
    models, tmp_path
):
    """Every registry group the images hold none of was listed first (Clothing, Food, ...: no
    images), and the groups that were given images cut off after five."""
    write_image_folder(tmp_path / "img", {"Color": {"red": 2}, "Animal": {"dog": 1}}, size=(8, 8))
    with pytest.raises(RunFailedError) as failed:
        _run(models[:1], str(tmp_path / "img"), tmp_path / "run")
    assert str(failed.value) == (
        "no group could be evaluated (no group has images of 2 concepts); 2 groups with images "
        "not evaluated: Animal: only 'dog' has images; 2 concepts are needed; Color: only 'red' "
        f"has images; 2 concepts are needed; {FIX}"
    )


# --------------------------------------------------------------------------- another directory


def test_a_run_made_with_a_relative_path_resumes_from_another_directory(
    models, tmp_path, monkeypatch
):
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    write_image_folder(first_dir / "img", {"Color": {"red": 2, "blue": 2}}, size=(8, 8))
    write_image_folder(first_dir / "other", {"Color": {"red": 1, "blue": 1}}, size=(8, 8))
    second_dir.mkdir()
    out = tmp_path / "run"
    monkeypatch.chdir(first_dir)
    made = _run(models[:1], "img", out)
    assert made.manifest["inputs"]["images"]["resolved"] == str((first_dir / "img").resolve())

    monkeypatch.chdir(second_dir)  # where "img" is no folder
    counts = count_encoded_images(monkeypatch)
    again = _run(models[:1], str(first_dir / "img"), out)
    assert again.reused and counts == []
    assert again.manifest["settings"]["images"] == "img"
    # a model added here lists the images as the run first spelled them
    both = _run(models, str(first_dir / "img"), out)
    assert counts == [4] and both.manifest["settings"]["images"] == "img"
    paths = {m: sorted(rows["path"]) for m, rows in both.predictions().groupby("model")}
    expected = sorted(f"img/Color/{c}/{n:03d}.jpg" for c in ("red", "blue") for n in range(2))
    assert paths == {models[0].label: expected, models[1].label: expected}
    assert both.manifest["inputs"]["images"]["source"] == "img"

    with pytest.raises(RunFolderError, match=r"images: 'img' -> '.*other'"):
        _run(models[:1], str(first_dir / "other"), out)


# --------------------------------------------------------------------------- dropped models


def _stopped_at_second_model(models, images, out, monkeypatch, run=_run) -> None:
    """``run`` of both models stopped (SIGTERM) as the second one loads: the first's unit
    finished, the second's not, the run failed."""
    import clipaudit.zeroshot as zeroshot

    real_load = zeroshot.load_model

    def load(spec, *args, **kwargs):
        if spec.label == models[1].label:
            raise Stopped("stopped by SIGTERM")
        return real_load(spec, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(zeroshot, "load_model", load)
        with pytest.raises(Stopped):
            run(models, images, out)


def test_a_model_dropped_from_a_run_stopped_part_way_is_deleted_and_said(
    models, tmp_path, monkeypatch, in_process
):
    write_image_folder(tmp_path / "img", {"Color": {"red": 2, "blue": 2}}, size=(8, 8))
    out = tmp_path / "run"
    _stopped_at_second_model(models, str(tmp_path / "img"), out, monkeypatch)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and len(list((out / "units").glob("*.json"))) == 1

    first, second = models
    code, printed, err = in_process(
        "zeroshot", "--model", second.model, "--pretrained", second.pretrained,
        "--images", str(tmp_path / "img"), "--out", str(out),
        "--no-cache", "--device", "cpu", "--workers", "0", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert (
        f"1 model dropped from the run (not given this time), its results deleted: {first.label}"
    ) in " ".join(printed.split())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dropped_models"] == [first.label]
    units = [json.loads(p.read_text())["label"] for p in (out / "units").glob("*.json")]
    assert units == [second.label]


def test_the_audit_says_a_model_dropped_from_a_zeroshot_stage_stopped_part_way(
    models, tmp_path, monkeypatch
):
    import clipaudit

    write_image_folder(tmp_path / "img", {"Color": {"red": 2, "blue": 2}}, size=(8, 8))
    said: list[str] = []

    def audit(given, images, out):
        return clipaudit.run_audit(
            ["a red sofa", "a blue car"],
            images,
            given,
            out,
            zeroshot={"cache_dir": None, "device": "cpu", "workers": 0},
            echo=said.append,
            progress=False,
        )

    _stopped_at_second_model(models, str(tmp_path / "img"), tmp_path / "audit", monkeypatch, audit)
    said.clear()
    result = audit(models[1:], str(tmp_path / "img"), tmp_path / "audit")
    assert result.zeroshot.models == [models[1].label]
    assert (
        "    1 model dropped from the zero-shot run (not given this time), its results "
        f"deleted: {models[0].label}"
    ) in said

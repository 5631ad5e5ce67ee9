"""The library API as a notebook user meets it: the calls a researcher gets slightly wrong (runs
given by position, an option given to the wrong stage, a bad option in an audit) are refused with
the call to make instead, before any run folder is made; a report's tables are documented."""

from __future__ import annotations

import re

import pandas as pd
import pytest


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """A coverage run of four captions and a zero-shot run of a tiny random model on six images
    of the Animal group, and what made them."""
    import clipaudit
    from tests.tiny_clip import write_animal_audit_inputs

    root = tmp_path_factory.mktemp("walkthrough")
    images, spec = write_animal_audit_inputs(root)
    coverage = clipaudit.count_coverage(
        texts=["a dog", "a cat", "a dog and a cat on a horse", "nothing here"],
        out=root / "coverage",
        progress=False,
    )
    options = {"groups": ("Animal",), "cache_dir": None, "workers": 0, "device": "cpu"}
    zeroshot = clipaudit.run_zeroshot(spec, images, root / "zeroshot", progress=False, **options)
    return {
        "root": root,
        "images": images,
        "spec": spec,
        "coverage": coverage,
        "zeroshot": zeroshot,
        "options": options,
    }


def test_runs_given_to_build_report_by_position_are_refused_with_the_list_to_pass(tiny_runs):
    """``build_report(coverage, zeroshot)`` said only that out must be a path, got a
    ZeroShotRun; a run folder's path as out, that it holds a zeroshot run, not a report run.
    Neither said that the runs go in one list."""
    import clipaudit
    from clipaudit.errors import RunFolderError, SettingsError

    coverage, zeroshot, root = tiny_runs["coverage"], tiny_runs["zeroshot"], tiny_runs["root"]
    with pytest.raises(SettingsError, match=r"got ZeroShotRun") as caught:
        clipaudit.build_report(coverage, zeroshot)
    assert "build_report([coverage, zeroshot], out)" in str(caught.value)

    manifest_before = (root / "zeroshot" / "manifest.json").read_text()
    with pytest.raises(RunFolderError, match=r"holds a zeroshot run") as caught:
        clipaudit.build_report(root / "coverage", root / "zeroshot")
    assert "build_report([" in str(caught.value)
    assert (root / "zeroshot" / "manifest.json").read_text() == manifest_before


@pytest.mark.parametrize(
    ("stage", "options", "message"),
    [
        # an option of the audit itself, given to a stage: where it goes
        ("zeroshot", {"pretrained": "none"}, r"models=\(model, pretrained\) pairs"),
        ("zeroshot", {"registry": "cai2025"}, r"registry= of run_audit"),
        ("zeroshot", {"overwrite": True}, r"overwrite= of run_audit"),
        ("report", {"out": "elsewhere"}, r"OUT/report"),
        ("report", {"progress": False}, r"progress= of run_audit"),
        # a stage's option mistyped or out of range
        ("zeroshot", {"grops": ["Animal"]}, r"unknown zeroshot option 'grops' \(did you mean"),
        ("report", {"titel": "x"}, r"unknown report option 'titel' \(did you mean 'title'"),
        ("report", {"n_bootstrap": 5}, r"n_bootstrap must be 0 \(no intervals\) or at least"),
    ],
)
def test_a_bad_stage_option_says_why_before_the_audit_folder_is_made(
    stage, options, message, tiny_runs, tmp_path
):
    """zeroshot={"pretrained": "none"} (what run_zeroshot takes) was refused as an unknown option
    with no word of how to give it; refused from inside the open audit folder, each bad option
    left a failed audit behind (and, with out=None, a temporary folder)."""
    import clipaudit
    from clipaudit.errors import SettingsError

    out = tmp_path / "audit"
    lines: list[str] = []
    with pytest.raises(SettingsError, match=message):
        clipaudit.run_audit(
            ["a dog"],
            tiny_runs["images"],
            tiny_runs["spec"],
            out,
            progress=False,
            echo=lines.append,
            **{stage: options},
        )
    assert not out.exists() and lines == []


def _documented_columns(doc: str) -> dict[str, list[str]]:
    """``name``: ``a, b, c`` lines of the Report docstring's table list, as name -> columns."""
    entries = {}
    for name, body in re.findall(r"``(\w+)``:\s*(.*?)(?=\n\s*- ``|\n\n|\Z)", doc, re.S):
        entries[name] = re.findall(r"``(\w+)``", body)
    return entries


def test_every_column_of_a_report_table_is_documented(tiny_runs, tmp_path):
    """The README says a report's tables are ``.tables[name]``; which tables and which columns
    was nowhere a user reads (help(Report)), and join's list lacked the fit, the outliers and
    three tables."""
    import clipaudit
    from clipaudit.report import Report
    from clipaudit.report.core import TABLES

    options = tiny_runs["options"]
    report = clipaudit.build_report(
        [tiny_runs["coverage"], tiny_runs["zeroshot"]], tmp_path / "report", n_bootstrap=0
    )
    documented = _documented_columns(Report.__doc__)
    assert set(report.tables) == set(TABLES) == set(documented)
    for name, frame in report.tables.items():
        assert isinstance(frame, pd.DataFrame)
        missing = [c for c in frame.columns if c not in documented[name]]
        assert missing == [], f"{name}: {missing} undocumented"
    # read back from the folder: the same tables, with the same columns
    back = clipaudit.load_run(tmp_path / "report")
    for name, frame in report.tables.items():
        assert list(back.tables[name].columns) == list(frame.columns)
    assert options["groups"] == ("Animal",)


def test_tab_completion_lists_the_api_and_its_modules_not_the_package_internals():
    """``dir(clipaudit)`` (what Jupyter completes after ``clipaudit.``) listed ``Any``,
    ``ModuleType``, ``importlib`` and ``annotations``, names the package imports for itself,
    beside the API; and not the submodules that a bare import reaches (``clipaudit.errors``)."""
    import pkgutil

    import clipaudit

    listed = set(dir(clipaudit))
    modules = {m.name for m in pkgutil.iter_modules(clipaudit.__path__) if m.name[0] != "_"}
    assert {"errors", "report", "runs", "coverage"} <= modules
    public = {*clipaudit.__all__, *modules}
    assert public <= listed
    assert {n for n in listed if not n.startswith("__")} == {
        n for n in public if not n.startswith("__")
    }


def test_an_audit_says_which_images_it_skipped_and_ignored(tiny_runs, tmp_path):
    """`clipaudit zeroshot` prints the images it skipped and the files it ignored; an audit, whose
    zero-shot stage is the same run, said nothing of them, in its lines or anywhere a user looks
    first."""
    import shutil

    import clipaudit

    images = tmp_path / "images"
    shutil.copytree(tiny_runs["images"], images)
    (images / "Animal" / "dog" / "broken.jpg").write_bytes(b"not an image at all")
    (images / "Animal" / "cat" / "notes.txt").write_text("shot on a Tuesday")
    lines: list[str] = []
    audit = clipaudit.run_audit(
        ["a dog", "a cat"], images, tiny_runs["spec"], tmp_path / "audit",
        zeroshot={"groups": ["Animal"], "cache_dir": None, "workers": 0, "device": "cpu"},
        report={"n_bootstrap": 0}, progress=False, echo=lines.append,
    )  # fmt: skip
    manifest = tmp_path / "audit" / "zeroshot" / "manifest.json"
    said = f"    1 image skipped and 1 file ignored: listed in {manifest} (e.g. "
    line = next(x for x in lines if x.startswith(said))  # the first named, with its reason
    assert "broken.jpg: not a recognised image" in line
    assert [s["path"] for s in audit.zeroshot.manifest["skipped_images"]] == [
        str(images / "Animal" / "dog" / "broken.jpg")
    ]

"""The report walked through as an auditor would: runs of another clipaudit, an out
folder among the inputs, and the Report object's rendered text in Jupyter."""

from __future__ import annotations

import json
import shutil

import pytest

from clipaudit.errors import RunFolderError
from clipaudit.report import build_report
from clipaudit.runs import CONTRACT


def _edited_copy(source, folder, **changes):
    """A copy of the run ``source`` whose manifest has ``changes``."""
    shutil.copytree(source, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, **changes}))
    return folder


def test_a_run_of_a_newer_run_contract_is_refused_naming_the_version(audit_runs, tmp_path):
    """A run folder written under a newer run contract was joined as if this clipaudit could read
    it; its tables may mean something else."""
    newer = _edited_copy(
        audit_runs["zeroshot_trained"],
        tmp_path / "newer",
        contract=CONTRACT + 1,
        clipaudit_version="9.0.0",
    )
    with pytest.raises(
        RunFolderError,
        match=rf"newer holds a zeroshot run written by clipaudit 9\.0\.0 \(run contract "
        rf"{CONTRACT + 1}\); this clipaudit reads run contract {CONTRACT} at most: "
        r"upgrade clipaudit",
    ):
        build_report([audit_runs["coverage"], newer], tmp_path / "report", n_bootstrap=0)
    assert not (tmp_path / "report").exists()


def test_a_run_of_another_clipaudit_version_is_said_on_top(audit_runs, tmp_path):
    """Runs counted or scored by another clipaudit version were joined without a word, though
    matching rules and metrics change between versions."""
    from clipaudit import __version__

    older = _edited_copy(audit_runs["coverage"], tmp_path / "older", clipaudit_version="0.0.1")
    report = build_report(
        [older, audit_runs["zeroshot_trained"]], tmp_path / "report", n_bootstrap=0
    )
    notes = [n for n in report.summary["notes"] if "0.0.1" in n]
    assert len(notes) == 1
    assert str(older) in notes[0] and f"clipaudit {__version__}" in notes[0]
    assert "0.0.1" in report.headline()
    html = (report.out / "report.html").read_text(encoding="utf-8")
    assert "0.0.1" in html
    # runs of this version: no note
    same = build_report(
        [audit_runs["coverage"], audit_runs["zeroshot_trained"]], tmp_path / "same", n_bootstrap=0
    )
    assert not [n for n in same.summary["notes"] if "written by clipaudit" in n]


def test_an_out_folder_inside_an_input_run_is_refused(audit_runs, tmp_path):
    """``--out COVERAGE/report`` wrote the report inside the coverage run, where redoing that run
    (--overwrite) deletes it."""
    coverage = tmp_path / "coverage"
    shutil.copytree(audit_runs["coverage"], coverage)
    runs = [coverage, audit_runs["zeroshot_trained"]]
    with pytest.raises(
        RunFolderError,
        match=r"out .*coverage/report is inside the coverage run .*coverage, one of the inputs; "
        r"give --out \(out= in Python\) a folder outside every input run",
    ):
        build_report(runs, coverage / "report", n_bootstrap=0)
    assert not (coverage / "report").exists()


def test_an_out_folder_holding_an_input_run_is_refused_before_overwrite_empties_it(
    audit_runs, tmp_path
):
    """A report folder holding an input run, rendered again with --overwrite and other settings,
    was emptied, the input run with it, after it had been read."""
    runs = [audit_runs["coverage"], audit_runs["zeroshot_trained"]]
    out = build_report(runs, tmp_path / "report", n_bootstrap=0).out
    inner = out / "coverage"
    shutil.copytree(audit_runs["coverage"], inner)
    with pytest.raises(
        RunFolderError, match=r"out .*report holds the coverage run .*report/coverage, one of"
    ):
        build_report(
            [inner, audit_runs["zeroshot_trained"]], out, n_bootstrap=0, seed=1, overwrite=True
        )
    assert (inner / "manifest.json").is_file()  # nothing computed is lost


def test_the_report_object_gives_its_rendered_text(audit_runs, tmp_path):
    """In Jupyter, what the page and the Markdown say, without opening the files by hand
    (skrub's TableReport: .html(), .json())."""
    from clipaudit.runs import load_run

    runs = [audit_runs["coverage"], audit_runs["zeroshot_trained"]]
    report = build_report(runs, tmp_path / "report", n_bootstrap=0)
    for result in (report, load_run(report.out)):
        assert result.to_html() == (report.out / "report.html").read_text(encoding="utf-8")
        assert result.to_markdown() == (report.out / "report.md").read_text(encoding="utf-8")
        assert json.loads(result.to_json()) == report.summary
    (report.out / "report.md").unlink()
    with pytest.raises(RunFolderError, match=r"cannot read .*report\.md .*build the report again"):
        report.to_markdown()


def test_an_unknown_table_name_says_which_tables_there_are(audit_runs, tmp_path):
    """`report.tables["concept"]` raised a bare KeyError('concept') in Jupyter."""
    report = build_report(
        [audit_runs["coverage"], audit_runs["zeroshot_trained"]], tmp_path / "r", n_bootstrap=0
    )
    with pytest.raises(
        KeyError,
        match=r"no table 'concept' in the report; its tables are concepts, groups, .*did you mean "
        r"'concepts'",
    ):
        report.tables["concept"]
    assert report.tables.get("concept") is None
    assert list(report.tables)[:3] == ["concepts", "groups", "categories"]
    # read back from its folder: the same
    from clipaudit.runs import load_run

    with pytest.raises(KeyError, match="did you mean 'groups'"):
        load_run(report.out).tables["group"]

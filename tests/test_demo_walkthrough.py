"""What a newcomer met running `clipaudit demo` and reading what it printed (helper 117): the
bracket after each macro-F1 was chance, unsaid; the printed Spearman (0.88) was not the report's
across-groups one (0.83), with no word of why nor of what either means; and groups.csv, the
table's numbers, went unnamed."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from rich.console import Console
from scipy.stats import spearmanr

from clipaudit.cli import demo as cli_demo
from tests.test_demo import quiet


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return quiet(tmp_path_factory.mktemp("walkthrough") / "run")


def printed(result, monkeypatch, capsys, width: int = 120) -> str:
    monkeypatch.setattr(cli_demo, "console", Console(width=width, markup=False, emoji=False))
    cli_demo._print(result)
    return capsys.readouterr().out


def test_the_macro_f1_column_says_its_bracket_is_chance(demo, monkeypatch, capsys):
    shown = printed(demo, monkeypatch, capsys)
    assert "macro-F1 (chance)" in shown
    chance = pd.read_csv(demo.out / "groups.csv").set_index("group").loc["Size", "chance"]
    assert f"({chance:.2f})" in next(line for line in shown.splitlines() if "│ Size " in line)


def test_the_demo_records_the_reports_across_group_correlation(demo):
    """The report ranks each group's mean concept coverage (a wrong mention counts) against its
    macro-F1; recomputed here from the coverage and zero-shot tables."""
    concepts = pd.read_csv(demo.out / "coverage" / "concepts.csv")
    awareness = pd.read_csv(demo.out / "zeroshot" / "groups.csv").set_index("group")["macro_f1"]
    coverage = concepts.groupby("group")["rate"].mean()[awareness.index]
    expected = spearmanr(coverage, awareness).statistic
    manifest = json.loads((demo.out / "manifest.json").read_text())
    assert manifest["spearman_coverage_awareness"] == pytest.approx(expected, abs=1e-12)
    assert demo.manifest["spearman_coverage_awareness"] == manifest["spearman_coverage_awareness"]


def test_the_printed_correlations_say_what_they_rank_and_where_to_look(demo, monkeypatch, capsys):
    manifest = demo.manifest
    shown = " ".join(printed(demo, monkeypatch, capsys, width=80).split())
    rho, report_rho = (
        manifest["spearman_true_mentions_awareness"],
        manifest["spearman_coverage_awareness"],
    )
    assert f"true mentions against macro-F1: {rho:.2f}" in shown
    assert "1 would be the same order" in shown
    assert f"the report's {report_rho:.2f} across groups ranks measured coverage" in shown
    assert f"table: {demo.out / 'groups.csv'}" in shown


def test_a_demo_recorded_before_the_reports_figure_prints_without_it(demo, monkeypatch, capsys):
    """A complete demo made by an earlier version is shown from its manifest as it is."""
    import copy
    from types import SimpleNamespace

    manifest = copy.deepcopy(demo.manifest)
    del manifest["spearman_coverage_awareness"]
    shown = printed(SimpleNamespace(manifest=manifest, out=demo.out), monkeypatch, capsys)
    assert "true mentions against macro-F1" in shown and "the report's" not in shown


# `clipaudit demo` on a tiny world, in a process of its own; with "kill", the process sends
# itself SIGINT (Ctrl-C) when training step 11 is reported (a checkpoint was written at step 10)
_TINY_CLI = """
import os, signal, sys
import clipaudit.demo as demo
import clipaudit.world.settings as settings
from clipaudit.cli import main

World, Train = settings.WorldSettings, settings.TrainSettings
settings.WorldSettings = lambda **kw: World(n_train=512, n_eval_per_group=24, **kw)
settings.TrainSettings = lambda **kw: Train(
    steps=12, batch_size=64, warmup_steps=2, embed_dim=32, width=32, layers=1,
    checkpoint_every=5, **{"threads": 1, **{k: v for k, v in kw.items() if v is not None}},
)
if sys.argv[1] == "kill":
    def ctrl_c_at_step_11(self, step, steps, loss, **postfix):
        if step == 11:
            os.kill(os.getpid(), signal.SIGINT)
    demo._StepBar.__call__ = ctrl_c_at_step_11
main(["demo", "--out", sys.argv[2], "--device", "cpu"])
"""


@pytest.mark.slow
def test_ctrl_c_in_training_then_the_same_command_resumes_and_says_so(tmp_path):
    import signal
    import subprocess
    import sys

    out = tmp_path / "demo"

    def run(mode: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", _TINY_CLI, mode, str(out)],
            capture_output=True,
            text=True,
            timeout=600,
            # a child of a shell's background job starts with SIGINT ignored: Ctrl-C's default
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )

    killed = run("kill")
    assert killed.returncode == 130, killed.stderr
    said = killed.stderr.strip().splitlines()
    assert said == ["interrupted; finished work is kept: run the same command again to resume"]
    assert json.loads((out / "manifest.json").read_text())["status"] == "failed"
    assert (out / "model" / "train_state.safetensors").is_file()

    resumed = run("again")
    assert resumed.returncode == 0, resumed.stderr
    lines = resumed.stdout.splitlines()
    assert "    reused: rendered by an earlier run" in lines
    assert "    resumed from the checkpoint at step 10" in lines
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["reused"] == ["world"]
    assert f"report: {out / 'report.html'}" in lines


def test_a_sweep_prints_its_group_and_where_its_figure_is(demo, monkeypatch, capsys):
    """The sweep's rows were printed as "sweep selection 0: ..." without the group swept, and
    sweep/dose_response.png, the curve the README promises, went unnamed."""
    import copy
    from types import SimpleNamespace

    manifest = copy.deepcopy(demo.manifest)
    manifest["settings"]["sweep"] = {"group": "Texture", "kind": "selection", "rates": [0, 1]}
    manifest["sweep"] = [
        {"rate": r, "kind": "selection", "coverage": r, "macro_f1": 0.3 + r / 2, "chance": 0.25}
        for r in (0, 1)
    ]
    shown = printed(SimpleNamespace(manifest=manifest, out=demo.out), monkeypatch, capsys)
    lines = shown.splitlines()
    assert "dose response of Texture, one model per selection rate:" in lines
    assert "  rate 1: group coverage 100.0%, macro-F1 0.80 (chance 0.25)" in lines
    assert f"dose response: {demo.out / 'sweep' / 'dose_response.png'}" in lines
    assert "dose response" not in printed(demo, monkeypatch, capsys)  # no sweep, no such line


def test_the_page_at_the_top_of_the_demo_names_files_that_are_there(demo):
    """RUN/report.html was a byte copy of RUN/report/report.html: its "Files: figures/..." and
    its footer's report.json, report.md and tables/ were not beside it but in RUN/report/."""
    from tests.test_report_copy import missing_files, named_files

    page = (demo.out / "report.html").read_text(encoding="utf-8")
    assert missing_files(page, demo.out) == []
    assert {"report/figures/confusion_*.png", "report/report.json", "report/tables/"} <= set(
        named_files(page)
    )
    # still self-contained, its figures those of the report's own page
    assert page == demo.report.to_html(folder=demo.out)
    own = (demo.out / "report" / "report.html").read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == own.count('src="data:image/png;base64,')
    assert page.count('src="data:image/png;base64,') > 0


def test_the_tables_group_coverage_is_not_the_reports_coverage_and_says_so(
    demo, monkeypatch, capsys
):
    """The terminal's "coverage" of a group was the share of captions naming any of its values;
    the report's per-group coverage is the mean over the group's concepts: two numbers, one
    name, for a reader comparing the two."""
    shown = printed(demo, monkeypatch, capsys)
    header = next(line for line in shown.splitlines() if "mention rate" in line)
    assert "group coverage" in header
    groups = pd.read_csv(demo.out / "groups.csv").set_index("group")
    concepts = pd.read_csv(demo.out / "coverage" / "concepts.csv")
    mean = concepts.groupby("group")["rate"].mean()
    row = next(line for line in shown.splitlines() if "│ Color " in line)
    # the table shows the share of captions naming any colour; the report, the mean per colour
    assert f"{groups.loc['Color', 'coverage']:.1%}" in row
    assert f"{mean['Color']:.1%}" not in row
    said = " ".join(shown.split())
    assert (
        "group coverage: the share of captions that name any of the group's values, right or "
        "wrong (groups.csv's coverage); the report's coverage of a group is the mean over its "
        "concepts" in said
    )

"""What a researcher typing `clipaudit theory run|check` settings wrong met (helper 144's review):
each mistake is refused before any training, in one line that names the flag, with exit code 2 and
no run folder left behind. No training here: reaching it fails the test."""

from __future__ import annotations

import re

import pytest

from clipaudit.errors import SettingsError
from clipaudit.theory import sweep
from clipaudit.theory.config import EvaluationSettings, Scenario, parse_seeds, training_profile


class Trained(Exception):
    """Raised where training would start: these tests must never train."""


@pytest.fixture
def no_training(monkeypatch):
    def refuse(folder, *args, **kwargs):
        # a unit of another scenario, as finished work: a rerun with other settings must then
        # refuse rather than start afresh (a folder of no finished work is replaced)
        folder.units.mkdir(parents=True, exist_ok=True)
        (folder.units / "earlier.json").write_text("{}", encoding="utf-8")
        raise Trained

    monkeypatch.setattr(sweep, "_train_and_evaluate", refuse)


def refused(in_process, out, *args: str) -> str:
    """The one line a refused command says; it must exit 2, train nothing and leave no folder."""
    code, _, stderr = in_process(*args, "--out", str(out), "-q")
    lines = stderr.strip().splitlines()
    assert code == 2, stderr
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert not out.exists()
    return lines[0]


RUN = ("theory", "run")
CHECK = ("theory", "check")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        # the range written backwards: the fix is the range turned round
        ((*RUN, "--selected", "5-1"), r"--selected.*'1-5'; got '5-1'"),
        ((*RUN, "--selected", "a"), r"--selected.*'1-5'.*got 'a'"),
        ((*RUN, "--selected", "1,1"), r"--selected.*each index once; got 1 more than once"),
        # the index stated once, not as "got '0' in '0'"; where the upper bound comes from named
        ((*RUN, "--selected", "0"), r"--selected.*1\.\.10 \(--n-semantics 10\); got '0'$"),
        ((*RUN, "--selected", "1-11"), r"--selected.*1\.\.10 \(--n-semantics 10\); got '1-11'$"),
        ((*RUN, "--perturbed", "11"), r"--perturbed.*1\.\.10 \(--n-semantics 10\); got '11'$"),
        # both flags named, and both fixes
        (
            (*RUN, "--selected", "1-5", "--perturbed", "7"),
            r"\(--perturbed\) must lie inside the selected set 1-5 \(--selected\); got perturbed "
            r"indices 7 that the text never carries: add it to --selected or drop it from "
            r"--perturbed",
        ),
        ((*RUN, "--encoding-size", "0"), r"encoding_size.*>= 1; got 0: give --encoding-size"),
        ((*RUN, "--change-prob", "0"), r"change_prob.*got 0\.0.*--change-prob"),
        ((*RUN, "--n-semantics", "0"), r"n_semantics.*got 0: give --n-semantics"),
        ((*RUN, "--n-bins", "1"), r"n_bins.*got 1: give --n-bins"),
        ((*RUN, "--identified-threshold", "2"), r"got 2\.0: give --identified-threshold"),
        ((*RUN, "--margin", "1"), r"got 1\.0: give --margin"),
        ((*RUN, "--set", "temperature=-1"), r"temperature.*got -1: give --set temperature="),
        ((*RUN, "--batch-size", "1"), r"batch_size.*got 1: give --batch-size"),
        ((*RUN, "--set", "mixing=conditoned"), r"did you mean 'conditioned'.*--set mixing="),
        ((*RUN, "--set", "stpes=10"), r"unknown setting 'stpes'.*did you mean 'steps'"),
        ((*RUN, "--set", "steps=2.5"), r"steps must be an integer.*got 2\.5: give --set steps="),
        ((*RUN, "--profile", "quik"), r"unknown profile 'quik'.*did you mean 'quick'"),
        ((*CHECK, "--profile", "quik"), r"unknown profile 'quik'.*did you mean 'quick'"),
        # the paper's profile (100,001 steps of batch 6144) on the CPU by default ran for days
        ((*RUN, "--profile", "paper"), r"--profile paper.*GPU.*--device cuda.*--device cpu"),
        ((*CHECK, "--profile", "paper"), r"--profile paper.*GPU.*--device cuda.*--device cpu"),
        ((*CHECK, "--seeds", "2-"), r"--seeds: a range needs both ends, e.g. '2-5'; got '2-'"),
        ((*CHECK, "--seeds", "-1"), r"--seeds: seeds are 0 or more.*got '-1'"),
        ((*CHECK, "--seeds", " "), r"--seeds: expected a count.*got nothing"),
        (
            (*CHECK, "--seeds", "0"),
            r"--seeds.*got '0'.*seed 0 alone give --seeds 0, \(with its comma",
        ),
        ((*CHECK, "--seeds", "1,1"), r"--seeds: expected distinct seeds.*repeated: 1"),
        ((*CHECK, "--latents", ","), r"at least one latent mode.*--latents"),
        (
            (*CHECK, "--kinds", "selecton"),
            r"unknown sweep kind 'selecton' in --kinds.*did you mean 'selection'",
        ),
    ],
)
def test_a_mistyped_setting_is_one_line_naming_its_flag(
    in_process, tmp_path, no_training, args, says
):
    line = refused(in_process, tmp_path / "run", *args)
    assert line.startswith("error: ")
    assert re.search(says, line), line


def test_an_out_that_is_a_file_is_refused_and_kept(in_process, tmp_path, no_training):
    out = tmp_path / "notes.txt"
    out.write_text("mine", encoding="utf-8")
    code, _, stderr = in_process(*RUN, "--out", str(out), "-q")
    assert code == 2 and "is a file, not a folder" in stderr and "--out" in stderr
    assert out.read_text(encoding="utf-8") == "mine"


def test_the_paper_profile_runs_where_the_device_is_said(in_process, tmp_path, no_training):
    """`--device cpu` is a choice, not a slip: it goes on to training."""
    with pytest.raises(Trained):
        in_process(*RUN, "--profile", "paper", "--device", "cpu", "--out", str(tmp_path / "r"))
    with pytest.raises(Trained):
        in_process(*RUN, "--profile", "paper", "--set", "device=cpu", "--out", str(tmp_path / "s"))


def test_a_rerun_with_other_settings_is_refused_and_the_same_resumes(
    in_process, tmp_path, no_training
):
    out = tmp_path / "run"
    common = ("--out", str(out), "-q", "--selected", "1-3")
    with pytest.raises(Trained):
        in_process(*RUN, *common, "--steps", "5")
    code, _, stderr = in_process(*RUN, *common, "--steps", "6")
    assert code == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert "training.steps: 5 -> 6" in stderr and "--overwrite" in stderr
    with pytest.raises(Trained):  # the same settings resume
        in_process(*RUN, *common, "--steps", "5")


def test_integer_settings_may_be_written_with_an_exponent():
    from clipaudit.cli.theory import _overrides, _split

    training, evaluation = _split(_overrides(None, None, None, None, ["steps=2e3", "n_fit=2.0e3"]))
    assert training["steps"] == 2000 and type(training["steps"]) is int
    assert evaluation["n_fit"] == 2000 and type(evaluation["n_fit"]) is int


def test_seeds_by_name_keep_their_values():
    assert parse_seeds("3,2") == (3, 2)
    assert parse_seeds("0,") == (0,)
    assert parse_seeds("2") == 2


def test_the_python_messages_name_the_python_argument_too():
    # the example is the theorem's size: all 10 semantics selected, none perturbed
    with pytest.raises(SettingsError, match=r"encoding_size=10 in Scenario in Python"):
        Scenario(encoding_size=0)
    with pytest.raises(SettingsError, match=r"temperature=.* in TrainingSettings"):
        training_profile("quick", temperature=-1.0)
    with pytest.raises(SettingsError, match=r"mixing='conditioned' in TrainingSettings"):
        training_profile("quick", mixing="conditoned")
    with pytest.raises(SettingsError, match=r"margin=.* in EvaluationSettings"):
        EvaluationSettings(margin=2.0)
    # inspecting the paper's profile in Python is no run: not refused
    assert training_profile("paper").device == "cpu"

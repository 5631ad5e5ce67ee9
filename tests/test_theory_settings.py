"""`clipaudit theory`: checkpoints named by the run contract's own hash, integer settings written
as 1e3 or 2.0 on the command line, and messages that name their fix."""

from __future__ import annotations

import hashlib
import json

import pytest

from clipaudit.errors import RunFolderError, SettingsError
from clipaudit.runs import fingerprint
from clipaudit.theory.config import EvaluationSettings, Scenario, parse_seeds, training_profile
from clipaudit.theory.sweep import run_sweep
from clipaudit.theory.training import BatchedSimulation

# trains in well under a second: two chunks of 10 steps, a checkpoint after the first
TRAINING = training_profile(
    "quick", steps=20, batch_size=64, hidden_widths=(8,), chunk_steps=10, checkpoint_every=10
)
EVALUATION = EvaluationSettings(n_fit=200, n_val=100, n_test=100, n_prototypes=100, n_bins=3)
SCENARIOS = [Scenario(selected="1", n_semantics=3, n_modality=1)]


def _interrupted(out, monkeypatch):
    """A run stopped right after its first checkpoint was written; returns the checkpoint."""
    saved = []
    save = BatchedSimulation.save

    def save_then_stop(self, path):
        save(self, path)
        saved.append(path)
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(BatchedSimulation, "save", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            run_sweep(SCENARIOS, TRAINING, EVALUATION, out, progress=False)
    assert len(saved) == 1
    return saved[0]


def _loads(monkeypatch):
    """Every checkpoint a run tries to resume from, with whether it did."""
    tried = []
    load = BatchedSimulation.load

    def spy(self, path):
        tried.append((path.name, load(self, path)))
        return tried[-1][1]

    monkeypatch.setattr(BatchedSimulation, "load", spy)
    return tried


def test_a_groups_checkpoint_is_named_by_the_run_contracts_fingerprint_and_resumed(
    tmp_path, monkeypatch
):
    """sweep.py hashed the group's records with its own sha256 beside runs.fingerprint."""
    out = tmp_path / "run"
    checkpoint = _interrupted(out, monkeypatch)
    name = f"group-{fingerprint([s.to_dict() for s in SCENARIOS])}.pt"
    assert checkpoint == out / "checkpoints" / name and checkpoint.is_file()
    tried = _loads(monkeypatch)
    result = run_sweep(SCENARIOS, TRAINING, EVALUATION, out, progress=False)
    assert tried == [(name, True)]
    assert result.manifest["timings"]["groups"][0]["resumed_at_step"] == 10
    assert not (out / "checkpoints").exists()


def test_a_checkpoint_named_by_the_former_hash_is_ignored_and_removed(tmp_path, monkeypatch):
    """A run folder interrupted before the change holds group-<sha256>.pt: the resumed run trains
    the group from its seeds (checkpoints are a cache), and leaves no stray file behind."""
    out = tmp_path / "run"
    checkpoint = _interrupted(out, monkeypatch)
    record = [s.to_dict() for s in SCENARIOS]
    former = hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()
    checkpoint.rename(checkpoint.with_name(f"group-{former[:16]}.pt"))
    tried = _loads(monkeypatch)
    result = run_sweep(SCENARIOS, TRAINING, EVALUATION, out, progress=False)
    assert tried == [(f"group-{fingerprint(record)}.pt", False)]
    assert result.manifest["timings"]["groups"][0]["resumed_at_step"] == 0
    assert not (out / "checkpoints").exists()


def _set(*settings: str):
    from clipaudit.cli.theory import _overrides, _split

    return _split(_overrides(None, None, None, None, list(settings)))


@pytest.mark.parametrize(
    ("setting", "part", "key", "value"),
    [
        ("n_fit=1e3", 1, "n_fit", 1000),
        ("n_val=2.0", 1, "n_val", 2),
        ("kernel_components=1.5e2", 1, "kernel_components", 150),
        ("steps=2.0", 0, "steps", 2),
        ("batch_size=1.28E+2", 0, "batch_size", 128),
        ("group_size=8.0", 0, "group_size", 8),
        ("hidden_widths=[64.0,3e1]", 0, "hidden_widths", [64, 30]),
    ],
)
def test_an_integer_setting_written_as_a_whole_float_is_that_integer(setting, part, key, value):
    """`--set n_fit=1e3` was refused: 'n_fit must be an integer; got 1000.0'."""
    given = _set(setting)[part][key]
    assert given == value
    assert all(type(v) is int for v in (given if isinstance(given, list) else [given]))


def test_the_settings_take_integers_given_as_whole_floats_and_keep_floats_as_floats():
    training, evaluation = _set("steps=3e2", "n_fit=1e3", "temperature=2.0", "weight_decay=1e-1")
    assert training_profile("quick", **training).steps == 300
    assert EvaluationSettings(**evaluation).n_fit == 1000
    # a float setting stays a float, a text setting text
    assert training["temperature"] == 2.0 and type(training["temperature"]) is float
    assert _set("group_size=auto")[0] == {"group_size": "auto"}


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("n_fit=2.5", r"n_fit must be an integer.*; got 2\.5"),
        ("steps=1e400", r"steps must be an integer.*; got inf"),
        ("hidden_widths=[64,2.5]", r"hidden_widths must be integers.*; got \[64, 2\.5\]"),
    ],
)
def test_an_integer_setting_that_is_no_whole_number_is_refused_naming_it(setting, message):
    with pytest.raises(SettingsError, match=message):
        _set(setting)


def test_the_cli_passes_integers_given_as_1e3():
    from clipaudit.cli import main

    seen = {}

    def fake(*args, **kwargs):
        seen.update(kwargs)
        raise SystemExit(7)

    with pytest.MonkeyPatch.context() as patched:
        import clipaudit.theory

        patched.setattr(clipaudit.theory, "run_check", fake)
        with pytest.raises(SystemExit):
            main(["theory", "check", "--out", "unused", "--set", "n_test=5e2",
                  "--set", "steps=1e2"])  # fmt: skip
    assert seen["evaluation_overrides"] == {"n_test": 500}
    assert seen["training_overrides"]["steps"] == 100


# -- messages a newcomer met without their fix ---------------------------------------------------


def test_seeds_zero_says_how_to_give_seed_zero_alone():
    """`--seeds 0` (meaning seed 0) said only 'expected a count from 1 to 10000'."""
    with pytest.raises(SettingsError, match=r"for seed 0 alone give --seeds 0,"):
        parse_seeds("0")
    assert parse_seeds("0,") == (0,)


def test_hidden_widths_refused_says_how_to_write_them_on_the_command_line():
    """The message showed (128, 128), which --set reads as text; the command line takes a list."""
    with pytest.raises(SettingsError, match=r"--set hidden_widths=\[128,128\]"):
        training_profile("quick", **_set("hidden_widths=64")[0])


def test_results_generated_differently_name_the_python_argument_too(tmp_path):
    out = tmp_path / "run"
    run_sweep(SCENARIOS, TRAINING, EVALUATION, out, progress=False)
    other = [Scenario(selected="1", n_semantics=3, n_modality=1, encoding_size=2)]
    # the same name, another process: a result written by hand under the other's name
    (out / "results" / f"{SCENARIOS[0].name}.json").rename(
        out / "results" / f"{other[0].name}.json"
    )
    with pytest.raises(RunFolderError, match=r"--overwrite \(overwrite=True in Python\)"):
        run_sweep(other, TRAINING, EVALUATION, out, progress=False)


def test_encoders_too_large_for_the_memory_say_the_options_that_lower_them(tmp_path):
    """'lower hidden_widths, batch_size or group_size' named no option to lower them with."""
    training = training_profile("quick", hidden_widths=(10**6, 10**6), batch_size=10**5)
    with pytest.raises(
        SettingsError,
        match=r"lower hidden_widths \(--set hidden_widths=\[\.\.\.\]\), batch_size "
        r"\(--batch-size\) or group_size \(--set group_size=N\); training_overrides= in Python$",
    ):
        run_sweep(SCENARIOS, training, EVALUATION, tmp_path / "run", progress=False)


def test_too_few_prototypes_for_the_bins_says_how_to_give_more():
    with pytest.raises(SettingsError, match=r"or more prototypes \(--set n_prototypes=50\)$"):
        EvaluationSettings(n_prototypes=20, n_bins=5)

"""What a researcher checking the paper met using `clipaudit theory`: settings given twice, probe
sizes the command line could not change, settings given to the wrong part, and a check.md that
named its variables without saying what they are. No training here: each test is under a second."""

from __future__ import annotations

import pytest

from clipaudit.errors import SettingsError
from clipaudit.theory import config
from clipaudit.theory.config import EvaluationSettings, training_profile


def test_a_common_setting_given_twice_with_two_values_is_refused():
    """`--steps 100 --set steps=200` trained 200 steps without a word: the --set silently won."""
    from clipaudit.cli.theory import _overrides

    with pytest.raises(SettingsError, match=r"--steps 100 and --set steps=200"):
        _overrides(100, None, None, None, ["steps=200"])
    with pytest.raises(SettingsError, match=r"--device cpu and --set device=cuda"):
        _overrides(None, None, None, "cpu", ["device=cuda"])
    # the same value twice says one thing: taken
    assert _overrides(100, None, None, None, ["steps=100"])["steps"] == 100
    assert _overrides(None, None, 0.5, None, ["learning_rate=5e-1"])["learning_rate"] == 0.5


def test_probe_sizes_are_settings_of_the_evaluation():
    """The probe (20,000 fit samples, 1,500 Nystroem features) is most of a quick run's time, and
    no option reached it: `--set n_fit=2000` was an unknown training setting."""
    training, evaluation = config.split_settings(
        {"steps": 300, "temperature": 1.0, "n_fit": 2000, "kernel_components": 200}
    )
    assert training == {"steps": 300, "temperature": 1.0}
    assert evaluation == {"n_fit": 2000, "kernel_components": 200}
    assert training_profile("quick", **training).steps == 300


@pytest.mark.parametrize(
    ("key", "message"),
    [
        # the three with an option of their own: one way to give each
        ("n_bins", r"'n_bins' has its own option: give --n-bins"),
        ("margin", r"'margin' has its own option: give --margin"),
        ("identified_threshold", r"give --identified-threshold"),
        # the scenario's and the profile's are no training settings
        ("n_semantics", r"'n_semantics' is a setting of the scenario.*--n-semantics"),
        ("causal_dependence", r"--causal-dependence"),
        # theory check has no --seed: its seeds are --seeds
        ("seed", r"give --seed \(theory run\) or --seeds \(theory check\)$"),
        ("profile", r"'profile' is chosen by --profile"),
        # a misspelt evaluation setting is told the closest, as a training one is
        ("n_fitt", r"unknown setting 'n_fitt'.*did you mean 'n_fit'"),
        ("temprature", r"did you mean 'temperature'"),
    ],
)
def test_a_setting_of_the_wrong_part_says_where_it_belongs(key, message):
    with pytest.raises(SettingsError, match=message):
        config.split_settings({key: 1})


def test_the_evaluation_of_a_run_takes_the_probe_sizes():
    from clipaudit.theory.sweep import _evaluation

    evaluation = _evaluation(4, 0.7, 0.1, {"n_fit": 2000, "kernel_components": 200})
    assert evaluation == EvaluationSettings(
        n_bins=4, identified_threshold=0.7, margin=0.1, n_fit=2000, kernel_components=200
    )
    with pytest.raises(SettingsError, match=r"n_bins.*its own"):
        _evaluation(4, 0.7, 0.1, {"n_bins": 3})


def test_the_cli_passes_probe_sizes_to_the_run(monkeypatch, tmp_path):
    import clipaudit.theory
    from clipaudit.cli import main

    seen = {}

    def fake(*args, **kwargs):
        seen.update(kwargs)
        raise SystemExit(7)

    monkeypatch.setattr(clipaudit.theory, "run_scenario", fake)
    with pytest.raises(SystemExit) as exited:
        main(["theory", "run", "--out", str(tmp_path / "r"), "--steps", "50",
              "--set", "n_fit=2000", "--set", "temperature=1"])  # fmt: skip
    assert exited.value.code == 7
    assert seen["evaluation_overrides"] == {"n_fit": 2000}
    overrides = {k: v for k, v in seen["training_overrides"].items() if v is not None}
    assert overrides == {"steps": 50, "temperature": 1}

    monkeypatch.setattr(clipaudit.theory, "run_check", fake)
    seen.clear()
    with pytest.raises(SystemExit):
        main(["theory", "check", "--out", str(tmp_path / "c"), "--set", "n_test=500"])
    assert seen["evaluation_overrides"] == {"n_test": 500}


def _summary() -> dict:
    row = dict(
        ceiling=0.0, x_linear=0.0, x_nonlinear=0.0, t_linear=0.0, t_nonlinear=0.0, agrees=True
    )
    variables = [
        dict(row, variable="s1", role="perturbed", predicted_identified=False),
        dict(row, variable="s2", role="invariant", predicted_identified=True, ceiling=1.0),
        dict(row, variable="s~1", role="perturbed-text", predicted_identified=False),
        dict(row, variable="m_x", role="image-specific", predicted_identified=False),
        dict(row, variable="m_t", role="text-specific", predicted_identified=False),
    ]
    return {
        "config": "ind_sel1-2_pert1_seed0",
        "description": "independent latents",
        "predicted_identified": ["s2"],
        "agrees": True,
        "variables": variables,
    }


def test_check_md_says_what_its_variables_and_columns_are():
    """check.md's tables name s~1, m_x, m_t, 'x nonlinear' and 'agrees' without saying what they
    are; a reader of the page alone could not tell s~1 from s1, or that both encoders are judged."""
    from clipaudit.theory.sweep import _settings_record, check_markdown

    settings = _settings_record(training_profile("quick"), EvaluationSettings())
    text = check_markdown([_summary()], settings)
    legend = text.split("## ind_sel1-2_pert1_seed0", 1)[0]
    for phrase in (
        "s~i: the value of s_i that the text carries",
        "m_x, m_t: the image-specific and text-specific latents",
        "x: the image encoder's representation, t: the text encoder's",
        "agrees: both encoders",
    ):
        assert phrase in legend, phrase


def test_check_md_says_the_probes_sizes():
    """A run probed on 2,000 samples (`--set n_fit=2000`) read in check.md as one of the default
    20,000: the provenance named the training only, and a small probe under-reads (README)."""
    from clipaudit.theory.sweep import _settings_record, check_markdown

    evaluation = EvaluationSettings(n_fit=2000, n_val=1000, n_test=500, kernel_components=200)
    settings = _settings_record(training_profile("quick"), evaluation)
    provenance = {
        "seeds": [0],
        "device": "cpu",
        "clipaudit_version": "0",
        "git_hash": "abc",
        "started": "now",
    }
    text = check_markdown([_summary()], settings, (), provenance).split("## Provenance", 1)[1]
    assert (
        "- probe: fit on 2000 samples, chosen on 1000, R^2 on 500; kernel ridge on 200 "
        "Nystroem features" in text
    )


def test_a_finished_run_is_reused_whatever_its_checkpoint_frequency(tmp_path):
    """How often checkpoints are written changes no number (they fall on the data's chunk
    boundaries), yet `--set checkpoint_every=100` on a finished or interrupted run was refused as
    "a different theory run" (the world's training already leaves it out of its identity)."""
    import dataclasses

    from clipaudit.theory import Scenario, run_sweep

    scenario = Scenario(n_semantics=2, n_modality=1)
    training = training_profile(
        "quick", steps=20, batch_size=64, hidden_widths=(16,), checkpoint_every=10
    )
    evaluation = EvaluationSettings(
        n_fit=200, n_val=100, n_test=100, n_prototypes=100, n_bins=3, kernel_components=50
    )
    first = run_sweep([scenario], training, evaluation, tmp_path / "r", progress=False)
    again = run_sweep(
        [scenario],
        dataclasses.replace(training, checkpoint_every=5),
        evaluation,
        tmp_path / "r",
        progress=False,
    )
    assert again.timings["groups"] == []  # nothing trained again
    assert again.r2.equals(first.r2)


def test_theory_run_says_which_configurations_its_folder_holds_besides_its_tables(
    monkeypatch, tmp_path, capsys
):
    """A folder reused for another configuration keeps the earlier ones in results/ (a check
    reuses them) while its tables show only this one: said, not left for a reader to miss."""
    from types import SimpleNamespace

    import clipaudit.theory
    from clipaudit.cli import main

    out = tmp_path / "run"
    (out / "results").mkdir(parents=True)

    def fake_run(folder, scenario, **options):
        (folder / "results" / f"{scenario.name}.json").write_text("{}")
        return SimpleNamespace(failed=[])

    monkeypatch.setattr(clipaudit.theory, "run_scenario", fake_run)
    monkeypatch.setattr(clipaudit.theory, "summarise", lambda result: [_summary()])
    args = ["theory", "run", "--out", str(out), "--quiet", "--perturbed", "1"]
    main([*args, "--selected", "1-2"])
    assert "trained into this folder earlier" not in capsys.readouterr().out
    main([*args, "--selected", "1-3"])
    printed = " ".join(capsys.readouterr().out.split())
    assert (
        "the tables are this configuration's; 1 other trained into this folder earlier "
        "(ind_sel1-2_pert1_seed0) stay in results/ and are reused when run again"
    ) in printed

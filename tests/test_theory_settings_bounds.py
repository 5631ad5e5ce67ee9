"""Probe sizes too small to give a valid result are refused when the settings are read, before any
training: `theory run --set n_fit=1` trained, then judged a probe fitted on one sample (0/10
agree). The minima are the probe's own: an R^2 needs two samples, and the kernel probe tells the
points of a d-dimensional representation apart only from d + 1 landmark samples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.preprocessing import StandardScaler

from clipaudit.errors import SettingsError
from clipaudit.theory.config import EvaluationSettings, Scenario, training_profile
from clipaudit.theory.evaluation import ProbeSplit, probe_r2
from clipaudit.theory.sweep import run_scenario, run_sweep

# a 3-dimensional representation (every one of 3 semantics identified), trained in a second
SCENARIO = Scenario(n_semantics=3, n_modality=1)
TRAINING = training_profile(
    "quick", steps=20, batch_size=64, hidden_widths=(8,), chunk_steps=10, checkpoint_every=10
)
CLI_SCENARIO = ["--n-semantics", "3", "--n-modality", "1"]
CLI_TRAINING = ["--steps", "20", "--batch-size", "64", "--set", "hidden_widths=[8]",
                "--set", "chunk_steps=10", "--set", "checkpoint_every=10"]  # fmt: skip
# the smallest accepted sizes for SCENARIO, each just above its refused value below
SMALLEST = {"n_fit": 4, "kernel_components": 4, "n_val": 2, "n_test": 2, "n_prototypes": 20}
ROOMY = {"n_fit": 200, "n_val": 100, "n_test": 100, "n_prototypes": 100}

# (setting, refused value, the minimum the message names, a word of its reason)
WHATEVER_THE_SCENARIO = [
    ("n_fit", 1, 2, "landmark"),
    ("kernel_components", 1, 2, "landmark"),
    ("n_val", 1, 2, "R\\^2 needs two samples"),
    ("n_test", 1, 2, "R\\^2 needs two samples"),
]
FOR_SCENARIO = [  # its representation has 3 dimensions
    ("n_fit", 3, 4, "landmark"),
    ("kernel_components", 3, 4, "landmark"),
]


def _message(name: str, minimum: int, why: str) -> str:
    return rf"{name} must be >= {minimum} \(.*{why}.*\); got .*: give --set {name}={minimum} "


@pytest.mark.parametrize(("name", "value", "minimum", "why"), WHATEVER_THE_SCENARIO)
def test_a_size_too_small_for_any_probe_is_refused_by_the_settings(name, value, minimum, why):
    with pytest.raises(SettingsError, match=_message(name, minimum, why)):
        EvaluationSettings(**{name: value})
    assert getattr(EvaluationSettings(**{name: minimum}), name) == minimum


@pytest.mark.parametrize(("name", "value", "minimum", "why"), FOR_SCENARIO)
def test_a_size_too_small_for_the_representation_is_refused_before_training(
    name, value, minimum, why, tmp_path
):
    evaluation = EvaluationSettings(n_bins=2, **{**ROOMY, name: value})
    out = tmp_path / "run"
    with pytest.raises(
        SettingsError, match=_message(name, minimum, f"{why}.*{minimum} for the 3 outputs")
    ):
        run_sweep([SCENARIO], TRAINING, evaluation, out, progress=False)
    with pytest.raises(SettingsError, match=_message(name, minimum, why)):
        run_scenario(out, SCENARIO, training_overrides={"steps": 20},
                     evaluation_overrides={**ROOMY, name: value}, n_bins=2)  # fmt: skip
    assert not out.exists()


def test_the_widest_representation_of_a_sweep_sets_the_minimum(tmp_path):
    narrow, wide = Scenario(n_semantics=3, selected="1"), Scenario(n_semantics=3, encoding_size=6)
    evaluation = EvaluationSettings(n_bins=2, **{**ROOMY, "n_fit": 6})
    with pytest.raises(
        SettingsError, match=r"n_fit must be >= 7 .*the 6 outputs of ind_sel1-3_enc6_ns3nm5_seed0's"
    ):
        run_sweep([narrow, wide], TRAINING, evaluation, tmp_path / "run", progress=False)


def _mirror_r2(n_fit: int, d: int, seed: int) -> float:
    """Nonlinear R^2 of the signed distance to the hyperplane through the first d of ``n_fit``
    fit samples, on test points and their mirror images across it."""
    rng = np.random.default_rng(seed)
    fit = rng.normal(size=(n_fit, d))
    scaler = StandardScaler().fit(fit)  # the probe standardises the representation so
    scaled = scaler.transform(fit)
    normal = np.linalg.svd(scaled[1:d] - scaled[0])[2][-1]

    def side(points: np.ndarray) -> np.ndarray:
        return ((points - scaled[0]) @ normal)[:, None]

    def mirrored_pairs(n: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        points = rng.normal(size=(n, d))
        mirrored = points - 2 * side(points) * normal
        both = np.concatenate([points, mirrored])
        return scaler.inverse_transform(both), {"side": side(both)}

    # d fit samples all lie on the hyperplane (side 0): random targets give the probe a fit
    targets = side(scaled) if n_fit > d else rng.normal(size=(n_fit, 1))
    split = ProbeSplit(
        fit=(fit, {"side": targets}), val=mirrored_pairs(20), test=mirrored_pairs(50)
    )
    return probe_r2(split, EvaluationSettings(n_fit=n_fit, n_val=40, n_test=100))["side"][1]


@pytest.mark.parametrize("seed", [0, 1])
def test_a_probe_fitted_on_as_many_samples_as_dimensions_cannot_tell_mirror_images_apart(seed):
    """Why d + 1: the kernel probe's features depend on a representation only through its
    distances to landmarks drawn from the fit sample. d of them lie on a hyperplane of R^d, and a
    point and its mirror image across it are equally far from each: a variable that tells them
    apart gets the same prediction for both, an R^2 of at most 0; one sample more tells them
    apart."""
    assert _mirror_r2(n_fit=3, d=3, seed=seed) <= 1e-9
    assert _mirror_r2(n_fit=4, d=3, seed=seed) > 0.25


@pytest.mark.parametrize(
    ("name", "value", "minimum"),
    [(name, value, minimum) for name, value, minimum, _ in WHATEVER_THE_SCENARIO + FOR_SCENARIO],
)
def test_the_cli_refuses_a_size_too_small_in_one_line(name, value, minimum, tmp_path, capsys):
    from clipaudit.cli import main

    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exited:
        main(["theory", "run", "--out", str(out), *CLI_SCENARIO, *CLI_TRAINING,
              "--set", f"{name}={value}", "-q"])  # fmt: skip
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "Traceback" not in error[0], error
    assert error[0].startswith(f"error: {name} must be >= {minimum} (")
    assert f"give --set {name}={minimum} " in error[0]
    assert not out.exists()


def test_the_cli_runs_the_smallest_accepted_sizes(tmp_path):
    """The library's run_scenario with them too: the CLI hands them on."""
    from clipaudit.cli import main

    out = tmp_path / "run"
    sizes = [f"--set={name}={value}" for name, value in SMALLEST.items()]
    try:
        main(["theory", "run", "--out", str(out), *CLI_SCENARIO, *CLI_TRAINING, *sizes,
              "--n-bins", "2", "-q"])  # fmt: skip
    except SystemExit as exited:  # 1: the probe disagrees with the theory, as it may here
        assert exited.code == 1
    r2 = pd.read_csv(out / "r2.csv")
    assert len(r2) and np.isfinite(r2[["r2_linear", "r2_nonlinear"]].to_numpy()).all()

"""The synthetic latent-variable module: settings, the generative process, the theory's ceilings,
batched training, and the check on configurations small enough for a test."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from itertools import pairwise

import numpy as np
import pytest
import torch

from clipaudit import zeroshot
from clipaudit.errors import RunFolderError, SettingsError
from clipaudit.runs import load_run
from clipaudit.theory import (
    EvaluationSettings,
    Scenario,
    run_check,
    run_scenario,
    run_sweep,
    training_profile,
)
from clipaudit.theory.config import (
    PROFILES,
    default_sweep,
    format_index_list,
    parse_index_list,
    parse_seeds,
)
from clipaudit.theory.evaluation import (
    ProbeSplit,
    _ridge_path,
    population_ceilings,
    population_r2,
    probe_r2,
)
from clipaudit.theory.generative import (
    MIXING_SLOPE,
    build_latent_model,
    build_mixing,
    invertible_mlp_weights,
    sample_latents,
    torch_generator,
    view_latents,
)
from clipaudit.theory.sweep import _with_legacy_settings
from clipaudit.theory.training import (
    BatchedSimulation,
    batch_whiten,
    same_modality_infonce,
    symmetric_infonce,
)

# Small enough to train in seconds, large enough to identify a 1-3 dimensional block (the quick
# profile's whitened outputs, at temperature 1: the thresholds of the tests below were set for it).
TINY = dict(n_semantics=3, n_modality=1)
TINY_TRAINING = training_profile(
    "quick",
    steps=400,
    batch_size=256,
    hidden_widths=(32, 32),
    lr_schedule="constant",
    temperature=1.0,
)
TINY_EVALUATION = EvaluationSettings(n_fit=800, n_val=400, n_test=800, n_prototypes=1000)
# for tests of determinism and bookkeeping, not of what is identified: a probe of a second
SMALL_EVALUATION = EvaluationSettings(n_fit=200, n_val=100, n_test=100, n_prototypes=100, n_bins=3)


# -- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1-5", (1, 2, 3, 4, 5)), ("1,2", (1, 2)), ("3,1-2", (1, 2, 3)), ("none", ()), ("", ())],
)
def test_index_lists_are_one_based_ranges(text, expected):
    assert parse_index_list(text, 10, "--selected") == expected
    if expected:
        assert parse_index_list(format_index_list(expected), 10, "x") == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "1-based"),
        ("11", "1..10"),
        ("1-x", "expected 1-based"),
        ("5-3", "low-high such as '3-5'; got '5-3'"),
        ("1,1", "more than once"),
    ],
)
def test_bad_index_lists_say_what_was_expected(text, message):
    with pytest.raises(SettingsError, match=message):
        parse_index_list(text, 10, "--selected")


@pytest.mark.parametrize("field", ["n_fit", "n_bins", "n_prototypes", "kernel_components"])
def test_evaluation_sample_sizes_must_be_integers(field):
    with pytest.raises(SettingsError, match=f"{field} must be an integer; got 1000.5"):
        EvaluationSettings(**{field: 1000.5})


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        # TypeErrors from a comparison, before
        ({"margin": "0.1"}, r"margin must be in \[0, 1\); got '0.1'"),
        ({"identified_threshold": None}, r"identified_threshold must be in \(0, 1\]; got None"),
        ({"kernel_gammas": 0.5}, r"kernel_gammas must be positive finite numbers.*; got 0.5$"),
        ({"ridge_alphas": ("1",)}, r"ridge_alphas must be positive finite numbers.*\('1',\)$"),
        # accepted, before: the probe failed after the training, or read every R^2 as 0
        ({"kernel_gammas": (1.0, math.inf)}, r"kernel_gammas must be .*; got \(1.0, inf\)$"),
        ({"ridge_alphas": (math.inf,)}, r"ridge_alphas must be positive finite numbers"),
        ({"identified_threshold": True}, r"identified_threshold must be in \(0, 1\]; got True"),
    ],
)
def test_evaluation_settings_of_a_wrong_type_or_not_finite_are_refused(setting, message):
    with pytest.raises(SettingsError, match=message):
        EvaluationSettings(**setting)
    # any sequence of numbers, numpy's included, as before
    settings = EvaluationSettings(kernel_gammas=np.logspace(-1, 0, 2), ridge_alphas=[np.int64(1)])
    assert (settings.kernel_gammas, settings.ridge_alphas) == ((0.1, 1.0), (1.0,))


def test_extreme_sizes_are_refused_at_once_not_after_hours_or_a_memory_error():
    # a range is checked before it is expanded: a trillion indices is never built
    with pytest.raises(SettingsError, match=r"must lie in 1..10 .*got '1-999999999999'"):
        parse_index_list("1-999999999999", 10, "--selected")
    with pytest.raises(SettingsError, match=r"must lie in 1..10 .*got '0-3'"):
        parse_index_list("0-3", 10, "--selected")
    # the mixings are square in n_semantics + n_modality: 300 + 5 would need 1.5 GB for a
    # conditioned mixing's 2000 draws alone
    with pytest.raises(
        SettingsError, match=r"n_semantics \+ n_modality is 305 \(300 \+ 5\); at most 256"
    ):
        Scenario(n_semantics=300)
    with pytest.raises(SettingsError, match=r"n_semantics \+ n_modality is 257 \(1 \+ 256\)"):
        Scenario(n_semantics=1, n_modality=256)
    assert Scenario(n_semantics=251).x_dim == 256  # the largest accepted
    assert Scenario(n_semantics=1, n_modality=0).invariant == (1,)  # one latent is a scenario
    with pytest.raises(SettingsError, match=r"encoding_size must be at most 256; got 1000000"):
        Scenario(encoding_size=1_000_000)
    # an R^2 of one sample is undefined: refused before training, not a TypeError after it
    for name in ("n_val", "n_test"):
        with pytest.raises(SettingsError, match=rf"{name} must be >= 2 \(an R\^2 needs two"):
            EvaluationSettings(**{name: 1})


def test_more_bins_than_the_prototypes_fill_say_how_many_fit():
    with pytest.raises(SettingsError, match=r"n_bins \(--n-bins\) 600 needs .* at most 500 bins"):
        EvaluationSettings(n_bins=600, n_prototypes=5000)


def test_bad_scenarios_fail_before_any_training():
    with pytest.raises(SettingsError, match="inside the selected set"):
        Scenario(selected="1-3", perturbed="2-4")
    with pytest.raises(SettingsError, match="encoding size 0"):
        Scenario(selected="1-2", perturbed="1-2")
    with pytest.raises(SettingsError, match="encoding_size must be an integer >= 1"):
        Scenario(encoding_size=0)
    with pytest.raises(SettingsError, match="n_semantics must be an integer >= 1"):
        Scenario(n_semantics=0)
    with pytest.raises(SettingsError, match="causal_dependence must be true or false; got 'no'"):
        Scenario(causal_dependence="no")
    with pytest.raises(SettingsError, match=r"change_prob must be in \(0, 1\]"):
        Scenario(perturbed="1", change_prob=1.5)
    with pytest.raises(SettingsError, match="did you mean 'cosine'"):
        training_profile("quick", lr_schedule="cosin")
    with pytest.raises(SettingsError, match="did you mean 'same-modality'"):
        training_profile("quick", negatives="same-modalty")
    with pytest.raises(SettingsError, match="final_temperature must be > 0"):
        training_profile("quick", final_temperature=0)
    with pytest.raises(SettingsError, match="unknown profile"):
        training_profile("fast")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        # --set reads YAML: device=3 is a number, negatives=[1] a list
        ("device", 3, "device must be 'cpu' or 'cuda' or 'cuda:N'; got 3"),
        ("device", "cuda:x", "device must be 'cpu' or 'cuda' or 'cuda:N'; got 'cuda:x'"),
        ("lr_schedule", 3, "lr_schedule must be 'constant' or 'cosine'; got 3"),
        ("negatives", [1], r"negatives must be .*; got \[1\]"),
        ("mixing", "orthogonl", r"mixing must be .*; got 'orthogonl' \(did you mean 'orthogonal'"),
        ("weight_decay", math.nan, "weight_decay must be a finite number >= 0; got nan"),
        ("weight_decay", math.inf, "weight_decay must be a finite number >= 0; got inf"),
        ("final_temperature", math.inf, "final_temperature must be > 0 and finite"),
        ("hidden_widths", 64, r"hidden_widths must be positive integers, .*; got 64"),
        ("mixing_condition_quantile", "x", r"mixing_condition_quantile must be in \(0, 1\]"),
    ],
)
def test_training_settings_of_a_wrong_type_or_not_finite_are_refused(key, value, message):
    with pytest.raises(SettingsError, match=message):
        training_profile("quick", **{key: value})


def test_cuda_devices_are_accepted_by_number():
    assert training_profile("quick", device="cuda:1").device == "cuda:1"


def test_the_default_sweep_is_the_papers_grid():
    sweep = default_sweep(seeds=2)
    assert len(sweep) == 2 * 2 * (10 + 9)
    assert len({s.name for s in sweep}) == len(sweep)
    selection = [s for s in sweep if not s.perturbed and not s.causal_dependence and s.seed == 0]
    assert [s.selected for s in selection] == [tuple(range(1, k + 1)) for k in range(1, 11)]
    perturbation = [s for s in sweep if s.perturbed and s.causal_dependence and s.seed == 1]
    assert [s.perturbed for s in perturbation] == [tuple(range(1, k + 1)) for k in range(1, 10)]
    assert all(s.representation_size == len(s.invariant) for s in sweep)


def test_scenarios_of_other_change_probabilities_have_other_names():
    def name(change_prob):
        return Scenario(perturbed="1", change_prob=change_prob).name

    # six significant digits named these alike, and a sweep of both refused one as a repeat
    assert name(0.9999999) == "ind_sel1-10_pert1_p0.9999999_seed0" != name(1.0)
    assert name(1 / 3) == "ind_sel1-10_pert1_p0.3333333333333333_seed0" != name(0.333333)
    # the names of earlier runs' results are kept
    assert [name(p) for p in (1.0, 0.5, 1e-05, 0.123456)] == [
        f"ind_sel1-10_pert1_p{p}_seed0" for p in ("1", "0.5", "1e-05", "0.123456")
    ]
    assert name(0.75) == "ind_sel1-10_pert1_seed0"


def test_a_repeated_scenario_is_found_in_one_pass_over_the_names(monkeypatch, tmp_path):
    # every comparison of two names counted: the check compared each name with every other
    # (names.count per name), hours for the 380,000 scenarios of a 10,000-seed sweep
    comparisons = 0

    class Name(str):
        __hash__ = str.__hash__

        def __eq__(self, other):
            nonlocal comparisons
            comparisons += 1
            return str.__eq__(self, other)

    sweep = default_sweep(seeds=20)
    sweep.append(sweep[100])
    plain_name = Scenario.name
    monkeypatch.setattr(Scenario, "name", property(lambda s: Name(plain_name.fget(s))))
    with pytest.raises(SettingsError, match=re.escape(f"scenario {plain_name.fget(sweep[100])!r}")):
        run_sweep(sweep, TINY_TRAINING, TINY_EVALUATION, tmp_path / "run", progress=False)
    assert comparisons <= len(sweep)  # pairwise, 761 names are over half a million
    assert not (tmp_path / "run").exists()


# -- the generative process -------------------------------------------------------------------


def test_selection_and_perturbation_reach_the_text_and_nothing_else():
    scenario = Scenario(
        selected="1,3,4", perturbed="3", change_prob=0.75, **{**TINY, "n_semantics": 5}
    )
    model = build_latent_model(scenario)
    latents = sample_latents(model, 40_000, torch_generator(0, "test"))
    z_x, z_t = view_latents(scenario, latents)
    assert z_x.shape == (40_000, scenario.x_dim) == (40_000, 6)
    assert z_t.shape == (40_000, scenario.t_dim) == (40_000, 4)
    # the image carries s and m_x; the text s~ at the selected indices 1, 3, 4 and then m_t
    assert torch.equal(z_x, torch.cat([latents.s, latents.m_x], 1))
    assert torch.equal(z_t[:, [0, 2]], latents.s[:, [0, 3]])  # s1 and s4: selected, not perturbed
    assert torch.equal(z_t[:, 3:], latents.m_t)
    changed = latents.changed.numpy()
    assert not changed[:, [0, 1, 3, 4]].any()
    rate = changed[:, 2].mean()
    assert abs(rate - 0.75) < 4 * np.sqrt(0.75 * 0.25 / 40_000)
    differs = (z_t[:, 1] != latents.s[:, 2]).numpy()
    assert np.array_equal(differs, changed[:, 2])
    faithful = sample_latents(model, 1000, torch_generator(0, "test"), perturb=False)
    assert torch.equal(faithful.s_tilde, faithful.s)


def test_the_perturbation_covariance_is_the_one_chosen():
    scenario = Scenario(
        selected="1-4",
        perturbed="1-3",
        change_prob=1.0,
        causal_dependence=True,
        seed=2,
        **{**TINY, "n_semantics": 4},
    )
    models = {
        choice: build_latent_model(dataclasses.replace(scenario, perturbation_covariance=choice))
        for choice in ("semantics", "identity", "wishart")
    }
    sigma_s = models["semantics"].sigma_s
    assert np.array_equal(models["semantics"].sigma_a, sigma_s)  # the paper's code: one draw
    assert np.array_equal(models["identity"].sigma_a, np.eye(4))
    assert not np.allclose(models["wishart"].sigma_a, sigma_s)
    for model in models.values():  # the choice changes Sigma_a and nothing else
        assert np.array_equal(model.sigma_s, sigma_s)
        assert np.array_equal(model.sigma_mx, models["semantics"].sigma_mx)
    # every perturbed index changes (change_prob 1): s~ - s over indices 1-3 is eps ~ N(0, Sigma_a)
    for model in models.values():
        latents = sample_latents(model, 100_000, torch_generator(0, "eps"))
        eps = (latents.s_tilde - latents.s).double().numpy()
        expected = model.sigma_a[:3, :3]
        assert np.allclose(np.cov(eps[:, :3].T), expected, atol=0.05 * np.abs(expected).max())
        assert not eps[:, 3].any()
    assert Scenario(perturbed="1", perturbation_covariance="wishart").name == (
        "ind_sel1-10_pert1_eps-wishart_seed0"
    )
    with pytest.raises(
        SettingsError, match=r"perturbation_covariance .* got 'semantic'.*semantics"
    ):
        Scenario(perturbation_covariance="semantic")


def test_mixings_are_invertible_and_conditioned():
    rng = np.random.default_rng(0)
    weights, conditions = invertible_mlp_weights(6, 3, "orthogonal", 0.001, rng)
    assert np.allclose(conditions, 1.0)
    assert all(np.allclose(w.T @ w, np.eye(6)) for w in weights)
    _, threshold_conditions = invertible_mlp_weights(6, 3, "conditioned", 0.05, rng)
    pool = rng.standard_normal((2000, 6, 6))
    pool /= np.linalg.norm(pool, axis=-2, keepdims=True)
    assert max(threshold_conditions) <= np.quantile(np.linalg.cond(pool), 0.1)
    # invert the leaky-ReLU MLP layer by layer: x determines z exactly
    mixing = build_mixing(Scenario(**TINY), 3, "conditioned", 0.05)
    z = torch.randn(500, 4, generator=torch.Generator().manual_seed(1))
    x = z
    for index, weight in enumerate(mixing.x_weights):
        x = x @ weight
        if index < 2:
            x = torch.nn.functional.leaky_relu(x, MIXING_SLOPE)
    recovered = x.double()
    for index, weight in reversed(list(enumerate(mixing.x_weights))):
        if index < 2:
            recovered = torch.where(recovered >= 0, recovered, recovered / MIXING_SLOPE)
        recovered = recovered @ torch.linalg.inv(weight.double())
    assert torch.allclose(recovered.float(), z, atol=1e-4)


def test_population_ceiling_matches_the_closed_form_and_a_regression():
    # two standardised Gaussians with correlation rho: R^2 of one from the other is rho^2
    rho = 0.6
    sigma = np.array([[1.0, rho], [rho, 1.0]])
    assert population_r2(sigma, 1, [0]) == pytest.approx(rho**2)
    assert population_r2(sigma, 1, [0], extra_variance=1.0) == pytest.approx(rho**2 / 2)
    assert population_r2(sigma, 1, []) == 0.0

    scenario = Scenario(
        selected="1-6",
        perturbed="1-2",
        causal_dependence=True,
        seed=3,
        **{**TINY, "n_semantics": 6},
    )
    model = build_latent_model(scenario)
    ceilings = population_ceilings(model)
    latents = sample_latents(model, 200_000, torch_generator(0, "ceiling"))
    s, s_tilde = latents.s.double().numpy(), latents.s_tilde.double().numpy()
    invariant = s[:, 2:]
    for name, target in (
        ("s1", s[:, 0]),
        ("s2", s[:, 1]),
        ("s~1", s_tilde[:, 0]),
        ("s~2", s_tilde[:, 1]),
    ):
        design = np.column_stack([invariant, np.ones(len(target))])
        residual = target - design @ np.linalg.lstsq(design, target, rcond=None)[0]
        empirical = 1 - residual.var() / target.var()
        assert ceilings[name] == pytest.approx(empirical, abs=0.01), name
    assert all(ceilings[f"s{i}"] == 1.0 for i in range(3, 7))
    assert ceilings["m_x"] == ceilings["m_t"] == 0.0
    independent = population_ceilings(
        build_latent_model(dataclasses.replace(scenario, causal_dependence=False))
    )
    assert independent["s1"] == independent["s~2"] == 0.0


def test_the_ridge_path_is_scikit_learns_ridge_at_every_alpha():
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(0)
    features, targets = rng.normal(size=(300, 20)), rng.normal(size=(300, 3)) + 2.0
    evaluated = rng.normal(size=(50, 20))
    alphas = (1e-2, 1.0, 30.0)
    for alpha, (predicted,) in zip(
        alphas, _ridge_path(features, targets, [evaluated], alphas), strict=True
    ):
        expected = Ridge(alpha=alpha).fit(features, targets).predict(evaluated)
        np.testing.assert_allclose(predicted, expected, rtol=1e-7, atol=1e-9)


def test_the_probe_recovers_an_invertible_nonlinear_code_and_nothing_else():
    # rep = (sinh z1, z2 + z1^2 / 2) is invertible; linearly, R^2 of z2 is cov^2 / var = 1 / 1.5
    rng = np.random.default_rng(1)
    n = {"fit": 3000, "val": 1000, "test": 2000}
    parts = {}
    for part, size in n.items():
        z, noise = rng.normal(size=(size, 2)), rng.normal(size=(size, 1))
        rep = np.column_stack([np.sinh(z[:, 0]), z[:, 1] + z[:, 0] ** 2 / 2])
        parts[part] = (rep, {"z1": z[:, :1], "z2": z[:, 1:], "noise": noise})
    settings = EvaluationSettings(
        n_fit=n["fit"], n_val=n["val"], n_test=n["test"], kernel_components=500
    )
    r2 = probe_r2(ProbeSplit(**parts), settings)
    assert r2["z1"][1] > 0.97 and r2["z2"][1] > 0.97
    assert r2["z2"][0] == pytest.approx(1 / 1.5, abs=0.05)
    assert abs(r2["noise"][0]) < 0.01 and abs(r2["noise"][1]) < 0.02


# -- training ---------------------------------------------------------------------------------


def test_batch_whitening_decorrelates_each_scenario_and_keeps_padding_zero():
    generator = torch.Generator().manual_seed(0)
    mixing = torch.tensor([[2.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.5, 0.5, 1.0]])
    outputs = torch.randn(2, 4000, 3, generator=generator) @ mixing.T + 5.0
    outputs[1, :, 2] = 0.0  # a scenario with a 2-dimensional representation, zero-padded to 3
    whitened = batch_whiten(outputs)
    assert torch.allclose(whitened[0].T.cov(), torch.eye(3), atol=1e-3)
    assert torch.allclose(whitened[1, :, :2].T.cov(), torch.eye(2), atol=1e-3)
    assert torch.count_nonzero(whitened[1, :, 2]) == 0
    assert torch.allclose(whitened.mean(1), torch.zeros(2, 3), atol=1e-4)


def test_the_temperature_moves_along_a_half_cosine_or_stays_fixed():
    scenario = Scenario(selected="1-2", **TINY)
    moving = BatchedSimulation(
        [scenario], training_profile("quick", steps=100, temperature=1.0, final_temperature=3.0)
    )
    assert [moving.temperature_at(step) for step in (0, 50, 100, 150)] == pytest.approx(
        [1.0, 2.0, 3.0, 3.0]
    )
    assert moving.temperature_at(25) == pytest.approx(3.0 - 2.0 * (1 + math.cos(math.pi / 4)) / 2)
    # a temperature given alone is fixed, whatever the profile's schedule
    fixed = training_profile("quick", temperature=0.5)
    assert PROFILES["quick"].final_temperature is not None and fixed.final_temperature is None
    assert BatchedSimulation([scenario], fixed).temperature_at(1000) == 0.5


def test_infonce_equals_cross_entropy_in_both_directions():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 32, 3, generator=generator), torch.randn(2, 32, 3, generator=generator)
    targets = torch.arange(32)
    for index in range(2):
        logits = -(torch.cdist(a[index], b[index]) ** 2) / 0.5
        expected = 0.5 * (
            torch.nn.functional.cross_entropy(logits, targets)
            + torch.nn.functional.cross_entropy(logits.T, targets)
        )
        assert symmetric_infonce(a, b, 0.5)[index] == pytest.approx(float(expected), rel=1e-5)


def test_same_modality_loss_follows_daunhawer_et_al_term_by_term():
    # LpSimCLRLoss with alpha 0.5: per anchor, the pair's distance plus the log-mean-exp over the
    # anchor's distances to the other samples of its modality and to its positive
    generator = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 16, 3, generator=generator), torch.randn(2, 16, 3, generator=generator)
    tau = 0.5
    for index in range(2):
        u, v = a[index].double(), b[index].double()
        per_anchor = []
        for i in range(16):
            positive = float(((u[i] - v[i]) ** 2).sum()) / tau
            sides = []
            for own in (u, v):
                values = [-float(((own[i] - own[j]) ** 2).sum()) / tau for j in range(16) if j != i]
                values.append(-positive)
                sides.append(math.log(sum(math.exp(x) for x in values) / len(values)))
            per_anchor.append(positive + 0.5 * (sides[0] + sides[1]))
        expected = sum(per_anchor) / 16
        assert same_modality_infonce(a, b, tau)[index] == pytest.approx(expected, rel=1e-5)


def _trained(scenarios, steps=30, **settings):
    simulation = BatchedSimulation(
        scenarios, dataclasses.replace(TINY_TRAINING, steps=steps, chunk_steps=10, **settings)
    )
    simulation.train()
    return simulation


def test_training_together_computes_what_training_alone_computes():
    # unwhitened: whitened training is compared one step at a time (the test after this one)
    first = Scenario(selected="1", **TINY)  # x 4, t 2, representation 1
    second = Scenario(selected="1-3", perturbed="1", n_semantics=4, n_modality=2, seed=5)  # 6, 5, 2
    together = _trained([first, second], whiten_outputs=False)
    alone = [_trained([s], whiten_outputs=False) for s in (first, second)]
    z = torch.randn(64, 6, generator=torch.Generator().manual_seed(2))
    for index, single in enumerate(alone):
        scenario = [first, second][index]
        x, t = z[:, : scenario.x_dim], z[:, : scenario.t_dim]
        for a, b in zip(together.encode(index, x, t), single.encode(0, x, t), strict=True):
            assert torch.allclose(a, b, atol=1e-4)
    # every padded block of every layer of both encoders is still exactly zero
    for stack in (together.f_x, together.f_t):
        for index, sizes in enumerate(stack.sizes):
            for weight, bias, (n_in, n_out) in zip(
                stack.weights, stack.biases, pairwise(sizes), strict=True
            ):
                assert torch.count_nonzero(weight[index, n_in:, :]) == 0
                assert torch.count_nonzero(weight[index, :, n_out:]) == 0
                assert torch.count_nonzero(bias[index, :, n_out:]) == 0


def test_whitened_losses_and_gradients_of_a_group_are_each_scenarios_own():
    # compared on one step: whitening ignores the outputs' shift and (lower-triangular) scale, so
    # their gradients are rounding noise, which Adam's normalised steps turn into full-size updates
    first = Scenario(selected="1", **TINY)
    second = Scenario(selected="1-3", perturbed="1", n_semantics=4, n_modality=2, seed=5)
    training = dataclasses.replace(TINY_TRAINING, whiten_outputs=True)

    def first_step(scenarios):
        simulation = BatchedSimulation(scenarios, training)
        x, t = simulation._training_chunk(1)
        image, text = batch_whiten(simulation.f_x(x[:, 0])), batch_whiten(simulation.f_t(t[:, 0]))
        losses = symmetric_infonce(image, text, training.temperature)
        losses.sum().backward()
        return losses.detach(), simulation.parameters

    together_losses, together = first_step([first, second])
    for index, scenario in enumerate((first, second)):
        losses, alone = first_step([scenario])
        assert together_losses[index] == pytest.approx(float(losses[0]), rel=1e-5)
        for grouped, single in zip(together, alone, strict=True):
            block = grouped.grad[index][tuple(slice(0, n) for n in single.grad.shape[1:])]
            assert torch.allclose(block, single.grad[0], rtol=1e-3, atol=1e-5)


def test_whitened_encoders_encode_with_population_statistics():
    scenario = Scenario(selected="1-3", perturbed="1", **TINY)
    simulation = _trained([scenario], whiten_outputs=True)
    latents = sample_latents(simulation.models[0], 20_000, torch_generator(7, "fresh"))
    for rep in simulation.encode(0, *simulation.views(0, *view_latents(scenario, latents))):
        assert torch.allclose(rep.T.cov(), torch.eye(2), atol=0.05)
        assert torch.allclose(rep.mean(0), torch.zeros(2), atol=0.05)


def test_a_killed_run_resumes_from_its_checkpoint_to_the_same_weights(tmp_path):
    scenario = Scenario(selected="1-2", perturbed="1", **TINY)
    training = dataclasses.replace(
        TINY_TRAINING,
        steps=40,
        chunk_steps=10,
        checkpoint_every=10,
        lr_schedule="cosine",
        final_temperature=3.0,  # resumed mid-schedule
    )
    straight = BatchedSimulation([scenario], training)
    straight.train(log_every=5)

    def interrupt(step: int, losses: list[float]) -> None:
        if step == 25:
            raise KeyboardInterrupt

    killed = BatchedSimulation([scenario], training)
    with pytest.raises(KeyboardInterrupt):
        killed.train(checkpoint=tmp_path / "group.pt", on_steps=interrupt, log_every=5)
    resumed = BatchedSimulation([scenario], training)
    assert resumed.load(tmp_path / "group.pt") and resumed.step == 20
    resumed.train(log_every=5)
    for a, b in zip(straight.parameters, resumed.parameters, strict=True):
        assert torch.equal(a, b)
    assert straight.loss_log == resumed.loss_log


def test_encoders_too_large_for_the_memory_are_refused_before_the_folder_is_made(tmp_path):
    """They failed with the allocator's traceback (4 TB asked for) once training began."""
    scenario = Scenario(selected="1-2", **TINY)  # x: 3 + 1 inputs, t: 2 + 1, 2 outputs
    training = dataclasses.replace(TINY_TRAINING, hidden_widths=(10**6, 10**6), batch_size=256)
    # per encoder: weights, gradients and two moments of every weight, a batch's activations
    weights = {n: n * 10**6 + 10**12 + 10**6 * 2 for n in (4, 3)}
    activations = {n: 256 * (n + 2 * 10**6 + 2) for n in (4, 3)}
    gib = 4 * sum(4 * weights[n] + activations[n] for n in (4, 3)) / 2**30
    with pytest.raises(
        SettingsError,
        match=rf"training 1 configuration\(s\) at once needs more than {gib:,.1f} GiB "
        r"\(hidden_widths \[1000000, 1000000\], batch_size 256\), and cpu has [\d,.]+ GiB; lower",
    ):
        run_sweep([scenario], training, TINY_EVALUATION, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def _trained_group(tmp_path):
    """A group of one scenario trained 20 steps, and its checkpoint saved at ``group.pt``."""
    scenario = Scenario(selected="1-2", perturbed="1", **TINY)
    training = dataclasses.replace(TINY_TRAINING, steps=20, chunk_steps=10, checkpoint_every=10)
    straight = BatchedSimulation([scenario], training)
    straight.train()
    saved = tmp_path / "group.pt"
    straight.save(saved)
    return scenario, training, straight, saved


def test_a_damaged_checkpoint_is_no_progress_and_the_group_trains_from_its_seeds(tmp_path):
    """A checkpoint cut short (a copy that stopped, a bad disk) was a traceback at resume."""
    scenario, training, straight, saved = _trained_group(tmp_path)
    whole = saved.read_bytes()
    for damaged in (whole[: len(whole) // 2], b"", b"not a checkpoint"):
        saved.write_bytes(damaged)
        fresh = BatchedSimulation([scenario], training)
        assert not fresh.load(saved) and fresh.step == 0
    torch.save([1, 2], saved)  # readable, but no state of a group
    assert not BatchedSimulation([scenario], training).load(saved)
    fresh.train()  # from step 0: the same weights as the uninterrupted training
    for a, b in zip(straight.parameters, fresh.parameters, strict=True):
        assert torch.equal(a, b)


# -- the check, end to end --------------------------------------------------------------------


def _check_scenarios() -> list[Scenario]:
    """Selection {1}: only s1 reaches the text; perturbation {1} of {1, 2}: only s2 is invariant."""
    return [
        Scenario(selected="1", **TINY),
        Scenario(selected="1-2", perturbed="1", change_prob=1.0, **TINY),
    ]


@pytest.fixture(scope="module")
def tiny_check(tmp_path_factory):
    out = tmp_path_factory.mktemp("theory")
    return run_sweep(_check_scenarios(), TINY_TRAINING, TINY_EVALUATION, out, progress=False)


QUICK_TRAINING = dataclasses.replace(TINY_TRAINING, steps=20)


@pytest.fixture(scope="module")
def quick_check(tmp_path_factory):
    """tiny_check's scenarios, trained 20 steps and probed small: a run folder in a second, for
    the tests of what a damaged or edited result makes the next run compute again (each of which
    trains and probes it again), not of what is identified."""
    out = tmp_path_factory.mktemp("quick-theory")
    return run_sweep(_check_scenarios(), QUICK_TRAINING, SMALL_EVALUATION, out, progress=False)


def _r2(result, config, encoder, variable):
    rows = result.r2[(result.r2["config"] == config) & (result.r2["encoder"] == encoder)]
    return rows.set_index("variable").loc[variable]


def test_the_identified_block_is_exactly_the_invariant_semantics(tiny_check):
    selection, perturbation = (s.name for s in tiny_check.scenarios)
    for encoder in ("x", "t"):
        assert _r2(tiny_check, selection, encoder, "s1")["r2_nonlinear"] >= 0.85
        assert _r2(tiny_check, perturbation, encoder, "s2")["r2_nonlinear"] >= 0.85
        for config, variable in (
            (selection, "s2"),
            (selection, "s3"),
            (perturbation, "s1"),
            (perturbation, "s~1"),
            (perturbation, "s3"),
            (selection, "m_x"),
        ):
            assert _r2(tiny_check, config, encoder, variable)["r2_nonlinear"] <= 0.15, (
                config,
                variable,
            )
    assert tiny_check.failed == []


def test_a_run_folder_holds_the_audit_tables(tiny_check):
    import pandas as pd

    out = tiny_check.out
    r2 = pd.read_csv(out / "r2.csv")
    assert list(r2.columns[:8]) == [
        "config",
        "encoder",
        "variable",
        "r2_linear",
        "r2_nonlinear",
        "ceiling",
        "predicted_identified",
        "agrees",
    ]
    assert len(r2) == 2 * (5 + 6)  # s1..s3, m_x, m_t (+ s~1 for the perturbed run), per encoder
    groups = pd.read_csv(out / "zeroshot" / "groups.csv")
    assert list(groups.columns) == zeroshot.GROUP_COLUMNS  # the OpenCLIP audit's own table
    coverage = pd.read_csv(out / "coverage" / "groups.csv").set_index(["model", "group"])
    selection, perturbation = (s.name for s in tiny_check.scenarios)
    # coverage: share of texts carrying s_i unperturbed (change_prob 1 for the perturbed s1)
    assert coverage.loc[(selection, "s1"), "rate"] == 1.0
    assert coverage.loc[(selection, "s2"), "rate"] == 0.0
    assert coverage.loc[(perturbation, "s1"), "rate"] == 0.0
    assert coverage.loc[(perturbation, "s2"), "rate"] == 1.0
    awareness = groups.set_index(["model", "group"])["macro_f1"]
    assert awareness[(selection, "s1")] > 0.6 > 0.35 > awareness[(selection, "s2")]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["training"]["steps"] == TINY_TRAINING.steps
    assert manifest["verdicts"] == {selection: True, perturbation: True}
    for figure in ("r2_x.png", "r2_t.png", "coverage_awareness.png"):
        assert (out / "figures" / figure).stat().st_size > 1000
    assert "2 of 2 configurations agree" in (out / "check.md").read_text()
    loaded = load_run(out)
    assert loaded.verdicts == tiny_check.verdicts and loaded.r2.equals(tiny_check.r2)
    # shown compactly in Jupyter, as the other runs are
    assert repr(loaded) == f"SweepResult({str(out)!r}: 2 scenario(s), 2 agreeing with the theory)"
    shown = loaded._repr_html_()
    assert len(shown) < 2000 and shown.count("<tr") == 3  # a header and the two scenarios


def test_margins_are_given_per_seed_and_latent_mode(tiny_check):
    from clipaudit.theory.sweep import margins

    (row,) = margins(tiny_check)
    r2 = tiny_check.r2
    identified = r2[r2["predicted_identified"]]["r2_nonlinear"]
    others = r2[~r2["predicted_identified"]]
    assert row["seed"] == 0 and row["latents"] == "independent"
    assert (row["n_configurations"], row["n_agree"]) == (2, 2)
    assert row["lowest_identified_r2"] == identified.min()
    assert row["largest_excess_over_ceiling"] == (others["r2_nonlinear"] - others["ceiling"]).max()
    assert "| 0 | independent | 2/2 |" in (tiny_check.out / "check.md").read_text()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2", 2), ("2,3", (2, 3)), ("2-4", (2, 3, 4)), ("7,", (7,)), (" 0, 5 ", (0, 5))],
)
def test_seeds_are_a_count_or_explicit_seeds(text, expected):
    assert parse_seeds(text) == expected
    if isinstance(expected, tuple):
        assert [s.seed for s in default_sweep(seeds=expected, kinds=["perturbation"])][
            ::18
        ] == list(expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "a count from 1 to 10000"),
        ("99999999999999999999", "a count from 1 to 10000"),
        ("two", "expected a count"),
        ("3,3", "repeated: 3"),
        ("4294967296,", "seeds from 0 to 4294967295"),
        ("0-4294967295", "at most 10000 seeds"),
        ("0-9999,20000", "at most 10000 seeds"),
    ],
)
def test_bad_seeds_say_what_was_expected(text, message):
    with pytest.raises(SettingsError, match=message):
        parse_seeds(text)


def test_the_same_seed_gives_the_same_numbers():
    from clipaudit.theory.sweep import evaluate_scenario

    scenario = Scenario(selected="1-2", perturbed="1", **TINY)
    first, second = _trained([scenario]), _trained([scenario])
    for a, b in zip(first.parameters, second.parameters, strict=True):
        assert torch.equal(a, b)
    # determinism, not accuracy: a small probe (the tiny one is seconds) asks the same
    assert evaluate_scenario(first, 0, SMALL_EVALUATION) == evaluate_scenario(
        second, 0, SMALL_EVALUATION
    )
    other_seed = _trained([dataclasses.replace(scenario, seed=1)])
    assert not torch.equal(first.parameters[0], other_seed.parameters[0])


def test_a_run_folder_of_other_settings_is_refused(tiny_check):
    other = dataclasses.replace(TINY_TRAINING, steps=TINY_TRAINING.steps + 1)
    with pytest.raises(RunFolderError, match=r"training.steps: 400 -> 401"):
        run_sweep(tiny_check.scenarios, other, TINY_EVALUATION, tiny_check.out, progress=False)


def _set_recorded_settings(out, settings, *, legacy: bool = False) -> None:
    """Store ``settings`` as a run folder holds them: in its manifest, or, as folders written
    before the run-folder contract did while unfinished, in settings.json with no manifest."""
    manifest = json.loads((out / "manifest.json").read_text())
    if legacy:
        (out / "manifest.json").unlink()
        (out / "settings.json").write_text(json.dumps(settings))
    else:
        (out / "manifest.json").write_text(json.dumps({**manifest, "settings": settings}))


@pytest.mark.parametrize("legacy", [False, True])
def test_a_run_written_before_a_setting_existed_resumes_with_its_default(
    tiny_check, tmp_path, legacy
):
    import shutil

    out = tmp_path / "older"
    shutil.copytree(tiny_check.out, out)
    recorded = json.loads((out / "manifest.json").read_text())["settings"]
    # as written before these settings were added
    del recorded["training"]["negatives"], recorded["training"]["final_temperature"]
    _set_recorded_settings(out, recorded, legacy=legacy)
    resumed = run_sweep(tiny_check.scenarios, TINY_TRAINING, TINY_EVALUATION, out, progress=False)
    assert resumed.timings["groups"] == [] and resumed.failed == []
    other = dataclasses.replace(TINY_TRAINING, negatives="same-modality")
    _set_recorded_settings(out, recorded)  # the resumed run rewrote them
    expected = "training.negatives: 'cross-modal' -> 'same-modality'"
    with pytest.raises(RunFolderError, match=re.escape(expected)):
        run_sweep(tiny_check.scenarios, other, TINY_EVALUATION, out, progress=False)
    # before Nystroem features the probe was an exact kernel ridge: not today's default
    del recorded["evaluation"]["kernel_components"]
    _set_recorded_settings(out, recorded)
    expected = "evaluation.kernel_components: 'exact' -> 1500"
    with pytest.raises(RunFolderError, match=re.escape(expected)):
        run_sweep(tiny_check.scenarios, TINY_TRAINING, TINY_EVALUATION, out, progress=False)


def test_an_unperturbed_result_serves_any_change_probability(tiny_check, tmp_path):
    import shutil

    out = tmp_path / "p"
    shutil.copytree(tiny_check.out, out)
    selection, perturbation = tiny_check.scenarios
    # with nothing perturbed no text changes, whatever the probability (a sweep of change_prob,
    # e.g. default_sweep(change_prob=0.5), holds its selection scenarios under the same names)
    other = dataclasses.replace(selection, change_prob=0.5)
    assert other.name == selection.name
    resumed = run_sweep([other, perturbation], TINY_TRAINING, TINY_EVALUATION, out, progress=False)
    assert resumed.timings["groups"] == []  # refused as generated differently, before
    assert resumed.r2.equals(tiny_check.r2)


def test_results_of_a_differently_generated_scenario_are_refused(tiny_check, tmp_path):
    import shutil

    out = tmp_path / "older"
    shutil.copytree(tiny_check.out, out)
    perturbation = tiny_check.scenarios[1]
    stored = out / "results" / f"{perturbation.name}.json"
    record = json.loads(stored.read_text())
    del record["scenario"]["perturbation_covariance"]  # as written before the setting existed
    stored.write_text(json.dumps(record))
    # independent latents had Sigma_a = I = Sigma_s then: the result still holds; and where nothing
    # is perturbed, Sigma_a never reaches the data, so any stored value does
    selection = out / "results" / f"{tiny_check.scenarios[0].name}.json"
    unperturbed = json.loads(selection.read_text())
    unperturbed["scenario"]["perturbation_covariance"] = "wishart"
    selection.write_text(json.dumps(unperturbed))
    resumed = run_sweep(tiny_check.scenarios, TINY_TRAINING, TINY_EVALUATION, out, progress=False)
    assert resumed.timings["groups"] == []
    # dependent latents drew Sigma_a on their own then, which is no longer the default
    assert (
        _with_legacy_settings({"causal_dependence": True})["perturbation_covariance"] == "wishart"
    )
    record["scenario"]["perturbation_covariance"] = "wishart"
    stored.write_text(json.dumps(record))
    expected = f"{perturbation.name} (perturbation_covariance: 'wishart' -> 'semantics')"
    with pytest.raises(RunFolderError, match=re.escape(expected)):
        run_sweep(tiny_check.scenarios, TINY_TRAINING, TINY_EVALUATION, out, progress=False)


def test_a_result_cut_short_is_computed_again(quick_check, tmp_path):
    import shutil

    out = tmp_path / "cut"
    shutil.copytree(quick_check.out, out)
    selection = quick_check.scenarios[0].name
    stored = out / "results" / f"{selection}.json"
    stored.write_text(stored.read_text()[:200])  # not JSON any more
    resumed = run_sweep(
        quick_check.scenarios, QUICK_TRAINING, SMALL_EVALUATION, out, progress=False
    )
    assert [g["scenarios"] for g in resumed.timings["groups"]] == [
        [s.name for s in quick_check.scenarios]
    ]
    assert json.loads(stored.read_text())["scenario"]["name"] == selection
    mine = resumed.r2[resumed.r2["config"] == selection].reset_index(drop=True)
    before = quick_check.r2[quick_check.r2["config"] == selection].reset_index(drop=True)
    assert mine["variable"].tolist() == before["variable"].tolist()
    np.testing.assert_allclose(mine["r2_nonlinear"], before["r2_nonlinear"], atol=1e-6)


def test_an_edited_or_malformed_result_is_computed_again_not_judged(quick_check, tmp_path):
    import shutil

    out = tmp_path / "edited"
    shutil.copytree(quick_check.out, out)
    selection, perturbation = (s.name for s in quick_check.scenarios)
    # an R^2 edited by hand, in valid JSON: it was judged as if measured (here the selection,
    # trained 20 steps, disagrees; edited to the theory's answer it would agree)
    stored = out / "results" / f"{selection}.json"
    record = json.loads(stored.read_text())
    for row in record["r2"]:
        row["r2_nonlinear"] = 1.0 if row["predicted_identified"] else 0.0
    edited = [row["r2_nonlinear"] for row in record["r2"]]
    stored.write_text(json.dumps(record))
    # JSON, but no result at all: an AttributeError from the resumed run
    (out / "results" / f"{perturbation}.json").write_text("[]")
    resumed = run_sweep(
        quick_check.scenarios, QUICK_TRAINING, SMALL_EVALUATION, out, progress=False
    )
    assert [g["scenarios"] for g in resumed.timings["groups"]] == [[selection, perturbation]]
    assert resumed.failed == quick_check.failed
    for name in (selection, perturbation):
        mine = resumed.r2[resumed.r2["config"] == name].reset_index(drop=True)
        before = quick_check.r2[quick_check.r2["config"] == name].reset_index(drop=True)
        assert mine["variable"].tolist() == before["variable"].tolist()
        np.testing.assert_allclose(mine["r2_nonlinear"], before["r2_nonlinear"], atol=1e-6)
    assert [row["r2_nonlinear"] for row in json.loads(stored.read_text())["r2"]] != edited
    assert quick_check.failed == [selection]  # so the edit, had it been judged, showed


@pytest.mark.parametrize(
    ("scenarios", "message"),
    [
        (5, "scenarios are not a list of records: 5"),
        (["x"], r"scenarios are not a list of records: \['x'\]"),
        ([{"seed": -4}], "a scenario that cannot be: seed must be a non-negative integer"),
    ],
)
def test_a_hand_edited_manifest_is_a_damaged_folder(tiny_check, tmp_path, scenarios, message):
    import shutil

    out = tmp_path / "edited"
    shutil.copytree(tiny_check.out, out)
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "scenarios": scenarios}))
    with pytest.raises(RunFolderError, match=rf"edited holds a complete theory run .*{message}"):
        load_run(out)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        # each met before as a TypeError or an AttributeError, not as a mistake in the settings
        (
            lambda out: run_sweep(Scenario(**TINY), TINY_TRAINING, TINY_EVALUATION, out),
            r"scenarios must be a list of Scenario\(\.\.\.\); for one, use run_scenario",
        ),
        (
            lambda out: run_sweep([{"selected": "1"}], TINY_TRAINING, TINY_EVALUATION, out),
            r"a scenario must be a Scenario, e\.g\. Scenario\(selected='1-5'\); got dict",
        ),
        (
            lambda out: run_sweep([Scenario(**TINY)], "quick", TINY_EVALUATION, out),
            r"training must be a TrainingSettings, e\.g\. training_profile\('quick'\); got str",
        ),
        (
            lambda out: run_sweep([Scenario(**TINY)], TINY_TRAINING, TINY_EVALUATION, out, "2"),
            r"threads must be an integer >= 1; got '2'",
        ),
        (
            lambda out: run_check(out, seed=3),
            r"run_check\(\) has no option 'seed' \(did you mean 'seeds'",
        ),
        (
            lambda out: run_scenario(out, Scenario(**TINY), profil="quick"),
            r"run_scenario\(\) has no option 'profil' \(did you mean 'profile'",
        ),
    ],
)
def test_the_api_refuses_arguments_of_the_wrong_kind_in_words(tmp_path, call, message):
    with pytest.raises(SettingsError, match=message):
        call(tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_folder_of_something_else_is_refused(tmp_path):
    (tmp_path / "coverage.csv").write_text("not a theory run")
    with pytest.raises(RunFolderError, match="not empty but holds no clipaudit run"):
        run_sweep([Scenario(**TINY)], TINY_TRAINING, TINY_EVALUATION, tmp_path, progress=False)


def test_new_thresholds_rejudge_a_finished_run_without_training(tiny_check, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(tiny_check.out, out)
    strict = dataclasses.replace(TINY_EVALUATION, identified_threshold=0.999)
    rejudged = run_sweep(tiny_check.scenarios, TINY_TRAINING, strict, out, progress=False)
    assert rejudged.timings["groups"] == []  # nothing trained or probed again
    # and the manifest still says what training and probing cost
    assert len(tiny_check.timings["groups"]) == 1
    assert rejudged.timings["earlier_groups"] == tiny_check.timings["groups"]
    assert (
        json.loads((out / "manifest.json").read_text())["timings"]["earlier_groups"]
        == (tiny_check.timings["groups"])
    )
    assert sorted(rejudged.failed) == sorted(s.name for s in tiny_check.scenarios)
    unchanged = ["r2_linear", "r2_nonlinear", "ceiling"]
    assert rejudged.r2[unchanged].equals(tiny_check.r2[unchanged])


def test_the_cli_rejects_bad_settings_in_one_line(capsys):
    from tests.test_cli import run_cli

    result = run_cli("theory", "run", "--out", "unused", "--selected", "1-3", "--perturbed", "4")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: the perturbed set (--perturbed) must lie inside the selected set 1-3 "
        "(--selected); got perturbed indices 4 that the text never carries: add it to --selected "
        "or drop it from --perturbed (selected= and perturbed= of Scenario in Python)"
    ]
    # the real process above shows the exit code and a stderr of one line; the second message
    # is the same path through main(), in-process (a second interpreter's start is seconds)
    from clipaudit.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["theory", "run", "--out", "unused", "--perturbed", "1",
              "--perturbation-covariance", "wishar"])  # fmt: skip
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: perturbation_covariance (--perturbation-covariance) must be one of ['semantics', "
        "'identity', 'wishart']; got 'wishar' (did you mean 'wishart'?)"
    ]


def test_set_reads_exponent_numbers_and_refuses_empty_values():
    from clipaudit.cli.theory import _overrides

    def profile(*settings: str):
        return training_profile("quick", **_overrides(None, None, None, None, list(settings)))

    # PyYAML reads these as text; each is a number that the settings accept
    trained = profile("temperature=1e-1", "weight_decay=2.5E-4", "final_temperature=3e0")
    assert (trained.temperature, trained.weight_decay, trained.final_temperature) == (
        0.1,
        0.00025,
        3.0,
    )
    with pytest.raises(
        SettingsError, match=r"learning_rate must be a positive finite number; got -0\.001: "
    ):
        profile("learning_rate=-1e-3")  # refused as the negative number it is, not as text
    assert profile("mixing=conditioned").mixing == "conditioned"  # text stays text
    # an empty or null value was dropped, and the profile's own value trained in its place
    for setting in ("temperature=", "temperature=null", "final_temperature=~"):
        with pytest.raises(SettingsError, match=r"no value; give one"):
            profile(setting)
    with pytest.raises(SettingsError, match="for a fixed temperature give temperature=VALUE"):
        profile("final_temperature=")


def test_auto_group_size_batches_where_batching_pays():
    from clipaudit.theory.config import (
        BATCHING_PAYS_BELOW_FLOPS,
        resolve_group_size,
        step_flops,
    )

    quick = training_profile("quick")
    # by hand: widths 15-128-128-128-10, two encoders, 6 FLOP per multiply-add, batch 512
    multiply_adds = 15 * 128 + 128 * 128 * 2 + 128 * 10
    assert step_flops(quick, 15, 10) == 2 * 6 * 512 * multiply_adds
    big = dataclasses.replace(quick, group_size="auto")
    small = dataclasses.replace(big, batch_size=128, hidden_widths=(32, 32))
    assert step_flops(big, 15, 10) > BATCHING_PAYS_BELOW_FLOPS > step_flops(small, 15, 10)
    assert resolve_group_size(big, 38, 15, 10) == 1  # arithmetic-bound: one at a time on a CPU
    assert resolve_group_size(small, 38, 15, 10) == 16
    assert resolve_group_size(small, 5, 15, 10) == 5
    assert resolve_group_size(dataclasses.replace(big, device="cuda"), 38, 15, 10) == 38
    assert resolve_group_size(quick, 38, 15, 10) == 10  # the quick profile keeps its groups
    assert resolve_group_size(dataclasses.replace(quick, group_size=0), 38, 15, 10) == 38
    with pytest.raises(SettingsError, match=r"group_size must be an integer >= 0 .* or 'auto'"):
        dataclasses.replace(quick, group_size="some")


def test_non_finite_settings_and_diverging_training_are_typed_errors(tmp_path):
    from clipaudit.cli import main
    from clipaudit.theory.sweep import run_scenario

    with pytest.raises(
        SettingsError, match="temperature must be a positive finite number; got nan"
    ):
        training_profile("quick", temperature=float("nan"))
    scenario = Scenario(n_semantics=3, n_modality=1, selected="1")
    with pytest.raises(
        SettingsError, match=r"training diverged: .* at step \d+; lower the learning"
    ):
        run_scenario(
            tmp_path / "run", scenario, training_overrides={"learning_rate": 1e4, "steps": 100},
            progress=False,
        )  # fmt: skip
    with pytest.raises(SystemExit) as exited:
        main(["theory", "run", "--out", str(tmp_path / "r2"), "--set", "hidden_widths=[64,"])
    assert exited.value.code == 2
    torch.set_num_threads(2)
    run_sweep(
        [scenario],
        training_profile("quick", steps=20, batch_size=64, hidden_widths=(8,)),
        EvaluationSettings(n_bins=3, n_fit=200, n_val=100, n_test=100),
        tmp_path / "r3",
        threads=1,
        progress=False,
    )
    assert torch.get_num_threads() == 2  # the caller's thread count, as it was


# -- reviewer's findings: unknown settings, encoding sizes outside the theorem, checkpoints ----


@pytest.mark.parametrize(
    ("make", "message"),
    [
        # Python's own TypeError said only "unexpected keyword argument"
        (
            lambda: Scenario(n_semantcs=3),
            r"Scenario has no setting 'n_semantcs' \(did you mean 'n_semantics'\?\); its settings",
        ),
        (
            lambda: dataclasses.replace(TINY_TRAINING, stpes=5),
            r"TrainingSettings has no setting 'stpes' \(did you mean 'steps'\?\)",
        ),
        (
            lambda: EvaluationSettings(n_fitt=100),
            r"EvaluationSettings has no setting 'n_fitt' \(did you mean 'n_fit'",
        ),
    ],
)
def test_a_setting_of_an_unknown_name_is_refused_with_the_closest(make, message):
    with pytest.raises(SettingsError, match=message):
        make()


def test_an_encoding_size_other_than_the_invariant_block_is_outside_the_theorem(tmp_path):
    """The theorem assumes the bottleneck (encoding size = |I_theta \\ I_beta|); a run of another
    size predicted the unselected semantics as not identified all the same, and judged them."""
    from clipaudit.cli.theory import _print
    from clipaudit.theory import summarise
    from clipaudit.theory.sweep import check_markdown

    wide = Scenario(selected="1", encoding_size=3, **TINY)  # invariant {s1}: the theorem's is 1
    assert not wide.within_theorem and Scenario(selected="1", **TINY).within_theorem
    assert Scenario(selected="1", encoding_size=1, **TINY).within_theorem
    training = dataclasses.replace(TINY_TRAINING, steps=20)
    evaluation = SMALL_EVALUATION
    result = run_sweep([wide], training, evaluation, tmp_path / "run", progress=False)
    rows = result.r2[result.r2["config"] == wide.name]
    assert len(rows) == 2 * 5 and rows["predicted_identified"].isna().all()
    assert rows["agrees"].isna().all()
    # neither agreeing nor failing: not judged
    assert result.verdicts == {} and result.failed == [] and result.outside == [wide.name]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["verdicts"] == {} and manifest["outside_theorem"] == [wide.name]
    assert manifest["margins"] == []
    (summary,) = summarise(result)
    assert summary["agrees"] is None and summary["predicted_identified"] is None
    assert "outside the theorem's assumptions" in summary["description"]
    assert "encoding size 3" in summary["description"] and "assumes 1" in summary["description"]
    text = (tmp_path / "run" / "check.md").read_text()
    assert "No configuration judged; 1 outside the theorem's assumptions" in text
    assert f"## {wide.name}: outside the theorem's assumptions, not judged" in text
    assert "DISAGREES" not in text and "| NO |" not in text
    provenance = {
        "seeds": manifest["seeds"],
        "device": manifest["device"],
        **{k: manifest[k] for k in ("clipaudit_version", "git_hash", "started")},
    }
    assert check_markdown(summarise(result), manifest["settings"], (), provenance) == text
    _print(summarise(result), verbose=True)  # the CLI's tables take a configuration not judged
    loaded = load_run(tmp_path / "run")
    assert loaded.outside == [wide.name] and loaded.verdicts == {}
    assert "1 outside the theorem" in repr(loaded)
    # a result written before, with the bottleneck's prediction and verdicts: read without them
    from clipaudit.theory.sweep import _result_digest

    stored = tmp_path / "run" / "results" / f"{wide.name}.json"
    record = json.loads(stored.read_text())
    for row in record["r2"]:
        row["predicted_identified"], row["agrees"] = row["variable"] == "s1", True
    record["digest"] = _result_digest(record)
    stored.write_text(json.dumps(record))
    again = run_sweep([wide], training, evaluation, tmp_path / "run", progress=False)
    assert again.timings["groups"] == []  # re-read, not trained again
    assert again.r2["predicted_identified"].isna().all() and again.r2["agrees"].isna().all()
    assert again.outside == [wide.name]
    # the check judges the theorem: a configuration it says nothing about is refused up front
    with pytest.raises(
        SettingsError,
        match=rf"{wide.name}: encoding size 3, and the theorem assumes 1 .*; leave encoding_size",
    ):
        run_sweep([wide], training, evaluation, tmp_path / "check", check=True, progress=False)
    assert not (tmp_path / "check").exists()


@pytest.mark.parametrize(
    "damage",
    ["weight shape", "moment shape", "fewer weights", "stream", "step"],
)
def test_a_checkpoint_of_this_group_with_the_wrong_shapes_trains_from_the_seeds(tmp_path, damage):
    """A checkpoint whose names matched but whose tensors did not fit stopped the run with
    torch's RuntimeError (or left the encoders half overwritten)."""
    scenario, training, straight, saved = _trained_group(tmp_path)
    state = torch.load(saved, weights_only=True)
    if damage == "weight shape":
        state["weights"][0] = torch.zeros(1, 2, 3)
    elif damage == "moment shape":
        state["optimizer"]["state"][0]["exp_avg"] = torch.zeros(5)
    elif damage == "fewer weights":
        state["weights"] = state["weights"][:-1]
    elif damage == "stream":
        state["streams"] = [torch.zeros(3, dtype=torch.uint8)]
    else:
        state["step"] = "twenty"
    torch.save(state, saved)
    fresh = BatchedSimulation([scenario], training)
    untouched = [p.detach().clone() for p in fresh.parameters]
    assert not fresh.load(saved) and fresh.step == 0
    for before, after in zip(untouched, fresh.parameters, strict=True):
        assert torch.equal(before, after)  # nothing half loaded
    fresh.train()  # from step 0: the same weights as the uninterrupted training
    for a, b in zip(straight.parameters, fresh.parameters, strict=True):
        assert torch.equal(a, b)


def _rejudged(quick_check, tmp_path, **thresholds):
    """quick_check's run folder copied and judged again under ``thresholds`` (nothing trained)."""
    import shutil

    out = tmp_path / "rejudged"
    shutil.copytree(quick_check.out, out)
    evaluation = dataclasses.replace(SMALL_EVALUATION, **thresholds)
    return run_sweep(quick_check.scenarios, QUICK_TRAINING, evaluation, out, progress=False)


def test_theory_run_exits_1_when_its_configuration_disagrees(
    quick_check, tmp_path, monkeypatch, capsys
):
    """`theory run` printed DISAGREES and exited 0, so `clipaudit theory run ... && next` went on
    as if the theory held; `check` exits 1 on any disagreement, and so does `run` now."""
    import clipaudit.theory
    from clipaudit.cli import main

    # an R^2 of 1.0 is never reached: every configuration disagrees
    failing = _rejudged(quick_check, tmp_path, identified_threshold=1.0, margin=0.0)
    assert failing.failed and len(failing.failed) == len(failing.verdicts)
    monkeypatch.setattr(clipaudit.theory, "run_scenario", lambda *a, **k: failing)
    with pytest.raises(SystemExit) as exited:
        main(["theory", "run", "--out", str(failing.out), "-q"])
    assert exited.value.code == 1
    assert "DISAGREES" in capsys.readouterr().out


def test_r2_summaries_say_they_are_nonlinear_and_check_md_says_where_it_came_from(
    quick_check, capsys
):
    """The verdict and margins tables said 'min R² identified' and 'lowest identified R²' beside
    tables of linear and nonlinear R²; check.md named no profile, seed, version or commit."""
    from clipaudit.cli.theory import _print, _print_margins
    from clipaudit.theory import summarise

    _print(summarise(quick_check), verbose=False)
    _print_margins(quick_check.manifest["margins"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "min R² identified" not in shown and "lowest identified R²" not in shown
    assert shown.count("nonlinear") >= 2  # both summaries name which R² they give
    text = (quick_check.out / "check.md").read_text()
    assert "lowest identified R^2" not in text
    assert "lowest nonlinear R^2 predicted identified" in text
    manifest = json.loads((quick_check.out / "manifest.json").read_text())
    provenance = text.split("## Provenance", 1)[1]
    for value in (
        f"profile {QUICK_TRAINING.profile}",
        f"{QUICK_TRAINING.steps} steps",
        "seeds 0",
        manifest["clipaudit_version"],
        manifest["git_hash"],
        manifest["started"],
    ):
        assert value in provenance, value

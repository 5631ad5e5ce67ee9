"""What the learned representations know, measured three ways.

- :func:`population_ceilings`: for every probed variable, the population R^2 of its best predictor
  from the invariant block s_A (A = I_theta \\ I_beta). For Gaussian latents the best predictor is
  linear, so ``R^2(s_j) = Sigma_jA Sigma_AA^-1 Sigma_Aj / Sigma_jj``; for a perturbed ``s~_j`` the
  numerator is the same (the noise is independent of s) and the denominator grows by
  ``change_prob * Sigma_a[j, j]``; ``m_x`` and ``m_t`` are independent of s (ceiling 0).
- :func:`probe_r2`: R^2 of predicting each variable from a representation on fresh samples,
  linear (scikit-learn's ``LinearRegression``) and nonlinear (RBF kernel ridge on scikit-learn's
  ``Nystroem`` features, hyperparameters chosen per variable on a validation split).
- :func:`audit_tables`: the OpenCLIP audit's metrics on the synthetic world. Each semantic s_i is a
  concept group whose concepts are its ``k`` population-quantile bins. Caption coverage of s_i is
  the fraction of texts that carry s_i unperturbed; awareness is the macro-F1
  (:func:`clipaudit.metrics.macro_f1`) of classifying an image's bin by its nearest text prototype
  (mean text embedding of faithful texts whose s_i lies in the bin, all else resampled).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from clipaudit.theory.config import EvaluationSettings, Scenario
from clipaudit.theory.generative import LatentModel, Latents


def role(scenario: Scenario, index: int) -> str:
    """``invariant`` (in I_theta \\ I_beta), ``perturbed`` (in I_beta) or ``unselected``."""
    if index in scenario.perturbed:
        return "perturbed"
    return "invariant" if index in scenario.selected else "unselected"


def probe_targets(scenario: Scenario, latents: Latents) -> dict[str, np.ndarray]:
    """The probed variables of a sample, ``name -> (n, k)``: s1..sN, s~i (i in I_beta), m_x, m_t."""
    s, s_tilde = latents.s.cpu().numpy(), latents.s_tilde.cpu().numpy()
    targets = {f"s{i + 1}": s[:, i : i + 1] for i in range(scenario.n_semantics)}
    targets.update({f"s~{i}": s_tilde[:, i - 1 : i] for i in scenario.perturbed})
    if scenario.n_modality:
        targets["m_x"] = latents.m_x.cpu().numpy()
        targets["m_t"] = latents.m_t.cpu().numpy()
    return targets


def population_r2(
    sigma: np.ndarray, target: int, predictors: Sequence[int], extra_variance: float = 0.0
) -> float:
    """Population R^2 of the best linear predictor of Gaussian ``z_target`` from ``z_predictors``
    (0-based), when ``extra_variance`` of independent zero-mean noise is added to the target."""
    if not predictors:
        return 0.0
    cross = sigma[target, list(predictors)]
    explained = float(cross @ np.linalg.solve(sigma[np.ix_(predictors, predictors)], cross))
    return explained / (float(sigma[target, target]) + extra_variance)


def population_ceilings(model: LatentModel) -> dict[str, float]:
    """The theory's bound on every probed variable's R^2 from a representation of s_A alone."""
    scenario = model.scenario
    block = [i - 1 for i in scenario.invariant]
    ceilings = {
        f"s{j + 1}": 1.0 if j in block else population_r2(model.sigma_s, j, block)
        for j in range(scenario.n_semantics)
    }
    extra = model.perturbation_variance
    for i in scenario.perturbed:
        ceilings[f"s~{i}"] = population_r2(model.sigma_s, i - 1, block, float(extra[i - 1]))
    if scenario.n_modality:
        ceilings["m_x"] = ceilings["m_t"] = 0.0
    return ceilings


@dataclass(frozen=True)
class ProbeSplit:
    """Representations and targets of the fit, validation and test samples."""

    fit: tuple[np.ndarray, dict[str, np.ndarray]]
    val: tuple[np.ndarray, dict[str, np.ndarray]]
    test: tuple[np.ndarray, dict[str, np.ndarray]]


def _stack(targets: dict[str, np.ndarray]) -> tuple[np.ndarray, list[tuple[str, slice]]]:
    columns, spans, start = [], [], 0
    for name, values in targets.items():
        columns.append(values)
        spans.append((name, slice(start, start + values.shape[1])))
        start += values.shape[1]
    return np.concatenate(columns, axis=1), spans


def _ridge_path(
    features: np.ndarray,
    targets: np.ndarray,
    evaluated: Sequence[np.ndarray],
    alphas: Sequence[float],
) -> list[list[np.ndarray]]:
    """Predictions of ridge regressions (with intercept) on ``evaluated`` for every alpha, from one
    eigendecomposition of the centred fit features' ``X^T X``: each alpha then costs a rescaling."""
    mean, target_mean = features.mean(0), targets.mean(0)
    centred = features - mean
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred)
    projected_targets = eigenvectors.T @ (centred.T @ (targets - target_mean))
    projected = [(x - mean) @ eigenvectors for x in evaluated]
    return [
        [
            x @ (projected_targets / (np.clip(eigenvalues, 0.0, None) + alpha)[:, None])
            + target_mean
            for x in projected
        ]
        for alpha in alphas
    ]


def probe_r2(split: ProbeSplit, settings: EvaluationSettings) -> dict[str, tuple[float, float]]:
    """``variable -> (linear R^2, nonlinear R^2)`` on the test sample; multi-dimensional variables
    (m_x, m_t) average their coordinates' R^2 (scikit-learn's ``uniform_average``)."""
    from sklearn.kernel_approximation import Nystroem
    from sklearn.linear_model import LinearRegression
    from sklearn.metrics import r2_score
    from sklearn.preprocessing import StandardScaler

    (rep_fit, y_fit), (rep_val, y_val), (rep_test, y_test) = split.fit, split.val, split.test
    y_fit, spans = _stack(y_fit)
    y_val, _ = _stack(y_val)
    y_test, _ = _stack(y_test)
    target_scaler = StandardScaler().fit(y_fit)
    y_fit, y_val, y_test = (target_scaler.transform(y) for y in (y_fit, y_val, y_test))
    scaler = StandardScaler().fit(rep_fit)
    rep_fit, rep_val, rep_test = (scaler.transform(r) for r in (rep_fit, rep_val, rep_test))

    linear = LinearRegression().fit(
        np.concatenate([rep_fit, rep_val]), np.concatenate([y_fit, y_val])
    )
    r2_linear = r2_score(y_test, linear.predict(rep_test), multioutput="raw_values")

    best_val = np.full(y_fit.shape[1], -np.inf)
    r2_nonlinear = np.full(y_fit.shape[1], np.nan)
    n_features = rep_fit.shape[1]
    for gamma in settings.kernel_gammas:
        # gamma is per feature of the standardised representation, so it means the same at any size
        features = Nystroem(
            gamma=gamma / n_features,
            n_components=min(settings.kernel_components, len(rep_fit)),
            random_state=0,
        ).fit(rep_fit)
        phi_fit, phi_val, phi_test = (features.transform(r) for r in (rep_fit, rep_val, rep_test))
        for predict_val, predict_test in _ridge_path(
            phi_fit, y_fit, (phi_val, phi_test), settings.ridge_alphas
        ):
            val = r2_score(y_val, predict_val, multioutput="raw_values")
            better = val > best_val
            if better.any():
                best_val[better] = val[better]
                r2_nonlinear[better] = r2_score(y_test, predict_test, multioutput="raw_values")[
                    better
                ]
    return {
        name: (float(np.mean(r2_linear[span])), float(np.mean(r2_nonlinear[span])))
        for name, span in spans
    }


def bin_edges(model: LatentModel, n_bins: int) -> np.ndarray:
    """``(n_s, n_bins - 1)`` inner edges of the population quantile bins of each s_i."""
    from scipy.stats import norm

    quantiles = norm.ppf(np.arange(1, n_bins) / n_bins)
    return np.sqrt(np.diag(model.sigma_s))[:, None] * quantiles[None, :]


def concept_name(index: int, bin_index: int) -> str:
    """``s3_bin2``: the ``bin_index``-th (1-based) quantile bin of s3."""
    return f"s{index}_bin{bin_index + 1}"


def audit_tables(
    config: str,
    model: LatentModel,
    caption_latents: Latents,
    image_rep: np.ndarray,
    image_s: np.ndarray,
    prompt_rep: np.ndarray,
    prompt_s: np.ndarray,
    n_bins: int,
) -> dict[str, list[dict]]:
    """Rows of the coverage tables (``coverage_concepts``, ``coverage_groups``,
    ``coverage_categories``) and of the zero-shot tables (``awareness_concepts``,
    ``awareness_groups``, ``confusion``) for one scenario, as an OpenCLIP audit writes them.

    ``caption_latents`` are training-distribution texts (perturbed); ``image_rep``/``image_s`` the
    image representations and semantics of test images; ``prompt_rep``/``prompt_s`` those of
    faithful texts used as prompts.
    """
    from clipaudit.metrics import accuracy, chance_macro_f1, confusion, macro_f1, per_class_scores

    scenario = model.scenario
    edges = bin_edges(model, n_bins)
    caption_s = caption_latents.s.cpu().numpy()
    changed = caption_latents.changed.cpu().numpy()
    n_captions = caption_s.shape[0]
    carried = np.zeros_like(changed)
    carried[:, [i - 1 for i in scenario.selected]] = True
    carried &= ~changed

    rows: dict[str, list[dict]] = {
        key: []
        for key in (
            "coverage_concepts",
            "coverage_groups",
            "coverage_categories",
            "awareness_concepts",
            "awareness_groups",
            "confusion",
        )
    }
    for i in range(1, scenario.n_semantics + 1):
        group, category = f"s{i}", role(scenario, i)
        labels = [concept_name(i, b) for b in range(n_bins)]
        caption_bins = np.searchsorted(edges[i - 1], caption_s[:, i - 1])
        concept_counts = [
            int((carried[:, i - 1] & (caption_bins == b)).sum()) for b in range(n_bins)
        ]
        for label, count in zip(labels, concept_counts, strict=True):
            rows["coverage_concepts"].append(
                {
                    "model": config,
                    "concept": label,
                    "group": group,
                    "category": category,
                    "count": count,
                    "rate": count / n_captions,
                }
            )
        group_count = int(carried[:, i - 1].sum())
        rows["coverage_groups"].append(
            {
                "model": config,
                "group": group,
                "category": category,
                "count": group_count,
                "rate": group_count / n_captions,
                "n_concepts": n_bins,
                "mean_concept_rate": float(np.mean(concept_counts)) / n_captions,
            }
        )

        prompt_bins = np.searchsorted(edges[i - 1], prompt_s[:, i - 1])
        prototypes = np.stack(
            [
                prompt_rep[prompt_bins == b].mean(0)
                if (prompt_bins == b).any()
                else np.full(prompt_rep.shape[1], np.inf)
                for b in range(n_bins)
            ]
        )
        distances = ((image_rep[:, None, :] - prototypes[None, :, :]) ** 2).sum(-1)
        predicted = [labels[b] for b in np.argmin(distances, axis=1)]
        truth = [labels[b] for b in np.searchsorted(edges[i - 1], image_s[:, i - 1])]
        scores = per_class_scores(truth, predicted, labels)
        for record in scores.to_dict("records"):
            rows["awareness_concepts"].append(
                {
                    "model": config,
                    "group": group,
                    "concept": record["label"],
                    "precision": record["precision"],
                    "recall": record["recall"],
                    "f1": record["f1"],
                    "support": int(record["support"]),
                }
            )
        rows["awareness_groups"].append(
            {
                "model": config,
                "group": group,
                "category": category,
                "macro_f1": macro_f1(truth, predicted, labels),
                "accuracy": accuracy(truth, predicted),
                "n_images": len(truth),
                "n_concepts": n_bins,
                "n_candidates": n_bins,  # each image is classified among every bin
                "chance": chance_macro_f1(truth, labels, n_bins),
            }
        )
        matrix = confusion(truth, predicted, labels)
        for true_label, counts in matrix.iterrows():
            rows["confusion"].append(
                {"model": config, "group": group, "true": true_label, **counts.to_dict()}
            )

    categories = sorted({role(scenario, i) for i in range(1, scenario.n_semantics + 1)})
    for category in categories:
        members = [
            i - 1 for i in range(1, scenario.n_semantics + 1) if role(scenario, i) == category
        ]
        count = int(carried[:, members].any(axis=1).sum())
        concept_rates = [r["rate"] for r in rows["coverage_concepts"] if r["category"] == category]
        rows["coverage_categories"].append(
            {
                "model": config,
                "category": category,
                "count": count,
                "rate": count / n_captions,
                "n_concepts": len(concept_rates),
                "mean_concept_rate": float(np.mean(concept_rates)),
            }
        )
    return rows

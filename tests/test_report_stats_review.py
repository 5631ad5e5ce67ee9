"""The report's numbers against independent computations (plain counts, scipy called per
resample), and the joined statistics on hand-built inputs with their edge cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from clipaudit import metrics
from clipaudit.report import stats
from clipaudit.report.analysis import analyse
from clipaudit.report.inputs import Corpus, Inputs, Model

N_CAPTIONS = 1000


def _by_counting(y_true, y_pred, labels):
    """Per label (precision, recall, F1, support) from tp/fp/fn counted one pair at a time,
    0 where a ratio has no denominator (the zero_division=0 convention)."""
    rows = []
    for label in labels:
        tp = sum(t == label and p == label for t, p in zip(y_true, y_pred, strict=True))
        fp = sum(t != label and p == label for t, p in zip(y_true, y_pred, strict=True))
        fn = sum(t == label and p != label for t, p in zip(y_true, y_pred, strict=True))
        rows.append(
            (
                tp / (tp + fp) if tp + fp else 0.0,
                tp / (tp + fn) if tp + fn else 0.0,
                2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
                tp + fn,
            )
        )
    return np.array(rows, dtype=float)


# one label gives a 1 x 1 confusion matrix, which sklearn warns of even when labels are passed
@pytest.mark.filterwarnings("ignore:A single label was found:UserWarning")
@pytest.mark.parametrize("seed", range(5))
def test_single_label_scores_equal_counts_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        labels = [f"c{i}" for i in range(rng.integers(1, 6))]
        n = int(rng.integers(1, 25))
        y_true = rng.choice(labels, n).tolist()
        y_pred = rng.choice([*labels, "distractor"], n).tolist()
        expected = _by_counting(y_true, y_pred, labels)
        table = metrics.per_class_scores(y_true, y_pred, labels)
        np.testing.assert_allclose(
            table[["precision", "recall", "f1", "support"]].to_numpy(float), expected
        )
        occurring = [label in y_true or label in y_pred for label in labels]
        assert metrics.macro_f1(y_true, y_pred, labels) == pytest.approx(
            expected[occurring, 2].mean()
        )
        assert metrics.accuracy(y_true, y_pred) == pytest.approx(
            np.mean(np.array(y_true) == np.array(y_pred))
        )
        present = sorted(set(y_true))
        assert metrics.mean_per_class_recall(y_true, y_pred) == pytest.approx(
            _by_counting(y_true, y_pred, present)[:, 1].mean()
        )
        matrix = metrics.confusion(y_true, y_pred, labels)
        for true in labels:
            for predicted in labels:
                assert matrix.loc[true, predicted] == sum(
                    t == true and p == predicted for t, p in zip(y_true, y_pred, strict=True)
                )


def test_a_label_neither_true_nor_predicted_has_no_f1_to_average():
    """A theory run scores every bin, and a bin without test images that is never predicted has
    F1 0/0: sklearn's zero_division=0 averaged it in as 0 (macro-F1 1/2 for a perfect
    classifier of one of two bins)."""
    assert metrics.macro_f1(["a", "a"], ["a", "a"], ["a", "b"]) == 1.0
    # predicted without images: its F1 is 0, a measured error, and counts
    assert metrics.macro_f1(["a", "a"], ["a", "b"], ["a", "b", "c"]) == pytest.approx(
        (2 / 3 + 0) / 2
    )
    # the same mean as the per-class table's rows that were true or predicted
    table = metrics.per_class_scores(["a", "b", "a"], ["a", "a", "x"], ["a", "b", "c"])
    assert metrics.macro_f1(["a", "b", "a"], ["a", "a", "x"], ["a", "b", "c"]) == pytest.approx(
        table["f1"].iloc[:2].mean()
    )


def test_multilabel_micro_scores_equal_counts_on_random_inputs():
    rng = np.random.default_rng(11)
    for _ in range(200):
        labels = [f"c{i}" for i in range(rng.integers(1, 5))]
        n = int(rng.integers(1, 10))
        truth = [{c for c in labels if rng.random() < 0.4} for _ in range(n)]
        found = [{c for c in labels if rng.random() < 0.4} for _ in range(n)]
        tp = sum(len(t & p) for t, p in zip(truth, found, strict=True))
        fp = sum(len(p - t) for t, p in zip(truth, found, strict=True))
        fn = sum(len(t - p) for t, p in zip(truth, found, strict=True))
        scores = metrics.multilabel_scores(truth, found, labels)
        assert (scores["tp"], scores["fp"], scores["fn"]) == (tp, fp, fn)
        assert scores["precision"] == pytest.approx(tp / (tp + fp) if tp + fp else 0.0)
        assert scores["recall"] == pytest.approx(tp / (tp + fn) if tp + fn else 0.0)
        assert scores["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)


def _scipy_bootstrap(x, y, seed, n_bootstrap):
    """The percentile intervals by one scipy call per resample, constant resamples left out."""
    index = np.random.default_rng(seed).integers(0, len(x), size=(n_bootstrap, len(x)))
    rhos, taus = [], []
    for rows in index:
        a, b = x[rows], y[rows]
        if np.ptp(a) > 0 and np.ptp(b) > 0:
            rhos.append(scipy_stats.spearmanr(a, b).statistic)
            taus.append(scipy_stats.kendalltau(a, b).statistic)
    return np.percentile(rhos, [2.5, 97.5]), np.percentile(taus, [2.5, 97.5]), len(rhos)


# 130 points take scipy's path for Kendall, the others the vectorised one
@pytest.mark.parametrize("n", [4, 9, 30, stats.KENDALL_VECTORISED_UP_TO + 10])
def test_correlations_and_intervals_equal_scipy_called_per_resample(n):
    rng = np.random.default_rng(n)
    x = np.round(rng.normal(size=n), 1)  # rounded: ties on both sides
    y = np.round(x + rng.normal(size=n), 1)
    result = stats.correlate(x, y, seed=[5, n], n_bootstrap=300)
    rho, tau, n_valid = _scipy_bootstrap(x, y, [5, n], 300)
    assert result["spearman"]["value"] == pytest.approx(scipy_stats.spearmanr(x, y).statistic)
    assert result["kendall"]["value"] == pytest.approx(scipy_stats.kendalltau(x, y).statistic)
    assert result["spearman"]["p_value"] == pytest.approx(scipy_stats.spearmanr(x, y).pvalue)
    assert result["kendall"]["p_value"] == pytest.approx(scipy_stats.kendalltau(x, y).pvalue)
    for name, expected in (("spearman", rho), ("kendall", tau)):
        got = [result[name]["ci_low"], result[name]["ci_high"]]
        np.testing.assert_allclose(got, expected, atol=1e-12)
        assert result[name]["n_valid"] == n_valid
    line = scipy_stats.linregress(x, y)
    half = scipy_stats.t.ppf(0.975, n - 2) * line.stderr
    fit = result["fit"]
    np.testing.assert_allclose(
        [fit["slope"], fit["intercept"], fit["ci_low"], fit["ci_high"], fit["r_squared"]],
        [line.slope, line.intercept, line.slope - half, line.slope + half, line.rvalue**2],
    )
    assert stats.correlate(x, y, seed=[5, n], n_bootstrap=300) == result


def test_non_finite_points_are_left_out_not_counted():
    x = [1.0, np.nan, 3.0, 4.0, 5.0, -np.inf, 2.0]
    y = [0.1, 0.2, 0.5, np.inf, 0.4, 0.3, 0.3]
    result = stats.correlate(x, y, seed=0, n_bootstrap=50)
    kept_x, kept_y = [1.0, 3.0, 5.0, 2.0], [0.1, 0.5, 0.4, 0.3]
    assert result["n"] == 4
    assert result["spearman"]["value"] == pytest.approx(
        scipy_stats.spearmanr(kept_x, kept_y).statistic
    )


# --------------------------------------------------------------------------- joined inputs


def _inputs(concepts: list[tuple[str, str, int, float, int]], macro_f1: dict[str, float]) -> Inputs:
    """One corpus and one model over ``concepts`` (group, concept, count, F1, support), with
    each group's macro-F1 as given; every concept is classified among its group's."""
    coverage = pd.DataFrame(
        {
            "concept": [c for _, c, *_ in concepts],
            "group": [g for g, *_ in concepts],
            "category": "common",
            "count": [n for _, _, n, _, _ in concepts],
            "rate": [n / N_CAPTIONS for _, _, n, _, _ in concepts],
        }
    )
    scores = pd.DataFrame(
        {
            "group": [g for g, *_ in concepts],
            "concept": [c for _, c, *_ in concepts],
            "precision": [f for *_, f, _ in concepts],
            "recall": [f for *_, f, _ in concepts],
            "f1": [f for *_, f, _ in concepts],
            "support": [s for *_, s in concepts],
        }
    )
    group_order = list(dict.fromkeys(coverage["group"]))
    per_group = scores.groupby("group", sort=False)
    groups = pd.DataFrame(
        {
            "group": group_order,
            "category": "common",
            "macro_f1": [macro_f1[g] for g in group_order],
            "accuracy": [macro_f1[g] for g in group_order],
            "n_images": per_group["support"].sum().reindex(group_order).to_numpy(),
            "n_concepts": per_group.size().reindex(group_order).to_numpy(),
        }
    )
    registry = {"name": "hand", "sha256": "0" * 64}
    corpus = Corpus(
        "corpus", 0, coverage, pd.DataFrame(), float(N_CAPTIONS), ["lexical"], "lexical", registry
    )
    model = Model("model", 1, scores, groups, registry, [], [], lambda group: None)
    return Inputs(
        records=[],
        corpora=[corpus],
        models=[model],
        group_order=group_order,
        category_order=["common"],
        category_of=dict.fromkeys(group_order, "common"),
        sensitive=set(),
        registry=registry,
        notes=[],
    )


def _world(n_groups: int = 3, per_group: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    concepts = [
        (f"g{g}", f"g{g}c{c}", int(rng.integers(0, 60)), float(rng.random()), 5)
        for g in range(n_groups)
        for c in range(per_group)
    ]
    return concepts, {f"g{g}": float(rng.random()) for g in range(n_groups)}


def test_the_joined_statistics_are_scipys_on_the_joined_points():
    concepts, macro = _world(n_groups=6, per_group=4)
    _, summary = analyse(_inputs(concepts, macro), seed=3, n_bootstrap=200)
    pair = summary["pairs"][0]
    x = np.log10((np.array([c[2] for c in concepts]) + 0.5) / N_CAPTIONS)
    f1 = [c[3] for c in concepts]
    assert pair["concepts"]["n"] == len(concepts)
    assert pair["concepts"]["spearman"]["value"] == pytest.approx(
        scipy_stats.spearmanr(x, f1).statistic
    )
    assert pair["concepts"]["kendall"]["value"] == pytest.approx(
        scipy_stats.kendalltau(x, f1).statistic
    )
    # a group's point: log10((its concepts' mean count + 0.5) / n) against its macro-F1
    counts = pd.Series([c[2] for c in concepts]).groupby([c[0] for c in concepts]).mean()
    group_x = np.log10((counts.to_numpy() + 0.5) / N_CAPTIONS)
    group_y = [macro[g] for g in counts.index]
    assert pair["groups"]["n"] == 6
    estimate = pair["groups"]["spearman"]["value"]
    if estimate is None:  # no finding: the estimate is kept beside the reason
        estimate = pair["groups"]["spearman"]["estimate"]
    assert estimate == pytest.approx(scipy_stats.spearmanr(group_x, group_y).statistic)
    again = analyse(_inputs(concepts, macro), seed=3, n_bootstrap=200)[1]["pairs"][0]
    assert again["concepts"] == pair["concepts"]


def test_a_concept_without_images_is_no_point_of_the_concept_statistics():
    """A concept with no test images (support 0, as a theory run's empty bin has) scores F1 0 by
    convention, not by measurement: as a point it drew the correlation and, well captioned, was
    called often captioned yet unknown."""
    concepts = [
        ("g0", "a", 1, 0.20, 5),
        ("g0", "b", 3, 0.35, 5),
        ("g0", "c", 8, 0.45, 5),
        ("g1", "d", 20, 0.52, 5),
        ("g1", "e", 40, 0.61, 5),
        ("g1", "f", 90, 0.70, 5),
        ("g2", "g", 150, 0.78, 5),
        ("g2", "h", 300, 0.0, 0),  # no images: its F1 of 0 measures nothing
    ]
    tables, summary = analyse(
        _inputs(concepts, {"g0": 0.3, "g1": 0.6, "g2": 0.8}), seed=0, n_bootstrap=200
    )
    pair = summary["pairs"][0]
    measured = concepts[:-1]
    x = np.log10((np.array([c[2] for c in measured]) + 0.5) / N_CAPTIONS)
    assert pair["concepts"]["n"] == len(measured)
    assert pair["concepts"]["spearman"]["value"] == pytest.approx(
        scipy_stats.spearmanr(x, [c[3] for c in measured]).statistic
    )
    assert pair["often_captioned_yet_unknown"] == []
    assert "h" not in set(tables["outliers"]["name"])
    # still listed among the concepts, with its support saying why it has no point
    row = tables["concepts"].set_index("concept").loc["h"]
    assert row["support"] == 0 and np.isnan(row["studentized_residual"])


@pytest.mark.parametrize("n_points", [3, 4])
def test_fewer_than_five_points_are_no_finding_even_when_perfectly_ordered(n_points):
    """Three perfectly ordered groups headlined "Spearman 1.00 [1.00, 1.00]": every resample of
    a monotone set is monotone, yet no ordering of fewer than five points is significant (the
    exact two-sided p of a perfect order is 2 / n!, 1/3 at 3 points, 1/12 at 4)."""
    concepts = [(f"g{i}", f"c{i}", 10 * (i + 1), 0.2 * (i + 1), 5) for i in range(n_points)]
    macro = {f"g{i}": 0.2 * (i + 1) for i in range(n_points)}
    _, summary = analyse(_inputs(concepts, macro), seed=0, n_bootstrap=200)
    for level in ("concepts", "groups"):
        statistic = summary["pairs"][0][level]
        assert statistic["n"] == n_points
        for name in ("spearman", "kendall"):
            assert statistic[name]["value"] is None
            assert statistic[name]["p_value"] is None  # scipy's says 0 for 3 ordered points
            assert statistic[name]["estimate"] == pytest.approx(1.0)
            assert statistic[name]["reason"].startswith(f"only {n_points} points: no ordering")
    # nor without intervals
    _, summary = analyse(_inputs(concepts, macro), seed=0, n_bootstrap=0)
    assert summary["pairs"][0]["concepts"]["spearman"]["value"] is None
    # five ordered points are a finding (exact p = 2 / 120)
    concepts = [(f"g{i}", f"c{i}", 10 * (i + 1), 0.15 * (i + 1), 5) for i in range(5)]
    macro = {f"g{i}": 0.15 * (i + 1) for i in range(5)}
    _, summary = analyse(_inputs(concepts, macro), seed=0, n_bootstrap=200)
    assert summary["pairs"][0]["concepts"]["spearman"]["value"] == pytest.approx(1.0)
    assert summary["pairs"][0]["concepts"]["kendall"]["value"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("counts", "f1", "reason"),
    [
        ([5, 5, 5, 5, 5], [0.1, 0.4, 0.2, 0.9, 0.5], "coverage is the same for every point"),
        ([0, 3, 9, 27, 81], [0.5] * 5, "F1 is the same for every point"),
    ],
)
def test_a_constant_side_is_said_as_undefined_never_as_a_figure(counts, f1, reason):
    concepts = [("g0", f"c{i}", n, f, 5) for i, (n, f) in enumerate(zip(counts, f1, strict=True))]
    tables, summary = analyse(_inputs(concepts, {"g0": 0.5}), seed=0, n_bootstrap=200)
    statistic = summary["pairs"][0]["concepts"]
    for name in ("spearman", "kendall"):
        assert statistic[name]["value"] is None and statistic[name]["reason"] == reason
        assert statistic[name]["ci_low"] is None and statistic[name]["ci_high"] is None
    # one group: no group correlation, in words
    assert summary["pairs"][0]["groups"]["spearman"]["reason"] == (
        "only 1 point, fewer than the 3 needed"
    )
    row = tables["correlations"].iloc[0]
    assert np.isnan(row["spearman"]) and row["spearman_reason"] == reason

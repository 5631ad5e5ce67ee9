"""The formulas every published figure rests on, checked against references computed here: a
leave-one-out refit per point, a bootstrap drawn caption by caption, hand counts. Each test
kills mutants (a flipped comparison, a changed constant, a dropped term) that the module tests
let through."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as scipy_stats

from clipaudit.goldeval import evaluate_gold, load_gold, micro_interval
from clipaudit.metrics import chance_macro_f1
from clipaudit.registry import parse_registry
from clipaudit.report import stats

# --------------------------------------------------------------------------- metrics


def test_chance_without_scored_labels_is_nan_not_a_division_by_zero():
    assert np.isnan(chance_macro_f1(["a", "b"], [], 3))


# --------------------------------------------------------------------------- the fit and its residuals

NOISE = np.array([0.01, -0.012, 0.008, -0.006, 0.011, -0.009, 0.004, -0.01, 0.007])


def _deleted_t(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Externally studentised residuals from first principles: refit without point i and divide
    its prediction error by that error's standard error under the refit."""
    n = len(x)
    out = np.empty(n)
    for i in range(n):
        xo, yo = np.delete(x, i), np.delete(y, i)
        slope, intercept = np.polyfit(xo, yo, 1)
        rest = yo - (intercept + slope * xo)
        s2 = rest @ rest / (n - 3)
        spread = ((xo - xo.mean()) ** 2).sum()
        se = np.sqrt(s2 * (1 + 1 / (n - 1) + (x[i] - xo.mean()) ** 2 / spread))
        out[i] = (y[i] - (intercept + slope * x[i])) / se
    return out


def _line(x: np.ndarray, planted: int, offset: float) -> np.ndarray:
    """F1 on a line of ``x`` with small noise, point ``planted`` moved by ``offset``."""
    y = 0.5 + 0.1 * x + NOISE[: len(x)]
    y[planted] += offset
    return y


@pytest.mark.parametrize(
    ("x", "y"),
    [
        # 4 points: the fewest with a leave-one-out variance (n - 3 = 1 degree of freedom)
        ([0.0, 1.0, 2.5, 4.0], [0.1, 0.4, 0.35, 0.9]),
        (np.linspace(-3, 0, 9), _line(np.linspace(-3, 0, 9), 4, 0.05)),
    ],
)
def test_studentised_residuals_equal_leave_one_out_refits(x, y):
    x, y = np.asarray(x), np.asarray(y)
    found = stats.studentized_residuals(x, y)
    np.testing.assert_allclose(found["studentized"], _deleted_t(x, y), rtol=1e-9)
    slope, intercept = np.polyfit(x, y, 1)
    np.testing.assert_allclose(found["fitted"], intercept + slope * x, rtol=1e-12)


def test_a_point_off_the_line_the_others_lie_on_is_minus_infinity_below_it():
    x = np.linspace(-3, 0, 7)
    y = 0.5 + 0.1 * x
    y[5] -= 0.2
    assert stats.studentized_residuals(x, y)["studentized"][5] == -np.inf


def test_the_fit_of_three_points_has_its_t_interval_on_one_degree_of_freedom():
    x, y = [0.0, 1.0, 3.0], [0.2, 0.5, 0.6]
    line = scipy_stats.linregress(x, y)
    half = scipy_stats.t.ppf(0.975, 1) * line.stderr
    found = stats.fit(x, y)
    assert found["reason"] is None
    np.testing.assert_allclose(
        [found["slope"], found["ci_low"], found["ci_high"]],
        [line.slope, line.slope - half, line.slope + half],
    )


# --------------------------------------------------------------------------- outlier directions


def _direction(x: np.ndarray, y: np.ndarray, i: int, **kwargs) -> str:
    return stats.flag_outliers(x, y, **kwargs)["direction"][i]


def test_six_points_are_judged_and_five_are_not():
    x6 = np.linspace(-3, 0, 6)
    y6 = _line(x6, 4, -0.2)
    assert _deleted_t(x6, y6)[4] < -2
    assert _direction(x6, y6, 4) == stats.OFTEN_CAPTIONED_YET_UNKNOWN
    x5 = np.linspace(-3, 0, 5)
    y5 = _line(x5, 3, -0.2)
    assert _deleted_t(x5, y5)[3] < -2
    found = stats.flag_outliers(x5, y5)
    assert list(found["direction"]) == [""] * 5 and "fewer than the 6 needed" in found["reason"]


def test_beyond_two_not_further_is_far():
    x = np.linspace(-3, 0, 9)
    y = _line(x, 2, 0.0175)
    assert 2 < _deleted_t(x, y)[2] < 2.5
    assert _direction(x, y, 2) == stats.RARELY_CAPTIONED_YET_KNOWN


@pytest.mark.parametrize(
    ("offset", "expected"),
    [(0.2, stats.RARELY_CAPTIONED_YET_KNOWN), (-0.2, stats.OFTEN_CAPTIONED_YET_UNKNOWN)],
)
def test_a_far_point_at_the_median_coverage_is_both_rarely_and_often_captioned(offset, expected):
    x = np.linspace(-3, 0, 7)  # the median is x[3]
    y = _line(x, 3, offset)
    assert x[3] == np.median(x) and abs(_deleted_t(x, y)[3]) > 2
    assert _direction(x, y, 3) == expected


def test_rarely_captioned_is_by_the_median_not_the_mean():
    # most concepts rare, two well captioned: the mean lies above the median
    x = np.array([-3, -2.9, -2.8, -2.7, -2.6, -2.5, 0.0, 0.1, -2.2])
    y = _line(x, 8, 0.2)
    assert np.median(x) < x[8] < np.mean(x) and _deleted_t(x, y)[8] > 2
    assert _direction(x, y, 8) == stats.ABOVE_THE_FIT


def test_the_most_captioned_concept_is_never_rarely_captioned_even_at_the_median():
    x = np.array([-3, -2, -1, 0, 0, 0, 0.0])  # the median is the highest coverage
    y = _line(x, 6, 0.2)
    assert np.median(x) == x.max() and _deleted_t(x, y)[6] > 2
    assert _direction(x, y, 6) == stats.ABOVE_THE_FIT


def test_often_captioned_yet_unknown_needs_no_bar_to_pass():
    x = np.linspace(-3, 0, 7)
    y = _line(x, 5, -0.2)
    floor = np.full(7, 0.6)  # every point at or below a trivial classifier's F1
    assert _direction(x, y, 5, known_above=floor) == stats.OFTEN_CAPTIONED_YET_UNKNOWN


# --------------------------------------------------------------------------- bootstrap intervals


def _valid_resamples(x: np.ndarray, y: np.ndarray, seed: int, n_bootstrap: int) -> list:
    """The resamples, drawn as :func:`stats.correlate` draws them, in which both sides vary."""
    index = np.random.default_rng(seed).integers(0, len(x), size=(n_bootstrap, len(x)))
    return [r for r in index if np.ptp(x[r]) > 0 and np.ptp(y[r]) > 0]


@pytest.mark.parametrize("n_bootstrap", [20, 40])
def test_an_interval_needs_half_the_resamples_valid_and_at_least_ten(n_bootstrap):
    # one well captioned concept among seven: about a third of the resamples miss it
    x = np.array([0, 0, 0, 0, 0, 0, 1.0])
    y = np.array([0.1, 0.5, 0.2, 0.4, 0.3, 0.6, 0.9])
    half = n_bootstrap // 2
    by_count = {}
    for seed in range(3000):
        by_count.setdefault(len(_valid_resamples(x, y, seed, n_bootstrap)), seed)
        if half in by_count and half - 1 in by_count:
            break
    seed = by_count[half]
    result = stats.correlate(x, y, seed=seed, n_bootstrap=n_bootstrap)["spearman"]
    rhos = [
        scipy_stats.spearmanr(x[r], y[r]).statistic
        for r in _valid_resamples(x, y, seed, n_bootstrap)
    ]
    assert result["n_valid"] == half and result["reason"] is None
    np.testing.assert_allclose(
        [result["ci_low"], result["ci_high"]], np.percentile(rhos, [2.5, 97.5]), atol=1e-12
    )
    fewer = stats.correlate(x, y, seed=by_count[half - 1], n_bootstrap=n_bootstrap)["spearman"]
    assert fewer["n_valid"] == half - 1 and np.isnan(fewer["ci_low"]) and fewer["reason"]


# --------------------------------------------------------------------------- gold evaluation


def test_micro_interval_is_the_percentile_bootstrap_of_resampled_captions():
    # false positives and negatives differ, caption by caption and in total
    truth = [{"dog"}, {"cat"}, {"dog", "red"}, set(), {"cat"}, {"red"}, {"dog"}] * 4
    predicted = [{"dog", "cat"}, set(), {"dog"}, {"red", "cat"}, {"cat"}, {"red"}, set()] * 4
    picks = np.random.default_rng(0).integers(0, len(truth), (2000, len(truth)))
    ratios: dict[str, list[float]] = {"precision": [], "recall": []}
    for rows in picks:
        tp = sum(len(truth[i] & predicted[i]) for i in rows)
        fp = sum(len(predicted[i] - truth[i]) for i in rows)
        fn = sum(len(truth[i] - predicted[i]) for i in rows)
        if tp + fp:
            ratios["precision"].append(tp / (tp + fp))
        if tp + fn:
            ratios["recall"].append(tp / (tp + fn))
    interval = micro_interval(truth, predicted)
    assert interval["seed"] == 0 and interval["resamples"] == 2000
    for name, values in ratios.items():
        np.testing.assert_allclose(interval[name], np.percentile(values, [2.5, 97.5]))


REGISTRY = """
groups:
  - {name: Animal, category: common}
  - {name: Color, category: common}
concepts:
  - {name: dog, group: Animal, gloss: a dog, synonyms: [dog], paper_synonyms: [dog]}
  - {name: cat, group: Animal, gloss: a cat, synonyms: [cat], paper_synonyms: [cat]}
  - {name: red, group: Color, gloss: the colour red, synonyms: [red], paper_synonyms: [red]}
"""


def _gold(tmp_path, rows):
    path = tmp_path / "gold.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_what_only_a_matcher_finds_is_scored_and_labels_are_counted(tmp_path):
    gold = _gold(
        tmp_path,
        [
            {"id": 1, "caption": "a dog and a cat", "concepts": ["dog", "cat"]},
            {"id": 2, "caption": "a red plate", "concepts": []},
            {"id": 3, "caption": "a dog chasing a cat", "concepts": ["dog", "cat"]},
        ],
    )
    result = evaluate_gold(gold, parse_registry(REGISTRY), profiles="paper")
    assert result["gold"]["n_captions"] == 3 and result["gold"]["n_labels"] == 4
    paper = result["profiles"]["paper"]
    # red: never labelled, found once; its group has no gold label at all
    groups = {row["group"]: row for row in paper["groups"]}
    assert (groups["Color"]["support"], groups["Color"]["tp"], groups["Color"]["fp"]) == (0, 0, 1)
    concepts = {row["concept"]: row for row in paper["concepts"]}
    assert (concepts["red"]["tp"], concepts["red"]["fp"], concepts["red"]["fn"]) == (0, 1, 0)


def test_a_label_given_twice_is_one_label(tmp_path):
    gold = _gold(tmp_path, [{"id": 1, "caption": "a cat", "concepts": ["dog", "dog"]}])
    registry = parse_registry(REGISTRY)
    assert load_gold(gold, registry)[0].concepts == ("dog",)
    result = evaluate_gold(gold, registry, profiles="paper")
    assert result["profiles"]["paper"]["disagreements"][0]["missed"] == ["dog"]

"""The report's statistics: how caption coverage goes with zero-shot awareness.

Every (corpus, model) pair is summarised across concepts and across groups by

- **log coverage** ``x = log10((count + 0.5) / n)``, ``n`` the captions read: a concept no caption
  mentions sits half a caption below the rarest mentioned one instead of at minus infinity (the
  usual continuity correction; ranks, and so Spearman and Kendall, do not depend on it);
- **Spearman's rho and Kendall's tau-b** between ``x`` and F1 (``scipy.stats.spearmanr``,
  ``scipy.stats.kendalltau``), each with a seeded percentile-bootstrap 95% interval: concepts
  (or groups) are resampled with replacement, ``n_bootstrap`` times, from a generator seeded by
  the report's seed and the pair's name (so a pair's interval does not depend on the other pairs,
  unless a run of the same name joins and both are renamed apart);
  resamples in which a side is constant have no correlation and are left out (their number is
  reported);
- **a log-linear fit** ``F1 = intercept + slope * x`` (``scipy.stats.linregress``): the slope is
  the change in F1 per tenfold coverage, with the 95% interval ``slope ± t(0.975, n - 2) * se``;
- **outliers**: points whose externally studentised residual (the residual over its
  leave-one-out standard error) is beyond ±2, with at least 6 points: far above the fit with
  coverage at or below the median and below the highest, and F1 above a trivial classifier's
  (always naming the concept; for a group, chance), *rarely captioned yet known*; far below
  the fit with coverage at or above the median and above the lowest, *often captioned yet unknown*
  (the two lists an auditor acts on); the other far points are *above the fit* or *below the fit*
  (a never-captioned concept the model does not know is no surprise, however far below the fit,
  even where most concepts are never captioned and the median is the lowest coverage).

A statistic that cannot be computed (fewer than 3 points, a constant side) is NaN (None in JSON)
with a ``reason``; nothing here raises on small or degenerate input.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

CONFIDENCE = 0.95
OUTLIER_THRESHOLD = 2.0
MIN_POINTS = 3
MIN_OUTLIER_POINTS = 6
MIN_RESAMPLES = 10  # fewer valid resamples give no interval (and fewer are refused)
RARELY_CAPTIONED_YET_KNOWN = "rarely captioned yet known"
OFTEN_CAPTIONED_YET_UNKNOWN = "often captioned yet unknown"
ABOVE_THE_FIT = "above the fit"  # far above, but not rarely captioned
BELOW_THE_FIT = "below the fit"  # far below, but not often captioned

LOG_COVERAGE_RULE = (
    "x = log10((count + 0.5) / n), n the captions read: a concept no caption mentions sits half a "
    "caption below the rarest mentioned one instead of at minus infinity (ranks, hence Spearman "
    "and Kendall, do not depend on the 0.5)"
)
BOOTSTRAP_RULE = (
    "percentile bootstrap: points (concepts or groups) resampled with replacement n_bootstrap "
    "times, the generator seeded by the report's seed and the pair's name; resamples in which a "
    "side is constant have no correlation and are left out (n_valid says how many remain)"
)
FIT_RULE = (
    "least squares F1 = intercept + slope × x (scipy.stats.linregress); slope is the change in F1 "
    "per tenfold coverage; 95% interval slope ± t(0.975, n - 2) × standard error"
)
OUTLIER_RULE = (
    "externally studentised residual of the fit (residual over its leave-one-out standard error) "
    f"beyond ±{OUTLIER_THRESHOLD:g}, with at least {MIN_OUTLIER_POINTS} points. Far above the fit "
    "with coverage at or below the median and below the highest, and F1 above what a trivial "
    "classifier scores (a concept: always naming it, 2p / (1 + p) for p its share of its group's "
    f"images; a group: chance): '{RARELY_CAPTIONED_YET_KNOWN}'; far below the fit with coverage at or above the median and "
    f"above the lowest: '{OFTEN_CAPTIONED_YET_UNKNOWN}'; the other far points "
    f"are '{ABOVE_THE_FIT}' or '{BELOW_THE_FIT}'"
)


def log_coverage(count: Any, n: float) -> Any:
    """``log10((count + 0.5) / n)`` elementwise (see :data:`LOG_COVERAGE_RULE`)."""
    import numpy as np

    return np.log10((np.asarray(count, dtype=float) + 0.5) / float(n))


def stream_seed(seed: int, *names: str) -> list[int]:
    """Entropy for ``numpy.random.default_rng``: the report's seed and a stable hash of names."""
    return [int(seed), zlib.crc32("\0".join(names).encode("utf-8"))]


def _too_few(n: int, minimum: int) -> str:
    """Why ``n`` points are not enough, in words: report.md escapes "<" (it cannot tell the
    library's text from a web caption's), so "n = 5 < 6" would read "n = 5 &lt; 6" there."""
    points = f"{n} point{'' if n == 1 else 's'}"
    return f"{'only ' if n else ''}{points}, fewer than the {minimum} needed"


def _why_not(x: Any, y: Any, minimum: int = MIN_POINTS) -> str | None:
    import numpy as np

    if len(x) < minimum:
        return _too_few(len(x), minimum)
    if np.ptp(x) == 0:
        return "coverage is the same for every point"
    if np.ptp(y) == 0:
        return "F1 is the same for every point"
    return None


def _nan_statistic(reason: str) -> dict[str, Any]:
    nan = float("nan")
    return {
        "value": nan,
        "p_value": nan,
        "ci_low": nan,
        "ci_high": nan,
        "n_valid": 0,
        "reason": reason,
    }


def correlate(
    x: Sequence[float],
    y: Sequence[float],
    *,
    seed: int | Sequence[int] = 0,
    n_bootstrap: int = 2000,
    confidence: float = CONFIDENCE,
) -> dict[str, Any]:
    """Spearman, Kendall (each with a bootstrap interval) and the log-linear fit of ``y`` on ``x``.

    Returns ``{"n", "spearman": {value, p_value, ci_low, ci_high, n_valid, reason}, "kendall":
    {...}, "fit": {slope, intercept, ci_low, ci_high, r_squared, p_value, stderr, reason}}``.
    """
    import numpy as np
    from scipy import stats

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-d of the same length; got {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = len(x)
    result: dict[str, Any] = {"n": n}
    why = _why_not(x, y)
    if why is not None:
        result["spearman"] = _nan_statistic(why)
        result["kendall"] = _nan_statistic(why)
    else:
        spearman = stats.spearmanr(x, y)
        kendall = stats.kendalltau(x, y)
        result["spearman"] = {
            "value": float(spearman.statistic),
            "p_value": float(spearman.pvalue),
        }
        result["kendall"] = {"value": float(kendall.statistic), "p_value": float(kendall.pvalue)}
        intervals = _bootstrap(x, y, seed, n_bootstrap, confidence)
        for name in ("spearman", "kendall"):
            result[name].update(intervals[name])
    result["fit"] = fit(x, y, confidence=confidence)
    return result


# points up to which all-pairs signs beat a scipy call per resample (2,000 resamples on a 2-core
# x86-64: 0.03 s against 0.26 s at 50 points, 0.31 s against 0.28 s at 150)
KENDALL_VECTORISED_UP_TO = 120


def kendall_tau_b(xs: Any, ys: Any) -> Any:
    """Kendall's tau-b of each row pair of ``xs`` and ``ys`` (m, n), as ``scipy.stats.kendalltau``
    computes it: (concordant - discordant) / sqrt(pairs untied in x * pairs untied in y), from the
    signs of all pairwise differences, a block of rows at a time (one call per resample costs
    more than the arithmetic)."""
    import numpy as np

    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    m, n = xs.shape
    out = np.empty(m)
    block = max(1, 2_000_000 // max(n * n, 1))  # rows whose n x n sign matrices fit in ~16 MB
    for start in range(0, m, block):
        sx = np.sign(xs[start : start + block, :, None] - xs[start : start + block, None, :])
        sy = np.sign(ys[start : start + block, :, None] - ys[start : start + block, None, :])
        both = (sx * sy).sum(axis=(1, 2))  # each pair twice; the ratio does not mind
        untied = np.count_nonzero(sx, axis=(1, 2)) * np.count_nonzero(sy, axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + block] = both / np.sqrt(untied.astype(float))
    return out


def _bootstrap(
    x: Any, y: Any, seed: int | Sequence[int], n_bootstrap: int, confidence: float
) -> dict[str, dict[str, Any]]:
    """Percentile intervals of Spearman and Kendall over paired resamples of the points."""
    import numpy as np
    from scipy import stats

    nan = float("nan")
    if n_bootstrap <= 0:
        empty = {"ci_low": nan, "ci_high": nan, "n_valid": 0, "reason": "n_bootstrap is 0"}
        return {"spearman": dict(empty), "kendall": dict(empty)}
    rng = np.random.default_rng(seed)
    n = len(x)
    index = rng.integers(0, n, size=(n_bootstrap, n))
    xs, ys = x[index], y[index]
    varies = (np.ptp(xs, axis=1) > 0) & (np.ptp(ys, axis=1) > 0)
    # Spearman is the Pearson correlation of the (average-tie) ranks: one vectorised pass
    rx = stats.rankdata(xs[varies], axis=1)
    ry = stats.rankdata(ys[varies], axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    spearman = (rx * ry).sum(1) / np.sqrt((rx * rx).sum(1) * (ry * ry).sum(1))
    if n <= KENDALL_VECTORISED_UP_TO:
        kendall = kendall_tau_b(xs[varies], ys[varies])
    else:  # scipy's O(n log n) per resample wins once the n x n sign matrices grow
        kendall = np.array(
            [stats.kendalltau(a, b).statistic for a, b in zip(xs[varies], ys[varies], strict=True)]
        )
    tail = 100 * (1 - confidence) / 2
    out = {}
    for name, values in (("spearman", spearman), ("kendall", kendall)):
        values = values[np.isfinite(values)]
        if len(values) < max(MIN_RESAMPLES, n_bootstrap // 2):
            out[name] = {
                "ci_low": nan,
                "ci_high": nan,
                "n_valid": len(values),
                "reason": f"only {len(values)} of {n_bootstrap} resamples vary on both sides",
            }
            continue
        low, high = np.percentile(values, [tail, 100 - tail])
        out[name] = {
            "ci_low": float(low),
            "ci_high": float(high),
            "n_valid": len(values),
            "reason": None,
        }
    return out


def fit(
    x: Sequence[float], y: Sequence[float], *, confidence: float = CONFIDENCE
) -> dict[str, Any]:
    """Least-squares ``y = intercept + slope * x`` with a t interval for the slope."""
    import numpy as np
    from scipy import stats

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    nan = float("nan")
    empty = {
        "slope": nan,
        "intercept": nan,
        "ci_low": nan,
        "ci_high": nan,
        "r_squared": nan,
        "p_value": nan,
        "stderr": nan,
    }
    if len(x) < MIN_POINTS:
        return {**empty, "reason": _too_few(len(x), MIN_POINTS)}
    if np.ptp(x) == 0:
        return {**empty, "reason": "coverage is the same for every point"}
    line = stats.linregress(x, y)
    half = stats.t.ppf(0.5 + confidence / 2, len(x) - 2) * line.stderr
    constant_y = np.ptp(y) == 0
    return {
        "slope": float(line.slope),
        "intercept": float(line.intercept),
        "ci_low": float(line.slope - half),
        "ci_high": float(line.slope + half),
        "r_squared": nan if constant_y else float(line.rvalue**2),
        "p_value": nan if constant_y else float(line.pvalue),
        "stderr": float(line.stderr),
        "reason": "F1 is the same for every point (slope 0)" if constant_y else None,
    }


def studentized_residuals(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    """Fitted values, residuals, leverages and externally studentised residuals of the
    least-squares line (arrays; all NaN when the fit or the leave-one-out variance is undefined).

    ``t_i = e_i / (s_(i) * sqrt(1 - h_i))`` with ``s_(i)^2 = (SSE - e_i^2 / (1 - h_i)) / (n - 3)``,
    the residual variance of the fit without point i; infinite when the other points lie exactly
    on a line and point i does not.
    """
    import numpy as np

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n = len(x)
    nan = np.full(n, np.nan)
    if n < 4 or np.ptp(x) == 0:
        return {"fitted": nan, "residual": nan, "leverage": nan, "studentized": nan.copy()}
    dx = x - x.mean()
    sxx = float(dx @ dx)
    slope = float(dx @ (y - y.mean())) / sxx
    fitted = y.mean() + slope * dx
    residual = y - fitted
    leverage = 1.0 / n + dx**2 / sxx
    sse = float(residual @ residual)
    studentized = np.full(n, np.nan)
    scale = max(sse, float(np.abs(y).max(initial=0.0)) ** 2, 1e-300)
    for i in range(n):
        free = 1.0 - leverage[i]
        if free <= 1e-12:
            continue
        s2 = (sse - residual[i] ** 2 / free) / (n - 3)
        if s2 <= 1e-12 * scale:  # the other points lie on a line
            studentized[i] = 0.0 if abs(residual[i]) <= 1e-9 else np.copysign(np.inf, residual[i])
        else:
            studentized[i] = residual[i] / np.sqrt(s2 * free)
    return {
        "fitted": fitted,
        "residual": residual,
        "leverage": leverage,
        "studentized": studentized,
    }


def flag_outliers(
    x: Sequence[float],
    y: Sequence[float],
    threshold: float = OUTLIER_THRESHOLD,
    *,
    known_above: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Studentised residuals and each point's outlier direction (``""`` when none), with the
    reason when no point can be judged. ``known_above``: per point, the F1 a trivial classifier
    reaches (NaN: none known), which a point must pass to be called known."""
    import numpy as np

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    floor = np.full(len(x), np.nan) if known_above is None else np.asarray(known_above, float)
    fitted = studentized_residuals(x, y)
    direction = np.full(len(x), "", dtype=object)
    reason = None
    if len(x) < MIN_OUTLIER_POINTS:
        reason = f"{_too_few(len(x), MIN_OUTLIER_POINTS)}: no outliers are judged"
    elif np.ptp(x) == 0:
        reason = "coverage is the same for every point: no fit to be far from"
    else:
        t = fitted["studentized"]
        median = np.median(x)
        above, below = t > threshold, t < -threshold
        direction[above] = ABOVE_THE_FIT
        direction[below] = BELOW_THE_FIT
        # the extremes never qualify: with most concepts never captioned the median is the lowest
        # coverage, and a never-captioned concept the model does not know is no surprise
        rarely = (x <= median) & (x < x.max())
        often = (x >= median) & (x > x.min())
        # far above a flat fit is no knowledge when a trivial classifier scores as much (a model
        # at chance that names one concept for every image of its group)
        known = ~(y <= floor)  # NaN floor: no bar
        direction[above & rarely & known] = RARELY_CAPTIONED_YET_KNOWN
        direction[below & often] = OFTEN_CAPTIONED_YET_UNKNOWN
    return {**fitted, "direction": direction, "reason": reason}

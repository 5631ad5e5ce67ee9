"""From the joined tables to the report's plain-data summary (what every output renders).

:func:`analyse` returns the tables (DataFrames, written as ``tables/*.csv`` and ``*.parquet``)
and the summary (a JSON-able dict: no NaN, no numpy types; a missing number is ``None``,
with a ``reason`` beside it where one is known).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from clipaudit.report import join, stats
from clipaudit.report.inputs import METHODS, PRIMARY_METHOD_RULE, Inputs
from clipaudit.text import counted

SCHEMA_VERSION = 1


def in_table_order(groups: Iterable[str], order: Sequence[str]) -> list[str]:
    """``groups`` in the order the tables show them (``order``), those not shown after, sorted."""
    chosen = set(groups)
    return [g for g in order if g in chosen] + sorted(chosen - set(order))


def sensitive_note(groups: Sequence[str]) -> str:
    """What the report says of the sensitive groups, naming the ones the registry marks."""
    return (
        f"Sensitive groups ({', '.join(groups) or 'none in this registry'}) describe people, by "
        "character or by stereotype. As Cai et al. frame them, a model's awareness of these "
        "concepts is a risk, not a skill: a high score means the model can be used to judge "
        "people by how they look. Low coverage and low awareness are the desirable outcome here."
    )


GROUP_COVERAGE_RULE = (
    "a group's coverage is taken over its concepts present on both sides (mean, median, min, max "
    "of their rates); its log coverage is log10((mean concept count + 0.5) / n); awareness is the "
    "zero-shot run's macro-F1 of the group"
)
CATEGORY_RULE = (
    "a category's coverage statistics are over its concepts, its macro-F1 statistics over its "
    "groups"
)
LEVELS = ("concept", "group")
# the columns of tables/outliers and tables/mismatches, kept when no row is found: a table with
# no header is no CSV a reader opens (pandas: EmptyDataError), and a clean audit has none
OUTLIER_COLUMNS = (
    "corpus",
    "model",
    "method",
    "primary",
    "level",
    "name",
    "group",
    "category",
    "sensitive",
    "coverage",
    "count",
    "log10_coverage",
    "f1",
    "fitted_f1",
    "residual",
    "studentized_residual",
    "direction",
)
MISMATCH_COLUMNS = (
    "kind",
    "corpus",
    "model",
    "group",
    "concept",
    "n_concepts",
    "count",
    "reason",
    "message",
)


def plain(value: Any) -> Any:
    """A JSON-able copy: numpy scalars to Python, NaN and infinities to None, tuples to lists."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    try:
        import pandas as pd

        if value is pd.NA or value is pd.NaT:
            return None
    except ImportError:  # pragma: no cover
        pass
    return str(value)


def records(frame: Any) -> list[dict[str, Any]]:
    return [plain(row) for row in frame.to_dict("records")] if len(frame) else []


def _pair_frame(frame: Any, corpus: str, model: str) -> Any:
    return frame[(frame["corpus"] == corpus) & (frame["model"] == model)]


def _trivial_f1(part: Any, group_part: Any, level: str) -> Any:
    """Per point of ``part``, the F1 of a classifier that knows nothing (NaN where unknown): a
    concept's, naming it for every image of its group, 2p / (1 + p) with p the concept's share of
    the group's images; a group's, chance (the macro-F1 of a uniform guess among the concepts
    classified)."""
    import numpy as np

    nothing = np.full(len(part), np.nan)
    if level == "group":
        return part["chance"].to_numpy(dtype=float) if "chance" in part else nothing
    if "support" not in part or "n_images" not in group_part or not len(group_part):
        return nothing  # a theory run's concepts: no images to share
    n_images = part["group"].map(group_part.drop_duplicates("group").set_index("group")["n_images"])
    share = part["support"].to_numpy(dtype=float) / n_images.to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(share > 0, 2 * share / (1 + share), np.nan)


def _x(part: Any, method: str, n: float | None, level: str) -> Any:
    import numpy as np

    column = METHODS[method][0] if level == "concept" else f"mean_{METHODS[method][0]}"
    if not n or column not in part.columns:
        return np.full(len(part), np.nan)
    return stats.log_coverage(part[column].to_numpy(dtype=float), n)


def analyse(
    inputs: Inputs, *, seed: int, n_bootstrap: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The report's tables and its summary (without figures, which :mod:`.figures` adds)."""
    import numpy as np
    import pandas as pd

    coverage = join.coverage_table(inputs)
    awareness = join.awareness_table(inputs)
    concepts = join.concepts_table(inputs, coverage, awareness)
    if concepts.empty:
        concepts = pd.DataFrame(
            columns=[
                *coverage.columns[:1],
                "model",
                *coverage.columns[1:],
                "precision",
                "recall",
                "f1",
                "support",
            ]
        )
    groups = join.groups_table(inputs, concepts)
    mismatches = join.mismatches(inputs, coverage, awareness)
    mismatches += _unpaired(inputs)
    for column in ("fitted_f1", "residual", "studentized_residual"):
        concepts[column] = np.nan
    concepts["outlier"] = ""
    if len(groups):
        for column in ("fitted_f1", "residual", "studentized_residual"):
            groups[column] = np.nan
        groups["outlier"] = ""

    correlation_rows: list[dict[str, Any]] = []
    outlier_rows: list[dict[str, Any]] = []
    for corpus, model in inputs.pairs():
        concept_part = _pair_frame(concepts, corpus.label, model.label)
        group_part = _pair_frame(groups, corpus.label, model.label) if len(groups) else groups
        means = (
            concept_part.groupby("group", sort=False)[
                [METHODS[m][0] for m in corpus.methods if METHODS[m][0] in concept_part]
            ]
            .mean()
            .add_prefix("mean_")
        )
        group_part = group_part.join(means, on="group") if len(group_part) else group_part
        for level, part, y_column, name_column in (
            ("concept", concept_part, "f1", "concept"),
            ("group", group_part, "macro_f1", "group"),
        ):
            for method in corpus.methods:
                x = _x(part, method, corpus.n_captions, level) if len(part) else np.zeros(0)
                y = part[y_column].to_numpy(dtype=float) if len(part) else np.zeros(0)
                if level == "concept" and "support" in part:
                    # a concept without test images (a theory run's empty bin) scores F1 0 by
                    # convention, not by measurement: no point (it was "often captioned yet
                    # unknown" when well captioned)
                    y = np.where(part["support"].to_numpy(dtype=float) == 0, np.nan, y)
                keep = np.isfinite(x) & np.isfinite(y)
                result = _no_finding_unbounded(
                    stats.correlate(
                        x[keep],
                        y[keep],
                        seed=stats.stream_seed(seed, corpus.label, model.label, method, level),
                        n_bootstrap=n_bootstrap,
                    )
                )
                floor = _trivial_f1(part, group_part, level)
                flagged = stats.flag_outliers(x[keep], y[keep], known_above=floor[keep])
                primary = method == corpus.primary
                correlation_rows.append(
                    {
                        "corpus": corpus.label,
                        "model": model.label,
                        "method": method,
                        "primary": primary,
                        "level": level,
                        **result,
                        "outliers": {
                            "rule": stats.OUTLIER_RULE,
                            "reason": flagged["reason"],
                            "n_rarely_captioned_yet_known": int(
                                (flagged["direction"] == stats.RARELY_CAPTIONED_YET_KNOWN).sum()
                            ),
                            "n_often_captioned_yet_unknown": int(
                                (flagged["direction"] == stats.OFTEN_CAPTIONED_YET_UNKNOWN).sum()
                            ),
                            "n_other": int(
                                np.isin(
                                    flagged["direction"], [stats.ABOVE_THE_FIT, stats.BELOW_THE_FIT]
                                ).sum()
                            ),
                        },
                    }
                )
                rows = part[keep]
                if primary and len(rows):
                    target = concepts if level == "concept" else groups
                    index = rows.index
                    target.loc[index, "fitted_f1"] = flagged["fitted"]
                    target.loc[index, "residual"] = flagged["residual"]
                    target.loc[index, "studentized_residual"] = flagged["studentized"]
                    target.loc[index, "outlier"] = flagged["direction"]
                for position, direction in enumerate(flagged["direction"]):
                    if not direction:
                        continue
                    row = rows.iloc[position]
                    count, rate = METHODS[method]
                    if level == "concept":
                        found_count, found_rate = row.get(count), row.get(rate)
                    else:  # a group: its concepts' mean count, as its log coverage uses
                        found_count = row.get(f"mean_{count}")
                        found_rate = found_count / corpus.n_captions if corpus.n_captions else None
                    outlier_rows.append(
                        {
                            "corpus": corpus.label,
                            "model": model.label,
                            "method": method,
                            "primary": primary,
                            "level": level,
                            "name": row[name_column],
                            "group": row["group"],
                            "category": row["category"],
                            "sensitive": bool(row["sensitive"]),
                            "coverage": found_rate,
                            "count": found_count,
                            "log10_coverage": float(x[keep][position]),
                            "f1": float(y[keep][position]),
                            "fitted_f1": float(flagged["fitted"][position]),
                            "residual": float(flagged["residual"][position]),
                            "studentized_residual": float(flagged["studentized"][position]),
                            "direction": direction,
                        }
                    )
    categories = join.categories_table(inputs, concepts, groups) if len(groups) else pd.DataFrame()
    coverage_groups = join.coverage_groups_table(inputs, coverage)
    awareness_groups = join.awareness_groups_table(inputs)
    correlations = _flat_correlations(correlation_rows)
    outliers = pd.DataFrame(outlier_rows, columns=list(OUTLIER_COLUMNS))
    tables = {
        "concepts": concepts,
        "groups": groups,
        "categories": categories,
        "coverage": coverage,
        "awareness": awareness,
        "coverage_groups": coverage_groups,
        "awareness_groups": awareness_groups,
        "correlations": correlations,
        "outliers": outliers,
        "mismatches": pd.DataFrame(mismatches, columns=list(MISMATCH_COLUMNS)),
    }
    summary = _summary(
        inputs, tables, correlation_rows, outlier_rows, mismatches, seed, n_bootstrap
    )
    return tables, summary


# how near -1 and 1 an interval's ends count as reaching them (the rank correlation of a
# resample is computed in floating point)
_BOUND_TOLERANCE = 1e-9
# the fewest points whose ordering can be significant at 5%: a perfect order of n points has the
# exact two-sided p 2 / n!, 1/12 at 4 points, 1/60 at 5
MIN_FINDING_POINTS = 5


def _no_finding_unbounded(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` (:func:`stats.correlate`) with each correlation that too few points give made
    n/a, its estimate kept as ``estimate``: fewer than :data:`MIN_FINDING_POINTS` points, or an
    interval spanning all of [-1, 1] (so few points fit any correlation). Five colours joined
    across two registries headlined "Spearman 0.11 [-1.00, 1.00]", three perfectly ordered
    groups "Spearman 1.00 [1.00, 1.00]" (every resample of a monotone set is monotone)."""
    n = result["n"]
    for name in ("spearman", "kendall"):
        statistic = result[name]
        low, high = statistic["ci_low"], statistic["ci_high"]
        if math.isnan(statistic["value"]):
            continue  # not computed: its reason stands
        # NaN ends (no interval) compare false
        if low <= -1 + _BOUND_TOLERANCE and high >= 1 - _BOUND_TOLERANCE:
            reason = (
                f"only {n} points, whose {stats.CONFIDENCE:.0%} interval spans every correlation "
                "from -1 to 1: no finding"
            )
        elif n < MIN_FINDING_POINTS:
            reason = (
                f"only {n} points: no ordering of fewer than {MIN_FINDING_POINTS} is significant "
                f"at 5% (a perfect one of {n} has the exact two-sided p 1/{math.factorial(n) // 2})"
                ": no finding"
            )
        else:
            continue
        statistic["estimate"] = statistic["value"]
        statistic["value"] = float("nan")
        # scipy's p of so few points is an approximation that says 0 for a perfect order of 3
        statistic["p_value"] = float("nan")
        statistic["reason"] = reason
    return result


def _registry_notes(
    mismatches: Sequence[dict[str, Any]], pairs: Sequence[dict[str, Any]]
) -> list[str]:
    """What the page says on top of a pair joined across two registries: the mismatch list
    further down was read past while the statistics above it looked like an audit's."""
    joined = {(p["corpus"], p["model"]): p["n_concepts"] for p in pairs}
    notes = []
    for entry in mismatches:
        if entry["kind"] != "registry":
            continue
        n = joined.get((entry["corpus"], entry["model"]), 0)
        notes.append(
            f"{entry['corpus']} and {entry['model']} were made with different registries: the "
            f"coverage run counted registry {join.registry_label(entry['coverage_registry'])}, "
            f"the zero-shot run used registry {join.registry_label(entry['awareness_registry'])}; "
            f"{counted(n, 'concept')} joined by name, and the pair's statistics are over "
            f"{'those alone' if n != 1 else 'it alone'}. Count coverage and score zero-shot with "
            "one registry for an audit of its concepts."
        )
    return notes


def _unpaired(inputs: Inputs) -> list[dict[str, Any]]:
    found = []
    paired_corpora = {c.label for c, _ in inputs.pairs()}
    paired_models = {m.label for _, m in inputs.pairs()}
    for corpus in inputs.corpora:
        if corpus.label not in paired_corpora:
            found.append(
                {
                    "kind": "unpaired",
                    "corpus": corpus.label,
                    "model": None,
                    "reason": "no model to join with",
                    "message": f"corpus {corpus.label} has no model to join with (a theory "
                    "scenario joins only with itself)",
                }
            )
    for model in inputs.models:
        if model.label not in paired_models:
            found.append(
                {
                    "kind": "unpaired",
                    "corpus": None,
                    "model": model.label,
                    "reason": "no corpus to join with",
                    "message": f"model {model.label} has no corpus to join with (a theory "
                    "scenario joins only with itself)",
                }
            )
    return found


# the fit's fields as columns of tables/correlations: its interval is the slope's
_FIT_COLUMNS = {
    "slope": "slope",
    "intercept": "intercept",
    "r_squared": "r_squared",
    "ci_low": "slope_ci_low",
    "ci_high": "slope_ci_high",
    "stderr": "slope_stderr",
    "p_value": "fit_p_value",
    "reason": "fit_reason",
}


def _flat_correlations(rows: Sequence[dict[str, Any]]) -> Any:
    """One row per correlation entry, its nested statistics as prefixed columns."""
    import pandas as pd

    flat = []
    for row in rows:
        entry = {k: row[k] for k in ("corpus", "model", "method", "primary", "level", "n")}
        for name in ("spearman", "kendall"):
            for key, value in row[name].items():
                entry[name if key == "value" else f"{name}_{key}"] = value
        for key, value in row["fit"].items():
            entry[_FIT_COLUMNS[key]] = value
        entry["outliers_reason"] = row["outliers"]["reason"]
        entry["n_rarely_captioned_yet_known"] = row["outliers"]["n_rarely_captioned_yet_known"]
        entry["n_often_captioned_yet_unknown"] = row["outliers"]["n_often_captioned_yet_unknown"]
        entry["n_other_outliers"] = row["outliers"]["n_other"]
        flat.append(entry)
    return pd.DataFrame(flat)


def _summary(
    inputs: Inputs,
    tables: dict[str, Any],
    correlation_rows: list[dict[str, Any]],
    outlier_rows: list[dict[str, Any]],
    mismatches: list[dict[str, Any]],
    seed: int,
    n_bootstrap: int,
) -> dict[str, Any]:
    corpora = [
        {
            "label": c.label,
            "input": c.source,
            "n_captions": c.n_captions,
            "methods": c.methods,
            "primary_method": c.primary,
            "rate_columns": {method: METHODS[method][1] for method in c.methods},
            "registry": c.registry,
            "theory": c.pair_key is not None,
            "provenance": c.provenance,
            "concepts_not_counted": c.not_counted,
        }
        for c in inputs.corpora
    ]
    models = [
        {
            "label": m.label,
            "input": m.source,
            "registry": m.registry,
            "theory": m.pair_key is not None,
            "provenance": m.provenance,
        }
        for m in inputs.models
    ]
    pairs = []
    for corpus, model in inputs.pairs():

        def pick(level: str, corpus=corpus, model=model) -> dict[str, Any]:
            return next(
                r
                for r in correlation_rows
                if r["corpus"] == corpus.label
                and r["model"] == model.label
                and r["level"] == level
                and r["primary"]
            )

        mine = [
            o
            for o in outlier_rows
            if o["corpus"] == corpus.label
            and o["model"] == model.label
            and o["primary"]
            and o["level"] == "concept"
        ]
        concept_part = _pair_frame(tables["concepts"], corpus.label, model.label)
        pairs.append(
            {
                "corpus": corpus.label,
                "model": model.label,
                "kind": "theory" if corpus.pair_key is not None else "audit",
                "method": corpus.primary,
                "n_concepts": len(concept_part),
                "n_groups": int(concept_part["group"].nunique()) if len(concept_part) else 0,
                "concepts": pick("concept"),
                "groups": pick("group"),
                stats.RARELY_CAPTIONED_YET_KNOWN.replace(" ", "_"): [
                    o for o in mine if o["direction"] == stats.RARELY_CAPTIONED_YET_KNOWN
                ],
                stats.OFTEN_CAPTIONED_YET_UNKNOWN.replace(" ", "_"): [
                    o for o in mine if o["direction"] == stats.OFTEN_CAPTIONED_YET_UNKNOWN
                ],
                "other_outliers": [
                    o for o in mine if o["direction"] in (stats.ABOVE_THE_FIT, stats.BELOW_THE_FIT)
                ],
                "group_outliers": [
                    o
                    for o in outlier_rows
                    if o["corpus"] == corpus.label
                    and o["model"] == model.label
                    and o["primary"]
                    and o["level"] == "group"
                ],
            }
        )
    summary = {
        "schema_version": SCHEMA_VERSION,
        "settings": {
            "seed": seed,
            "n_bootstrap": n_bootstrap,
            "confidence": stats.CONFIDENCE,
            "outlier_threshold": stats.OUTLIER_THRESHOLD,
            "min_outlier_points": stats.MIN_OUTLIER_POINTS,
        },
        "inputs": inputs.records,
        "registry": {**inputs.registry, "sensitive_groups": sorted(inputs.sensitive)},
        "corpora": corpora,
        "models": models,
        "categories": inputs.category_order,
        "pairs": pairs,
        "overview": _overview(inputs, tables),
        "correlations": correlation_rows,
        "outliers": outlier_rows,
        "groups": records(tables["groups"]),
        "category_summary": records(tables["categories"]),
        "concepts": records(tables["concepts"]),
        "mismatches": mismatches,
        "mismatch_counts": _counts(mismatches),
        "examples": _examples(inputs),
        "notes": [*_registry_notes(mismatches, pairs), *inputs.notes],
        "truth": inputs.truth,
        "method": {
            "log_coverage": stats.LOG_COVERAGE_RULE,
            "primary_method": PRIMARY_METHOD_RULE,
            "correlation": "scipy.stats.spearmanr and scipy.stats.kendalltau (tau-b) between "
            "log coverage and F1 (concepts) or macro-F1 (groups)",
            "bootstrap": stats.BOOTSTRAP_RULE,
            "fit": stats.FIT_RULE,
            "outliers": stats.OUTLIER_RULE,
            "groups": GROUP_COVERAGE_RULE,
            "categories": CATEGORY_RULE,
            "group_order": "the paper's: categories in the order common, under-captioned, "
            "nuisance, sensitive (others after, as they first appear), groups in registry order",
            "small_samples": f"fewer than {stats.MIN_POINTS} points or a constant side give no "
            "statistic (null) and a reason, as does a correlation of fewer than "
            f"{MIN_FINDING_POINTS} points or whose bootstrap interval spans all of [-1, 1] (its "
            "estimate kept as 'estimate'); a concept without test images (support 0) has no F1 "
            "to correlate and is no point of the concept statistics, nor is a concept its "
            "coverage run's profile cannot count (the paper profile, one without "
            "paper_synonyms), whose lexical coverage is none, not 0",
        },
        "sensitive_note": sensitive_note(in_table_order(inputs.sensitive, inputs.group_order)),
    }
    return plain(summary)


def _counts(mismatches: Sequence[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in mismatches:
        counts[entry["kind"]] = counts.get(entry["kind"], 0) + 1
    return counts


def _overview(inputs: Inputs, tables: dict[str, Any]) -> list[dict[str, Any]]:
    """Per category, per group: each corpus's coverage and each model's macro-F1 (the wide table)."""
    coverage = tables["coverage_groups"].set_index(["corpus", "group"])
    awareness = tables["awareness_groups"].set_index(["model", "group"])
    sections = []
    for category in inputs.category_order:
        rows = []
        for group in inputs.group_order:
            if inputs.category_of.get(group) != category:
                continue
            cells = []
            for corpus in inputs.corpora:
                key = (corpus.label, group)
                if key in coverage.index:
                    row = coverage.loc[key]
                    cells.append(
                        {
                            "corpus": corpus.label,
                            "category": row["category"],
                            "n_concepts": row["n_concepts"],
                            "n_never_captioned": row["n_never_captioned"],
                            "mean": row["coverage_mean"],
                            "median": row["coverage_median"],
                            "min": row["coverage_min"],
                            "max": row["coverage_max"],
                            "group_rate": row["group_rate"],
                        }
                    )
                else:
                    cells.append({"corpus": corpus.label, "mean": None})
            scores = []
            for model in inputs.models:
                key = (model.label, group)
                if key in awareness.index:
                    row = awareness.loc[key]
                    scores.append(
                        {
                            "model": model.label,
                            "category": row["category"],
                            "macro_f1": row["macro_f1"],
                            "chance": row["chance"],
                            "n_images": row["n_images"],
                            "n_concepts": row["n_concepts"],
                        }
                    )
                else:
                    scores.append({"model": model.label, "macro_f1": None})
            rows.append(
                {
                    "group": group,
                    "category": category,
                    "sensitive": group in inputs.sensitive,
                    "coverage": cells,
                    "awareness": scores,
                    "truth": (inputs.truth or {}).get(group),
                }
            )
        if rows:
            sections.append(
                {
                    "category": category,
                    "sensitive": all(r["sensitive"] for r in rows),
                    "groups": rows,
                }
            )
    return sections


def _examples(inputs: Inputs, per_concept: int = 3, max_chars: int = 300) -> dict[str, Any]:
    """Example captions per corpus and concept (group order), as the coverage run chose them."""
    found: dict[str, Any] = {}
    for corpus in inputs.corpora:
        if not corpus.examples:
            continue
        entries = []
        frame = corpus.concepts
        order = {g: i for i, g in enumerate(inputs.group_order)}
        # a coverage run draws its examples from the lexical matches, whatever its method: the
        # count beside them is the lexical one
        lexical = "lexical" if "lexical" in corpus.methods else corpus.primary
        rows = sorted(
            zip(frame["group"], frame["concept"], frame[METHODS[lexical][0]], strict=True),
            key=lambda r: order.get(r[0], len(order)),
        )
        for group, concept, count in rows:
            captions = corpus.examples.get(concept) or []
            if captions:
                entries.append(
                    {
                        "group": group,
                        "concept": concept,
                        "count": count,
                        "captions": [
                            c if len(c) <= max_chars else c[: max_chars - 1] + "…"
                            for c in captions[:per_concept]
                        ],
                    }
                )
        found[corpus.label] = entries
    return found

"""The join: caption coverage and zero-shot awareness side by side, by registry and concept names.

Tables (pandas DataFrames, rows in the paper's group order, concepts in registry order):

- ``coverage``: every concept of every corpus (``corpus, category, group, sensitive, concept,
  n_captions``, ``count``/``rate`` per coverage method present, ``method``, and the primary
  method's ``coverage_count``, ``coverage`` (its rate) and ``log10_coverage``);
- ``awareness``: every scored concept of every model (``model, category, group, sensitive,
  concept, precision, recall, f1, support``);
- ``concepts``: the inner join per (corpus, model) pair, one row per concept on both sides;
- ``groups``: per pair and group, over the joined concepts: ``coverage_mean/median/min/max``
  (primary rate), ``log10_coverage`` (``log10((mean count + 0.5) / n)``), the corpus's own
  ``group_rate`` (captions mentioning any concept of the group), the model's ``macro_f1``,
  ``accuracy``, ``n_images``, ``chance`` (the macro-F1 of a uniform guess among the concepts
  classified) and ``f1_median/min/max``;
- ``categories``: per pair and category, coverage over concepts and macro-F1 over groups
  (mean, median, min, max);
- ``coverage_groups`` and ``awareness_groups``: each corpus's coverage per group over all its
  concepts, each model's macro-F1 per group (the overview, independent of the pairing).

:func:`mismatches` lists what does not join, never dropped silently: another registry (name or
sha256), concepts with coverage but no images (or the reverse), groups with no images. Every
column of every table is listed in :class:`clipaudit.report.Report`'s docstring.
"""

from __future__ import annotations

from typing import Any

from clipaudit.report.inputs import METHODS, Corpus, Inputs, Model
from clipaudit.report.stats import log_coverage

COVERAGE_STATS = ("mean", "median", "min", "max")


def _order_key(inputs: Inputs) -> tuple[dict[str, int], dict[str, int]]:
    groups = {g: i for i, g in enumerate(inputs.group_order)}
    concepts: dict[str, int] = {}
    for frame in [c.concepts for c in inputs.corpora] + [m.concepts for m in inputs.models]:
        for name in frame["concept"]:
            concepts.setdefault(str(name), len(concepts))
    return groups, concepts


def _sorted(frame: Any, inputs: Inputs, leading: list[str]) -> Any:
    groups, concepts = _order_key(inputs)
    keys = {
        "_group": frame["group"].map(groups).fillna(len(groups)),
        **({"_concept": frame["concept"].map(concepts)} if "concept" in frame else {}),
    }
    frame = frame.assign(**keys)
    by = [*leading, "_group", *(["_concept"] if "concept" in frame else [])]
    # leading columns keep the order the corpora and models were given in
    for column in leading:
        frame[column] = frame[column].astype("category")
        frame[column] = frame[column].cat.set_categories(list(dict.fromkeys(frame[column])))
    frame = frame.sort_values(by, kind="stable").drop(columns=list(keys))
    for column in leading:
        frame[column] = frame[column].astype(str)
    return frame.reset_index(drop=True)


def _categories(frame: Any, inputs: Inputs) -> Any:
    """Each row's own category where its run gives one (a theory scenario's roles differ from
    scenario to scenario), else the registry's."""
    fallback = frame["group"].map(inputs.category_of).fillna("unknown")
    if "category" not in frame.columns:
        return fallback
    return frame["category"].where(frame["category"].notna(), fallback).astype(str)


def coverage_table(inputs: Inputs) -> Any:
    import pandas as pd

    frames = []
    for corpus in inputs.corpora:
        frame = corpus.concepts.copy()
        frame.insert(0, "corpus", corpus.label)
        frame["category"] = _categories(frame, inputs)
        frame["sensitive"] = frame["group"].isin(inputs.sensitive)
        frame["n_captions"] = corpus.n_captions
        frame["method"] = corpus.primary
        count, rate = METHODS[corpus.primary]
        # the primary method's numbers under one name: what the statistics and figures use
        frame["coverage_count"] = frame[count] if count in frame.columns else float("nan")
        frame["coverage"] = frame[rate]
        frame["log10_coverage"] = (
            log_coverage(frame[count], corpus.n_captions)
            if corpus.n_captions and count in frame.columns
            else float("nan")  # rates without counts or captions read: no log coverage
        )
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    columns = ["corpus", "category", "group", "sensitive", "concept", "n_captions"]
    for method in METHODS:
        columns += [c for c in METHODS[method] if c in frame.columns]
    columns += ["method", "coverage_count", "coverage", "log10_coverage"]
    return _sorted(frame[columns], inputs, ["corpus"])


def awareness_table(inputs: Inputs) -> Any:
    import pandas as pd

    frames = []
    for model in inputs.models:
        frame = model.concepts.copy()
        frame.insert(0, "model", model.label)
        own = dict(zip(model.groups["group"], model.groups["category"], strict=True))
        frame["category"] = frame["group"].map(own)
        frame["category"] = _categories(frame, inputs)
        frame["sensitive"] = frame["group"].isin(inputs.sensitive)
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    columns = ["model", "category", "group", "sensitive", "concept"]
    columns += ["precision", "recall", "f1", "support"]
    return _sorted(frame[columns], inputs, ["model"])


def concepts_table(inputs: Inputs, coverage: Any, awareness: Any) -> Any:
    """The inner join per pair, on (group, concept)."""
    import pandas as pd

    frames = []
    for corpus, model in inputs.pairs():
        left = coverage[coverage["corpus"] == corpus.label]
        right = awareness[awareness["model"] == model.label].drop(columns=["category", "sensitive"])
        joined = left.merge(right, on=["group", "concept"], how="inner")
        frames.append(joined)
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if frame.empty:
        return frame
    front = ["corpus", "model"]
    frame = frame[front + [c for c in frame.columns if c not in front]]
    return _sorted(frame, inputs, front)


def _stats(values: Any, prefix: str) -> dict[str, float]:
    return {
        f"{prefix}_{name}": float(getattr(values, name)()) if len(values) else float("nan")
        for name in COVERAGE_STATS
    }


def _chance(scores: Any) -> Any:
    """Chance of a zero-shot groups row or table: the macro-F1 of a uniform guess among the
    concepts each image was classified among, as the run recorded it
    (:func:`clipaudit.metrics.chance_macro_f1`); else one over those concepts, which is that
    where every candidate has images, as many: a theory run's population quantile bins, whose
    table gives ``n_candidates``, or ``n_concepts`` only where older."""
    if "chance" in scores:
        return scores["chance"]
    return 1.0 / (scores["n_candidates"] if "n_candidates" in scores else scores["n_concepts"])


def groups_table(inputs: Inputs, concepts: Any) -> Any:
    import pandas as pd

    rows = []
    for corpus, model in inputs.pairs():
        part = concepts[(concepts["corpus"] == corpus.label) & (concepts["model"] == model.label)]
        scores = model.groups.set_index("group")
        own = corpus.groups.set_index("group") if "group" in corpus.groups else None
        rate_column = METHODS[corpus.primary][1]
        count_column = METHODS[corpus.primary][0]
        for group, members in part.groupby("group", sort=False):
            score = scores.loc[group] if group in scores.index else None
            rows.append(
                {
                    "corpus": corpus.label,
                    "model": model.label,
                    "category": members["category"].iloc[0],
                    "group": group,
                    "sensitive": group in inputs.sensitive,
                    "n_concepts": len(members),
                    **_stats(members["coverage"], "coverage"),
                    "log10_coverage": float(
                        log_coverage(members[count_column].mean(), corpus.n_captions)
                    )
                    if corpus.n_captions
                    else float("nan"),
                    "group_rate": float(own.loc[group, rate_column])
                    if own is not None and group in own.index and rate_column in own.columns
                    else float("nan"),
                    "macro_f1": float(score["macro_f1"]) if score is not None else float("nan"),
                    "accuracy": float(score["accuracy"]) if score is not None else float("nan"),
                    "n_images": int(score["n_images"]) if score is not None else 0,
                    "chance": float(_chance(score)) if score is not None else float("nan"),
                    "f1_median": float(members["f1"].median()),
                    "f1_min": float(members["f1"].min()),
                    "f1_max": float(members["f1"].max()),
                }
            )
    frame = pd.DataFrame(rows)
    return _sorted(frame, inputs, ["corpus", "model"]) if len(frame) else frame


def categories_table(inputs: Inputs, concepts: Any, groups: Any) -> Any:
    import pandas as pd

    rows = []
    for corpus, model in inputs.pairs():
        part = concepts[(concepts["corpus"] == corpus.label) & (concepts["model"] == model.label)]
        part_groups = groups[(groups["corpus"] == corpus.label) & (groups["model"] == model.label)]
        for category in inputs.category_order:
            members = part[part["category"] == category]
            if members.empty:
                continue
            member_groups = part_groups[part_groups["category"] == category]["macro_f1"].dropna()
            rows.append(
                {
                    "corpus": corpus.label,
                    "model": model.label,
                    "category": category,
                    "sensitive": bool(members["sensitive"].all()),
                    "n_groups": int(members["group"].nunique()),
                    "n_concepts": len(members),
                    **_stats(members["coverage"], "coverage"),
                    **_stats(member_groups, "macro_f1"),
                }
            )
    return pd.DataFrame(rows)


def coverage_groups_table(inputs: Inputs, coverage: Any) -> Any:
    import pandas as pd

    rows = []
    for corpus in inputs.corpora:
        part = coverage[coverage["corpus"] == corpus.label]
        own = corpus.groups.set_index("group") if "group" in corpus.groups else None
        rate_column = METHODS[corpus.primary][1]
        for group, members in part.groupby("group", sort=False):
            rows.append(
                {
                    "corpus": corpus.label,
                    "category": members["category"].iloc[0],
                    "group": group,
                    "sensitive": group in inputs.sensitive,
                    "n_concepts": len(members),
                    "n_never_captioned": int((members["coverage"] == 0).sum()),
                    **_stats(members["coverage"], "coverage"),
                    "group_rate": float(own.loc[group, rate_column])
                    if own is not None and group in own.index and rate_column in own.columns
                    else float("nan"),
                }
            )
    return _sorted(pd.DataFrame(rows), inputs, ["corpus"])


def awareness_groups_table(inputs: Inputs) -> Any:
    import pandas as pd

    frames = []
    for model in inputs.models:
        frame = model.groups.copy()
        frame.insert(0, "model", model.label)
        frame["category"] = _categories(frame, inputs)
        frame["sensitive"] = frame["group"].isin(inputs.sensitive)
        frame["chance"] = _chance(frame).astype(float)
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    columns = ["model", "category", "group", "sensitive", "macro_f1", "accuracy"]
    columns += ["n_images", "n_concepts", "chance"]
    return _sorted(frame[columns], inputs, ["model"])


# --------------------------------------------------------------------------- mismatches


def registry_label(record: dict[str, Any]) -> str:
    """A run's registry as the report names it: "'cai2025' (sha256 0123456789ab)"."""
    sha = record.get("sha256")
    return f"{record.get('name')!r} (sha256 {str(sha)[:12] if sha else 'unknown'})"


def mismatches(inputs: Inputs, coverage: Any, awareness: Any) -> list[dict[str, Any]]:
    """What does not join, per (corpus, model) pair, each with a one-line ``message``."""
    found: list[dict[str, Any]] = []
    for corpus, model in inputs.pairs():
        found += _pair_mismatches(inputs, corpus, model, coverage, awareness)
    return found


def _pair_mismatches(
    inputs: Inputs, corpus: Corpus, model: Model, coverage: Any, awareness: Any
) -> list[dict[str, Any]]:
    pair = {"corpus": corpus.label, "model": model.label}
    found = []
    left, right = corpus.registry, model.registry
    differs = [
        k for k in ("name", "sha256") if left.get(k) and right.get(k) and left[k] != right[k]
    ]
    if differs:
        found.append(
            {
                "kind": "registry",
                **pair,
                "coverage_registry": {k: left.get(k) for k in ("name", "sha256")},
                "awareness_registry": {k: right.get(k) for k in ("name", "sha256")},
                "message": f"the coverage run counted registry {registry_label(left)}, the "
                f"zero-shot run used {registry_label(right)} ({' and '.join(differs)} differ); "
                "concepts are joined by name",
            }
        )
    covered = coverage[coverage["corpus"] == corpus.label]
    scored = awareness[awareness["model"] == model.label]
    scored_keys = set(zip(scored["group"], scored["concept"], strict=True))
    covered_keys = set(zip(covered["group"], covered["concept"], strict=True))
    scored_groups = set(scored["group"])
    covered_groups = set(covered["group"])
    skipped_groups = {s["group"]: s.get("reason", "") for s in model.skipped_groups}
    skipped_concepts = {
        (s["group"], s["concept"]): s.get("reason", "") for s in model.skipped_concepts
    }
    for group, members in covered.groupby("group", sort=False):
        if group not in scored_groups:
            reason = skipped_groups.get(group) or "not in the zero-shot run"
            found.append(
                {
                    "kind": "group_without_images",
                    **pair,
                    "group": group,
                    "n_concepts": len(members),
                    "reason": reason,
                    "message": f"group {group!r} has coverage ({len(members)} concepts) but no "
                    f"zero-shot score from {model.label} ({reason})",
                }
            )
            continue
        for concept, count in zip(
            members["concept"], members[METHODS[corpus.primary][0]], strict=True
        ):
            if (group, concept) in scored_keys:
                continue
            reason = skipped_concepts.get((group, concept)) or "not in the zero-shot run"
            found.append(
                {
                    "kind": "concept_without_images",
                    **pair,
                    "group": group,
                    "concept": concept,
                    "count": int(count) if count == count else None,
                    "reason": reason,
                    "message": f"concept {concept!r} ({group}) has coverage but no zero-shot "
                    f"score from {model.label} ({reason})",
                }
            )
    for group, members in scored.groupby("group", sort=False):
        if group not in covered_groups:
            found.append(
                {
                    "kind": "group_without_coverage",
                    **pair,
                    "group": group,
                    "n_concepts": len(members),
                    "reason": f"not in the coverage run {corpus.label}",
                    "message": f"group {group!r} is scored by {model.label} but has no coverage "
                    f"in {corpus.label}",
                }
            )
            continue
        for concept in members["concept"]:
            if (group, concept) not in covered_keys:
                found.append(
                    {
                        "kind": "concept_without_coverage",
                        **pair,
                        "group": group,
                        "concept": concept,
                        "reason": f"not in the coverage run {corpus.label}",
                        "message": f"concept {concept!r} ({group}) is scored by {model.label} "
                        f"but has no coverage in {corpus.label}",
                    }
                )
    return found

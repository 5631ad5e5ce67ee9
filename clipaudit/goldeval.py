"""How well the lexical matchers find concepts: precision and recall against gold caption labels.

A gold file is JSON lines, one caption per line::

    {"id": 283609, "caption": "A hitter, catcher, and umpire near home plate.", "concepts": ["athlete"]}

``concepts`` lists the registry concepts the caption mentions under their glosses (empty when none).
:func:`evaluate_gold` runs each matching profile over the captions and returns plain data
(JSON-serialisable): micro scores with bootstrap intervals, per-group scores, per-concept error
counts, and every caption where a profile and the gold labels disagree, so an auditor can read the
errors themselves.

Gold sets are small (hundreds of captions), so a micro precision or recall comes with a 95%
interval from resampling captions (a caption's labels are not independent of each other):
:data:`RESAMPLES` resamples, seeded, percentile bounds.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipaudit.errors import InputError, RegistryError, did_you_mean
from clipaudit.lexical import PROFILES, build_matcher, has_paper_synonyms
from clipaudit.metrics import multilabel_scores
from clipaudit.provenance import sha256_file
from clipaudit.registry import Registry, load_registry
from clipaudit.text import WIDE_BOMS

RESAMPLES = 2000
CONFIDENCE = 0.95
SHOWN_UNKNOWN = 10  # unknown labels named in the error, the first ones found


@dataclass(frozen=True)
class GoldCaption:
    """One labelled caption: its id, its text and the concepts it mentions."""

    id: int | str
    caption: str
    concepts: tuple[str, ...]


def load_gold(path: str | Path, registry: str | Path | Registry | None = None) -> list[GoldCaption]:
    """Read and check a gold JSON-lines file; every label must name a concept of ``registry``.

    ``registry`` (a built-in name, a YAML file or a :class:`Registry`) defaults to the built-in
    one. Blank lines are skipped; a line without ``id`` gets its line number.
    """
    path = Path(path)
    if not path.is_file():
        state = "is a folder" if path.is_dir() else "does not exist"
        raise InputError(
            f"gold file {str(path)!r} {state}; expected a JSON-lines file of labelled captions"
        )
    registry = load_registry() if registry is None else load_registry(registry)
    # by NFC form: "café" typed and "café" saved decomposed look alike and are one name
    known = {unicodedata.normalize("NFC", c.name): c.name for c in registry.concepts}
    rows: list[GoldCaption] = []
    seen: dict[int | str, int] = {}
    without_id: set[int] = set()  # lines whose id is their line number
    unknown: dict[str, int] = {}  # label -> first line it appears on
    # utf-8-sig: a UTF-8 byte-order mark (Windows Notepad writes one) is no part of line 1's JSON
    with path.open(encoding="utf-8-sig") as handle:
        try:
            lines = list(enumerate(handle, start=1))
        except UnicodeDecodeError as exc:
            handle.seek(0)
            head = handle.buffer.read(4)
            wide = next((f" but {name}" for bom, name in WIDE_BOMS if head.startswith(bom)), "")
            raise InputError(
                f"{path}: not UTF-8 text{wide} ({exc.reason} at byte {exc.start}); save it as UTF-8"
            ) from None
    for number, line in lines:
        if not line.strip():
            continue
        row = _parse_line(path, number, line)
        caption_id = row.get("id", number)
        if "id" not in row:
            without_id.add(number)
        if caption_id in seen:
            first = seen[caption_id]
            taken = {number, first} & without_id
            raise InputError(
                f"{path}:{number}: duplicate id {caption_id!r} (first on line {first})"
                + (
                    f"; line {min(taken)} has no id and takes its line number: give every line "
                    "an id, or none"
                    if taken
                    else ""
                )
            )
        seen[caption_id] = number
        labels = [known.get(unicodedata.normalize("NFC", name)) for name in row["concepts"]]
        for name, label in zip(row["concepts"], labels, strict=True):
            if label is None:
                unknown.setdefault(name, number)
        rows.append(GoldCaption(caption_id, row["caption"], tuple(dict.fromkeys(labels))))
    if unknown:
        shown = list(unknown.items())[:SHOWN_UNKNOWN]  # another registry's labels: hundreds
        listed = "; ".join(
            f"{name!r} (line {line}){_meant(registry, name)}" for name, line in shown
        ) + (f"; and {len(unknown) - len(shown)} more" if len(unknown) > len(shown) else "")
        raise InputError(
            f"{path}: {len(unknown)} label(s) name no concept of registry {registry.name!r}: {listed}; "
            "fix the labels or give the registry they were made for (--registry; registry= in "
            "Python)"
        )
    if not rows:
        raise InputError(f"{path}: no labelled captions in the file")
    return rows


def _meant(registry: Registry, label: str) -> str:
    """The concept a label the registry lacks may have meant: the one a lookup finds (which
    ignores case), said to be spelled otherwise, else the registry's suggestions (a synonym's
    concept, a group's concepts, names spelled alike)."""
    try:
        found = registry.concept(label)
    except RegistryError:
        return registry.suggest(label)
    return f" (did you mean {found.name!r}? labels name concepts as the registry spells them)"


def _parse_line(path: Path, number: int, line: str) -> dict[str, Any]:
    where = f"{path}:{number}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        # the column in the line (JSON's own counts lines within it: its newline is a second)
        column = min(exc.pos, len(line.rstrip())) + 1
        raise InputError(
            f"{where}: not valid JSON ({exc.msg} at column {column}); "
            'a gold file holds one JSON object per line: {"id": ..., "caption": "...", '
            '"concepts": [...]}'
        ) from None
    except RecursionError:
        raise InputError(f"{where}: JSON nested too deeply to be a labelled caption") from None
    if not isinstance(row, dict):
        raise InputError(
            f"{where}: expected a JSON object with 'caption' and 'concepts', got {line.strip()!r:.80}"
        )
    if not isinstance(row.get("caption"), str):
        raise InputError(
            f"{where}: 'caption' must be a string, got {_field(row, 'caption', width=60)}"
        )
    concepts = row.get("concepts")
    if not isinstance(concepts, list) or not all(isinstance(c, str) for c in concepts):
        raise InputError(
            f"{where}: 'concepts' must be a list of concept names, got "
            f"{_field(row, 'concepts', width=80)}"
        )
    caption_id = row.get("id", number)
    if not isinstance(caption_id, (int, str)) or isinstance(caption_id, bool):
        raise InputError(f"{where}: 'id' must be an integer or a string, got {caption_id!r:.60}")
    return row


def _field(row: dict[str, Any], name: str, *, width: int) -> str:
    """A field's value as a message shows it, or, when the line has no such field, its fields
    and the closest of them ("text" for "caption": another tool's gold file)."""
    if name in row:
        return f"{row[name]!r:.{width}}"
    fields = ", ".join(map(repr, list(row)[:10])) or "none"
    return f"no {name!r} field (its fields: {fields}){did_you_mean(name, map(str, row))}"


def evaluate_gold(
    gold_path: str | Path,
    registry: str | Path | Registry,
    profiles: str | Sequence[str] | None = None,
    spacy_model: str | None = None,
) -> dict[str, Any]:
    """Score each matching profile against the gold labels; returns JSON-serialisable data.

    ``registry``: a built-in name, a YAML file or a :class:`Registry`. ``profiles``: one or
    several; by default every profile the registry supports (``paper`` only with its
    ``paper_synonyms``). ``spacy_model`` is passed to the curated profile only (the paper profile
    has no NLP step).
    """
    registry = load_registry(registry)
    if isinstance(profiles, str):  # one profile, not its letters
        profiles = [profiles]
    if profiles is None:
        profiles = [p for p in PROFILES if p != "paper" or has_paper_synonyms(registry)]
    gold = load_gold(gold_path, registry)
    truth = [set(row.concepts) for row in gold]
    result: dict[str, Any] = {
        "gold": {
            "path": str(gold_path),
            "sha256": sha256_file(gold_path),
            "n_captions": len(gold),
            "n_labels": sum(len(t) for t in truth),
        },
        "registry": registry.provenance(),
        "profiles": {},
    }
    for profile in profiles:
        matcher = build_matcher(
            registry, profile, spacy_model=spacy_model if profile == "curated" else None
        )
        predicted = [set(matcher.match(row.caption)) for row in gold]
        result["profiles"][profile] = {
            "spacy_model": spacy_model if profile == "curated" else None,
            "micro": multilabel_scores(truth, predicted, [c.name for c in registry.concepts]),
            "micro_interval": micro_interval(truth, predicted),
            "groups": _group_scores(registry, truth, predicted),
            "concepts": _concept_scores(registry, truth, predicted),
            "disagreements": [
                {
                    "id": row.id,
                    "caption": row.caption,
                    "missed": [c for c in row.concepts if c not in pred],
                    "extra": [c for c in matcher.concept_names if c in pred - true],
                }
                for row, true, pred in zip(gold, truth, predicted, strict=True)
                if true != pred
            ],
        }
    return result


def micro_interval(
    truth: Sequence[set[str]], predicted: Sequence[set[str]], *, seed: int = 0
) -> dict[str, Any]:
    """:data:`CONFIDENCE` percentile intervals of micro precision and recall over
    :data:`RESAMPLES` resamples of the captions (with replacement); a bound is None where no
    resample defines the score (no prediction, or no label, at all)."""
    counts = np.array(
        [(len(t & p), len(p - t), len(t - p)) for t, p in zip(truth, predicted, strict=True)],
        dtype=np.int64,
    ).reshape(-1, 3)
    interval: dict[str, Any] = {"confidence": CONFIDENCE, "resamples": RESAMPLES, "seed": seed}
    if not len(counts):
        return {**interval, "precision": [None, None], "recall": [None, None]}
    picks = np.random.default_rng(seed).integers(0, len(counts), (RESAMPLES, len(counts)))
    tp, fp, fn = (counts[:, column][picks].sum(axis=1) for column in range(3))
    tail = (1 - CONFIDENCE) / 2 * 100
    for name, denominator in (("precision", tp + fp), ("recall", tp + fn)):
        defined = denominator > 0
        ratios = tp[defined] / denominator[defined]
        bounds = np.percentile(ratios, [tail, 100 - tail]).tolist() if len(ratios) else None
        interval[name] = bounds or [None, None]
    return interval


def _group_scores(
    registry: Registry, truth: list[set[str]], predicted: list[set[str]]
) -> list[dict[str, Any]]:
    """Micro scores within each group that the gold labels or the predictions touch."""
    rows = []
    for group in registry.groups:
        names = [c.name for c in registry.concepts_in(group.name)]
        keep = set(names)
        scores = multilabel_scores([t & keep for t in truth], [p & keep for p in predicted], names)
        support = scores["tp"] + scores["fn"]
        if support or scores["fp"]:
            rows.append(
                {"group": group.name, "category": group.category, "support": support, **scores}
            )
    return rows


def _concept_scores(
    registry: Registry, truth: list[set[str]], predicted: list[set[str]]
) -> list[dict[str, Any]]:
    """Scores of every concept that is labelled or predicted at least once."""
    rows = []
    for concept in registry.concepts:
        name = concept.name
        if any(name in t or name in p for t, p in zip(truth, predicted, strict=True)):
            only = {name}
            scores = multilabel_scores(
                [t & only for t in truth], [p & only for p in predicted], [name]
            )
            rows.append({"concept": name, "group": concept.group, **scores})
    return rows

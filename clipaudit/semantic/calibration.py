"""Per-concept thresholds fitted on labelled captions, cross-validated scores, and their files.

Three kinds of threshold, one per concept each (:data:`KINDS`):

- ``semantic``: the ``semantic`` method counts a caption for c when cos(caption, c) >= tau_c;
- ``sense``: the ``checked`` method keeps a lexical hit of c when cos(caption, gloss of c) >= the
  threshold (the caption agrees with the concept's sense);
- ``additions``: the ``checked`` method adds c to a caption without a lexical hit of c when
  cos(caption, c) >= the threshold (a paraphrase no synonym list names).

Each threshold maximises the concept's F1 on the labelled captions (:func:`fit_threshold`: the cut
between two consecutive scores, placed half-way), where the concept has at least
``min_positives`` positives among the captions the threshold decides; otherwise the concept takes the
``shared`` threshold, fitted the same way on all concepts' pairs pooled; an ``additions`` threshold
is never below the shared one (adding without a word takes the pooled evidence at least). ``sense``
is fitted first;
``additions`` then with the kept lexical hits as given. Ties go to keeping lexical hits and to adding
nothing.

:func:`cross_validate` scores every method, and each part of ``checked`` alone, on captions the
thresholds were not fitted on (k folds; copies of a caption share a fold). A :class:`Calibration`
is saved as JSON with the identity of the encoder it was fitted for, and the registry and lexical
matcher it was fitted under (:func:`fit_context`; :func:`context_differences` says where a run's
differ); :func:`calibration_for` loads it for an encoder, or, when there is none, returns the
documented defaults (:data:`DEFAULT_THRESHOLDS`) flagged ``calibrated=False``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipaudit.errors import InputError, SettingsError, one_line
from clipaudit.provenance import now_iso, sha256_file, write_json
from clipaudit.semantic.encoders import describe_difference, describe_encoder, same_encoder

KINDS = ("semantic", "sense", "additions")
METHODS = ("lexical", "semantic", "checked", "checked_sense_only", "checked_additions_only")
CALIBRATION_FORMAT = "clipaudit-semantic-calibration"
FILE_ORIGINS = ("fitted", "shared")  # where a saved threshold came from (fit_calibration)
ACCEPT_NONE, ACCEPT_ALL = 2.0, -2.0  # cosines lie in [-1, 1]
# used when an encoder has no calibration: `checked` then equals the lexical matcher (every hit
# kept, nothing added), and `semantic` counts at a rough cosine for the encoder's family
DEFAULT_THRESHOLDS = {
    "semantic": {"sentence-transformers": 0.5, "open_clip": 0.8},
    "sense": ACCEPT_ALL,
    "additions": ACCEPT_NONE,
}


# --------------------------------------------------------------------------- fitting


def fit_threshold(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    base_tp: int = 0,
    base_fp: int = 0,
    n_positives: int | None = None,
    prefer: str = "high",
) -> tuple[float, float]:
    """The F1-optimal threshold for accepting items with ``score >= threshold``; returns
    ``(threshold, f1)``.

    ``scores``/``labels``: the items the threshold decides. ``base_tp``/``base_fp``: predictions
    made whatever the threshold; ``n_positives``: all positives, decided here or not (default: those
    among the items plus ``base_tp``). The threshold lies half-way between the last accepted and
    the first rejected score (bounded by -1 and 1); accepting nothing gives :data:`ACCEPT_NONE` when
    no item was scored or the top score is 1 or more, accepting all :data:`ACCEPT_ALL` when the
    bottom score is below -1. Among equal F1, ``prefer="high"`` accepts fewer items, ``"low"``
    more.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=bool).reshape(-1)
    if scores.shape != labels.shape:
        raise InputError(f"{len(scores)} scores but {len(labels)} labels")
    if prefer not in ("high", "low"):
        raise SettingsError(f"prefer must be 'high' or 'low', got {prefer!r}")
    total = int(labels.sum()) + base_tp if n_positives is None else int(n_positives)
    if not len(scores):
        return ACCEPT_NONE, _f1(base_tp, base_fp, total - base_tp)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    tp = np.concatenate([[0], np.cumsum(y)]) + base_tp
    fp = np.concatenate([[0], np.cumsum(~y)]) + base_fp
    # only cut between distinct scores: i accepted items, s[i-1] > s[i]
    cuts = np.concatenate([[0], np.flatnonzero(np.diff(s) < 0) + 1, [len(s)]])
    cuts = np.unique(cuts)
    tp, fp = tp[cuts].astype(np.float64), fp[cuts].astype(np.float64)
    denominator = 2 * tp + fp + (total - tp)
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=(tp > 0) & (denominator > 0))
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)
    i = int(cuts[best[0] if prefer == "high" else best[-1]])
    upper = 1.0 if i == 0 else float(s[i - 1])
    lower = -1.0 if i == len(s) else float(s[i])
    threshold = (upper + lower) / 2.0
    # a float32 cosine can reach 1 or -1, or pass them by a rounding: half-way to the bound would
    # then accept the top score or reject the bottom one, not the cut whose F1 is returned
    if i == 0 and threshold <= lower:
        threshold = ACCEPT_NONE
    elif i == len(s) and threshold > upper:
        threshold = ACCEPT_ALL
    return threshold, float(f1.max())


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


@dataclass(frozen=True)
class Evidence:
    """What fitting and scoring need about labelled captions, as (captions x concepts) arrays."""

    names: tuple[str, ...]
    labels: np.ndarray  # gold
    lexical: np.ndarray  # lexical matcher's hits
    semantic: np.ndarray  # cos(caption, concept vector)
    sense: np.ndarray  # cos(caption, gloss)
    sources: tuple[str, ...] = ()  # per caption: the labelled set it came from
    # per caption: its text, which keeps copies of a caption in one fold (caption_folds)
    captions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        shape = self.labels.shape
        for name in ("lexical", "semantic", "sense"):
            if getattr(self, name).shape != shape:
                raise InputError(
                    f"evidence: {name} has shape {getattr(self, name).shape}, not {shape}"
                )
        if shape[1] != len(self.names):
            raise InputError(f"evidence: {shape[1]} columns but {len(self.names)} concept names")
        if self.captions and len(self.captions) != shape[0]:
            raise InputError(f"evidence: {len(self.captions)} captions for {shape[0]} rows")

    def take(self, rows: np.ndarray) -> Evidence:
        sources = tuple(self.sources[i] for i in rows) if self.sources else ()
        captions = tuple(self.captions[i] for i in rows) if self.captions else ()
        return Evidence(
            self.names, self.labels[rows], self.lexical[rows], self.semantic[rows],
            self.sense[rows], sources, captions,
        )  # fmt: skip


def concat_evidence(parts: Sequence[Evidence], sources: Sequence[str]) -> Evidence:
    """Several labelled sets' evidence as one, each caption tagged with its set's name."""
    if not parts or len(parts) != len(sources):
        raise InputError(f"{len(parts)} evidence sets but {len(sources)} names")
    if any(p.names != parts[0].names for p in parts):
        raise InputError("evidence sets list different concepts")
    return Evidence(
        parts[0].names,
        np.concatenate([p.labels for p in parts]),
        np.concatenate([p.lexical for p in parts]),
        np.concatenate([p.semantic for p in parts]),
        np.concatenate([p.sense for p in parts]),
        tuple(name for p, name in zip(parts, sources, strict=True) for _ in range(len(p.labels))),
        tuple(c for p in parts for c in p.captions) if all(p.captions for p in parts) else (),
    )


def gather_evidence(
    captions: Sequence[str],
    labels: Sequence[Sequence[str]],
    caption_vectors: np.ndarray,
    concepts: Any,
    matcher: Any,
    sources: Sequence[str] = (),
) -> Evidence:
    """:class:`Evidence` for labelled captions: ``labels`` are concept names per caption;
    ``caption_vectors`` their unit embeddings; ``concepts`` a
    :class:`~clipaudit.semantic.concepts.ConceptEmbeddings`; ``matcher`` a lexical matcher over the
    same concepts (``concept_names`` in the same order)."""
    names = tuple(concepts.names)
    if tuple(matcher.concept_names) != names:
        raise InputError("the lexical matcher and the concept embeddings list different concepts")
    position = {name: i for i, name in enumerate(names)}
    truth = np.zeros((len(captions), len(names)), dtype=bool)
    for row, found in enumerate(labels):
        for name in found:
            if name not in position:
                raise InputError(f"label {name!r} is not one of the embedded concepts")
            truth[row, position[name]] = True
    lexical = np.zeros_like(truth)
    rows, hit = matcher.match_pairs(list(captions))
    lexical[rows, hit] = True
    vectors = np.asarray(caption_vectors, dtype=np.float32)
    return Evidence(
        names, truth, lexical, vectors @ concepts.vectors.T, vectors @ concepts.glosses.T,
        tuple(sources), tuple(captions),
    )  # fmt: skip


def _fit_kind(
    scores: np.ndarray,
    labels: np.ndarray,
    eligible: np.ndarray,
    base: np.ndarray,
    *,
    min_positives: int,
    prefer: str,
    at_least_shared: bool = False,
) -> tuple[np.ndarray, list[str], float]:
    """Per-concept thresholds (and where each came from) plus the shared one, for items
    ``eligible`` (decided by the threshold) given ``base`` predictions made anyway;
    ``at_least_shared``: a concept's own fit may raise the shared threshold, not lower it (one
    it would lower takes the shared, origin ``shared``)."""
    k = labels.shape[1]
    base_tp = (base & labels).sum(axis=0)
    base_fp = (base & ~labels).sum(axis=0)
    n_pos = labels.sum(axis=0)
    shared, _ = fit_threshold(
        scores[eligible], labels[eligible], base_tp=int(base_tp.sum()), base_fp=int(base_fp.sum()),
        n_positives=int(n_pos.sum()), prefer=prefer,
    )  # fmt: skip
    thresholds = np.full(k, shared, dtype=np.float64)
    origin = ["shared"] * k
    for c in range(k):
        mask = eligible[:, c]
        if int((labels[:, c] & mask).sum()) >= min_positives:
            thresholds[c], _ = fit_threshold(
                scores[mask, c], labels[mask, c], base_tp=int(base_tp[c]),
                base_fp=int(base_fp[c]), n_positives=int(n_pos[c]), prefer=prefer,
            )  # fmt: skip
            origin[c] = "fitted"
            if at_least_shared and thresholds[c] < shared:
                thresholds[c], origin[c] = shared, "shared"
    return thresholds, origin, shared


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class Calibration:
    """Thresholds of each kind for each concept, for one encoder."""

    encoder: dict[str, Any]
    names: tuple[str, ...]
    thresholds: dict[str, np.ndarray]  # kind -> (k,) float
    origin: dict[str, tuple[str, ...]]  # kind -> per concept: fitted | shared | default
    shared: dict[str, float]
    calibrated: bool = True
    fitted_on: tuple[dict[str, Any], ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    # concept -> fingerprint of the texts its vectors were embedded from (concept_fingerprints);
    # empty in a calibration written before they were recorded
    texts: dict[str, str] = field(default_factory=dict)
    # the registry and lexical matcher it was fitted with (fit_context); empty in a calibration
    # written before they were recorded
    fitted_with: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kind in KINDS:
            values = np.asarray(self.thresholds.get(kind, ()), dtype=np.float64)
            if values.shape != (len(self.names),):
                raise InputError(
                    f"calibration: {kind} needs one threshold per concept "
                    f"({len(self.names)}), got {values.shape}"
                )
            odd = np.flatnonzero(~np.isfinite(values))
            if len(odd):
                raise InputError(
                    f"calibration: {kind} thresholds must be finite, got {values[odd[0]]} for "
                    f"{self.names[odd[0]]!r}"
                )

    def for_concepts(
        self, names: Sequence[str], texts: Mapping[str, str] | None = None
    ) -> Calibration:
        """The thresholds in the order of ``names``; a concept absent from the calibration gets the
        shared threshold (origin ``absent``), and so does one whose texts changed since
        (``texts``: the concepts' :func:`concept_fingerprints` now; origin ``changed``)."""
        position = {n: i for i, n in enumerate(self.names)}
        changed = {
            name
            for name in names
            if texts is not None and name in self.texts and self.texts[name] != texts.get(name)
        }
        thresholds, origin = {}, {}
        for kind in KINDS:
            values, where = [], []
            for name in names:
                i = position.get(name)
                if i is None or name in changed:
                    values.append(self.shared[kind])
                    where.append("absent" if i is None else "changed")
                else:
                    values.append(self.thresholds[kind][i])
                    where.append(self.origin[kind][i])
            thresholds[kind], origin[kind] = np.array(values), tuple(where)
        kept = {name: self.texts[name] for name in names if name in self.texts}
        return Calibration(
            self.encoder, tuple(names), thresholds, origin, dict(self.shared), self.calibrated,
            self.fitted_on, dict(self.settings), self.note, kept, dict(self.fitted_with),
        )  # fmt: skip

    def not_calibrated(self) -> dict[str, list[str]]:
        """The concepts the calibration does not cover as they are now: absent from it, or
        changed since it was fitted (both take its shared thresholds, as do the concepts it
        fitted with too few positives, origin ``shared``, which are not listed here)."""
        origins = list(zip(*self.origin.values(), strict=True))
        return {
            why: [n for n, o in zip(self.names, origins, strict=True) if why in o]
            for why in ("absent", "changed")
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "format": CALIBRATION_FORMAT,
            "version": 1,
            "created": now_iso(),
            "encoder": self.encoder,
            "calibrated": self.calibrated,
            "note": self.note,
            "fitted_on": list(self.fitted_on),
            "fitted_with": self.fitted_with,
            "settings": self.settings,
            "shared": self.shared,
            "concepts": {
                name: {
                    kind: {
                        "threshold": round(float(self.thresholds[kind][i]), 6),
                        "origin": self.origin[kind][i],
                    }
                    for kind in KINDS
                }
                | ({"texts_sha256": self.texts[name]} if name in self.texts else {})
                for i, name in enumerate(self.names)
            },
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        write_json(path, self.to_json())
        return path

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        path = Path(path)
        fix = (
            "expected the JSON file clipaudit coverage calibrate writes (fit one with clipaudit "
            "coverage calibrate GOLD.jsonl --out FILE, and give FILE)"
        )
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(
                f"{path}: unreadable calibration file ({one_line(exc)}); {fix}"
            ) from None
        if not isinstance(doc, dict) or doc.get("format") != CALIBRATION_FORMAT:
            got = (
                f"its format is {doc['format']!r:.60}"
                if isinstance(doc, dict) and "format" in doc
                else "it has no 'format'"
            )
            raise InputError(
                f"{path}: not a clipaudit semantic calibration file ({got}, not "
                f"{CALIBRATION_FORMAT!r}); {fix}"
            )
        try:
            concepts = doc["concepts"]
            names = tuple(concepts)
            thresholds = {
                kind: np.array(
                    [_threshold(path, n, kind, concepts[n][kind]["threshold"]) for n in names]
                )
                for kind in KINDS
            }
            origin = {
                kind: tuple(str(concepts[n][kind]["origin"]) for n in names) for kind in KINDS
            }
            for kind in KINDS:  # "absent", "changed" and "default" are said of a run, not a file
                for n, where in zip(names, origin[kind], strict=True):
                    if where not in FILE_ORIGINS:
                        raise ValueError(
                            f"concept {n!r} {kind} origin must be 'fitted' or 'shared', got "
                            f"{where!r:.40}"
                        )
            shared = {kind: _threshold(path, None, kind, doc["shared"][kind]) for kind in KINDS}
            encoder = dict(doc["encoder"])
            texts = {n: str(concepts[n]["texts_sha256"]) for n in names
                     if "texts_sha256" in concepts[n]}  # fmt: skip
            # each labelled file as describe_labelled wrote it; a bare path from an older file
            entries = doc.get("fitted_on", [])
            # a string is no list of paths (its letters would be read as paths)
            if not isinstance(entries, list) or not all(
                isinstance(e, (dict, str)) for e in entries
            ):
                raise TypeError(
                    f"'fitted_on' must be a list of labelled files, got {entries!r:.60}"
                )
            fitted_on = tuple(
                dict(entry) if isinstance(entry, dict) else {"path": entry} for entry in entries
            )
            settings = dict(doc.get("settings", {}))
            fitted_with = doc.get("fitted_with", {})
            if not isinstance(fitted_with, dict) or not all(
                isinstance(v, dict) for v in fitted_with.values()
            ):
                raise TypeError(
                    f"'fitted_with' must map registry and lexical to their records, got "
                    f"{fitted_with!r:.60}"
                )
            calibrated = doc.get("calibrated", True)
            if calibrated is not True:  # a file's thresholds are fitted ones: no other kind loads
                raise ValueError(
                    f"'calibrated' must be true in a calibration file, got {calibrated!r}"
                )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(
                f"{path}: malformed calibration ({type(exc).__name__}: {exc})"
            ) from None
        return cls(
            encoder, names, thresholds, origin, shared, True, fitted_on, settings,
            str(doc.get("note", "")), texts, fitted_with,
        )  # fmt: skip


def _threshold(path: Path, concept: str | None, kind: str, value: Any) -> float:
    """A threshold as a calibration file holds it: a number from :data:`ACCEPT_ALL` to
    :data:`ACCEPT_NONE` (a cosine, or one of those two); a hand-edited NaN, 5 or "0.5" is
    refused rather than counting nothing or everything without a word."""
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not ACCEPT_ALL <= value <= ACCEPT_NONE  # NaN fails it too
    ):
        where = f"concept {concept!r}" if concept is not None else "shared"
        raise InputError(
            f"{path}: {where} {kind} threshold must be a number in [{ACCEPT_ALL}, "
            f"{ACCEPT_NONE}] (a cosine, or {ACCEPT_NONE} for none, {ACCEPT_ALL} for all), got "
            f"{value!r:.40}; fix the file or fit it again (coverage calibrate)"
        )
    return float(value)


def check_min_positives(min_positives: Any) -> None:
    if not isinstance(min_positives, int) or isinstance(min_positives, bool) or min_positives < 1:
        raise SettingsError(
            f"min_positives (--min-positives) must be an integer >= 1, got {min_positives!r}"
        )


def check_folds(folds: Any, n_captions: int, *, distinct: bool = False) -> None:
    """Cross-validation needs two folds at least, and a caption in each (``distinct``: copies of
    a caption counted once, as they share a fold, see :func:`caption_folds`)."""
    if not isinstance(folds, int) or isinstance(folds, bool) or folds < 2:
        raise SettingsError(f"folds (--folds) must be an integer >= 2, got {folds!r}")
    if folds > n_captions:
        what = "labelled captions"
        if distinct:
            what = "distinct labelled captions (copies of a caption share a fold)"
        raise SettingsError(
            f"folds (--folds) {folds} is more than the {n_captions} {what}, which "
            "leaves a fold without any; give fewer folds or more captions"
        )


def fit_calibration(
    evidence: Evidence,
    encoder: dict[str, Any],
    *,
    min_positives: int = 5,
    fitted_on: Sequence[dict[str, Any]] = (),
    texts: Mapping[str, str] | None = None,
    fitted_with: Mapping[str, Any] | None = None,
) -> Calibration:
    """Fit the three kinds of threshold on ``evidence`` (see the module docstring); ``texts``:
    the concepts' :func:`concept_fingerprints`, recorded so that a use after they change knows;
    ``fitted_with``: the registry and lexical matcher the evidence came from (:func:`fit_context`),
    recorded so that a run under others knows."""
    check_min_positives(min_positives)
    y, lex = evidence.labels, evidence.lexical
    everything = np.ones_like(y)
    nothing = np.zeros_like(y)
    semantic, semantic_origin, semantic_shared = _fit_kind(
        evidence.semantic, y, everything, nothing, min_positives=min_positives, prefer="high"
    )
    sense, sense_origin, sense_shared = _fit_kind(
        evidence.sense, y, lex, nothing, min_positives=min_positives, prefer="low"
    )
    kept = lex & (evidence.sense >= sense)
    # adding a concept no word of the caption names asks for the pooled evidence at least: a
    # concept's own lower cut fits the paraphrases of its labelled sets (COCO's athletes named by
    # their sport), which on web text add its merchandise ("Sport Tee") as well
    additions, additions_origin, additions_shared = _fit_kind(
        evidence.semantic, y, ~lex, kept, min_positives=min_positives, prefer="high",
        at_least_shared=True,
    )  # fmt: skip
    return Calibration(
        encoder=dict(encoder),
        names=evidence.names,
        thresholds={"semantic": semantic, "sense": sense, "additions": additions},
        origin={
            "semantic": tuple(semantic_origin),
            "sense": tuple(sense_origin),
            "additions": tuple(additions_origin),
        },
        shared={"semantic": semantic_shared, "sense": sense_shared, "additions": additions_shared},
        calibrated=True,
        fitted_on=tuple(fitted_on),
        settings={
            "min_positives": min_positives,
            "rule": "F1-optimal per concept, shared fallback",
        },
        texts={n: texts[n] for n in evidence.names if n in texts} if texts else {},
        fitted_with=dict(fitted_with or {}),
    )


def default_calibration(
    encoder: dict[str, Any], names: Sequence[str], note: str = ""
) -> Calibration:
    """The documented defaults (:data:`DEFAULT_THRESHOLDS`), flagged ``calibrated=False``."""
    family = encoder.get("kind", "sentence-transformers")
    semantic = DEFAULT_THRESHOLDS["semantic"].get(family, 0.5)
    shared = {"semantic": semantic, "sense": DEFAULT_THRESHOLDS["sense"],
              "additions": DEFAULT_THRESHOLDS["additions"]}  # fmt: skip
    k = len(names)
    return Calibration(
        dict(encoder), tuple(names), {kind: np.full(k, shared[kind]) for kind in KINDS},
        {kind: ("default",) * k for kind in KINDS}, shared, calibrated=False,
        note=note or "no calibration for this encoder: default thresholds, not fitted on labels",
    )  # fmt: skip


def concept_fingerprints(registry: Any) -> dict[str, str]:
    """Per concept of ``registry``, a fingerprint of the texts its vectors are embedded from
    (:func:`~clipaudit.semantic.concepts.concept_texts`): a calibration's thresholds hold for
    those texts only."""
    from clipaudit.semantic.concepts import concept_texts

    return {
        c.name: hashlib.sha256(json.dumps(concept_texts(c)).encode("utf-8")).hexdigest()[:16]
        for c in registry.concepts
    }


def calibration_for(
    encoder: dict[str, Any],
    names: Sequence[str],
    path: str | Path | None = None,
    texts: Mapping[str, str] | None = None,
) -> Calibration:
    """The calibration at ``path`` for this encoder, in the order of ``names``; without a path,
    the defaults, flagged. A calibration fitted for another encoder is refused, and so is one
    that calibrates none of the concepts as they are now (``texts``: their
    :func:`concept_fingerprints`; another registry's, say); concepts absent from it or changed
    since take its shared thresholds (:meth:`Calibration.not_calibrated`)."""
    if path is None:
        return default_calibration(encoder, names)
    calibration = Calibration.load(path)
    if not same_encoder(calibration.encoder, encoder):
        raise SettingsError(
            f"{path} was fitted for another encoder, {describe_encoder(calibration.encoder)}, "
            f"not this run's {describe_encoder(encoder)} "
            f"({describe_difference(calibration.encoder, encoder)}); "
            "fit one for this encoder (coverage calibrate --encoder, as this run names it), count "
            "with the encoder it was fitted for, or run without one (defaults)"
        )
    chosen = calibration.for_concepts(names, texts)
    missing = chosen.not_calibrated()
    if names and len(missing["absent"]) + len(missing["changed"]) == len(names):
        raise SettingsError(
            f"{path} calibrates none of these {len(names)} concepts as they are now "
            f"({len(missing['absent'])} absent from it, {len(missing['changed'])} with other "
            "prompts, synonyms or gloss): it was fitted for another registry; fit one for this "
            "registry (coverage calibrate --registry) or run without one (defaults)"
        )
    return chosen


def fit_context(registry: Any, profile: str, spacy_model: str | None) -> dict[str, Any]:
    """What a calibration is fitted under besides the encoder: the registry, and the lexical
    matcher whose hits the ``sense`` and ``additions`` thresholds are fitted on."""
    return {
        "registry": {"name": registry.name, "sha256": registry.sha256},
        "lexical": {"profile": profile, "spacy_model": spacy_model},
    }


def context_differences(
    calibration: Calibration, now: Mapping[str, Any], path: str | Path, *, lexical: bool
) -> dict[str, str]:
    """Where ``calibration`` was fitted under another registry or lexical matcher than a run's
    (``now``: its :func:`fit_context`), each said naming both; empty for the defaults. The
    registry is compared always; the lexical matcher when ``lexical`` (the ``checked`` method:
    its thresholds were fitted on that matcher's hits), and another profile is refused, since
    its hits are not those the thresholds keep or add to."""
    if not calibration.calibrated:
        return {}
    fitted_profile = calibration.fitted_with.get("lexical", {}).get("profile")
    profile = now["lexical"]["profile"]
    if lexical and fitted_profile is not None and fitted_profile != profile:
        raise SettingsError(
            f"{path} was fitted on the lexical hits of the {fitted_profile!r} profile, and the "
            f"checked method keeps and adds to those of the {profile!r} profile here; fit one "
            f"under this profile (coverage calibrate --profile {profile}) or count with "
            f"--profile {fitted_profile}"
        )
    differences = {}
    for part in ("registry", "lexical") if lexical else ("registry",):
        fitted = calibration.fitted_with.get(part)
        if fitted is None:
            differences[part] = (
                f"not recorded in the calibration (fitted before it was); this run: "
                f"{_said(now[part])}"
            )
        elif fitted != now[part]:
            differences[part] = f"fitted with {_said(fitted)}; this run: {_said(now[part])}"
    return differences


def _said(record: Mapping[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in record.items())


def check_labelled_files(paths: Sequence[str | Path]) -> None:
    """Each labelled file once: pooled twice (named twice, or a copy under another name), its
    captions would weigh double and its concepts reach ``min_positives`` on half the positives.
    Files that do not exist are left to the reader, which says so."""
    first: dict[Any, Path] = {}
    for path in map(Path, paths):
        if not path.is_file():
            continue
        for key, what in ((path.resolve(), "is named twice"), (sha256_file(path), "")):
            if key in first:
                said = what or f"holds the same bytes as {first[key]}"
                raise SettingsError(
                    f"labelled caption file {path} {said}: pooled, its captions would count twice "
                    "(and its concepts reach --min-positives on half their positives); name each "
                    "labelled file once (the GOLD arguments; gold= in Python)"
                )
            first[key] = path


def describe_labelled(path: str | Path, n_captions: int) -> dict[str, Any]:
    return {"path": str(path), "sha256": sha256_file(path), "n_captions": n_captions}


# --------------------------------------------------------------------------- predicting, scoring


def predict(evidence: Evidence, calibration: Calibration, method: str) -> np.ndarray:
    """(captions x concepts) predictions of ``method`` (:data:`METHODS`) under ``calibration``."""
    t = calibration.for_concepts(evidence.names).thresholds
    lex = evidence.lexical
    if method == "lexical":
        return lex.copy()
    if method == "semantic":
        return evidence.semantic >= t["semantic"]
    kept = lex & (evidence.sense >= t["sense"])
    added = ~lex & (evidence.semantic >= t["additions"])
    if method == "checked":
        return kept | added
    if method == "checked_sense_only":
        return kept
    if method == "checked_additions_only":
        return lex | added
    raise SettingsError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")


def micro_scores(
    labels: np.ndarray, predicted: np.ndarray, names: Sequence[str], *, interval: bool = False
) -> dict[str, Any]:
    """Micro scores of a caption x concept prediction matrix; with ``interval``, also their
    bootstrap intervals over captions (:func:`clipaudit.goldeval.micro_interval`)."""
    from clipaudit.goldeval import micro_interval
    from clipaudit.metrics import multilabel_scores

    def sets(matrix: np.ndarray) -> list[set[str]]:
        return [{names[j] for j in np.flatnonzero(row)} for row in matrix]

    truth, found = sets(labels), sets(predicted)
    scores = multilabel_scores(truth, found, list(names))
    if interval:
        scores["interval"] = micro_interval(truth, found)
    return scores


def _fit_for_method(
    evidence: Evidence, encoder: dict, method: str, min_positives: int
) -> Calibration:
    calibration = fit_calibration(evidence, encoder, min_positives=min_positives)
    if method != "checked_additions_only":
        return calibration
    # additions alone: fitted with every lexical hit kept
    forced = Evidence(
        evidence.names, evidence.labels, evidence.lexical, evidence.semantic,
        np.ones_like(evidence.sense), evidence.sources, evidence.captions,
    )  # fmt: skip
    return fit_calibration(forced, encoder, min_positives=min_positives)


def caption_folds(
    evidence: Evidence, folds: int, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, test rows) of each fold: a shuffled k-fold split of the captions in which the
    copies of a caption share a fold (web sets hold the same text twice), since a copy among the
    training captions would fit the thresholds on the test caption's own vector and label. Copies:
    the same :attr:`Evidence.captions` up to case and white space, or, without captions, the same
    scores. Without copies it is sklearn's ``KFold(folds, shuffle=True, random_state=seed)`` over
    the rows."""
    from sklearn.model_selection import KFold

    if evidence.captions:
        keys: list[Any] = [" ".join(c.casefold().split()) for c in evidence.captions]
    else:  # a copy encoded in another batch can differ in the last bits: captions are surer
        keys = [row.tobytes() for row in np.concatenate([evidence.semantic, evidence.sense], 1)]
    first: dict[Any, int] = {}  # key -> its group, numbered in order: no copies, group i is row i
    group = np.array([first.setdefault(key, len(first)) for key in keys], dtype=np.int64)
    check_folds(folds, len(first), distinct=len(first) < len(group))
    splits = KFold(folds, shuffle=True, random_state=seed).split(np.arange(len(first)))
    return [
        (np.flatnonzero(~np.isin(group, chosen)), np.flatnonzero(np.isin(group, chosen)))
        for _, chosen in splits
    ]


def cross_validate(
    evidence: Evidence,
    *,
    folds: int = 5,
    seed: int = 0,
    min_positives: int = 5,
    methods: Sequence[str] = METHODS,
) -> dict[str, Any]:
    """Micro precision/recall/F1 of each method, every caption predicted by thresholds fitted on
    the other folds only (:func:`caption_folds`: copies of a caption share its fold); per source
    too when the evidence pools several labelled sets."""
    n = evidence.labels.shape[0]
    predicted = {m: np.zeros_like(evidence.labels) for m in methods}
    fitted = {kind: 0 for kind in KINDS}
    for train, test in caption_folds(evidence, folds, seed):
        part = evidence.take(train)
        shared_fit = fit_calibration(part, {}, min_positives=min_positives)
        for method in methods:
            calibration = (
                _fit_for_method(part, {}, method, min_positives)
                if method == "checked_additions_only"
                else shared_fit
            )
            predicted[method][test] = predict(evidence.take(test), calibration, method)
            if method == "checked":
                for kind in KINDS:
                    fitted[kind] += calibration.origin[kind].count("fitted")
    result: dict[str, Any] = {
        "folds": folds,
        "seed": seed,
        "min_positives": min_positives,
        "n_captions": n,
        "concepts_fitted_per_fold": {k: v / folds for k, v in fitted.items()},
        "methods": {},
    }
    sources = sorted(set(evidence.sources)) if evidence.sources else []
    for method in methods:
        entry = micro_scores(evidence.labels, predicted[method], evidence.names)
        if len(sources) > 1:
            entry["by_source"] = {}
            for source in sources:
                rows = np.array([s == source for s in evidence.sources])
                entry["by_source"][source] = micro_scores(
                    evidence.labels[rows], predicted[method][rows], evidence.names
                )
        result["methods"][method] = entry
    return result


def transfer(
    fit_on: Evidence,
    score_on: Evidence,
    *,
    min_positives: int = 5,
    methods: Sequence[str] = METHODS,
) -> dict[str, Any]:
    """Scores on ``score_on``, with their bootstrap intervals, with thresholds fitted on
    ``fit_on`` only (disjoint sets)."""
    out = {}
    for method in methods:
        calibration = _fit_for_method(fit_on, {}, method, min_positives)
        predicted = predict(score_on, calibration, method)
        out[method] = micro_scores(score_on.labels, predicted, score_on.names, interval=True)
    return out

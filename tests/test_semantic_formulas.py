"""The semantic thresholds' formulas checked against references computed here: every cut of a
threshold tried by brute force, the fallback and the pooled threshold rebuilt pair by pair, counts
and checks on vectors whose cosines are exact in float32. Each test kills mutants (a flipped
comparison, a swapped preference, a dropped term) that the module tests let through."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from clipaudit.semantic.calibration import (
    KINDS,
    Calibration,
    Evidence,
    caption_folds,
    cross_validate,
    fit_calibration,
    fit_threshold,
    predict,
    transfer,
)
from clipaudit.semantic.checked import SenseChecker
from clipaudit.semantic.concepts import ConceptEmbeddings
from clipaudit.semantic.counting import SemanticCounter

# --------------------------------------------------------------------------- fitting


def brute_threshold(scores, labels, base_tp, base_fp, n_pos, prefer):
    """Every way to accept the top items (none, or all scoring >= each distinct score), scored by
    F1 with the given base predictions; ties: fewest accepted ("high") or most ("low"). The
    threshold lies half-way between the lowest accepted and the highest rejected score, bounded
    by 1 and -1."""
    options = [np.zeros(len(scores), bool)] + [scores >= t for t in np.unique(scores)]
    f1s = []
    for accepted in options:
        tp = base_tp + int((accepted & labels).sum())
        fp = base_fp + int((accepted & ~labels).sum())
        f1s.append(2 * tp / (2 * tp + fp + (n_pos - tp)) if tp else 0.0)
    best = max(f1s)
    sizes = [int(a.sum()) for a, f in zip(options, f1s, strict=True) if f >= best - 1e-12]
    size = min(sizes) if prefer == "high" else max(sizes)
    ranked = np.sort(scores)[::-1]
    upper = 1.0 if size == 0 else ranked[size - 1]
    lower = -1.0 if size == len(scores) else ranked[size]
    return (upper + lower) / 2, best


def reference_kind(scores, labels, eligible, base, min_positives, prefer, at_least_shared=False):
    """One kind's thresholds, origins and shared threshold, fitted pair by pair."""
    base_tp = (base & labels).sum(axis=0)
    base_fp = (base & ~labels).sum(axis=0)
    n_pos = labels.sum(axis=0)
    shared, _ = brute_threshold(
        scores[eligible], labels[eligible], int(base_tp.sum()), int(base_fp.sum()),
        int(n_pos.sum()), prefer,
    )  # fmt: skip
    thresholds, origin = [], []
    for c in range(labels.shape[1]):
        mask = eligible[:, c]
        if (labels[mask, c]).sum() < min_positives:
            thresholds.append(shared)
            origin.append("shared")
            continue
        own, _ = brute_threshold(
            scores[mask, c], labels[mask, c], int(base_tp[c]), int(base_fp[c]), int(n_pos[c]),
            prefer,
        )  # fmt: skip
        if at_least_shared and own < shared:
            thresholds.append(shared)
            origin.append("shared")
        else:
            thresholds.append(own)
            origin.append("fitted")
    return np.array(thresholds), tuple(origin), shared


def random_evidence(seed, n=70, k=4):
    """Scores on a 0.05 grid (ties happen) within (-0.9, 0.9), positives shifted up; concept 3
    rare, so that small ``min_positives`` fit it and larger ones make it take the shared cut."""
    rng = np.random.default_rng(seed)
    labels = rng.random((n, k)) < [0.35, 0.25, 0.3, 0.06]
    semantic = np.round((rng.uniform(-0.6, 0.5, (n, k)) + 0.35 * labels) / 0.05) * 0.05
    sense = np.round((rng.uniform(-0.6, 0.5, (n, k)) + 0.3 * labels) / 0.05) * 0.05
    lexical = (labels & (rng.random((n, k)) < 0.7)) | (rng.random((n, k)) < 0.15)
    return Evidence(("a", "b", "c", "d"), labels, lexical, semantic, sense)


@pytest.mark.parametrize("seed", range(6))
def test_fitted_thresholds_equal_a_brute_force_fit_of_each_kind(seed):
    """``semantic`` on every pair; ``sense`` on the lexical pairs (all positives count, found or
    not); ``additions`` on the others with the kept lexical hits as given, never below the pooled
    cut. Each concept fitted where its decided pairs hold ``min_positives`` positives or more."""
    evidence = random_evidence(seed)
    y, lex = evidence.labels, evidence.lexical
    everything, nothing = np.ones_like(y), np.zeros_like(y)
    for min_positives in range(1, 12):
        fitted = fit_calibration(evidence, {}, min_positives=min_positives)
        sense = reference_kind(evidence.sense, y, lex, nothing, min_positives, "low")
        kept = lex & (evidence.sense >= sense[0])
        expected = {
            "semantic": reference_kind(
                evidence.semantic, y, everything, nothing, min_positives, "high"
            ),
            "sense": sense,
            "additions": reference_kind(
                evidence.semantic, y, ~lex, kept, min_positives, "high", at_least_shared=True
            ),
        }
        for kind, (thresholds, origin, shared) in expected.items():
            where = (seed, min_positives, kind)
            np.testing.assert_allclose(
                fitted.thresholds[kind], thresholds, atol=1e-9, err_msg=where
            )
            assert fitted.origin[kind] == origin, where
            assert fitted.shared[kind] == pytest.approx(shared, abs=1e-9), where


def test_the_fallback_counts_the_positives_the_threshold_decides():
    """``sense`` decides lexical pairs only: a concept with 5 positives, 3 of them lexical hits,
    has 3 positives there and takes the shared cut at ``min_positives=4``, its own at 3."""
    labels = np.zeros((12, 2), bool)
    labels[:5, 0] = labels[:6, 1] = True
    lexical = np.zeros_like(labels)
    lexical[[0, 1, 2, 5, 6], 0] = True  # 3 positives, 2 negatives
    lexical[:8, 1] = True  # 6 positives, 2 negatives
    sense = np.where(labels, 0.6, 0.2)
    sense[5, 0] = 0.7  # a negative above a's positives: a's own cut accepts it or not
    evidence = Evidence(("a", "b"), labels, lexical, sense, sense)
    for min_positives, origin in ((3, "fitted"), (4, "shared")):
        fitted = fit_calibration(evidence, {}, min_positives=min_positives)
        assert fitted.origin["sense"][0] == origin, min_positives
    assert fit_calibration(evidence, {}, min_positives=6).origin["sense"][1] == "fitted"
    assert fit_calibration(evidence, {}, min_positives=7).origin["sense"][1] == "shared"


def test_an_additions_cut_equal_to_the_shared_one_is_the_concepts_own():
    """With one concept, the pooled pairs are the concept's own: its additions cut equals the
    shared one, which it does not lower, so it is its own (origin ``fitted``)."""
    labels = np.array([True] * 5 + [False] * 5)[:, None]
    scores = np.linspace(0.9, 0.0, 10)[:, None]
    evidence = Evidence(("a",), labels, np.zeros_like(labels), scores, scores)
    fitted = fit_calibration(evidence, {}, min_positives=5)
    assert fitted.thresholds["additions"][0] == pytest.approx(fitted.shared["additions"])
    assert fitted.thresholds["additions"][0] == pytest.approx((0.5 + 0.4) / 2)
    assert fitted.origin["additions"] == ("fitted",)


def test_a_threshold_is_half_way_to_the_cosine_bound_when_all_or_none_are_accepted():
    """Accepting nothing: half-way between the top score and 1; accepting all: between the
    bottom score and -1; a bottom score of -1 itself gives -1 (accepting it), not the sentinel."""
    assert fit_threshold(np.array([0.5, 0.3]), np.array([False, False])) == (0.75, 0.0)
    threshold, f1 = fit_threshold(np.array([0.4, -0.5]), np.array([True, True]), prefer="low")
    assert (threshold, f1) == (pytest.approx(-0.75), 1.0)
    assert fit_threshold(np.array([0.2, -1.0]), np.array([True, True])) == (-1.0, 1.0)


def test_positives_default_to_those_decided_plus_the_base_hits():
    """Without ``n_positives``, the positives are those among the items plus ``base_tp``: two
    base hits and one positive item accepted give F1 1, not more."""
    threshold, f1 = fit_threshold(np.array([0.9, 0.1]), np.array([True, False]), base_tp=2)
    assert f1 == pytest.approx(1.0)
    assert threshold == pytest.approx(0.5)


# --------------------------------------------------------------------------- predicting


def calibration_of(names, semantic, sense, additions):
    k = len(names)
    thresholds = {
        "semantic": np.full(k, semantic, dtype=np.float64),
        "sense": np.full(k, sense, dtype=np.float64),
        "additions": np.full(k, additions, dtype=np.float64),
    }
    origin = {kind: ("fitted",) * k for kind in KINDS}
    shared = {"semantic": semantic, "sense": sense, "additions": additions}
    return Calibration({}, tuple(names), thresholds, origin, shared)


def test_each_method_predicts_from_its_thresholds_at_and_beside_them():
    """A score equal to its threshold counts; ``checked`` adds only to pairs without a lexical
    hit (a dropped lexical hit stays dropped, however near the concept); ``additions only``
    keeps every lexical hit."""
    # captions x one concept: (lexical, semantic, sense)
    rows = [
        (True, 0.9, 0.5),  # lexical, sense at its threshold: kept
        (True, 0.95, 0.1),  # lexical, sense below: dropped, though semantic is above additions
        (False, 0.8, 0.0),  # no lexical hit, semantic at the additions threshold: added
        (False, 0.79, 0.9),  # no lexical hit, below: nothing
        (False, 0.6, 0.0),  # semantic at the semantic threshold
    ]
    lexical = np.array([[r[0]] for r in rows])
    semantic = np.array([[r[1]] for r in rows])
    sense = np.array([[r[2]] for r in rows])
    evidence = Evidence(("a",), np.zeros_like(lexical), lexical, semantic, sense)
    calibration = calibration_of(("a",), 0.6, 0.5, 0.8)
    got = {m: predict(evidence, calibration, m)[:, 0].tolist() for m in
           ("semantic", "checked", "checked_sense_only", "checked_additions_only")}  # fmt: skip
    assert got == {
        "semantic": [True, True, True, True, True],
        "checked": [True, False, True, False, False],
        "checked_sense_only": [True, False, False, False, False],
        "checked_additions_only": [True, True, True, False, False],
    }
    assert predict(evidence, calibration_of(("a",), 0.61, 0.5, 0.8), "semantic")[:, 0].tolist() == [
        True, True, True, True, False
    ]  # fmt: skip


def test_the_additions_cut_takes_the_kept_lexical_hits_as_given():
    """One concept; lexical hits: 2 true ones the sense check keeps (gloss 0.9) and 4 false ones
    it drops (-0.5). Without a lexical hit: a positive at 0.8, 4 negatives at 0.7, 2 positives at
    0.6, 10 negatives at 0.1. With the kept hits as given (2 true, 0 false) accepting 0.8 alone is
    best (F1 6/8 against 10/14), so ``checked`` adds at 0.75; ``checked_additions_only`` keeps
    all 6 hits (2 true, 4 false), with which accepting down to 0.6 is best (10/18 against 6/12):
    it adds at 0.35."""
    labels = np.array([1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1] + [0] * 10, bool)[:, None]
    lexical = np.zeros_like(labels)
    lexical[:6] = True
    sense = np.where(labels, 0.9, -0.5)
    semantic = np.array([0.0] * 6 + [0.8, 0.7, 0.7, 0.7, 0.7, 0.6, 0.6] + [0.1] * 10)[:, None]
    evidence = Evidence(("a",), labels, lexical, semantic, sense)
    free = ~lexical[:, 0]
    for base_fp, cut in ((0, 0.75), (4, 0.35)):
        brute, _ = brute_threshold(semantic[free, 0], labels[free, 0], 2, base_fp, 5, "high")
        assert brute == pytest.approx(cut)
    fitted = fit_calibration(evidence, {}, min_positives=3)
    assert fitted.thresholds["sense"][0] == pytest.approx((0.9 - 0.5) / 2)
    assert fitted.thresholds["additions"][0] == pytest.approx(0.75)
    scored = transfer(evidence, evidence, min_positives=3,
                      methods=("checked", "checked_additions_only"))  # fmt: skip
    assert (scored["checked"]["tp"], scored["checked"]["fp"]) == (3, 0)
    # every lexical hit (2 true, 4 false) and all the additions down to 0.6 (3 true, 4 false)
    only = scored["checked_additions_only"]
    assert (only["tp"], only["fp"]) == (5, 8)


def test_concepts_fitted_per_fold_is_the_mean_over_the_folds():
    evidence = random_evidence(3)
    result = cross_validate(evidence, folds=4, seed=1, min_positives=4, methods=("checked",))
    fitted = {kind: 0 for kind in KINDS}
    for train, _ in caption_folds(evidence, 4, 1):
        part = fit_calibration(evidence.take(train), {}, min_positives=4)
        for kind in KINDS:
            fitted[kind] += part.origin[kind].count("fitted")
    assert result["concepts_fitted_per_fold"] == {k: v / 4 for k, v in fitted.items()}
    assert any(v % 4 for v in fitted.values())  # a mean that is no whole number


# --------------------------------------------------------------------------- counting

E = np.eye(4, dtype=np.float32)


def test_a_cosine_equal_to_its_threshold_counts_and_a_zero_cosine_is_no_zero_vector():
    """Cosines exact in float32: [0.6, 0.8] scores 0.6 with e0 and 0.8 with e1; e2 scores 0 with
    both. At thresholds of 0.6 and 0.0 each of those counts (>=), as the docstring promises, and
    e2 is a caption that says something, not the zero vector of a blank caption."""
    captions = np.array([[0.6, 0.8, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]], dtype=np.float32)
    for thresholds, expected in (([0.6, 0.8], [1, 1]), ([0.0, 0.9], [2, 0])):
        counter = SemanticCounter(E[:2], thresholds, top_k=3)
        hits = counter.add(captions)
        brute = (captions @ E[:2].T >= np.float32(thresholds)) & captions.any(axis=1)[:, None]
        assert brute.sum(axis=0).tolist() == expected
        assert counter.counts.tolist() == expected, thresholds
        assert list(zip(hits.rows.tolist(), hits.concepts.tolist(), strict=True)) == [
            tuple(p) for p in np.argwhere(brute).tolist()
        ]
        assert [n["id"] for n in counter.nearest()["0"]] == np.flatnonzero(brute[:, 0]).tolist()


def test_a_concepts_nearest_lie_within_its_own_reach_not_the_lowest():
    """Concept 0 at 0.9 and concept 1 at 0.1, no margin: a caption at cosine 0.5 to concept 0 is
    within the range search's radius (the lowest reach, 0.1) but not concept 0's own reach, so
    it is none of concept 0's nearest."""
    caption = np.array([[0.5, np.sqrt(0.75), 0, 0]], dtype=np.float32)
    counter = SemanticCounter(E[:2], [0.9, 0.1], top_k=3)
    counter.add(caption)
    assert counter.nearest()["0"] == []
    assert [n["id"] for n in counter.nearest()["1"]] == [0]


def test_a_tie_goes_to_the_earlier_caption_whatever_order_batches_come_in():
    """``first_row`` places a batch in the corpus: a batch of earlier rows counted after a later
    one wins a tie for a full top-k, as the earlier caption."""
    v = np.array([[0.6, 0.8, 0, 0]], dtype=np.float32)
    counter = SemanticCounter(E[:1], [0.5], top_k=1)
    counter.add(v, ids=["late"], captions=["a later caption"], first_row=10)
    counter.add(v, ids=["early"], captions=["an earlier caption"], first_row=0)
    assert [n["id"] for n in counter.nearest()["0"]] == ["early"]


# --------------------------------------------------------------------------- checked


def checker_for(sense, add_at, encoder=None, **options):
    """Two concepts: vectors e0, e1; glosses e2, e3."""
    concepts = ConceptEmbeddings(("a", "b"), E[:2].copy(), E[2:].copy(), {})
    thresholds = {"semantic": [0.5, 0.5], "sense": sense, "additions": add_at}
    calibration = Calibration(
        {}, ("a", "b"), {kind: np.asarray(t, dtype=np.float64) for kind, t in thresholds.items()},
        {kind: ("fitted",) * 2 for kind in KINDS}, {"semantic": 0.5, "sense": 0.0, "additions": 0.0},
    )  # fmt: skip
    return SenseChecker(concepts, calibration, encoder=encoder, **options)


def test_the_sense_check_keeps_a_cosine_at_its_threshold_and_checks_any_above_minus_one():
    """Gloss cosines exact in float32: 0.6 at a threshold of 0.6 is kept; -0.8 at -0.5 is
    dropped (a threshold below 0 still rejects); pairs come by caption, then concept."""
    vectors = np.array([[0, 0, 0.6, 0.8], [0, 0, -0.8, 0.6], [0, 0, 0.6, 0.8]], dtype=np.float32)
    rows, concepts = np.array([0, 0, 1, 2, 2]), np.array([1, 0, 0, 0, 1])
    out = checker_for([0.6, -0.5], [2.0, 2.0]).check(rows, concepts, n_captions=3, vectors=vectors)
    gloss = vectors @ E[2:].T
    keep = gloss[rows, concepts] >= np.array([0.6, -0.5])[concepts]
    assert keep.tolist() == [True, True, False, True, True]
    assert list(zip(out.rows.tolist(), out.concepts.tolist(), strict=True)) == [
        (0, 0), (0, 1), (2, 0), (2, 1)
    ]  # fmt: skip
    assert (out.dropped_rows.tolist(), out.dropped_concepts.tolist()) == ([1], [0])
    np.testing.assert_allclose(out.scores, [0.6, 0.8, 0.6, 0.8], atol=1e-7)


def test_a_sense_threshold_of_minus_one_rejects_nothing_so_nothing_is_encoded():
    """A cosine is never below -1: a concept whose sense threshold is -1 (a fit that accepted a
    caption at -1) has no hit in doubt, and without additions no caption is encoded."""
    encoded = []

    def encode(texts):
        encoded.extend(texts)
        return np.tile(E[2], (len(texts), 1))

    encoder = SimpleNamespace(identity={}, dim=4, encode=encode)
    checker = checker_for([-1.0, -2.0], [2.0, 2.0], encoder=encoder, additions=False)
    out = checker.check(np.array([0, 1]), np.array([0, 1]), n_captions=2, captions=["x a", "y b"])
    assert out.rows.tolist() == [0, 1] and out.n_encoded == 0 and encoded == []


def test_an_additions_threshold_of_one_still_adds_a_caption_equal_to_the_concept():
    """Additions are on while any threshold is 1 or below: a caption whose vector is concept
    b's (cosine 1) is added at a threshold of 1."""
    checker = checker_for([0.0, 0.0], [2.0, 1.0])
    out = checker.check(np.zeros(0, np.int64), np.zeros(0, np.int64), n_captions=1,
                        vectors=E[1:2].copy())  # fmt: skip
    assert list(zip(out.rows.tolist(), out.concepts.tolist(), out.added.tolist(), strict=True)) == [
        (0, 1, True)
    ]


def test_hits_come_by_caption_then_concept_whatever_order_the_search_gives():
    """The GPU path's k-nearest search gives each caption's concepts best first, not in index
    order (FAISS's CPU range search happens to give index order): the hits are sorted anyway."""
    captions = np.array([[0.6, 0.8, 0, 0], [0.8, 0.6, 0, 0]], dtype=np.float32)
    counter = SemanticCounter(E[:2], [0.5, 0.5], top_k=0)
    search = counter._search

    def best_first(x):
        rows, concepts, scores = search(x)
        order = np.lexsort((-scores, rows))
        return rows[order], concepts[order], scores[order]

    counter._search = best_first
    hits = counter.add(captions)
    assert list(zip(hits.rows.tolist(), hits.concepts.tolist(), strict=True)) == [
        (0, 0), (0, 1), (1, 0), (1, 1)
    ]  # fmt: skip
    np.testing.assert_allclose(hits.scores, [0.6, 0.8, 0.8, 0.6], atol=1e-7)

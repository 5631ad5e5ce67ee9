"""Fitting thresholds (clipaudit.semantic.calibration): values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from clipaudit.semantic.calibration import Evidence, fit_calibration


def test_an_additions_threshold_is_never_below_the_shared_one():
    """A concept's own additions cut may raise the pooled one, not lower it: adding a concept no
    word of the caption names takes the pooled evidence at least (the semantic method's cuts are
    the concepts' own)."""
    names = ("a", "b", "c")
    rows = {  # concept -> (score, is it the concept, how many captions)
        "a": [(0.32, True, 6), (0.25, False, 10)],  # own cut 0.285
        "b": [(0.95, True, 6), (0.90, False, 5)],  # own cut 0.925
        "c": [(0.60, True, 20), (0.28, False, 10)],  # own cut 0.44
    }
    labels, scores = [], []
    for column, concept in enumerate(names):
        for score, positive, count in rows[concept]:
            for _ in range(count):
                label, row = np.zeros(3, bool), np.full(3, -1.0)
                label[column], row[column] = positive, score
                labels.append(label)
                scores.append(row)
    labels, scores = np.array(labels), np.array(scores)
    # pooled, F1 is best accepting 0.32 and up (32 true of 32, 5 false: 64/69), so the shared
    # cut lies half-way between 0.32 and 0.28
    evidence = Evidence(names, labels, np.zeros_like(labels), scores, scores)
    fitted = fit_calibration(evidence, {"kind": "test"}, min_positives=5)
    assert fitted.shared["additions"] == pytest.approx(0.30)
    assert fitted.thresholds["additions"] == pytest.approx([0.30, 0.925, 0.44])
    assert fitted.origin["additions"] == ("shared", "fitted", "fitted")
    assert fitted.thresholds["semantic"] == pytest.approx([0.285, 0.925, 0.44])
    assert fitted.origin["semantic"] == ("fitted",) * 3

"""Shared scores, checked against counts worked out by hand."""

from __future__ import annotations

import pytest

from clipaudit.metrics import (
    accuracy,
    confusion,
    macro_f1,
    mean_per_class_recall,
    multilabel_scores,
    per_class_scores,
)


def test_single_label_scores_by_hand():
    # true a a b c, predicted a b b x (x: a distractor outside the labels)
    y_true, y_pred = ["a", "a", "b", "c"], ["a", "b", "b", "x"]
    table = per_class_scores(y_true, y_pred, ["a", "b", "c"]).set_index("label")
    # a: tp1 fp0 fn1 -> P1 R.5 F2/3; b: tp1 fp1 fn0 -> P.5 R1 F2/3; c: tp0 -> 0
    assert table.loc["a", ["precision", "recall"]].tolist() == [1.0, 0.5]
    assert table.loc["b", ["precision", "recall"]].tolist() == [0.5, 1.0]
    assert table["support"].tolist() == [2, 1, 1]
    assert macro_f1(y_true, y_pred, ["a", "b", "c"]) == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert accuracy(y_true, y_pred) == 0.5
    assert mean_per_class_recall(y_true, y_pred) == pytest.approx((0.5 + 1 + 0) / 3)
    matrix = confusion(y_true, y_pred, ["a", "b", "c"])
    assert matrix.loc["a"].tolist() == [1, 1, 0]
    assert matrix.loc["c"].tolist() == [0, 0, 0]  # its prediction was the distractor


@pytest.mark.parametrize(
    ("truth", "pred", "labels", "expected"),
    [
        # tp: (1,a) (2,b); fp: (2,a); fn: (3,b) -> P 2/3, R 2/3
        ([{"a"}, {"b"}, {"b"}], [{"a"}, {"a", "b"}, set()], ["a", "b"], (2, 1, 1)),
        # a single label must stay multi-label: tp 1, fp 1, fn 1 -> P R = 1/2 (sklearn's binary
        # reading would average over "absent" too)
        ([{"a"}, {"a"}, set()], [{"a"}, set(), {"a"}], ["a"], (1, 1, 1)),
    ],
)
def test_multilabel_micro_scores_by_hand(truth, pred, labels, expected):
    tp, fp, fn = expected
    scores = multilabel_scores(truth, pred, labels)
    assert (scores["tp"], scores["fp"], scores["fn"]) == expected
    assert scores["precision"] == pytest.approx(tp / (tp + fp))
    assert scores["recall"] == pytest.approx(tp / (tp + fn))


def test_multilabel_lengths_must_agree():
    with pytest.raises(ValueError, match="got 2 true label sets but 1 predicted"):
        multilabel_scores([{"a"}, set()], [{"a"}], ["a"])


def test_support_stays_a_count_when_every_prediction_is_a_distractor():
    # sklearn returns float supports then (all_concepts runs wrote "4.0" in concepts.csv)
    table = per_class_scores(["a", "a", "b"], ["x", "x", "x"], ["a", "b"])
    assert table["support"].dtype.kind == "i"
    assert table["support"].tolist() == [2, 1] and table["f1"].tolist() == [0.0, 0.0]

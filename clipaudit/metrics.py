"""Scores shared by every part of an audit, computed with scikit-learn (never by hand).

- single-label classification (zero-shot awareness, the theory module's bin classification):
  per-class precision/recall/F1/support, macro-F1, accuracy, mean per-class recall, confusion
  matrix; and chance, the macro-F1 a uniform guess scores (a formula, no predictions to score);
- multi-label detection (which concepts a caption mentions, against gold labels): micro scores.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from clipaudit.errors import SettingsError


def per_class_scores(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> Any:
    """DataFrame with one row per label: ``label, precision, recall, f1, support``.

    Predictions outside ``labels`` (distractors) count as errors for the true class and as no one's
    positives, which is what sklearn does when ``labels`` restricts the classes.
    """
    import pandas as pd
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=list(labels), zero_division=0
    )
    return pd.DataFrame(
        {
            "label": list(labels),
            "precision": precision,
            "recall": recall,
            "f1": f1,
            # sklearn gives float counts when every prediction is a distractor: counts stay ints
            "support": support.astype("int64"),
        }
    )


def macro_f1(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> float:
    """Unweighted mean of the per-class F1 over the ``labels`` true or predicted at least once
    (the paper's awareness score); NaN when none is.

    A label neither true nor predicted (a theory run's bin without test images) has F1 0/0, no
    score: sklearn's ``zero_division=0`` would average it in as 0. A label predicted but never
    true keeps its F1 of 0, a measured error.
    """
    from sklearn.metrics import f1_score

    seen = set(y_true) | set(y_pred)
    occurring = [label for label in labels if label in seen]
    if not occurring:
        return float("nan")
    return float(f1_score(y_true, y_pred, labels=occurring, average="macro", zero_division=0))


def chance_macro_f1(y_true: Sequence[str], labels: Sequence[str], n_candidates: int) -> float:
    """Chance: the :func:`macro_f1` over ``labels`` of a guess drawn uniformly among
    ``n_candidates`` (``labels`` among them, the rest distractors) for each image of ``y_true``;
    its large-sample value (the few images of a small group scatter about it); NaN without
    images.

    Each candidate is guessed for a share 1/M of the images (M = ``n_candidates``), whatever
    their class: a label with a share p of the images has recall 1/M and precision p, F1
    2p / (Mp + 1); a label without images is guessed all the same, F1 0, averaged in as
    :func:`macro_f1` does. With K labels of balanced images, 2 / (K + M): 1 / M only where
    every candidate has images, in equal numbers.
    """
    if n_candidates < len(labels):
        raise SettingsError(
            f"a uniform guess is among at least the {len(labels)} scored labels, got "
            f"{n_candidates} candidates; pass n_candidates, every concept an image is "
            "classified among"
        )
    if not len(y_true) or not len(labels):
        return float("nan")
    counts = Counter(y_true)
    total = len(y_true)
    return sum(
        2 * counts[label] / (n_candidates * counts[label] + total) for label in labels
    ) / len(labels)


def accuracy(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(y_true, y_pred))


def mean_per_class_recall(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    """Mean recall over the classes present in ``y_true`` (CLIP_benchmark's ``mean_per_class_recall``)."""
    from sklearn.metrics import recall_score

    present = sorted(set(y_true))
    return float(recall_score(y_true, y_pred, labels=present, average="macro", zero_division=0))


def confusion(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> Any:
    """Confusion matrix as a DataFrame: rows are true labels, columns predicted labels."""
    import pandas as pd
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(y_true, y_pred, labels=list(labels))
    return pd.DataFrame(
        matrix, index=pd.Index(labels, name="true"), columns=pd.Index(labels, name="predicted")
    )


def multilabel_scores(
    true_sets: Sequence[Iterable[str]], pred_sets: Sequence[Iterable[str]], labels: Sequence[str]
) -> dict[str, float]:
    """Micro precision, recall and F1 of predicted label sets against true ones, with tp/fp/fn counts."""
    import numpy as np
    from sklearn.metrics import multilabel_confusion_matrix, precision_recall_fscore_support
    from sklearn.preprocessing import MultiLabelBinarizer

    if len(true_sets) != len(pred_sets):
        raise ValueError(
            f"got {len(true_sets)} true label sets but {len(pred_sets)} predicted ones"
        )
    binarizer = MultiLabelBinarizer(classes=list(labels))
    y_true = binarizer.fit_transform([set(s) for s in true_sets])
    y_pred = binarizer.transform([set(s) for s in pred_sets])
    if y_true.shape[1] == 1:
        # sklearn reads a single column as binary targets; an all-zero second label keeps the
        # problem multi-label without changing any count
        y_true, y_pred = (np.hstack([y, np.zeros_like(y)]) for y in (y_true, y_pred))
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, average="micro", zero_division=0
    )
    counts = multilabel_confusion_matrix(y_true, y_pred).sum(axis=0)  # [[tn, fp], [fn, tp]]
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "tp": int(counts[1, 1]),
        "fp": int(counts[0, 1]),
        "fn": int(counts[1, 0]),
    }

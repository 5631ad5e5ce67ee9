"""Chance is the macro-F1 a uniform guess among the candidates scores, not 1 / candidates.

A uniform guess among M candidates, scored over the concepts with images (image shares p_c), has
per-class recall 1/M and precision p_c: macro-F1 mean_c 2 p_c (1/M) / (p_c + 1/M), which is
1 / M only where every candidate has images, in equal numbers. With all_concepts a group's
concepts without images are candidates too: chance is higher than 1 / M, and a model at chance
read as above it.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

from clipaudit import metrics
from clipaudit.errors import SettingsError
from clipaudit.models import ModelSpec
from clipaudit.registry import load_registry
from clipaudit.runs import load_run
from clipaudit.zeroshot import run_zeroshot
from tests.tiny_clip import write_image_folder, write_tiny_checkpoint, write_tiny_config


def uniform_guess_f1(y_true: list[str], labels: list[str], n_candidates: int) -> float:
    """The simulated macro-F1 of a uniform guess among ``labels`` and distractors."""
    rng = np.random.default_rng(0)
    candidates = np.array(labels + [f"distractor{i}" for i in range(n_candidates - len(labels))])
    y_pred = candidates[rng.integers(0, n_candidates, len(y_true))].tolist()
    return metrics.macro_f1(y_true, y_pred, labels)


def shares(counts: dict[str, int]) -> list[str]:
    return [label for label, n in counts.items() for _ in range(n)]


def test_the_formula_is_what_a_uniform_guess_scores_on_many_images():
    counts = {"a": 100_000, "b": 60_000, "c": 30_000, "d": 10_000}  # 200,000 images, unbalanced
    y_true, labels = shares(counts), list(counts)
    # 2p/(Mp + 1) with M = 10: 1/6, 0.6/4, 0.3/2.5, 0.1/1.5
    by_hand = (1 / 6 + 0.6 / 4 + 0.3 / 2.5 + 0.1 / 1.5) / 4
    chance = metrics.chance_macro_f1(y_true, labels, 10)
    assert chance == pytest.approx(by_hand)
    assert chance == pytest.approx(uniform_guess_f1(y_true, labels, 10), abs=0.003)
    assert chance > 1.25 / 10  # what the report said chance was: 1 / 10


def test_balanced_images_give_two_over_scored_plus_candidates():
    y_true = shares(dict.fromkeys("abcde", 40_000))
    chance = metrics.chance_macro_f1(y_true, list("abcde"), 20)
    assert chance == pytest.approx(2 / (5 + 20))
    assert chance == pytest.approx(uniform_guess_f1(y_true, list("abcde"), 20), abs=0.003)
    # every candidate with images, in equal numbers: 1 / candidates
    assert metrics.chance_macro_f1(y_true, list("abcde"), 5) == pytest.approx(1 / 5)


def test_a_scored_label_without_images_counts_as_the_guess_predicts_it():
    """A theory run scores every bin, imaged or not: a bin a uniform guess predicts but no image
    is of has F1 0, which metrics.macro_f1 averages in."""
    y_true = shares({"a": 150_000, "b": 50_000})
    labels = ["a", "b", "c"]  # c: a candidate without images
    by_hand = (2 * 0.75 / (3 * 0.75 + 1) + 2 * 0.25 / (3 * 0.25 + 1) + 0) / 3
    chance = metrics.chance_macro_f1(y_true, labels, 3)
    assert chance == pytest.approx(by_hand)
    assert chance == pytest.approx(uniform_guess_f1(y_true, labels, 3), abs=0.003)


def test_a_small_case_by_hand_and_what_is_refused():
    # p = 2/3, 1/3 among M = 4: (4/3)/(11/3) = 4/11 and (2/3)/(7/3) = 2/7
    assert metrics.chance_macro_f1(["a", "a", "b"], ["a", "b"], 4) == pytest.approx(
        (4 / 11 + 2 / 7) / 2
    )
    assert np.isnan(metrics.chance_macro_f1([], ["a", "b"], 4))
    with pytest.raises(SettingsError, match=r"at least the 2 scored labels, got 1"):
        metrics.chance_macro_f1(["a", "b"], ["a", "b"], 1)


# --------------------------------------------------------------------------- runs and the report

LAYOUT = {"Color": {"red": 3, "green": 1}, "Animal": {"dog": 2, "cat": 1, "horse": 1}}


def by_hand(counts: dict[str, int], n_candidates: int) -> float:
    """Mean over the imaged concepts of 2p / (Mp + 1), in exact fractions."""
    total = sum(counts.values())
    values = [Fraction(2 * n, n_candidates * n + total) for n in counts.values()]
    return float(sum(values) / len(values))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An all_concepts zero-shot run of the tiny model on unbalanced images, and a coverage run."""
    from clipaudit.coverage import count_coverage

    root = tmp_path_factory.mktemp("chance")
    models = root / "models"
    spec = ModelSpec(
        str(write_tiny_config(models)), str(write_tiny_checkpoint(models / "a.safetensors"))
    )
    write_image_folder(root / "img", LAYOUT)
    zeroshot = run_zeroshot(
        spec,
        str(root / "img"),
        root / "zs",
        groups=tuple(LAYOUT),
        all_concepts=True,
        cache_dir=None,
        workers=0,
        device="cpu",
        progress=False,
    )
    corpus = root / "captions.parquet"
    pd.DataFrame({"caption": ["a red dog", "a green cat", "a horse"]}).to_parquet(corpus)
    coverage = count_coverage([corpus], "cai2025", root / "cov", workers=1, progress=False)
    return {"zeroshot": zeroshot.out, "coverage": coverage.out_dir, "root": root}


def sizes() -> dict[str, int]:
    registry = load_registry()
    return {group: len(registry.concepts_in(group)) for group in LAYOUT}


def test_an_all_concepts_run_records_the_chance_of_each_group(runs):
    expected = {group: by_hand(LAYOUT[group], size) for group, size in sizes().items()}
    written = pd.read_csv(runs["zeroshot"] / "groups.csv").set_index("group")
    loaded = load_run(runs["zeroshot"]).groups.set_index("group")
    for group, size in sizes().items():
        assert written.loc[group, "n_candidates"] == size > len(LAYOUT[group])
        assert written.loc[group, "chance"] == pytest.approx(expected[group])
        assert loaded.loc[group, "chance"] == pytest.approx(expected[group])
        assert expected[group] > 1.3 / size  # 1 / candidates read a model at chance as above it


def test_the_report_shows_the_recorded_chance(runs, tmp_path):
    from clipaudit.report import build_report

    result = build_report([runs["coverage"], runs["zeroshot"]], tmp_path / "r", n_bootstrap=0)
    joined = result.tables["groups"].set_index("group")
    awareness = result.tables["awareness_groups"].set_index("group")
    for group, size in sizes().items():
        assert joined.loc[group, "chance"] == pytest.approx(by_hand(LAYOUT[group], size))
        assert awareness.loc[group, "chance"] == pytest.approx(by_hand(LAYOUT[group], size))


def test_an_older_run_without_the_column_still_gives_one_over_candidates(runs, tmp_path):
    """A run written before ``chance`` was recorded loads, and the report shows the chance it
    showed then: 1 / the concepts classified."""
    import shutil

    from clipaudit.report import build_report

    older = tmp_path / "older"
    shutil.copytree(runs["zeroshot"], older)
    table = pd.read_csv(older / "groups.csv")
    table.drop(columns="chance").to_csv(older / "groups.csv", index=False)
    loaded = load_run(older).groups.set_index("group")
    result = build_report([runs["coverage"], older], tmp_path / "r", n_bootstrap=0)
    joined = result.tables["groups"].set_index("group")
    awareness = result.tables["awareness_groups"].set_index("group")
    for group, size in sizes().items():
        assert loaded.loc[group, "chance"] == pytest.approx(1 / size)
        assert joined.loc[group, "chance"] == pytest.approx(1 / size)
        assert awareness.loc[group, "chance"] == pytest.approx(1 / size)

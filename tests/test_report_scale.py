"""The report's figures at an auditor's scale: the paper's 15 groups, three corpora and three
models with long, non-ASCII names. Every label, title and legend entry stays inside its figure and
clear of the others, and names the whole corpus or model it stands for."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clipaudit.report import figures

GROUPS = ["Animal", "Color", "Texture", "Emotion", "Post-processing", "Trait", "Stereotype"]
CATEGORY = {
    "Animal": "common",
    "Color": "common",
    "Texture": "under-captioned",
    "Emotion": "under-captioned",
    "Post-processing": "nuisance",
    "Trait": "sensitive",
    "Stereotype": "sensitive",
}
CATEGORIES = ["common", "under-captioned", "nuisance", "sensitive"]
SENSITIVE = {"Trait", "Stereotype"}
MODELS = [
    "ViT-tiny/8 trained on Animal·Color·Object — Ωmega checkpoint (step 120, seed 0)",
    "ViT-B-32@laion400m_e32_but_a_really_long_pretrained_tag_name_for_testing",
    "modèle aléatoire @ chance",
]
CORPORA = [
    "COCO val2017 — légendes «humaines» (25 014 captions, five per image)",
    "Conceptual Captions 3M · validation split, hypernymised alt-text",
    "LAION-400M sample of alt-texts drawn in 2026",
]


def boxes(figure, artists):
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    return [artist.get_window_extent(renderer) for artist in artists]


def assert_inside(figure, box, what):
    width, height = figure.bbox.width, figure.bbox.height
    assert box.x0 >= -0.5 and box.x1 <= width + 0.5, f"{what} runs off the figure: {box}"
    assert box.y0 >= -0.5 and box.y1 <= height + 0.5, f"{what} runs off the figure: {box}"


def squeezed(text: str) -> str:
    return "".join(text.split())


def test_the_model_legend_fits_the_figure_and_names_every_model():
    rows = [
        {"model": m, "group": g, "macro_f1": 0.1 + 0.1 * i, "chance": 0.1}
        for i, m in enumerate(MODELS)
        for g in GROUPS
    ]
    figure = figures.macro_f1_by_group(pd.DataFrame(rows), MODELS, GROUPS, CATEGORY, SENSITIVE)
    (legend,) = figure.legends
    (box,) = boxes(figure, [legend])
    assert_inside(figure, box, "the legend")
    shown = [squeezed(t.get_text()) for t in legend.get_texts()]
    assert shown == [squeezed(m) for m in MODELS] + [
        "chance",
        squeezed("sensitive: awareness is a risk"),
    ]


def test_corpus_titles_of_the_coverage_strips_neither_overlap_nor_leave_the_figure():
    rng = np.random.default_rng(0)
    rows = []
    for corpus in CORPORA:
        for group in GROUPS:
            for k in range(5):
                rate = float(10 ** rng.uniform(-5, -1)) if k else 0.0
                rows.append(
                    {
                        "corpus": corpus,
                        "group": group,
                        "concept": f"{group}{k}",
                        "coverage": rate,
                        "log10_coverage": np.log10(max(rate, 0.5 / 25_000)),
                    }
                )
    corpora = [{"label": c, "n_captions": 25_000} for c in CORPORA]
    figure = figures.coverage_by_group(
        pd.DataFrame(rows), corpora, GROUPS, CATEGORY, SENSITIVE, CATEGORIES
    )
    titles = [axis.title for axis in figure.axes]
    found = boxes(figure, titles)
    for title, box in zip(titles, found, strict=True):
        assert_inside(figure, box, f"title {title.get_text()!r}")
    assert figures.boxes_overlap([(b.x0, b.y0, b.x1, b.y1) for b in found]) == []
    assert [squeezed(t.get_text()) for t in titles] == [squeezed(c) for c in CORPORA]


def test_the_scatter_title_names_the_whole_pair_inside_the_figure():
    rng = np.random.default_rng(1)
    part = pd.DataFrame(
        {
            "log10_coverage": rng.uniform(-4, -1, 40),
            "f1": rng.uniform(0, 1, 40),
            "category": rng.choice(CATEGORIES, 40),
            "sensitive": rng.random(40) < 0.2,
        }
    )
    name = f"{CORPORA[0]} × {MODELS[1]}"
    title = f"{name}\nSpearman ρ 0.01, Kendall τ 0.01, slope -0.00 F1 per 10× coverage (n = 40)"
    figure, _ = figures.coverage_against_f1(
        part, {"slope": 0.1, "intercept": 0.6}, [], CATEGORIES, 25_000, title
    )
    (axis,) = figure.axes
    shown = axis._left_title  # the title sits left-aligned
    (box,) = boxes(figure, [shown])
    assert_inside(figure, box, "the title")
    assert squeezed(shown.get_text()) == squeezed(title)


def test_a_confusion_title_with_a_long_model_name_stays_in_the_figure():
    concepts = ["tired", "surprised", "proud"]
    frame = pd.DataFrame(np.eye(3, dtype=int) * 3, index=concepts, columns=concepts)
    title = f"{MODELS[1]} / Emotion: macro-F1 0.42"
    figure = figures.confusion(frame, title)
    (axis,) = figure.axes
    (box,) = boxes(figure, [axis.title])
    assert_inside(figure, box, "the title")
    assert squeezed(axis.title.get_text()) == squeezed(title)


@pytest.mark.parametrize("group", ["Post-processing", "Trait"])
def test_a_shortened_figure_file_name_keeps_the_group_it_shows(group):
    names = [f"confusion {MODELS[1]} / {g}" for g in ("Post-processing", "Trait")]
    stems = figures.figure_stems(names)
    stem = stems[f"confusion {MODELS[1]} / {group}"]
    assert stem.rsplit("-", 1)[0].endswith(f"_{group}") and len(stem) <= 100
    assert stem.startswith("confusion_ViT-B-32")

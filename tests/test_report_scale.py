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


def _tick_labels(axis):
    """The x tick labels the figure draws (text, position), in order."""
    return [
        (tick.label1.get_text(), tick.get_loc())
        for tick in axis.xaxis.get_major_ticks()
        if tick.label1.get_visible() and tick.label1.get_text()
    ]


def _assert_readable_share_ticks(figure, axis):
    """Each decade tick reads as the share it marks, written out (never "1e-05%"); labels keep
    apart from each other and stay inside the figure."""
    labels = _tick_labels(axis)
    decades = [(text, loc) for text, loc in labels if text != "none"]
    assert len(decades) >= 3
    for text, loc in decades:
        assert "e" not in text.lower() and text.endswith("%"), text
        assert float(text[:-1]) == pytest.approx(100 * 10**loc, rel=1e-9), (text, loc)
    artists = [
        tick.label1
        for tick in axis.xaxis.get_major_ticks()
        if tick.label1.get_visible() and tick.label1.get_text()
    ]
    found = boxes(figure, artists)
    for artist, box in zip(artists, found, strict=True):
        assert_inside(figure, box, f"tick {artist.get_text()!r}")
    clashes = figures.boxes_overlap([(b.x0 - 2, b.y0, b.x1 + 2, b.y1) for b in found])
    assert clashes == [], [(artists[i].get_text(), artists[j].get_text()) for i, j in clashes]


LAION = 400_000_000  # a corpus where one caption is 0.00000025%


def test_coverage_ticks_of_a_web_scale_corpus_are_written_out_and_apart():
    """Ticks below 0.0001% read "1e-05%", "1e-06%" while the page wrote "0.00000025%"; three
    panels of ten decades each squeezed their long labels into one another."""
    rows = []
    for corpus in CORPORA:
        for group in GROUPS:
            for k, count in enumerate([0, 1, 30, 4_000, 900_000, 40_000_000]):
                rows.append(
                    {
                        "corpus": corpus,
                        "group": group,
                        "concept": f"{group}{k}",
                        "coverage": count / LAION,
                        "log10_coverage": np.log10((count + 0.5) / LAION),
                    }
                )
    corpora = [{"label": c, "n_captions": LAION} for c in CORPORA]
    figure = figures.coverage_by_group(
        pd.DataFrame(rows), corpora, GROUPS, CATEGORY, SENSITIVE, CATEGORIES
    )
    for axis in figure.axes:
        if axis.get_label() != "<colorbar>" and axis.get_xlabel():
            _assert_readable_share_ticks(figure, axis)


def test_scatter_ticks_of_a_web_scale_corpus_are_written_out_and_apart():
    rng = np.random.default_rng(2)
    counts = np.array([0, 1, 3, 50, 2_000, 100_000, 5_000_000, 60_000_000] * 4)
    part = pd.DataFrame(
        {
            "log10_coverage": np.log10((counts + 0.5) / LAION),
            "f1": rng.uniform(0, 1, len(counts)),
            "category": rng.choice(CATEGORIES, len(counts)),
            "sensitive": rng.random(len(counts)) < 0.2,
        }
    )
    figure, _ = figures.coverage_against_f1(
        part, {"slope": 0.05, "intercept": 0.8}, [], CATEGORIES, LAION, "LAION-400M × a model"
    )
    (axis,) = figure.axes
    _assert_readable_share_ticks(figure, axis)


def _contrast(colour: str, background: str = "#ffffff") -> float:
    """WCAG 2 contrast ratio of two colours."""
    from matplotlib.colors import to_rgb

    def luminance(value):
        channels = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in value]
        return 0.2126 * channels[0] + 0.7152 * channels[1] + 0.0722 * channels[2]

    high, low = sorted((luminance(to_rgb(colour)), luminance(to_rgb(background))), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_sensitive_group_names_are_readable_text_on_white():
    """The sensitive groups' tick labels were Okabe-Ito vermillion, 3.9:1 on white: below the
    4.5:1 that small text needs (WCAG AA)."""
    rows = [{"model": MODELS[0], "group": g, "macro_f1": 0.5, "chance": 0.1} for g in GROUPS]
    figure = figures.macro_f1_by_group(pd.DataFrame(rows), MODELS[:1], GROUPS, CATEGORY, SENSITIVE)
    (axis,) = figure.axes
    labels = {t.get_text(): t.get_color() for t in axis.get_yticklabels()}
    marked = [text for text in labels if "(sensitive)" in text]
    assert len(marked) == len(SENSITIVE)
    for text in marked:
        assert labels[text] != labels["Animal"]  # still set apart
        assert _contrast(labels[text]) >= 4.5, (text, labels[text])

"""The report's join computes each number by its stated formula: a hand-built corpus and model
whose numbers tell every plausible wrong formula apart (mean from median, joined concepts from
all of them, the primary method's columns from the lexical ones, the run's macro-F1 from the mean
of its joined concepts' F1, ...), each expected value worked out here by hand."""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest

from clipaudit.images import open_images
from clipaudit.report.inputs import Corpus, Inputs, Model
from clipaudit.report.join import (
    awareness_groups_table,
    awareness_table,
    categories_table,
    concepts_table,
    coverage_groups_table,
    coverage_table,
    groups_table,
)
from clipaudit.zeroshot import _with_candidates, evaluate_model
from tests.test_zeroshot import colour_model, write_colour_images

N = 10  # captions read
# concept -> (group, lexical count, union count); union is the primary method
COUNTS = {
    "dog": ("Animal", 4, 6),
    "cat": ("Animal", 1, 2),
    "cow": ("Animal", 0, 3),  # counted, never imaged: not joined
    "bird": ("Animal", 2, 2),
    "red": ("Color", 0, 1),
    "blue": ("Color", 0, 0),  # never captioned, never imaged
    "thug": ("Stereotype", 1, 5),
    "nice": ("Stereotype", 3, 3),
}
CATEGORY = {"Animal": "common", "Color": "common", "Stereotype": "sensitive"}
# concept -> (precision, recall, f1, support): recall never equals F1
SCORES = {
    "dog": (1.0, 0.8, 0.9, 5),
    "cat": (0.45, 0.6, 0.5, 3),
    "bird": (0.4, 0.1, 0.2, 4),
    "red": (0.75, 0.65, 0.7, 4),
    "thug": (0.15, 0.05, 0.1, 3),
    "nice": (0.35, 0.25, 0.3, 3),
}
# the run's own group numbers: its macro-F1 is none of the joined concepts' means or medians
GROUP_SCORES = pd.DataFrame(
    {
        "group": ["Animal", "Color", "Stereotype"],
        "category": ["common", "common", "sensitive"],
        "macro_f1": [0.4, 0.6, 0.2],
        "accuracy": [0.55, 0.65, 0.25],
        "n_images": [12, 4, 6],
        "n_concepts": [3, 1, 2],
        "n_candidates": [4, 2, 2],
        "chance": [0.2, 2 / 3, 0.5],
    }
)
# the statistics of a row, in this order
COVERAGE = ["coverage_mean", "coverage_median", "coverage_min", "coverage_max"]
MACRO_F1 = ["macro_f1_mean", "macro_f1_median", "macro_f1_min", "macro_f1_max"]


def _inputs(group_scores: pd.DataFrame = GROUP_SCORES) -> Inputs:
    concepts = pd.DataFrame(
        {
            "concept": list(COUNTS),
            "group": [g for g, _, _ in COUNTS.values()],
            "category": [CATEGORY[g] for g, _, _ in COUNTS.values()],
            "count": [c for _, c, _ in COUNTS.values()],
            "rate": [c / N for _, c, _ in COUNTS.values()],
            "union_count": [u for _, _, u in COUNTS.values()],
            "union_rate": [u / N for _, _, u in COUNTS.values()],
        }
    )
    # captions mentioning any concept of the group: not derivable from the concepts' counts
    corpus_groups = pd.DataFrame(
        {
            "group": ["Animal", "Color", "Stereotype"],
            "category": ["common", "common", "sensitive"],
            "count": [5, 0, 3],
            "rate": [0.5, 0.0, 0.3],
            "union_count": [7, 1, 6],
            "union_rate": [0.7, 0.1, 0.6],
        }
    )
    corpus = Corpus(
        label="web",
        source=0,
        concepts=concepts,
        groups=corpus_groups,
        n_captions=N,
        methods=["lexical", "union"],
        primary="union",
        registry={"name": "hand"},
    )
    model = Model(
        label="clip",
        source=1,
        concepts=pd.DataFrame(
            {
                "group": [COUNTS[c][0] for c in SCORES],
                "concept": list(SCORES),
                "precision": [s[0] for s in SCORES.values()],
                "recall": [s[1] for s in SCORES.values()],
                "f1": [s[2] for s in SCORES.values()],
                "support": [s[3] for s in SCORES.values()],
            }
        ),
        groups=group_scores,
        registry={"name": "hand"},
        skipped_concepts=[],
        skipped_groups=[],
        confusion=lambda group: None,
    )
    return Inputs(
        records=[],
        corpora=[corpus],
        models=[model],
        group_order=["Animal", "Color", "Stereotype"],
        category_order=["common", "sensitive"],
        category_of=CATEGORY,
        sensitive={"Color", "Stereotype"},  # a common group too: "common" is partly sensitive
        registry={"name": "hand"},
        notes=[],
    )


def _tables(inputs: Inputs) -> dict[str, pd.DataFrame]:
    coverage, awareness = coverage_table(inputs), awareness_table(inputs)
    concepts = concepts_table(inputs, coverage, awareness)
    groups = groups_table(inputs, concepts)
    return {
        "coverage": coverage,
        "concepts": concepts,
        "groups": groups,
        "categories": categories_table(inputs, concepts, groups),
        "coverage_groups": coverage_groups_table(inputs, coverage),
        "awareness_groups": awareness_groups_table(inputs),
    }


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return _tables(_inputs())


def test_each_concepts_coverage_is_the_primary_methods(tables):
    rows = tables["coverage"].set_index("concept")
    assert rows.loc["dog", "coverage_count"] == 6 and rows.loc["dog", "coverage"] == 0.6
    assert rows.loc["dog", "log10_coverage"] == pytest.approx(math.log10(6.5 / 10))
    assert rows.loc["blue", "log10_coverage"] == pytest.approx(math.log10(0.5 / 10))
    assert rows["sensitive"].to_dict() == {
        c: COUNTS[c][0] in ("Color", "Stereotype") for c in COUNTS
    }


def test_the_join_keeps_the_concepts_on_both_sides_only(tables):
    joined = tables["concepts"].set_index("concept")
    assert list(joined.index) == ["dog", "cat", "bird", "red", "thug", "nice"]
    assert joined.loc["cat", ["coverage", "f1", "recall"]].tolist() == [0.2, 0.5, 0.6]


def test_a_groups_row_is_over_its_joined_concepts_with_the_runs_own_scores(tables):
    rows = tables["groups"].set_index("group")
    # Animal joins dog, cat, bird (cow has no images): union rates 0.6, 0.2, 0.2
    animal = rows.loc["Animal"]
    assert animal["n_concepts"] == 3
    assert animal[COVERAGE].tolist() == pytest.approx([1 / 3, 0.2, 0.2, 0.6])
    # the mean union count of the joined concepts, (6 + 2 + 2) / 3
    assert animal["log10_coverage"] == pytest.approx(math.log10((10 / 3 + 0.5) / 10))
    assert animal["group_rate"] == 0.7  # the corpus's own union rate for the group
    # the zero-shot run's numbers, not the joined concepts' (F1 0.9, 0.5, 0.2: mean 0.53)
    assert animal[["macro_f1", "accuracy", "n_images", "chance"]].tolist() == pytest.approx(
        [0.4, 0.55, 12, 0.2]
    )
    assert animal[["f1_median", "f1_min", "f1_max"]].tolist() == pytest.approx([0.5, 0.2, 0.9])
    # one joined concept: its own value is every statistic, never NaN
    color = rows.loc["Color"]
    assert color[COVERAGE].tolist() == pytest.approx([0.1] * 4)
    assert color[["n_concepts", "group_rate", "chance"]].tolist() == pytest.approx([1, 0.1, 2 / 3])


def test_a_categorys_row_is_over_its_concepts_and_its_groups_macro_f1(tables):
    rows = tables["categories"].set_index("category")
    common = rows.loc["common"]
    # joined concepts dog, cat, bird, red: union rates 0.6, 0.2, 0.2, 0.1
    assert common[["n_groups", "n_concepts"]].tolist() == [2, 4]
    assert common[COVERAGE].tolist() == pytest.approx([0.275, 0.2, 0.1, 0.6])
    # groups Animal 0.4 and Color 0.6; Stereotype (0.2) is another category's
    assert common[MACRO_F1].tolist() == pytest.approx([0.5, 0.5, 0.4, 0.6])
    # sensitive: every group of the category is, not some
    assert rows["sensitive"].to_dict() == {"common": False, "sensitive": True}


def test_a_corpus_groups_row_is_over_all_its_concepts(tables):
    rows = tables["coverage_groups"].set_index("group")
    # Animal: dog, cat, cow, bird, imaged or not: union rates 0.6, 0.2, 0.3, 0.2
    animal = rows.loc["Animal"]
    assert animal[COVERAGE].tolist() == pytest.approx([0.325, 0.25, 0.2, 0.6])
    assert rows["n_never_captioned"].to_dict() == {"Animal": 0, "Color": 1, "Stereotype": 0}
    assert rows["group_rate"].to_dict() == pytest.approx(
        {"Animal": 0.7, "Color": 0.1, "Stereotype": 0.6}
    )


def test_chance_is_the_recorded_one_else_one_over_the_candidates():
    recorded = _tables(_inputs())
    assert recorded["awareness_groups"].set_index("group")["chance"].tolist() == pytest.approx(
        [0.2, 2 / 3, 0.5]
    )
    # an older run without the chance column: one over the candidates (4, 2, 2), not the
    # scored concepts (3, 1, 2)
    older = _tables(_inputs(GROUP_SCORES.drop(columns=["chance"])))
    for table in ("awareness_groups", "groups"):
        chance = older[table].set_index("group")["chance"]
        assert chance.tolist() == pytest.approx([1 / 4, 1 / 2, 1 / 2]), table


def test_a_joined_group_without_a_score_row_is_left_out_of_its_categorys_macro_f1():
    """A groups table cut short (Color's row gone): the group's macro-F1 is missing, and its
    category's macro-F1 statistics are over the scored groups (Animal's 0.4), not a 0 for it."""
    tables = _tables(_inputs(GROUP_SCORES[GROUP_SCORES["group"] != "Color"]))
    assert math.isnan(tables["groups"].set_index("group").loc["Color", "macro_f1"])
    common = tables["categories"].set_index("category").loc["common"]
    assert common[MACRO_F1].tolist() == pytest.approx([0.4] * 4)


def test_each_pairs_rows_are_over_its_own_models_scores_only():
    """Two models of one corpus: each pair's group and category rows hold that model's concepts
    (3 joined in Animal) and scores, never both models' (6)."""
    inputs = _inputs()
    clip = inputs.models[0]
    blind = dataclasses.replace(
        clip,
        label="blind",
        concepts=clip.concepts.assign(precision=0.0, recall=0.0, f1=0.0),
        groups=GROUP_SCORES.assign(macro_f1=0.0, accuracy=0.0),
    )
    inputs.models.append(blind)
    tables = _tables(inputs)
    groups = tables["groups"].set_index(["model", "group"])
    columns = ["n_concepts", "f1_median", "f1_max", "macro_f1"]
    assert groups.loc[("clip", "Animal"), columns].tolist() == pytest.approx([3, 0.5, 0.9, 0.4])
    assert groups.loc[("blind", "Animal"), columns].tolist() == pytest.approx([3, 0, 0, 0])
    categories = tables["categories"].set_index(["model", "category"])
    assert categories.loc[("clip", "common"), "n_concepts"] == 4
    assert categories.loc[("blind", "common"), "macro_f1_max"] == 0


# --------------------------------------------------------------------------- zero-shot scoring


def test_a_predictions_score_is_its_cosine_with_the_predicted_concept(tmp_path, registry):
    """The colour model embeds an image as its mean (r, g, b): a pure colour's cosine with its
    own word is 1, the orange-looking red image's with "red" is 1 / sqrt(1 + 0.6**2)."""
    write_colour_images(tmp_path / "img")
    images = open_images(tmp_path / "img", registry, groups=["Color"])
    result = evaluate_model(colour_model(), images, registry.select(["Color"]))
    red = result.predictions[result.predictions["concept"] == "red"]
    assert red["predicted"].tolist() == ["red"] * 4
    assert sorted(red["score"]) == pytest.approx([1 / math.sqrt(1.36), 1.0, 1.0, 1.0])


def test_an_older_runs_candidates_and_chance_are_filled_from_its_scored_concepts():
    """A run from before n_candidates and chance: it classified among its scored concepts
    (chance one over them), unless among all a group's, which it did not record (missing)."""
    older = pd.DataFrame({"group": ["A", "B"], "n_images": [12, 5], "n_concepts": [3, 2]})
    filled = _with_candidates(older.copy(), all_concepts=False)
    assert filled["n_candidates"].tolist() == [3, 2]
    assert filled["chance"].tolist() == pytest.approx([1 / 3, 1 / 2])
    unknown = _with_candidates(older.copy(), all_concepts=True)
    assert unknown[["n_candidates", "chance"]].isna().all().all()

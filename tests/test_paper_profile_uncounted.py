"""A concept the 'paper' profile cannot count (no paper_synonyms, as cai2025's "gangster look")
is 0 by construction, not a measurement: the coverage run says so, the CLI prints it, and the
report shows its coverage as not counted, leaves it out of the concept statistics and notes it."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from clipaudit.coverage import count_coverage
from clipaudit.report.analysis import analyse
from clipaudit.report.inputs import Corpus, Inputs, Model

# horse lists synonyms, which the curated profile counts, but no paper_synonyms
PARTIAL = """\
registry: partial
version: "1"
groups:
  - {name: Animal, category: common}
concepts:
  - {name: dog, group: Animal, gloss: a dog, synonyms: [dog], paper_synonyms: [dog]}
  - {name: cat, group: Animal, gloss: a cat, synonyms: [cat], paper_synonyms: [cat]}
  - {name: horse, group: Animal, gloss: a horse, synonyms: [horse]}
"""
FULL = PARTIAL.replace("synonyms: [horse]}", "synonyms: [horse], paper_synonyms: [horse]}")
CAPTIONS = ["a dog", "a dog and a cat", "a horse", "a horse in a field", "a cat", "nothing"]
NOT_COUNTED = {"horse": "no paper_synonyms"}


def _registry(tmp_path, text: str = PARTIAL):
    path = tmp_path / ("partial.yaml" if text == PARTIAL else "full.yaml")
    path.write_text(text, encoding="utf-8")
    return path


def _count(tmp_path, registry, profile: str, name: str):
    return count_coverage(
        texts=CAPTIONS, registry=registry, out=tmp_path / name, profile=profile,
        workers=1, progress=False,
    )  # fmt: skip


def test_the_paper_profiles_run_records_the_concepts_it_cannot_count(tmp_path):
    from clipaudit.runs import load_run

    result = _count(tmp_path, _registry(tmp_path), "paper", "paper")
    assert result.manifest["concepts_not_counted"] == NOT_COUNTED
    assert result.concepts_not_counted == NOT_COUNTED
    # its 0 is the construction's: the curated profile counts its two captions
    assert result.concepts.set_index("concept").loc["horse", "count"] == 0
    assert load_run(tmp_path / "paper").concepts_not_counted == NOT_COUNTED
    # resumed, the same
    again = _count(tmp_path, _registry(tmp_path), "paper", "paper")
    assert again.reused and again.concepts_not_counted == NOT_COUNTED


@pytest.mark.parametrize(("text", "profile"), [(PARTIAL, "curated"), (FULL, "paper")])
def test_a_profile_that_counts_every_concept_records_none(tmp_path, text, profile):
    result = _count(tmp_path, _registry(tmp_path, text), profile, profile)
    assert result.manifest["concepts_not_counted"] == {}
    assert result.concepts_not_counted == {}
    assert result.concepts.set_index("concept").loc["horse", "count"] == 2


def test_the_cli_names_the_concepts_not_counted_and_why(tmp_path, in_process):
    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(CAPTIONS) + "\n", encoding="utf-8")
    registry = str(_registry(tmp_path))
    out = str(tmp_path / "run")
    args = ["coverage", "count", str(captions), "--out", out, "--registry", registry]
    code, said, _ = in_process(*args, "--profile", "paper", "--workers", "1", "--no-progress")
    assert code == 0
    said = " ".join(said.split())  # the console wraps long lines
    assert (
        "not counted by the paper profile (0 by construction, not a measurement): horse (no "
        "paper_synonyms)" in said
    )
    code, said, _ = in_process(*args, "--profile", "curated", "--workers", "1", "--no-progress",
                               "--overwrite")  # fmt: skip
    assert code == 0 and "not counted" not in said


# --------------------------------------------------------------------------- the report


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A paper and a curated coverage run of PARTIAL, and a random tiny model's zero-shot run on
    two images of each of its concepts."""
    import clipaudit
    from tests.tiny_clip import write_animal_audit_inputs

    root = tmp_path_factory.mktemp("uncounted")
    registry = _registry(root)
    images, spec = write_animal_audit_inputs(root)
    zeroshot = clipaudit.run_zeroshot(
        spec, images, root / "zeroshot", registry=str(registry), cache_dir=None, workers=0,
        device="cpu", progress=False,
    )  # fmt: skip
    return {
        "paper": _count(root, registry, "paper", "paper"),
        "curated": _count(root, registry, "curated", "curated"),
        "zeroshot": zeroshot,
    }


def _report(runs, coverage, out):
    from clipaudit.report import build_report

    return build_report([coverage, runs["zeroshot"]], out, n_bootstrap=0)


def _lexical_concept_points(report) -> int:
    (row,) = [
        r
        for r in report.summary["correlations"]
        if r["level"] == "concept" and r["method"] == "lexical"
    ]
    return row["n"]


def test_the_report_shows_a_concept_not_counted_as_not_counted_and_leaves_it_out(runs, tmp_path):
    report = _report(runs, runs["paper"], tmp_path / "r")
    concepts = {row["concept"]: row for row in report.summary["concepts"]}
    # not 0: no count at all, so not "never captioned" either
    assert concepts["horse"]["count"] is None and concepts["horse"]["coverage"] is None
    assert concepts["horse"]["log10_coverage"] is None
    assert concepts["horse"]["support"] == 2  # it has images: only its coverage is missing
    assert [concepts[c]["count"] for c in ("dog", "cat")] == [2, 2]
    assert _lexical_concept_points(report) == 2  # dog and cat
    assert "horse" not in set(report.tables["outliers"]["name"])
    (cell,) = [c for s in report.summary["overview"] for g in s["groups"] for c in g["coverage"]]
    assert cell["n_never_captioned"] == 0
    assert cell["mean"] == pytest.approx(2 / len(CAPTIONS))  # over dog and cat
    notes = [n for n in report.summary["notes"] if "not counted" in n]
    assert len(notes) == 1
    assert "not counted by the paper profile: horse (no paper_synonyms)" in notes[0]
    (corpus,) = report.summary["corpora"]
    assert corpus["concepts_not_counted"] == NOT_COUNTED
    html = (report.out / "report.html").read_text(encoding="utf-8")
    assert "not counted by the paper profile: horse (no paper_synonyms)" in html
    markdown = (report.out / "report.md").read_text(encoding="utf-8")
    (line,) = [line for line in markdown.splitlines() if "| horse |" in line]
    assert "| lexical | – | – |" in line


def test_a_curated_run_or_an_older_manifest_gives_no_such_note(runs, tmp_path):
    curated = _report(runs, runs["curated"], tmp_path / "curated")
    assert not [n for n in curated.summary["notes"] if "not counted" in n]
    assert curated.summary["corpora"][0]["concepts_not_counted"] == {}
    assert {row["concept"]: row["count"] for row in curated.summary["concepts"]} == {
        "dog": 2,
        "cat": 2,
        "horse": 2,
    }
    assert _lexical_concept_points(curated) == 3
    # a run counted before the field was recorded reads as before
    paper = runs["paper"]
    manifest = {k: v for k, v in paper.manifest.items() if k != "concepts_not_counted"}
    older = _report(runs, dataclasses.replace(paper, manifest=manifest), tmp_path / "older")
    assert not [n for n in older.summary["notes"] if "not counted" in n]
    assert _lexical_concept_points(older) == 3


# --------------------------------------------------------------------------- the statistics


N = 1000


def _inputs(horse_count: float) -> Inputs:
    """Seven concepts whose F1 rises with their coverage, and a well-known horse counted
    ``horse_count`` times (NaN: not counted)."""
    counts = [1, 3, 8, 20, 40, 90, 150, horse_count]
    f1 = [0.20, 0.28, 0.35, 0.41, 0.47, 0.52, 0.58, 0.95]
    names = [f"c{i}" for i in range(7)] + ["horse"]
    coverage = pd.DataFrame(
        {
            "concept": names,
            "group": "Animal",
            "category": "common",
            "count": np.array(counts, dtype=float),
            "rate": np.array(counts, dtype=float) / N,
        }
    )
    scores = pd.DataFrame(
        {"group": "Animal", "concept": names, "precision": f1, "recall": f1, "f1": f1}
    ).assign(support=5)
    groups = pd.DataFrame(
        {"group": ["Animal"], "category": "common", "macro_f1": [float(np.mean(f1))],
         "accuracy": [0.5], "n_images": [40], "n_concepts": [8]}
    )  # fmt: skip
    registry = {"name": "hand", "sha256": "0" * 64}
    corpus = Corpus(
        "corpus", 0, coverage, pd.DataFrame(), float(N), ["lexical"], "lexical", registry
    )
    model = Model("model", 1, scores, groups, registry, [], [], lambda group: None)
    return Inputs(
        records=[], corpora=[corpus], models=[model], group_order=["Animal"],
        category_order=["common"], category_of={"Animal": "common"}, sensitive=set(),
        registry=registry, notes=[],
    )  # fmt: skip


def test_a_concept_not_counted_is_no_point_and_no_finding():
    # counted 0, the well-known horse is a finding: rarely captioned yet known
    tables, summary = analyse(_inputs(0), seed=0, n_bootstrap=0)
    assert summary["pairs"][0]["concepts"]["n"] == 8
    assert [o["name"] for o in summary["pairs"][0]["rarely_captioned_yet_known"]] == ["horse"]
    # not counted, it is neither
    tables, summary = analyse(_inputs(math.nan), seed=0, n_bootstrap=0)
    pair = summary["pairs"][0]
    assert pair["concepts"]["n"] == 7
    assert pair["rarely_captioned_yet_known"] == []
    assert "horse" not in set(tables["outliers"]["name"])
    row = tables["concepts"].set_index("concept").loc["horse"]
    assert np.isnan(row["coverage"]) and np.isnan(row["studentized_residual"])
    # the group's coverage is its counted concepts' mean
    (group,) = summary["groups"]
    assert group["log10_coverage"] == pytest.approx(
        math.log10((np.mean([1, 3, 8, 20, 40, 90, 150]) + 0.5) / N)
    )


def test_a_concept_whose_paper_synonyms_a_later_concept_all_claims_is_not_counted(tmp_path):
    from clipaudit.lexical import concepts_not_counted
    from clipaudit.registry import load_registry

    # as in the paper's code, a synonym listed twice counts for the last concept that lists it:
    # "bike" and "cycle" both go to motorcycle, so bicycle can never be counted
    text = PARTIAL.replace(
        "  - {name: horse, group: Animal, gloss: a horse, synonyms: [horse]}\n",
        "  - {name: bicycle, group: Animal, gloss: a bicycle, synonyms: [bicycle],"
        " paper_synonyms: [bike, Cycle]}\n"
        "  - {name: motorcycle, group: Animal, gloss: a motorcycle, synonyms: [motorcycle],"
        " paper_synonyms: [motorcycle, cycle, bike]}\n",
    )
    path = tmp_path / "claimed.yaml"
    path.write_text(text, encoding="utf-8")
    registry = load_registry(path)
    expected = {"bicycle": "its paper_synonyms all count for motorcycle"}
    assert concepts_not_counted(registry, "paper") == expected
    result = count_coverage(
        texts=["a bike", "a cycle race"], registry=path, out=tmp_path / "run", profile="paper",
        workers=1, progress=False,
    )  # fmt: skip
    counts = result.concepts.set_index("concept")["count"]
    assert (counts["bicycle"], counts["motorcycle"]) == (0, 2)
    assert result.concepts_not_counted == expected
    # one synonym of its own left, and it is counted: nothing to say
    partly = text.replace("paper_synonyms: [bike, Cycle]", "paper_synonyms: [bike, bicycle]")
    path.write_text(partly, encoding="utf-8")
    assert concepts_not_counted(load_registry(path), "paper") == {}

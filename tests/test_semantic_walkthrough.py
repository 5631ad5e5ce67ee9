"""The semantic half of caption coverage as an auditor walks it (calibrate, count, index, query):
the defects that walk found, each pinned here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from clipaudit.errors import SettingsError
from tests.conftest import unit_rows


def no_encoder(spec):
    raise AssertionError(f"the encoder {spec} was loaded before the settings were checked")


def write_gold(path, n=6):
    path.write_text(
        "".join(
            json.dumps({"id": i, "caption": f"a dog number {i}", "concepts": ["dog"]}) + "\n"
            for i in range(n)
        )
    )
    return path


def test_a_labelled_file_named_twice_or_copied_is_refused_naming_both(tmp_path, monkeypatch):
    """Pooled twice, a file's captions would weigh double and its concepts reach --min-positives
    on half the positives they need (3 labelled, 6 counted): refused, by path or by content."""
    from clipaudit.semantic.calibration import check_labelled_files

    gold = write_gold(tmp_path / "gold.jsonl")
    copy = tmp_path / "copy.jsonl"
    shutil.copyfile(gold, copy)
    other = write_gold(tmp_path / "other.jsonl", n=4)
    monkeypatch.chdir(tmp_path)
    for paths, named in [
        ([gold, gold], r"gold\.jsonl .*twice"),
        ([gold, "./gold.jsonl"], r"gold\.jsonl .*twice"),
        ([gold, other, copy], r"copy\.jsonl holds the same bytes as .*gold\.jsonl"),
    ]:
        with pytest.raises(SettingsError, match=named):
            check_labelled_files(paths)
    check_labelled_files([gold, other])  # distinct files pass


def test_the_calibrate_command_refuses_a_file_named_twice_before_the_encoder_loads(
    tmp_path, monkeypatch
):
    from typer.testing import CliRunner

    from clipaudit.cli import app
    from clipaudit.semantic import encoders

    monkeypatch.setattr(encoders, "load_encoder", no_encoder)
    gold = str(write_gold(tmp_path / "gold.jsonl"))
    args = ["coverage", "calibrate", gold, gold, "--out", str(tmp_path / "cal.json"), "-q"]
    result = CliRunner().invoke(app, [*args, "--folds", "2"])
    assert isinstance(result.exception, SettingsError), result.output
    assert "twice" in str(result.exception)
    assert not (tmp_path / "cal.json").exists()


def small_store(tmp_path, n=100, d=16):
    from clipaudit.semantic.store import EmbeddingStore

    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    identity = {"kind": "synthetic", "model": "random", "weights": "0", "dim": d}
    store = EmbeddingStore.open(tmp_path / "store", identity, d)
    store.write_part("000-00000-0000", 0, x, list(range(n)))
    store.finish("000-00000-0000", 1, n)
    return store


@pytest.mark.parametrize(
    "settings, needed",
    [
        ({}, 256),  # 256 PQ codes per sub-vector, 100 captions
        ({"nbits": 4, "nlist": 200}, 200),  # more lists than captions
    ],
)
def test_an_ivfpq_index_on_too_few_captions_names_the_flag_and_argument_that_fix_it(
    tmp_path, settings, needed
):
    from clipaudit.semantic.index import CaptionIndex, IndexSettings

    store = small_store(tmp_path)
    with pytest.raises(SettingsError) as caught:
        CaptionIndex.build(store, IndexSettings(kind="ivfpq", **settings))
    message = str(caught.value)
    assert f"trains on at least {needed:,} captions; got 100" in message
    assert "--kind flat" in message and "kind='flat'" in message
    # a training sample smaller than a corpus large enough: the sample's argument is the fix
    big = small_store(tmp_path / "big", n=300)
    with pytest.raises(SettingsError, match=r"got 100 \(train_rows=100 of the 300 captions\): "
                       r"train on 256 or more \(train_rows=\)"):  # fmt: skip
        CaptionIndex.build(big, IndexSettings(kind="ivfpq", train_rows=100))
    CaptionIndex.build(big, IndexSettings(kind="ivfpq", nlist=4))  # trains on all 300


def fake_query(count):
    """query_run without an index or an encoder: one nearest caption, and the run's own note on
    a registry concept as the library writes it (from RUN/nearest.json)."""
    from clipaudit.coverage_semantic import _run_concept
    from clipaudit.semantic.index import QueryResult

    def query_run(run, text, *, threshold=None, k=10):
        near = {"score": 0.44, "input": 0, "file": "a.parquet", "id": 7, "caption": "a dog",
                "counted": True}  # fmt: skip
        return QueryResult(
            text, 0.408, count, [near], 0.01, "exact (flat index)", count,
            run_concept=_run_concept(Path(run), text),
        )  # fmt: skip

    return query_run


@pytest.mark.parametrize(
    "text, method, how",
    [
        ("dog", "both", "with the concept's own vector (prompts, synonyms, gloss) at cosine >= "
         "0.292 (semantic_count"),
        (" Dog ", "semantic", "with the concept's own vector (prompts, synonyms, gloss) at "
         "cosine >= 0.292 (semantic_count"),
        ("dog", "checked", "by its words, checked against the concept's gloss (checked_count"),
    ],
)  # fmt: skip
def test_a_query_naming_a_registry_concept_says_the_run_counted_it_otherwise(
    tmp_path, monkeypatch, text, method, how
):
    """A walk-through query of "dog" found 6 of 2,000 COCO captions where the run's semantic
    count of dog was 72: the query embeds the word alone at the shared threshold, the run the
    concept's own vector at its own threshold. The command says so, and where the run's count is."""
    from typer.testing import CliRunner

    import clipaudit.coverage_semantic
    from clipaudit.cli import app

    run = tmp_path / "run"
    run.mkdir()
    concepts = {"dog": {"group": "Animal", "threshold": 0.291975, "captions": []}}
    (run / "nearest.json").write_text(json.dumps({"method": method, "concepts": concepts}))
    monkeypatch.setattr(clipaudit.coverage_semantic, "query_run", fake_query(6))
    result = CliRunner().invoke(app, ["coverage", "query", str(run), text], terminal_width=200)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("6 captions with cosine >= 0.408 to")
    assert lines[1] == "  0.440  a.parquet  7  a dog"
    assert lines[2] == (
        f"'dog' is a concept of the run's registry (group Animal): the run counted it {how} in "
        f"{run / 'concepts.csv'}); this query embeds the text alone"
    )


def test_a_query_of_no_registry_concept_prints_no_note(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import clipaudit.coverage_semantic
    from clipaudit.cli import app

    run = tmp_path / "run"
    run.mkdir()
    concepts = {"dog": {"group": "Animal", "threshold": 0.3, "captions": []}}
    (run / "nearest.json").write_text(json.dumps({"concepts": concepts}))
    monkeypatch.setattr(clipaudit.coverage_semantic, "query_run", fake_query(0))
    result = CliRunner().invoke(app, ["coverage", "query", str(run), "origami"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) == 2


@pytest.mark.parametrize(
    "options, said",
    [
        ([], "count with --calibration {path} and no --encoder (the default encoder, as here)"),
        (["--encoder", "st:/models/mini"], "count with --calibration {path} and --encoder "
         "st:/models/mini"),
    ],
)  # fmt: skip
def test_calibrate_ends_saying_which_encoder_to_count_with(tmp_path, monkeypatch, options, said):
    """The closing line names the encoder to count with: "the same --encoder" read as a flag to
    repeat when none was given."""
    from typer.testing import CliRunner

    import clipaudit.coverage_semantic
    from clipaudit.cli import app
    from clipaudit.coverage_semantic import CalibrationReport
    from clipaudit.semantic.calibration import default_calibration

    out = tmp_path / "cal.json"
    calibration = default_calibration({"kind": "sentence-transformers", "model": "mini"}, ["dog"])
    scores = {"folds": 2, "n_captions": 6, "methods": {}}
    monkeypatch.setattr(
        clipaudit.coverage_semantic,
        "calibrate",
        lambda *args, **options: CalibrationReport(out, calibration, scores),
    )
    gold = str(write_gold(tmp_path / "gold.jsonl"))
    args = ["coverage", "calibrate", gold, "--out", str(out), *options]
    result = CliRunner().invoke(app, args, terminal_width=300)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].endswith(said.format(path=out)), result.output


def test_each_nearest_caption_of_a_query_says_whether_it_was_counted(tmp_path):
    """A query of 0 captions printed its nearest captions all the same, with nothing to tell
    them from counted ones: each says whether its cosine reached the threshold, as the count
    decides it (float32 scores, not the rounded ones shown)."""
    from clipaudit.semantic.index import CaptionIndex, IndexSettings

    store = small_store(tmp_path)
    vectors = unit_rows(np.concatenate([batch.vectors for batch in store.iter_batches()]))
    query = vectors[3] + vectors[5]
    unit = query / np.linalg.norm(query)
    exact = vectors @ unit
    threshold = float(np.sort(exact)[-4])  # the 4 nearest reach it
    index = CaptionIndex.build(store, IndexSettings(kind="flat"))
    found = index.query(query, threshold, k=8)
    assert found.count == int((exact >= np.float32(threshold)).sum()) == 4
    assert [near["counted"] for near in found.nearest] == [True] * 4 + [False] * 4
    assert all(
        near["counted"] == bool(exact[near["position"]] >= np.float32(threshold))
        for near in found.nearest
    )


def test_the_query_command_marks_where_the_uncounted_nearest_captions_begin(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import clipaudit.coverage_semantic
    from clipaudit.cli import app
    from clipaudit.semantic.index import QueryResult

    run = tmp_path / "run"
    run.mkdir()
    (run / "nearest.json").write_text(json.dumps({"method": "semantic", "concepts": {}}))
    near = [
        {"score": s, "input": 0, "file": None, "id": i, "caption": f"c{i}", "counted": s > 0.5}
        for i, s in enumerate([0.61, 0.52, 0.41])
    ]
    found = QueryResult("origami", 0.5, 2, near, 0.01, "exact (flat index)", 2)
    monkeypatch.setattr(clipaudit.coverage_semantic, "query_run", lambda *a, **o: found)
    result = CliRunner().invoke(app, ["coverage", "query", str(run), "origami"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1:] == [
        "  0.610  input 0  0  c0",
        "  0.520  input 0  1  c1",
        "not counted (cosine below 0.500):",
        "  0.410  input 0  2  c2",
    ]

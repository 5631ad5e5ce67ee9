"""An auditor's walk through the caption index (helper 140): counts and nearest captions against
numpy's brute force over the stored vectors, and an index folder that lost a file, was cut, or
was built over another store, each refused with the fix."""

from __future__ import annotations

import numpy as np
import pytest

import clipaudit.semantic.index as index_module
from clipaudit.errors import InputError, SettingsError
from clipaudit.semantic.index import CaptionIndex, IndexSettings, check_query
from clipaudit.semantic.store import EmbeddingStore
from tests.conftest import unit_rows

N, DIM = 400, 16


def _captions() -> list[str]:
    captions = [f"caption {i}" for i in range(N)]
    captions[7], captions[99] = "...", ""  # blank by their text, whatever their vectors
    captions[11] = captions[12] = captions[13] = "a copy of web alt-text"
    return captions


def _store(tmp_path, identity=None) -> EmbeddingStore:
    """A float16 store of clustered unit vectors in two units of work of two parts each."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((8, DIM))
    x = centres[rng.integers(0, 8, N)] + 0.7 * rng.standard_normal((N, DIM))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    identity = identity or {"kind": "synthetic", "model": "walk", "weights": "3", "dim": DIM}
    store = EmbeddingStore.open(tmp_path / "store", identity, DIM)
    for key, rows in (("a", range(0, 250)), ("b", range(250, N))):
        rows = list(rows)
        half = len(rows) // 2
        for part, chunk in enumerate((rows[:half], rows[half:])):
            store.write_part(key, part, x[chunk], [f"id{i}" for i in chunk])
        store.finish(key, 2, len(rows))
    return store


def _build(tmp_path, kind: str = "flat") -> CaptionIndex:
    captions = _captions()
    # margin 2: every caption of a list that can hold a hit is re-scored, so IVF-PQ is exact too
    options = (
        {"nlist": 4, "m": 4, "nbits": 6, "train_rows": N, "margin": 2.0} if kind != "flat" else {}
    )
    return CaptionIndex.build(
        _store(tmp_path),
        IndexSettings(kind=kind, **options),
        captions=[captions[:125], captions[125:250], captions[250:325], captions[325:]],
        folder=tmp_path / "idx",
        keys=["a", "b"],
    )


@pytest.mark.parametrize("kind", ["flat", "ivfpq"])
def test_counts_and_nearest_captions_match_numpy_brute_force(tmp_path, kind):
    """What the store holds (float16, read as float32, as unit rows: how counting scores them)
    scored by numpy: the count at each threshold, and the k nearest distinct texts, best first,
    k beyond the corpus included."""
    _build(tmp_path, kind)
    index = CaptionIndex.load(tmp_path / "idx")
    captions = _captions()
    vectors = np.concatenate(
        [
            np.load(p).astype(np.float32)
            for p in sorted((tmp_path / "store").glob("*/0000*[0-9].npy"))
        ]
    )
    assert vectors.shape == (N, DIM)
    vectors = unit_rows(vectors)  # blank captions' rows are zero, and stay so
    blank = np.array([c in ("...", "") for c in captions])
    query = np.random.default_rng(9).standard_normal(DIM).astype(np.float32)
    unit = query / np.linalg.norm(query)
    scores = np.where(blank, -np.inf, vectors @ unit)
    for threshold in (-1.0, -0.2, 0.0, 0.3, 0.6, 1.0):
        got = index.query(query, threshold, k=3)
        assert got.count == int((scores >= np.float32(threshold)).sum()), threshold
    got = index.query(query, 0.3, k=10 * N)  # more than the corpus holds: each distinct text once
    order = [i for i in np.argsort(-scores, kind="stable") if not blank[i]]
    distinct = []
    for i in order:
        if captions[i] not in {captions[j] for j in distinct}:
            distinct.append(i)
    assert [n["position"] for n in got.nearest] == distinct
    assert len(got.nearest) == N - 2 - 2  # two blank, two copies of one text
    assert [n["score"] for n in got.nearest] == [round(float(scores[i]), 4) for i in distinct]
    assert [n["counted"] for n in got.nearest] == [bool(scores[i] >= 0.3) for i in distinct]
    assert got.nearest[0]["id"] == f"id{distinct[0]}"


@pytest.mark.parametrize(("kind", "name"), [("flat", "captions.parquet"), ("flat", "blank.npy"),
                                            ("ivfpq", "captions.parquet")])  # fmt: skip
def test_an_index_that_lost_a_file_is_refused_not_read_without_it(tmp_path, kind, name):
    """Without captions.parquet the nearest captions came back as None (and copies of a text
    were no longer one); without blank.npy a caption of no word counted again."""
    _build(tmp_path, kind)
    (tmp_path / "idx" / name).unlink()
    with pytest.raises(InputError, match=rf"{name}.* missing.*build the index again"):
        CaptionIndex.load(tmp_path / "idx")


def test_a_cut_index_json_or_a_stopped_save_says_build_again(tmp_path, monkeypatch):
    _build(tmp_path)
    meta = tmp_path / "idx" / "index.json"
    meta.write_bytes(meta.read_bytes()[:100])
    with pytest.raises(InputError, match=r"no readable index\.json .*clipaudit coverage index"):
        CaptionIndex.load(tmp_path / "idx")

    def stopped(*args, **kwargs):  # as a kill between the captions and index.json would
        raise KeyboardInterrupt

    _build(tmp_path)
    monkeypatch.setattr(index_module, "write_json", stopped)
    with pytest.raises(KeyboardInterrupt):
        _build(tmp_path)  # over a complete index: none is left half-made behind it
    with pytest.raises(InputError, match=r"no readable index\.json .*clipaudit coverage index"):
        CaptionIndex.load(tmp_path / "idx")


def test_an_index_over_another_encoders_store_says_build_again(tmp_path):
    _build(tmp_path)
    other = _store(tmp_path / "other", {"kind": "synthetic", "model": "else", "dim": DIM})
    with pytest.raises(InputError, match=r"not the embedding store.*build the index again"):
        CaptionIndex.load(tmp_path / "idx", other)


@pytest.mark.parametrize(
    ("query", "threshold", "k", "message"),
    [
        ("", 0.5, 10, r"got ''.*e\.g\. 'origami'"),
        ("origami", 1.5, 10, r"got 1\.5.*--threshold.*threshold="),
        ("origami", float("nan"), 10, r"got nan.*--threshold"),
        ("origami", 0.5, -1, r"got -1.*-k.*k="),
    ],
)
def test_query_arguments_refused_with_the_flag_to_fix(query, threshold, k, message):
    with pytest.raises(SettingsError, match=message):
        check_query(query, threshold, k)

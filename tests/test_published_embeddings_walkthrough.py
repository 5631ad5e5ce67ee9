"""LAION's published text embeddings (``--embeddings``: ``text_emb_N.npy`` row-aligned with
``metadata_N.parquet``) as an auditor meets them: counts that agree with a run that encodes the
captions itself, and each malformed layout refused in one message naming the file, what was
expected, what was got and the fix.

Vectors are small random arrays, or the tiny OpenCLIP encoder's (tests/tiny_clip.py); expected
values are computed here with numpy.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipaudit.errors import InputError
from clipaudit.registry import load_registry
from clipaudit.semantic.store import EmbeddingStore, LaionEmbeddings

DIM = 16


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.test_coverage import TINY_REGISTRY

    path = tmp_path_factory.mktemp("registry") / "tiny.yaml"
    path.write_text(TINY_REGISTRY)
    return load_registry(path)


def write_pair(folder, emb_name, meta_name, vectors, captions=None):
    """A ``text_emb`` file and its metadata, with LAION's columns (caption, url, key, ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(vectors) if captions is None else len(captions)
    captions = captions or [f"caption {i}" for i in range(n)]
    np.save(folder / emb_name, vectors, allow_pickle=False)
    table = pa.table({
        "caption": pa.array(captions, pa.string()),
        "url": [f"https://example.com/{i}.jpg" for i in range(n)],
        "key": [f"{i:09d}" for i in range(n)],
        "similarity": np.linspace(0.3, 0.4, n),
    })  # fmt: skip
    pq.write_table(table, folder / meta_name, row_group_size=4)
    return folder / emb_name, folder / meta_name


def unit16(rng, n, dim=DIM):
    """Unit vectors rounded to float16, as LAION publishes them (their norms are then off 1)."""
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


# --------------------------------------------------------------------------- agreement


def calibration_file(path, encoder, names, semantic):
    """A calibration of these semantic thresholds (sense and additions: never decisive)."""
    from clipaudit.semantic.calibration import KINDS, Calibration

    k = len(names)
    return Calibration(
        encoder.identity, names,
        {"semantic": semantic, "sense": np.full(k, -2.0), "additions": np.full(k, 2.0)},
        {kind: ("fitted",) * k for kind in KINDS}, {kind: 0.5 for kind in KINDS},
    ).save(path)  # fmt: skip


def test_an_encoded_run_and_one_over_its_text_emb_count_alike(tiny, tiny_encoder, tmp_path):
    """A run's store and LAION's files both keep float16 rows, whose norms are off 1 by up to
    ~1e-3: the store's rows were counted as they were and LAION's renormalised, so a caption
    near a threshold counted in one and not the other (2 of 9,591 LAION captions for "black",
    MiniLM's own vectors both ways). A threshold is put here between one caption's two cosines."""
    from clipaudit.coverage import CoverageSettings, count_coverage
    from clipaudit.semantic.concepts import concept_embeddings

    animals = ["dog", "puppy", "cat", "kitten", "horse", "wolf", "fox", "hot dog"]
    captions = [f"a {animals[i % 8]} in the park {i}" for i in range(40)]
    laion = tmp_path / "laion"
    emb, meta = write_pair(laion, "text_emb_0.npy", "metadata_0.parquet",
                           np.zeros((40, tiny_encoder.dim), np.float16), captions)  # fmt: skip
    config, checkpoint = tiny_encoder.spec.model, tiny_encoder.spec.pretrained
    concepts = concept_embeddings(tiny, tiny_encoder)
    k = len(concepts.names)

    def run(out, calibration, **options):
        settings = CoverageSettings(
            method="semantic", encoder=f"open_clip:{config}@{checkpoint}",
            calibration=str(calibration), progress=False, **options,
        )  # fmt: skip
        return count_coverage([meta], tiny, tmp_path / out, settings, overwrite=True)

    store = tmp_path / "store"
    run("encoded", calibration_file(tmp_path / "a.json", tiny_encoder, concepts.names,
                                    np.full(k, 0.5)), embedding_store=str(store))  # fmt: skip
    held = EmbeddingStore.load(next(store.glob("*/store.json")).parent)
    (key,) = held.units()
    x16 = np.concatenate([held.read_part(key, p)[0] for p in range(held.n_parts(key))])
    np.save(emb, x16)  # LAION's file: the very rows the run stored

    raw = x16.astype(np.float64) @ concepts.vectors.astype(np.float64).T
    unit = raw / np.linalg.norm(x16.astype(np.float64), axis=1, keepdims=True)
    row, concept = np.unravel_index(np.argmax(np.abs(unit - raw)), raw.shape)
    assert abs(unit - raw)[row, concept] > 1e-5  # float16: not unit vectors as stored
    thresholds = np.full(k, 2.0)  # the other concepts count nothing
    thresholds[concept] = (unit[row, concept] + raw[row, concept]) / 2
    calibration = calibration_file(tmp_path / "b.json", tiny_encoder, concepts.names, thresholds)
    expected = (unit >= thresholds).sum(axis=0)
    assert expected.tolist() != (raw >= thresholds).sum(axis=0).tolist()

    encoded = run("encoded", calibration, embedding_store=str(store))
    published = run("published", calibration, embeddings=str(laion))
    assert encoded.manifest["semantic"]["embeddings"]["this_session"]["rows_encoded"] == 0
    assert published.manifest["semantic"]["embeddings"]["source"] == "laion text_emb"
    assert encoded.concepts["semantic_count"].tolist() == expected.tolist()
    assert published.concepts["semantic_count"].tolist() == expected.tolist()


# --------------------------------------------------------------------------- pairing


def test_files_pair_by_the_value_of_their_number_not_its_spelling(tmp_path):
    """``text_emb_0.npy`` beside ``metadata_0000.parquet`` (a zero-padded metadata name) pair."""
    rng = np.random.default_rng(1)
    for number, n in ((0, 5), (1, 7)):
        write_pair(tmp_path, f"text_emb_{number}.npy", f"metadata_{number:04d}.parquet",
                   unit16(rng, n))  # fmt: skip
    laion = LaionEmbeddings(tmp_path, dim=DIM)
    assert [(p.embeddings.name, p.metadata.name, p.n_rows) for p in laion.pairs] == [
        ("text_emb_0.npy", "metadata_0000.parquet", 5),
        ("text_emb_1.npy", "metadata_0001.parquet", 7),
    ]
    given = LaionEmbeddings(tmp_path, [tmp_path / "metadata_0001.parquet"], dim=DIM)
    assert [p.embeddings.name for p in given.pairs] == ["text_emb_1.npy"]


def test_two_metadata_files_of_one_number_are_refused_naming_both(tmp_path):
    rng = np.random.default_rng(2)
    write_pair(tmp_path, "text_emb_3.npy", "metadata_3.parquet", unit16(rng, 4))
    write_pair(tmp_path / "x", "unused.npy", "metadata_003.parquet", unit16(rng, 4))
    (tmp_path / "x" / "metadata_003.parquet").rename(tmp_path / "metadata_003.parquet")
    with pytest.raises(InputError) as caught:
        LaionEmbeddings(tmp_path / "text_emb_3.npy", tmp_path)
    message = str(caught.value)
    assert "metadata_003.parquet" in message and "metadata_3.parquet" in message
    assert "text_emb_3.npy" in message and "one metadata file" in message


def test_a_metadata_folder_pairs_its_metadata_files_not_other_parquet_beside_them(tmp_path):
    """LAION's metadata folder may hold other tables numbered alike (``aesthetics_0.parquet``):
    sorted first, it was paired, and refused as not row-aligned."""
    rng = np.random.default_rng(3)
    write_pair(tmp_path, "text_emb_0.npy", "metadata_0.parquet", unit16(rng, 6))
    pq.write_table(pa.table({"caption": ["a"]}), tmp_path / "aesthetics_0.parquet")
    laion = LaionEmbeddings(tmp_path, dim=DIM)
    assert [p.metadata.name for p in laion.pairs] == ["metadata_0.parquet"]


def test_no_pair_at_all_names_the_files_and_how_they_pair(tmp_path):
    rng = np.random.default_rng(4)
    write_pair(tmp_path / "emb", "text_emb_7.npy", "metadata_7.parquet", unit16(rng, 3))
    write_pair(tmp_path / "meta", "unused.npy", "metadata_2.parquet", unit16(rng, 3))
    with pytest.raises(InputError) as caught:
        LaionEmbeddings(tmp_path / "emb" / "text_emb_7.npy", tmp_path / "meta")
    message = str(caught.value)
    for part in ("text_emb_7.npy", "metadata_2.parquet", "by the number", "--embeddings"):
        assert part in message, (part, message)


# --------------------------------------------------------------------------- malformed files


def refused(tmp_path, vectors_or_bytes, n_meta=8, dim=DIM):
    """The message that pairing a ``text_emb_0.npy`` (an array, or raw bytes) with an
    ``n_meta``-row metadata file gives."""
    rng = np.random.default_rng(5)
    emb, meta = write_pair(tmp_path, "text_emb_0.npy", "metadata_0.parquet", unit16(rng, n_meta))
    if isinstance(vectors_or_bytes, bytes):
        emb.write_bytes(vectors_or_bytes)
    else:
        np.save(emb, vectors_or_bytes, allow_pickle=False)
    with pytest.raises(InputError) as caught:
        LaionEmbeddings(emb, meta, dim=dim)
    message = str(caught.value)
    assert "\n" not in message and str(emb) in message
    return message


def test_a_row_count_mismatch_names_both_files_the_counts_and_the_fix(tmp_path):
    message = refused(tmp_path, unit16(np.random.default_rng(6), 7))
    assert "metadata_0.parquet" in message
    assert re.search(r"expected 8 embedding rows .* got 7", message), message
    assert "made from" in message  # the fix: the metadata the embeddings were made from


def test_another_width_names_the_encoder_option(tmp_path):
    message = refused(tmp_path, unit16(np.random.default_rng(7), 8, dim=24))
    assert "expected 16-dimensional" in message and "got 24" in message
    assert "--encoder" in message and "encoder=" in message


def test_a_file_cut_short_says_how_many_bytes_were_expected_and_got(tmp_path):
    """An interrupted download: the header promises more rows than the file holds."""
    np.save(tmp_path / "whole.npy", unit16(np.random.default_rng(8), 8))
    data = (tmp_path / "whole.npy").read_bytes()
    for cut in (len(data) - DIM * 2, len(data) // 2):  # one row short; half the file
        message = refused(tmp_path, data[:cut])
        assert f"{len(data)} bytes" in message and f"got {cut}" in message, message
        assert "8 x 16 float16" in message and "cut short" in message
        assert "again" in message  # the fix: download or copy it again


def test_a_file_that_is_not_npy_is_refused_without_advising_pickle(tmp_path):
    for junk in (b"\x00\x01garbage" * 300, b"", b"\x93NUMPY\x01\x00\x10\x00{'descr': "):
        message = refused(tmp_path, junk)
        assert "pickle" not in message.lower(), message
        assert "text_emb_N.npy" in message and "again" in message, message


def test_a_metadata_file_without_its_text_emb_names_the_file_expected(tiny, tiny_encoder, tmp_path):
    from clipaudit.coverage import CoverageSettings, count_coverage

    rng = np.random.default_rng(10)
    for number in (0, 1, 2):
        write_pair(tmp_path / "laion", f"text_emb_{number}.npy", f"metadata_{number}.parquet",
                   unit16(rng, 5, tiny_encoder.dim))  # fmt: skip
    (tmp_path / "laion" / "text_emb_2.npy").unlink()
    config, checkpoint = tiny_encoder.spec.model, tiny_encoder.spec.pretrained
    settings = CoverageSettings(method="semantic", encoder=f"open_clip:{config}@{checkpoint}",
                                embeddings=str(tmp_path / "laion"), progress=False)  # fmt: skip
    inputs = sorted((tmp_path / "laion").glob("metadata_*.parquet"))
    with pytest.raises(InputError) as caught:
        count_coverage(inputs, tiny, tmp_path / "run", settings)
    message = str(caught.value)
    assert "metadata_2.parquet" in message and str(tmp_path / "laion" / "text_emb_2.npy") in message
    assert "1 of 3 inputs" in message and "leave it out" in message
    assert (
        not (tmp_path / "run" / "manifest.json").exists()
        or "complete" not in (tmp_path / "run" / "manifest.json").read_text()
    )


def test_float64_and_unnormalised_rows_count_as_their_unit_vectors(tmp_path):
    rng = np.random.default_rng(9)
    vectors = unit16(rng, 8).astype(np.float64)
    scale = rng.uniform(0.5, 3.0, (8, 1))
    emb, meta = write_pair(tmp_path, "text_emb_0.npy", "metadata_0.parquet", vectors * scale)
    got = LaionEmbeddings(emb, meta, dim=DIM).rows(meta, 0, 8)
    expected = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_captions_of_unknown_tokens_alone_count_for_nothing_from_laion_rows(tiny, minilm, tmp_path):
    """MiniLM reads every emoji as one unknown token: encoded, "🐱" is stored as zero and counts
    for nothing; from a text_emb file MiniLM made, its row counted (for dog, red and blue with
    the COCO calibration: 12 emoji captions of 18 counted for each)."""
    from clipaudit.coverage import CoverageSettings, count_coverage
    from clipaudit.semantic.encoders import minilm_path

    emoji = ["🐱", "🚗", "⚽", "🐶🐶"]
    captions = [*emoji, "a dog on a sofa", "a red car", "a cat", "horses in a field"]
    write_pair(tmp_path / "laion", "text_emb_0.npy", "metadata_0.parquet",
               minilm.encode(captions).astype(np.float16), captions)  # fmt: skip
    names = [c.name for c in tiny.concepts]
    calibration = calibration_file(  # every caption that says something counts, for every concept
        tmp_path / "cal.json", minilm, names, np.full(len(names), -1.0)
    )
    settings = CoverageSettings(
        method="semantic", encoder=f"st:{minilm_path()}", calibration=str(calibration),
        embeddings=str(tmp_path / "laion"), progress=False, workers=2,
    )  # fmt: skip
    result = count_coverage([tmp_path / "laion" / "metadata_0.parquet"], tiny, tmp_path / "run",
                            settings)  # fmt: skip
    said = len(captions) - len(emoji)
    assert result.concepts["semantic_count"].tolist() == [said] * len(names)

"""The caption-embedding store (clipaudit.semantic.store): which stored vectors a run may reuse.

A stored vector is reused only when it was made the way this clipaudit makes one (the embedding
procedure: which captions embed as zero, float16 storage...), and a damaged part of an unfinished
unit is encoded again rather than kept. The encoder here is a stand-in with no model to load: each
text's unit vector comes from a digest of the text, and, like MiniLM, it reads an emoji alone as
one unknown token and embeds it like any text.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from clipaudit.errors import InputError

UNKNOWN = ("🐱", "⚽")  # what the stand-in reads as unknown tokens alone
DIM = 16
KEY = "000-00000-0000"


class StandIn:
    """A deterministic text encoder that counts its calls; ``scale`` multiplies its vectors (an
    encoder that does not give unit vectors), ``fail_after`` stops it after that many calls."""

    def __init__(self, *, scale: float = 1.0, fail_after: int | None = None):
        self.identity = {
            "kind": "synthetic",
            "model": "digest",
            "weights": "0",
            "dim": DIM,
            "pipeline": {},
            "normalised": True,
        }
        self.dim = DIM
        self.scale, self.fail_after = scale, fail_after
        self.calls = 0

    def encode(self, texts):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls += 1
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            row = np.random.default_rng(seed).standard_normal(DIM)
            rows.append(row / np.linalg.norm(row))
        return (np.array(rows, dtype=np.float32) * self.scale).reshape(len(texts), DIM)

    def unknown_only(self, texts):
        return np.array([t in UNKNOWN for t in texts], dtype=bool)


def batches(n_parts: int = 3) -> list[tuple[list[str], list[int]]]:
    """Caption batches, the second caption of each an emoji alone."""
    out = []
    for part in range(n_parts):
        captions = [f"a dog number {part}", UNKNOWN[part % 2], f"a red car {part}"]
        out.append((captions, [3 * part + i for i in range(3)]))
    return out


def expected_vectors(encoder: StandIn, captions: list[str]) -> np.ndarray:
    """What this clipaudit stores for ``captions``, computed here: the encoder's vector, zero
    for a caption the encoder reads as unknown tokens alone, rounded to float16."""
    vectors = encoder.encode(captions)
    vectors[encoder.unknown_only(captions)] = 0.0
    return vectors.astype(np.float16).astype(np.float32)


def strip_procedure(store_folder) -> None:
    """Make a store look as one written before clipaudit recorded the embedding procedure."""
    for path in [store_folder / "store.json", *store_folder.glob("*.done.json")]:
        held = json.loads(path.read_text())
        held.pop("procedure", None)
        path.write_text(json.dumps(held))
    for mark in store_folder.glob("*/procedure.json"):
        mark.unlink()


def stored(store) -> np.ndarray:
    return np.concatenate([b.vectors for b in store.iter_batches([KEY])])


def test_a_store_written_before_the_procedure_was_recorded_is_encoded_again(tmp_path):
    """The defect: stores written before a caption the encoder reads as unknown tokens alone
    embedded as zero hold that caption's [UNK] vector, and a resumed run reused them. Such a
    store (its units record no procedure) is encoded again, and says so; then it is reused."""
    from clipaudit.semantic.store import EmbeddingStore, embed_parts

    old = StandIn()
    store = EmbeddingStore.open(tmp_path / "store", old.identity, DIM)
    for part, (captions, ids) in enumerate(batches()):
        store.write_part(KEY, part, old.encode(captions), ids)  # [UNK] vectors, as then
    store.finish(KEY, 3, 9)
    strip_procedure(tmp_path / "store")

    again = EmbeddingStore.open(tmp_path / "store", old.identity, DIM)
    assert not again.is_done(KEY)
    encoder = StandIn()
    stats = embed_parts(again, KEY, batches(), encoder)
    assert (stats.stale, stats.parts_encoded, stats.parts_resumed, encoder.calls) == (
        True,
        3,
        0,
        3,
    )
    captions = [c for texts, _ in batches() for c in texts]
    np.testing.assert_array_equal(stored(again), expected_vectors(StandIn(), captions))
    assert not stored(again)[[1, 4, 7]].any()  # the emoji say nothing

    reused = StandIn()
    stats = embed_parts(again, KEY, batches(), reused)
    assert (stats.stale, stats.parts_resumed, reused.calls) == (False, 3, 0)


def test_a_unit_of_another_procedure_is_refused_to_readers_and_encoded_again(tmp_path, monkeypatch):
    """A unit embedded under another embedding procedure (the constant bumped since) is not
    done: a reader is told why and how to fix it, and embedding it again encodes every part.
    The procedure is recorded in the store's description and in the unit's mark of done."""
    from clipaudit.semantic import store as module
    from clipaudit.semantic.store import EMBEDDING_PROCEDURE, EmbeddingStore, embed_parts

    with monkeypatch.context() as patch:
        patch.setattr(module, "EMBEDDING_PROCEDURE", EMBEDDING_PROCEDURE - 1)
        store = EmbeddingStore.open(tmp_path / "store", StandIn().identity, DIM)
        embed_parts(store, KEY, batches(), StandIn())
        assert store.is_done(KEY)
    store = EmbeddingStore.open(tmp_path / "store", StandIn().identity, DIM)
    assert not store.is_done(KEY) and store.keys() == [KEY]
    message = (
        rf"unit of work '{KEY}' was embedded under embedding procedure "
        rf"{EMBEDDING_PROCEDURE - 1}, this clipaudit's is {EMBEDDING_PROCEDURE}.*count it again"
    )
    with pytest.raises(InputError, match=message):
        stored(store)
    encoder = StandIn()
    stats = embed_parts(store, KEY, batches(), encoder)
    assert (stats.stale, stats.parts_encoded, encoder.calls) == (True, 3, 3)
    assert store.is_done(KEY)
    done = json.loads((tmp_path / "store" / f"{KEY}.done.json").read_text())
    described = json.loads((tmp_path / "store" / "store.json").read_text())
    assert done["procedure"] == described["procedure"] == EMBEDDING_PROCEDURE
    reused = StandIn()
    assert embed_parts(store, KEY, batches(), reused).parts_resumed == 3 and reused.calls == 0


def test_parts_of_another_procedure_are_not_mixed_with_this_ones(tmp_path, monkeypatch):
    """A unit cut short by a kill under another procedure, resumed under this one: its parts
    are all encoded again, none of the old kept beside the new."""
    from clipaudit.semantic import store as module
    from clipaudit.semantic.store import EMBEDDING_PROCEDURE, EmbeddingStore, embed_parts

    with monkeypatch.context() as patch:
        patch.setattr(module, "EMBEDDING_PROCEDURE", EMBEDDING_PROCEDURE - 1)
        store = EmbeddingStore.open(tmp_path / "store", StandIn().identity, DIM)
        with pytest.raises(KeyboardInterrupt):
            embed_parts(store, KEY, batches(), StandIn(fail_after=2))
        assert store.has_part(KEY, 1) and not store.has_part(KEY, 2)
    store = EmbeddingStore.open(tmp_path / "store", StandIn().identity, DIM)
    encoder = StandIn()
    stats = embed_parts(store, KEY, batches(), encoder)
    assert (stats.stale, stats.parts_encoded, stats.parts_resumed, encoder.calls) == (
        True,
        3,
        0,
        3,
    )
    # a unit cut short under this procedure resumes where it stopped
    with pytest.raises(KeyboardInterrupt):
        embed_parts(store, "other", batches(), StandIn(fail_after=2))
    resumed = StandIn()
    stats = embed_parts(store, "other", batches(), resumed)
    assert (stats.stale, stats.parts_resumed, resumed.calls) == (False, 2, 1)


def test_a_damaged_part_of_an_unfinished_unit_is_encoded_again_on_resume(tmp_path):
    """A part left unreadable or of the wrong shape (a copy cut short, a disk error) by the
    session before is encoded again when the unit is resumed, not marked done as it is."""
    from clipaudit.semantic.store import EmbeddingStore, embed_parts

    store = EmbeddingStore.open(tmp_path / "store", StandIn().identity, DIM)
    with pytest.raises(KeyboardInterrupt):
        embed_parts(store, KEY, batches(), StandIn(fail_after=2))
    (tmp_path / "store" / KEY / "000000.npy").write_bytes(b"")  # empty: np.load's EOFError
    np.save(tmp_path / "store" / KEY / "000001.npy", np.zeros((2, DIM), np.float16))  # 2 rows
    encoder = StandIn()
    stats = embed_parts(store, KEY, batches(), encoder)
    assert (stats.parts_encoded, stats.parts_resumed, encoder.calls) == (3, 0, 3)
    captions = [c for texts, _ in batches() for c in texts]
    np.testing.assert_array_equal(stored(store), expected_vectors(StandIn(), captions))


def test_an_empty_part_file_is_a_damaged_part_naming_the_fix(tmp_path):
    """np.load reads an empty file with an EOFError: a part so damaged is refused as damaged."""
    from clipaudit.semantic.store import EmbeddingStore, embed_parts

    store = EmbeddingStore.open(tmp_path / "store", StandIn().identity, DIM)
    embed_parts(store, KEY, batches(), StandIn())
    (tmp_path / "store" / KEY / "000001.npy").write_bytes(b"")
    with pytest.raises(InputError, match=r"000001\.npy: unreadable embeddings part .*delete"):
        stored(store)


def test_vectors_that_are_not_unit_length_are_refused_not_stored(tmp_path):
    """The store keeps unit vectors in float16: an encoder's vectors of another length would
    give other cosines, and beyond float16's range (65504) would be kept as infinity, later
    read as a damaged file that encoding again cannot mend."""
    from clipaudit.semantic.store import EmbeddingStore, embed_parts

    store = EmbeddingStore.open(tmp_path / "store", StandIn().identity, DIM)
    # of the batch's three captions, the emoji is stored as zero and the other two refused
    refused = r"part k/0: row 0 is not of unit length \(norm 1e\+05; 2 of 3 rows\).*normalise"
    with pytest.raises(InputError, match=refused):
        embed_parts(store, "k", batches(1), StandIn(scale=1e5))
    assert not store.has_part("k", 0)
    blank = np.zeros((2, DIM))
    store.write_part("k", 0, blank, [1, 2])  # a caption that says nothing is zero
    assert store.has_part("k", 0)

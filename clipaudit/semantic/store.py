"""Caption embeddings on disk: computed once, beside the run, resumed after a kill; and LAION's own.

An :class:`EmbeddingStore` is a folder::

    STORE/store.json                 format, encoder identity, dimension, dtype (float16), the
                                     store's id (made when it is created: the same store moved
                                     elsewhere keeps it, another store has another), and whether
                                     it is one run's own (``own``: the run removes from it what
                                     its changed inputs replaced, and, asked to prune, what its
                                     inputs no longer need)
    STORE/<key>/procedure.json       the embedding procedure its parts are made under, written
                                     before the first part
    STORE/<key>/<part:06d>.npy       one part's unit vectors, float16, (n, dim)
    STORE/<key>/<part:06d>.ids.npy   their caption ids (int64, or unicode when ids are not integers)
    STORE/<key>.done.json            the unit of work ``key`` is complete: parts, rows, procedure

``key`` is a unit of work of the caller (a coverage shard's key); parts are its caption batches in
reading order. Every file is written atomically (:func:`clipaudit.provenance.atomic_write_bytes`,
``np.save(..., allow_pickle=False)``), ids first and vectors last, so a part without its vectors file
is not done; :func:`embed_parts` skips the parts that are done without encoding them again, which is
the resume after a kill (a part left unreadable, or of another length than its batch, is encoded
again). Reading maps one part at a time (memory flat in corpus size). Parts are read as stored:
float16 leaves norms off 1 by up to ~1e-3, so a reader that scores cosines renormalises, as
:class:`LaionEmbeddings` does.

A unit's vectors are reused only when made under this clipaudit's :data:`EMBEDDING_PROCEDURE` (how
a caption becomes its stored vector, besides the encoder): a unit made under another, or before the
procedure was recorded, is not done; :func:`embed_parts` encodes it again whole, never keeping its
old parts beside new ones, and says so (:attr:`EmbedStats.stale`).

:class:`LaionEmbeddings` reads LAION's published text embeddings (``text_emb_*.npy``, row-aligned with
``metadata_*.parquet``) memory-mapped, refusing a row-count or dimension mismatch with an
:class:`~clipaudit.errors.InputError` naming the files, what was expected and what was got.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipaudit.errors import InputError, RunFolderError, whole_line
from clipaudit.provenance import atomic_write_bytes, write_json
from clipaudit.semantic.encoders import (
    TextEncoder,
    check_finite,
    describe_difference,
    normalise,
    same_encoder,
    unknown_only,
)

STORE_FORMAT = "clipaudit-caption-embeddings"
STORE_VERSION = 1
# The embedding procedure: how a caption becomes its stored vector besides the encoder's identity
# (encode_captions: which captions embed as zero, the finite check; write_part: unit length,
# float16). Bump it with any change that stores another vector for some caption (a blanking rule,
# normalisation, truncation, dtype): units made under another procedure, or before one was
# recorded, are encoded again, never read beside this one's. 1: captions of no word embed as zero
# (never recorded); 2: so do captions the encoder reads as unknown tokens alone (MiniLM's emoji)
EMBEDDING_PROCEDURE = 2
_PROCEDURE_MARK = "procedure.json"
# a unit vector stored in float16 is of length 1 within float16's rounding (2**-11 per value)
_UNIT_TOLERANCE = 1e-2
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


@dataclass
class EmbeddingBatch:
    """Unit vectors of consecutive captions (float32), their ids, and their captions when known."""

    vectors: np.ndarray
    ids: Sequence[Any]
    captions: Sequence[str] | None = None
    key: str | None = None
    part: int | None = None


# numpy casts float16 to float32 in one thread, at about the cost of the matrix product that
# follows (50 ms for 65,536 x 512 on a 2-core CPU): blocks of rows are cast on this many threads
# (numpy releases the GIL while it casts); small arrays are not worth a thread
_CAST_THREADS = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
_CAST_MIN_VALUES = 1 << 20


def as_float32(vectors: np.ndarray) -> np.ndarray:
    """``np.asarray(vectors, dtype=np.float32)`` (a memory-mapped float16 part, say), cast in
    blocks of rows on several threads when it is large."""
    if vectors.dtype == np.float32 or vectors.size < _CAST_MIN_VALUES or _CAST_THREADS < 2:
        return np.asarray(vectors, dtype=np.float32)
    from concurrent.futures import ThreadPoolExecutor

    out = np.empty(vectors.shape, dtype=np.float32)
    bounds = np.linspace(0, len(vectors), _CAST_THREADS + 1).astype(int).tolist()

    def cast(block: int) -> None:
        start, stop = bounds[block], bounds[block + 1]
        np.copyto(out[start:stop], vectors[start:stop], casting="unsafe")

    with ThreadPoolExecutor(_CAST_THREADS) as pool:
        list(pool.map(cast, range(_CAST_THREADS)))  # list(): a failed block raises here
    return out


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def ids_array(ids: Sequence[Any]) -> np.ndarray:
    """Caption ids as int64 when they all are integers that fit (a uint64 id of 2**63 or more
    does not), else as unicode text (no pickling)."""
    values = list(ids)
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        try:
            return np.asarray(values, dtype=np.int64)
        except OverflowError:
            pass
    return np.asarray(["" if v is None else str(v) for v in values], dtype=np.str_)


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY.match(key):
        raise InputError(
            f"unit-of-work key {key!r:.80} is not a plain name (letters, digits, '.', '_', '-')"
        )
    return key


class EmbeddingStore:
    """Float16 caption embeddings of one encoder, in parts, resumable (see the module docstring)."""

    def __init__(
        self, folder: Path, encoder: dict[str, Any], dim: int, store_id: str | None = None
    ):
        self.folder = folder
        self.encoder = encoder
        self.dim = dim
        self.id = store_id  # None: a store made before stores had ids

    @staticmethod
    def id_at(folder: str | Path) -> str | None:
        """The id of the store in ``folder``, or None when there is none (or it has no id)."""
        meta = Path(folder) / "store.json"
        if not meta.is_file():
            return None
        return _store_id(_read_store_json(meta))

    @classmethod
    def open(
        cls, folder: str | Path, encoder: dict[str, Any], dim: int, *, own: bool = False
    ) -> EmbeddingStore:
        """Create the store, or open it when it holds vectors of the same encoder and dimension;
        raises :class:`RunFolderError` when it holds another encoder's. ``own``: the store is
        one run's own, which removes from it the embeddings of inputs that changed, and, asked to
        prune, those its inputs no longer need (:meth:`remove`); it is refused to any other user,
        whose embeddings it would remove."""
        folder = Path(folder)
        meta = folder / "store.json"
        if meta.is_file():
            held = _read_store_json(meta)
            if not same_encoder(held["encoder"], encoder) or held["dim"] != dim:
                raise RunFolderError(
                    f"{folder} holds caption embeddings of another encoder "
                    f"({describe_difference(held['encoder'], encoder)}; dim {held['dim']} vs {dim}); "
                    "use another folder, or delete this one to encode again"
                )
            if held.get("own") is True and not own:
                raise RunFolderError(
                    f"{folder} is a run's own store of caption embeddings: that run, counted "
                    "again, may remove from it the embeddings its own inputs do not need, this "
                    "run's among them; give --embedding-store a folder of its own, which runs share"
                )
            if held.get("procedure") != EMBEDDING_PROCEDURE:
                # the procedure this clipaudit writes under; each unit records its own
                write_json(meta, {**held, "procedure": EMBEDDING_PROCEDURE})
            return cls(folder, held["encoder"], dim, _store_id(held))
        if folder.exists() and any(p.name != ".lock" for p in folder.iterdir()):
            raise RunFolderError(f"{folder} is not empty and holds no store.json; use a new folder")
        folder.mkdir(parents=True, exist_ok=True)
        store_id = uuid.uuid4().hex
        write_json(
            meta,
            {
                "format": STORE_FORMAT,
                "version": STORE_VERSION,
                "id": store_id,
                "encoder": encoder,
                "dim": int(dim),
                "dtype": "float16",
                "normalised": True,
                "procedure": EMBEDDING_PROCEDURE,
                "own": own,
            },
        )
        return cls(folder, encoder, int(dim), store_id)

    @classmethod
    def load(cls, folder: str | Path) -> EmbeddingStore:
        """Open an existing store for reading, whatever its encoder."""
        folder = Path(folder)
        meta = folder / "store.json"
        if not meta.is_file():
            raise InputError(f"{folder} holds no caption embeddings (no store.json)")
        held = _read_store_json(meta)
        return cls(folder, held["encoder"], held["dim"], _store_id(held))

    # ----------------------------------------------------------------------- writing

    def _part(self, key: str, part: int) -> tuple[Path, Path]:
        base = self.folder / _check_key(key) / f"{int(part):06d}"
        return base.with_suffix(".npy"), base.with_suffix(".ids.npy")

    def has_part(self, key: str, part: int) -> bool:
        vectors, ids = self._part(key, part)
        return vectors.is_file() and ids.is_file()

    def write_part(self, key: str, part: int, vectors: np.ndarray, ids: Sequence[Any]) -> None:
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(vectors) != len(ids):
            raise InputError(
                f"part {key}/{part}: expected ({len(ids)}, {self.dim}) vectors, got {vectors.shape}"
            )
        # cosines are dot products of unit vectors; a longer one would also overflow float16
        # (65504) into infinity, later read as a damaged file that encoding again cannot mend
        as32 = np.asarray(vectors, dtype=np.float32)
        norms = np.sqrt(np.einsum("ij,ij->i", as32, as32))
        bad = np.flatnonzero(~((norms == 0) | (np.abs(norms - 1) <= _UNIT_TOLERANCE)))
        if len(bad):
            raise InputError(
                f"part {key}/{part}: row {int(bad[0])} is not of unit length (norm "
                f"{norms[bad[0]]:.3g}; {len(bad)} of {len(norms)} rows); the store keeps unit "
                "vectors (zero for a caption that says nothing): normalise the encoder's vectors"
            )
        vectors_path, ids_path = self._part(key, part)
        atomic_write_bytes(ids_path, npy_bytes(ids_array(ids)))
        atomic_write_bytes(vectors_path, npy_bytes(vectors.astype(np.float16)))

    def finish(self, key: str, n_parts: int, n_rows: int) -> None:
        write_json(
            self.folder / f"{_check_key(key)}.done.json",
            {"parts": n_parts, "rows": n_rows, "procedure": EMBEDDING_PROCEDURE},
        )

    def is_done(self, key: str) -> bool:
        """Whether ``key``'s parts were all written under this clipaudit's
        :data:`EMBEDDING_PROCEDURE` (a part deleted since, or its folder, or another procedure
        makes the unit to encode again)."""
        if self.procedure_of(key) != EMBEDDING_PROCEDURE:
            return False
        try:
            n_parts = self.n_parts(key)
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return all(self.has_part(key, part) for part in range(n_parts))

    def procedure_of(self, key: str) -> int | None:
        """The embedding procedure ``key``'s vectors were made under, as its mark of done
        records it, or, while it is unfinished, its folder; None when none is recorded (no
        unit, or one written before clipaudit recorded it)."""
        done = self.folder / f"{_check_key(key)}.done.json"
        path = done if done.is_file() else self.folder / key / _PROCEDURE_MARK
        try:
            procedure = json.loads(path.read_text("utf-8")).get("procedure")
        except (OSError, ValueError, AttributeError):  # none, unreadable, not an object
            return None
        return procedure if isinstance(procedure, int) else None

    def _stale(self, key: str) -> bool:
        """Whether the store holds vectors of ``key`` (a mark of done or a part) made under
        another procedure than :data:`EMBEDDING_PROCEDURE`."""
        done = (self.folder / f"{_check_key(key)}.done.json").is_file()
        if not done and not any((self.folder / key).glob("*.npy")):
            return False
        return self.procedure_of(key) != EMBEDDING_PROCEDURE

    def _begin(self, key: str) -> None:
        """Record the procedure of the parts about to be written, before the first of them."""
        mark = self.folder / _check_key(key) / _PROCEDURE_MARK
        if not mark.is_file():
            write_json(mark, {"procedure": EMBEDDING_PROCEDURE})

    def _fits(self, key: str, part: int, n_rows: int) -> bool:
        """Whether a part written earlier reads as ``n_rows`` vectors and ids (its header only:
        a file cut short, emptied or of another batch does not)."""
        try:
            vectors, _ = self.read_part(key, part)
        except InputError:
            return False
        return len(vectors) == n_rows

    def units(self) -> set[str]:
        """Every unit of work the store holds, done or not (parts of a unit a kill cut short)."""
        return {p.name for p in self.folder.iterdir() if p.is_dir()} | set(self.keys())

    def remove(self, keys: Iterable[str]) -> list[str]:
        """Remove the units of work ``keys`` (done or not), each its mark of done first (a unit
        half removed is not done); returns their keys, sorted."""
        removed = sorted({_check_key(key) for key in keys})
        for key in removed:
            (self.folder / f"{key}.done.json").unlink(missing_ok=True)
            shutil.rmtree(self.folder / key, ignore_errors=True)
        return removed

    def prune(self, keep: Iterable[str]) -> list[str]:
        """Remove the units of work not in ``keep`` (done or not); returns their keys."""
        return self.remove(self.units() - set(keep))

    # ----------------------------------------------------------------------- reading

    def keys(self) -> list[str]:
        """Completed units of work, sorted by name (not the corpus order of any one run: a store
        may be shared by runs, and a run's inputs come in the order they were given)."""
        return sorted(p.name[: -len(".done.json")] for p in self.folder.glob("*.done.json"))

    def n_parts(self, key: str) -> int:
        done = json.loads((self.folder / f"{_check_key(key)}.done.json").read_text("utf-8"))
        return int(done["parts"])

    def _damaged(self, key: str, part: int, what: str) -> InputError:
        return InputError(
            f"{self._part(key, part)[0]}: {what}; delete {self.folder / key} and {key}.done.json "
            "beside it to encode it again"
        )

    def read_part(self, key: str, part: int) -> tuple[np.ndarray, np.ndarray]:
        """A part's float16 vectors (memory-mapped, unchecked: see :meth:`read_vectors`) and its
        ids."""
        vectors_path, ids_path = self._part(key, part)
        try:
            vectors = np.load(vectors_path, mmap_mode="r", allow_pickle=False)
            ids = np.load(ids_path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:  # EOFError: an empty file
            raise self._damaged(key, part, f"unreadable embeddings part ({exc})") from None
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(vectors) != len(ids):
            raise InputError(
                f"{vectors_path}: expected ({len(ids)}, {self.dim}) vectors, got {vectors.shape}"
            )
        return vectors, ids

    def read_vectors(self, key: str, part: int) -> tuple[np.ndarray, np.ndarray]:
        """A part's vectors as float32, refused when one is not finite, and its ids."""
        vectors, ids = self.read_part(key, part)
        vectors = as_float32(vectors)
        self._check_finite(vectors, key, part, np.arange(len(vectors)))
        return vectors, ids

    def _check_finite(self, vectors: np.ndarray, key: str, part: int, rows: np.ndarray) -> None:
        # the encoder's vectors are checked before they are stored (encode_captions): a NaN here
        # is damage, and a NaN caption would count for no concept unnoticed (FAISS drops it).
        # One product finds it: a NaN or infinity anywhere in a row makes its sum non-finite
        bad = ~np.isfinite(vectors @ np.ones(vectors.shape[1], dtype=np.float32))
        if bad.any():
            raise self._damaged(
                key, part, f"row {int(rows[bad][0])} holds NaN or infinite values (a damaged file)"
            )

    def iter_batches(self, keys: Iterable[str] | None = None) -> Iterator[EmbeddingBatch]:
        """Every part of ``keys`` (default: all completed ones) in order, as float32 batches
        (:meth:`read_vectors`)."""
        for key in self.keys() if keys is None else keys:
            if self._stale(key):
                recorded = self.procedure_of(key)
                under = (
                    f"embedding procedure {recorded}"
                    if recorded is not None
                    else "an embedding procedure clipaudit did not record yet"
                )
                raise InputError(
                    f"{self.folder}: unit of work {key!r} was embedded under {under}, this "
                    f"clipaudit's is {EMBEDDING_PROCEDURE} (its captions' vectors may differ); "
                    "count it again (clipaudit coverage count encodes it again)"
                )
            if not self.is_done(key):
                raise InputError(f"{self.folder}: unit of work {key!r} is not embedded yet")
            for part in range(self.n_parts(key)):
                vectors, ids = self.read_vectors(key, part)
                yield EmbeddingBatch(vectors, ids, None, key, part)

    def n_rows(self, keys: Iterable[str] | None = None) -> int:
        """The captions embedded in ``keys`` (default: every completed unit)."""
        total = 0
        for key in self.keys() if keys is None else keys:
            done = json.loads((self.folder / f"{key}.done.json").read_text("utf-8"))
            total += int(done["rows"])
        return total

    def row_vectors(self, locations: np.ndarray, keys: Sequence[str]) -> np.ndarray:
        """Vectors (float32) at ``(key position, part, row)`` locations, for re-scoring; a key
        position indexes ``keys``."""
        out = np.empty((len(locations), self.dim), dtype=np.float32)
        if not len(locations):
            return out
        order = np.lexsort((locations[:, 2], locations[:, 1], locations[:, 0]))
        sorted_loc = locations[order]
        groups = np.flatnonzero(np.any(np.diff(sorted_loc[:, :2], axis=0) != 0, axis=1)) + 1
        for chunk in np.split(np.arange(len(order)), groups):
            k, p = sorted_loc[chunk[0], :2]
            vectors, _ = self.read_part(keys[int(k)], int(p))
            rows = sorted_loc[chunk, 2]
            out[order[chunk]] = vectors[rows]
            self._check_finite(out[order[chunk]], keys[int(k)], int(p), rows)
        return out


def _read_store_json(path: Path) -> dict[str, Any]:
    try:
        held = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable store description ({exc})") from None
    if (
        not isinstance(held, dict)
        or held.get("format") != STORE_FORMAT
        or not isinstance(held.get("encoder"), dict)
        or not isinstance(held.get("dim"), int)
    ):
        raise InputError(f"{path}: not a clipaudit caption-embeddings store")
    return held


def _store_id(held: dict[str, Any]) -> str | None:
    return held["id"] if isinstance(held.get("id"), str) else None


@dataclass(frozen=True)
class EmbedStats:
    """What :func:`embed_parts` did; ``stale``: the store held the unit made under another
    :data:`EMBEDDING_PROCEDURE`, removed and encoded again whole."""

    parts_encoded: int
    parts_resumed: int
    rows_encoded: int
    rows: int
    stale: bool = False


def embed_parts(
    store: EmbeddingStore,
    key: str,
    batches: Iterable[tuple[Sequence[str], Sequence[Any]]],
    encoder: TextEncoder,
) -> EmbedStats:
    """Encode one unit of work's caption batches ``(captions, ids)`` into ``store`` under ``key``.

    Batch ``i`` is part ``i``; parts already in the store are skipped without encoding, so calling
    this again after a kill encodes only what is missing (and a part that does not read as its
    batch's rows). Batches must come in the same order every time (a reader's batches of a shard
    do). A unit made under another :data:`EMBEDDING_PROCEDURE` is removed first and encoded again
    whole. Marks ``key`` done at the end.
    """
    if not same_encoder(store.encoder, encoder.identity) or encoder.dim != store.dim:
        raise RunFolderError(
            f"{store.folder}: the store holds another encoder's vectors "
            f"({describe_difference(store.encoder, encoder.identity)})"
        )
    stale = store._stale(key)
    if stale:  # none of its parts is kept beside this procedure's
        store.remove([key])
    store._begin(key)
    encoded = resumed = rows_encoded = rows = 0
    part = -1
    for part, (captions, ids) in enumerate(batches):
        rows += len(captions)
        if store.has_part(key, part) and store._fits(key, part, len(captions)):
            resumed += 1
            continue
        store.write_part(key, part, encode_captions(encoder, captions), ids)
        encoded += 1
        rows_encoded += len(captions)
    store.finish(key, part + 1, rows)
    return EmbedStats(encoded, resumed, rows_encoded, rows, stale)


_LETTER_OR_DIGIT = re.compile(r"[^\W_]")
# an emoji is a picture that says something ("🐱", "⚽"), a sign is not ("★★★★★", "©", "™", "°",
# "→", "♥"): Unicode's line between them is emoji presentation. Emoji: the pictograph blocks
# U+1F000-U+1FAFF (faces, animals, food, flags...; their unassigned code points are reserved for
# emoji yet to come), the 60 signs before them shown as emoji by default (Emoji_Presentation),
# and any sign followed by U+FE0F, which asks for its emoji form ("❤️", "☀️")
_EMOJI = re.compile(
    r"[\U0001f000-\U0001faff\u231a\u231b\u23e9-\u23ec\u23f0\u23f3\u25fd\u25fe\u2614\u2615"
    r"\u2648-\u2653\u267f\u2693\u26a1\u26aa\u26ab\u26bd\u26be\u26c4\u26c5\u26ce\u26d4\u26ea"
    r"\u26f2\u26f3\u26f5\u26fa\u26fd\u2705\u270a\u270b\u2728\u274c\u274e\u2753-\u2755\u2757"
    r"\u2795-\u2797\u27b0\u27bf\u2b1b\u2b1c\u2b50\u2b55]|[^\s\ufe0f]\ufe0f"
)


def holds_no_word(text: str | None) -> bool:
    """Whether ``text`` holds no letter, digit or emoji: None, empty, white space, or
    punctuation and signs alone ("...", "|", "★★★★★", "©"), which an encoder embeds near some
    concept all the same. An emoji ("🐱", "⚽", "❤️") is a word: see ``_EMOJI``."""
    return not text or not (_LETTER_OR_DIGIT.search(text) or _EMOJI.search(text))


def blank_captions(captions: Sequence[str | None]) -> np.ndarray:
    """Which captions hold no word (:func:`holds_no_word`), as a boolean array."""
    return np.fromiter(map(holds_no_word, captions), bool, len(captions))


def encode_captions(encoder: TextEncoder, captions: Sequence[str]) -> np.ndarray:
    """The captions' unit vectors, zero for a caption that says nothing, so that it is near no
    concept: a blank one (an encoder embeds "" like any text: MiniLM puts it at cosine 0.53 of
    "excited"), and one the encoder reads as unknown tokens alone (a lone emoji to MiniLM:
    :func:`~clipaudit.semantic.encoders.unknown_only`)."""
    blank = blank_captions(captions)
    if not blank.all():
        blank |= unknown_only(encoder, captions)
    if not blank.any():
        vectors = encoder.encode(captions)
    else:
        vectors = np.zeros((len(captions), encoder.dim), dtype=np.float32)
        if not blank.all():
            said = [c for c, b in zip(captions, blank, strict=True) if not b]
            vectors[~blank] = encoder.encode(said)
    # a NaN vector is near no concept: the store would keep it, counted for nothing
    return check_finite(encoder, captions, vectors, "captions")


def embed_texts(
    store: EmbeddingStore,
    texts: Sequence[str],
    encoder: TextEncoder,
    *,
    ids: Sequence[Any] | None = None,
    key: str = "texts",
    part_rows: int = 4096,
) -> EmbedStats:
    """:func:`embed_parts` for captions held in memory, cut into parts of ``part_rows``."""
    ids = list(range(len(texts))) if ids is None else list(ids)
    if len(ids) != len(texts):
        raise InputError(f"{len(texts)} texts but {len(ids)} ids")
    chunks = (
        (texts[start : start + part_rows], ids[start : start + part_rows])
        for start in range(0, len(texts), part_rows)
    )
    return embed_parts(store, key, chunks, encoder)


# --------------------------------------------------------------------------- LAION


@dataclass(frozen=True)
class LaionPair:
    """One ``text_emb_N.npy`` and its row-aligned ``metadata_N.parquet``."""

    embeddings: Path
    metadata: Path
    n_rows: int
    dim: int
    dtype: str


_NUMBER = re.compile(r"(\d+)")


def _suffix_number(path: Path) -> int | None:
    """The last number in the file's name, by value: ``metadata_0000.parquet`` pairs with
    ``text_emb_0.npy`` (releases and img2dataset pad shard numbers differently)."""
    found = _NUMBER.findall(path.stem)
    return int(found[-1]) if found else None


class LaionEmbeddings:
    """LAION's published text embeddings with their metadata, checked file by file.

    ``embeddings``: ``text_emb_*.npy`` files or a folder of them (a folder's ``text_emb_*.npy``,
    or every ``.npy`` when it holds none so named); ``metadata``: the matching
    ``metadata_*.parquet`` files or folder. Files pair by the last number in their names. Given
    metadata files, the embedding files of other numbers are left out (a run over some of
    LAION's shards); without, every embedding file must pair with a metadata file of its folder.
    Two embedding files of one number (``text_emb_0.npy`` and ``img_emb_0.npy``) are refused.
    ``dim``: the dimension the concept encoder gives (checked when given).
    """

    def __init__(
        self,
        embeddings: str | Path | Sequence[str | Path],
        metadata: str | Path | Sequence[str | Path] | None = None,
        *,
        dim: int | None = None,
        caption_column: str | None = None,
        id_column: str | None = None,
    ):
        emb_files = _expand(embeddings, ("text_emb_*.npy", "*.npy"), "text embeddings")
        meta_files = _expand(
            metadata if metadata is not None else sorted({p.parent for p in emb_files}),
            ("metadata_*.parquet", "*.parquet"),
            "metadata",
        )
        by_number: dict[int | None, list[Path]] = {}
        for path in meta_files:
            by_number.setdefault(_suffix_number(path), []).append(path)
        paired: dict[int | None, Path] = {}
        for path in emb_files:
            number = _suffix_number(path)
            if number in paired:
                raise InputError(
                    f"{paired[number]} and {path} both pair with metadata number {str(number)!r}; "
                    "give the caption (text) embeddings only, e.g. the text_emb_N.npy files"
                )
            if number not in by_number:
                if metadata is not None:
                    continue  # a shard of LAION's that this run does not count
                raise InputError(
                    f"{path}: no metadata parquet file with the number {number!r} among "
                    f"{len(meta_files)} metadata files; expected e.g. metadata_{number}.parquet"
                )
            if len(by_number[number]) > 1:
                # which one the rows belong to cannot be told from the names
                raise InputError(
                    f"{path}: expected one metadata file numbered {number}, got "
                    f"{len(by_number[number])}: {', '.join(map(str, by_number[number]))}; give "
                    "the one these embeddings were made from (the inputs, or metadata=)"
                )
            paired[number] = path
        if not paired:
            raise InputError(
                f"none of the {len(emb_files)} embedding files pairs with the "
                f"{len(meta_files)} metadata files by the number in its name: expected "
                f"text_emb_N.npy with metadata_N.parquet, got {_some(emb_files)} with "
                f"{_some(meta_files)}; give the text_emb files of these metadata files "
                "(--embeddings, embeddings=)"
            )
        pairs = [_check_pair(path, by_number[number][0], dim) for number, path in paired.items()]
        dims = {pair.dim for pair in pairs}
        if len(dims) > 1:
            first, odd = pairs[0], next(p for p in pairs if p.dim != pairs[0].dim)
            raise InputError(
                f"{odd.embeddings}: expected {first.dim}-dimensional embeddings (as in "
                f"{first.embeddings}), got {odd.dim}"
            )
        self.pairs = tuple(pairs)
        self.dim = pairs[0].dim
        self.n_rows = sum(p.n_rows for p in pairs)
        self.caption_column = caption_column
        self.id_column = id_column

    def describe(self) -> list[dict[str, Any]]:
        from clipaudit.provenance import file_record

        return [
            {"embeddings": file_record(p.embeddings), "metadata": file_record(p.metadata)}
            for p in self.pairs
        ]

    def rows(self, metadata: str | Path, start: int, stop: int) -> np.ndarray:
        """Unit vectors (float32) of rows ``[start, stop)`` of the metadata file ``metadata``: what
        a coverage shard over that file's rows needs (the captions come from the reader)."""
        wanted = Path(metadata).resolve()
        pair = next((p for p in self.pairs if p.metadata.resolve() == wanted), None)
        if pair is None:
            raise InputError(f"{metadata}: not one of the metadata files paired with embeddings")
        if not 0 <= start <= stop <= pair.n_rows:
            raise InputError(
                f"{pair.embeddings}: rows {start}-{stop} asked for, the file has {pair.n_rows}"
            )
        mapped = np.load(pair.embeddings, mmap_mode="r", allow_pickle=False)
        vectors = as_float32(mapped[start:stop])
        del mapped
        return normalise(finite_rows(vectors, pair.embeddings, np.arange(start, stop)))

    def iter_batches(self, batch_rows: int = 65_536) -> Iterator[EmbeddingBatch]:
        """Row-aligned batches: unit vectors (float32, renormalised), ids and captions."""
        import pyarrow.parquet as pq

        from clipaudit.readers import ID_COLUMNS, pick_caption_column

        row = 0
        for pair in self.pairs:
            with pq.ParquetFile(pair.metadata) as handle:
                names = handle.schema_arrow.names
                column = pick_caption_column(
                    names, self.caption_column, pair.metadata, "caption_column="
                )
                id_column = self.id_column or next((c for c in ID_COLUMNS if c in names), None)
                columns = [column] + ([id_column] if id_column else [])
                start = 0
                for batch in handle.iter_batches(batch_size=batch_rows, columns=columns):
                    n = batch.num_rows
                    mapped = np.load(pair.embeddings, mmap_mode="r", allow_pickle=False)
                    vectors = as_float32(mapped[start : start + n])
                    del mapped
                    vectors = normalise(
                        finite_rows(vectors, pair.embeddings, np.arange(start, start + n))
                    )
                    captions = [
                        c if isinstance(c, str) else "" for c in batch.column(0).to_pylist()
                    ]
                    ids = (
                        batch.column(1).to_pylist()
                        if id_column
                        else list(range(row + start, row + start + n))
                    )
                    yield EmbeddingBatch(vectors, ids, captions, pair.embeddings.name)
                    start += n
            row += pair.n_rows


def finite_rows(vectors: np.ndarray, path: str | Path, rows: np.ndarray) -> np.ndarray:
    """``vectors``, rows ``rows`` of the embeddings file ``path``, refused when one holds NaN or
    infinity: its caption would count for no concept without a word (FAISS drops NaN scores)."""
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        raise InputError(
            f"{path}: row {int(rows[bad][0])} holds NaN or infinite values ({int(bad.sum())} of "
            f"the {len(vectors)} rows read); make the embeddings file again"
        )
    return vectors


# what each kind of LAION file is, for a message naming what to give
_LAION_FILES = {
    "text embeddings": "LAION's caption embeddings, text_emb_N.npy files (row-aligned with the "
    "metadata_N.parquet files beside them), or a folder of them",
    "metadata": "the LAION metadata the embeddings are row-aligned with, metadata_N.parquet files "
    "(by default those beside the text_emb_N.npy files), or a folder of them",
}


def expected_text_emb(embeddings: str | Path, metadata: str | Path) -> str:
    """The text_emb file that would pair with ``metadata`` under ``embeddings`` (a folder, or a
    file whose folder), for a message."""
    folder = Path(embeddings) if Path(embeddings).is_dir() else Path(embeddings).parent
    number = _suffix_number(Path(metadata))
    return str(folder / f"text_emb_{'N' if number is None else number}.npy")


def _some(paths: Sequence[Path], shown: int = 3) -> str:
    """The first few file names of ``paths``, for a message."""
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    return ", ".join(p.name for p in paths[:shown]) + more


def _expand(spec: Any, patterns: Sequence[str], what: str) -> list[Path]:
    """The files of ``spec`` (files or folders); a folder's files are those of the first of
    ``patterns`` that any match."""
    items = [spec] if isinstance(spec, (str, Path)) else list(spec)
    expected = f"; expected {_LAION_FILES[what]}" if what in _LAION_FILES else ""
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files.extend(next(filter(None, (sorted(path.glob(p)) for p in patterns)), []))
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"{what} {str(path)!r} does not exist{expected}")
    if not files:
        raise InputError(
            f"no {what} files ({' or '.join(patterns)}) in {', '.join(map(str, items))}{expected}"
        )
    return files


def _npy_header(emb: Path) -> tuple[tuple[int, ...], np.dtype, int] | None:
    """The shape, dtype and data offset a ``.npy`` file's header states, or None when the file
    does not start with a readable ``.npy`` header."""
    from numpy.lib import format as npy_format

    try:
        with open(emb, "rb") as handle:
            version = npy_format.read_magic(handle)
            read = (
                npy_format.read_array_header_1_0
                if version == (1, 0)
                else npy_format.read_array_header_2_0
            )
            shape, _, dtype = read(handle)
            return shape, dtype, handle.tell()
    except (OSError, ValueError, SyntaxError, TypeError, EOFError):
        return None


_AGAIN = "download or copy it again from where it came (an interrupted transfer leaves it so)"


def _unreadable(emb: Path) -> InputError:
    """Why ``emb`` does not map as an array, said as what was expected and what was got."""
    expected = "expected LAION's text_emb_N.npy (a NumPy .npy array of float rows)"
    header = _npy_header(emb)
    size = emb.stat().st_size
    if header is None:
        return InputError(
            f"{emb}: {expected}, got a file ({size} bytes) that does not start with a readable "
            f".npy header; {_AGAIN}, or point --embeddings (embeddings=) at the text_emb files"
        )
    shape, dtype, offset = header
    if dtype.hasobject:
        return InputError(
            f"{emb}: {expected}, got an array of Python objects ({dtype}); save the embeddings "
            "as a float array (np.save(path, vectors.astype(np.float16)))"
        )
    needed = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    rows = " x ".join(map(str, shape))
    if size >= needed:  # whole, yet unreadable: say what numpy says
        return InputError(f"{emb}: {expected}, got a .npy file numpy cannot map as {rows} {dtype}")
    return InputError(
        f"{emb}: cut short: its header states {rows} {dtype} ({needed} bytes), got {size} "
        f"bytes; {_AGAIN}"
    )


def _check_pair(emb: Path, meta: Path, dim: int | None) -> LaionPair:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        mapped = np.load(emb, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError):  # what np.load says of a file that is not whole .npy
        raise _unreadable(emb) from None
    except OSError as exc:  # the file itself: permissions, a vanished mount
        raise InputError(f"{emb}: could not be read ({whole_line(exc, 200)})") from None
    # float64: a user's own np.save of computed vectors; cast to float32 as they are read
    if mapped.ndim != 2 or mapped.dtype not in (np.float16, np.float32, np.float64):
        raise InputError(
            f"{emb}: expected a 2-D float16, float32 or float64 array (rows x dimension), got "
            f"shape {mapped.shape} of {mapped.dtype}"
        )
    try:
        with pq.ParquetFile(meta) as handle:
            meta_rows = handle.metadata.num_rows
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{meta}: unreadable parquet file ({exc})") from None
    if mapped.shape[0] != meta_rows:
        raise InputError(
            f"{emb} and {meta} are not row-aligned: expected {meta_rows} embedding rows (the "
            f"metadata's rows), got {mapped.shape[0]}; give the metadata file the embeddings "
            "were made from (same release and shard), or make the embeddings again from this one"
        )
    if dim is not None and mapped.shape[1] != dim:
        raise InputError(
            f"{emb}: expected {dim}-dimensional embeddings (the concept encoder's dimension), got "
            f"{mapped.shape[1]}; name the encoder the embeddings were made with (--encoder, "
            "encoder=)"
        )
    return LaionPair(emb, meta, int(mapped.shape[0]), int(mapped.shape[1]), str(mapped.dtype))

"""On-disk cache of image embeddings, so re-running an audit with other prompts or another registry
does not encode the same images again.

One folder per model identity (``LoadedModel.cache_key``: architecture, config, weights hash,
preprocessing, precision, decoding version); inside, shards of ``(identities, embeddings)`` written
atomically as two ``.npy`` files (embeddings first, identities last, so a shard without its
identities file is incomplete and ignored). Image identities are digests of file path, size, mtime
and the first and last blocks of the file (see :class:`clipaudit.images.ImageRecord`), so an edited
image is encoded again. Shards are written while encoding runs: a killed run resumes from what it
had flushed.

The cache is bounded: when the shards of all models together exceed ``max_bytes`` (default
``$CLIPAUDIT_CACHE_MAX_GB`` GiB, else 20 GiB), the least recently used shards are deleted, oldest
first, right after a new shard is written. A shard counts as used when it is written or when a
lookup is served from it (its modification time is touched).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipaudit.errors import SettingsError
from clipaudit.provenance import atomic_write_bytes, file_in_the_way, write_json

DEFAULT_MAX_GB = 20.0


def default_max_bytes() -> int:
    """``$CLIPAUDIT_CACHE_MAX_GB`` GiB, else :data:`DEFAULT_MAX_GB`."""
    text = os.environ.get("CLIPAUDIT_CACHE_MAX_GB") or str(DEFAULT_MAX_GB)
    try:
        gigabytes = float(text)
    except ValueError:
        gigabytes = float("nan")
    if not (math.isfinite(gigabytes) and gigabytes >= 0):
        raise SettingsError(
            f"CLIPAUDIT_CACHE_MAX_GB must be a number of GiB (e.g. 20 or 0.5), got {text!r}"
        )
    return int(gigabytes * (1 << 30))


def default_cache_dir() -> Path:
    """``$CLIPAUDIT_CACHE`` or ``$XDG_CACHE_HOME/clipaudit/embeddings`` (``~/.cache`` by default)."""
    if os.environ.get("CLIPAUDIT_CACHE"):
        return Path(os.environ["CLIPAUDIT_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "clipaudit" / "embeddings"


def check_cache_dir(folder: Path) -> None:
    """Refuse, before any model loads, a cache folder that is a file, lies below one, cannot be
    made or cannot be written. Only making it tells (root may write wherever ``os.access`` says,
    yet not in ``/proc``); folders made to tell are removed again, a check leaves nothing."""
    named = f"cache_dir (--cache-dir) {str(folder)!r}"
    hint = "give a folder for the embedding cache, or cache_dir=None (--no-cache) for none"
    if folder.is_dir():
        if not os.access(folder, os.W_OK | os.X_OK):
            raise SettingsError(f"{named} is a folder this user cannot write to; {hint}")
        return
    blocking = file_in_the_way(folder)
    if blocking == folder:
        raise SettingsError(f"{named} is a file, not a folder; {hint}")
    if blocking is not None:
        raise SettingsError(f"{named} cannot be made: {str(blocking)!r} is a file; {hint}")
    # deepest first, the order to remove them in
    made = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(f"{named} cannot be made ({exc.strerror or exc}); {hint}") from None
    for path in made:
        with contextlib.suppress(OSError):  # another run may have filled it meanwhile: kept
            path.rmdir()


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _read_shard(ids_file: Path, emb_file: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """A cache shard's identities and embeddings (memory-mapped), or None when the files are
    unreadable, pickled, or do not fit each other (a partial copy, a disk error)."""
    try:
        identities = np.load(ids_file, allow_pickle=False)
        embeddings = np.load(emb_file, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    fits = (
        identities.ndim == 1
        and identities.dtype.kind == "U"
        and embeddings.ndim == 2
        and embeddings.dtype == np.float32
        and len(embeddings) == len(identities)
    )
    return (identities, embeddings) if fits else None


class EmbeddingCache:
    """Image embeddings of one model, keyed by image identity."""

    def __init__(
        self,
        root: str | os.PathLike,
        key: str,
        description: dict[str, Any] | None = None,
        max_bytes: int | None = None,
    ):
        self.root = Path(root)
        self.max_bytes = default_max_bytes() if max_bytes is None else max_bytes
        self.folder = self.root / key[:32]
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = self.folder / "model.json"
        if not meta.exists():
            write_json(meta, {"cache_key": key, **(description or {})})
        self._shards: list[np.ndarray] = []
        self._files: list[Path] = []
        self._index: dict[str, tuple[int, int]] = {}
        for ids_file in sorted(self.folder.glob("*.ids.npy")):
            emb_file = ids_file.with_name(ids_file.name.replace(".ids.npy", ".emb.npy"))
            if emb_file.exists():
                shard = _read_shard(ids_file, emb_file)
                if shard is None:  # damaged: its images are encoded again, into a new shard
                    for path in (ids_file, emb_file):
                        path.unlink(missing_ok=True)
                    continue
                self._add_shard(*shard, emb_file)

    def _add_shard(self, identities: np.ndarray, embeddings: np.ndarray, path: Path) -> None:
        number = len(self._shards)
        self._shards.append(embeddings)
        self._files.append(path)
        for row, identity in enumerate(identities.tolist()):
            self._index[identity] = (number, row)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, identity: str) -> bool:
        return identity in self._index

    def get(self, identities: Sequence[str]) -> tuple[list[int], np.ndarray | None]:
        """Positions in ``identities`` that are cached, and their embeddings (in that order).
        A row that is no embedding (zeros or not finite) counts as not cached."""
        found = [i for i, identity in enumerate(identities) if identity in self._index]
        if not found:
            return [], None
        rows = [self._index[identities[i]] for i in found]
        vectors = np.stack([self._shards[shard][row] for shard, row in rows]).astype(np.float32)
        # a shard damaged in place reads as well-formed (blocks zeroed by a crash after its size
        # was written, NaN): its rows would classify every image as the first concept, unsaid;
        # they are encoded again instead, and the new shard's rows replace them
        sound = np.isfinite(vectors).all(axis=1) & np.any(vectors != 0, axis=1)
        found = [i for i, ok in zip(found, sound.tolist(), strict=True) if ok]
        rows = [r for r, ok in zip(rows, sound.tolist(), strict=True) if ok]
        if not found:
            return [], None
        for shard in {shard for shard, _ in rows}:
            with contextlib.suppress(OSError):  # evicted by another run meanwhile: still mapped
                os.utime(self._files[shard])
        return found, vectors[sound]

    def put(self, identities: Sequence[str], embeddings: np.ndarray) -> None:
        """Add a shard of embeddings (rows match ``identities``), atomically."""
        if len(identities) == 0:
            return
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        ids = np.array(list(identities), dtype="U")
        stem = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        emb_file = self.folder / f"{stem}.emb.npy"
        atomic_write_bytes(emb_file, _npy_bytes(embeddings))
        atomic_write_bytes(self.folder / f"{stem}.ids.npy", _npy_bytes(ids))
        self._add_shard(ids, embeddings, emb_file)
        self.evict(keep=emb_file)

    def evict(self, keep: Path | None = None) -> list[Path]:
        """Delete the least recently used shards of every model until the cache fits in
        ``max_bytes`` (never ``keep``, the shard just written); returns the deleted shards."""
        shards = []
        for emb_file in self.root.glob("*/*.emb.npy"):
            ids_file = emb_file.with_name(emb_file.name.replace(".emb.npy", ".ids.npy"))
            try:
                stat = emb_file.stat()
                size = stat.st_size + (ids_file.stat().st_size if ids_file.exists() else 0)
            except FileNotFoundError:  # deleted by another run meanwhile
                continue
            shards.append((stat.st_mtime_ns, emb_file, ids_file, size))
        total = sum(size for *_, size in shards)
        deleted = []
        for _, emb_file, ids_file, size in sorted(shards):
            if total <= self.max_bytes:
                break
            if emb_file == keep:
                continue
            # identities first: a shard without them is incomplete and ignored by readers
            ids_file.unlink(missing_ok=True)
            emb_file.unlink(missing_ok=True)
            total -= size
            deleted.append(emb_file)
        return deleted

    def describe(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "n_cached": len(self),
            "n_shards": len(self._shards),
            "max_bytes": self.max_bytes,
        }

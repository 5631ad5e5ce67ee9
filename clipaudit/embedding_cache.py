"""On-disk cache of image embeddings, so re-running an audit with other prompts or another registry
does not encode the same images again.

One folder per model identity (``LoadedModel.cache_key``: architecture, config, weights hash,
preprocessing, precision, decoding version); inside, shards of ``(identities, embeddings)`` written
atomically as two ``.npy`` files (embeddings first, identities last, so a shard without its
identities file is incomplete and ignored). Image identities are digests of file path, size and mtime
(see :class:`clipaudit.images.ImageRecord`), so an edited image is encoded again. Shards are written
while encoding runs: a killed run resumes from what it had flushed.
"""

from __future__ import annotations

import io
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipaudit.provenance import atomic_write_bytes, write_json


def default_cache_dir() -> Path:
    """``$CLIPAUDIT_CACHE`` or ``$XDG_CACHE_HOME/clipaudit/embeddings`` (``~/.cache`` by default)."""
    if os.environ.get("CLIPAUDIT_CACHE"):
        return Path(os.environ["CLIPAUDIT_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "clipaudit" / "embeddings"


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


class EmbeddingCache:
    """Image embeddings of one model, keyed by image identity."""

    def __init__(
        self, root: str | os.PathLike, key: str, description: dict[str, Any] | None = None
    ):
        self.folder = Path(root) / key[:32]
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = self.folder / "model.json"
        if not meta.exists():
            write_json(meta, {"cache_key": key, **(description or {})})
        self._shards: list[np.ndarray] = []
        self._index: dict[str, tuple[int, int]] = {}
        for ids_file in sorted(self.folder.glob("*.ids.npy")):
            emb_file = ids_file.with_name(ids_file.name.replace(".ids.npy", ".emb.npy"))
            if emb_file.exists():
                self._add_shard(
                    np.load(ids_file, allow_pickle=False), np.load(emb_file, mmap_mode="r")
                )

    def _add_shard(self, identities: np.ndarray, embeddings: np.ndarray) -> None:
        number = len(self._shards)
        self._shards.append(embeddings)
        for row, identity in enumerate(identities.tolist()):
            self._index[identity] = (number, row)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, identity: str) -> bool:
        return identity in self._index

    def get(self, identities: Sequence[str]) -> tuple[list[int], np.ndarray | None]:
        """Positions in ``identities`` that are cached, and their embeddings (in that order)."""
        found = [i for i, identity in enumerate(identities) if identity in self._index]
        if not found:
            return [], None
        rows = [self._index[identities[i]] for i in found]
        return found, np.stack([self._shards[shard][row] for shard, row in rows]).astype(np.float32)

    def put(self, identities: Sequence[str], embeddings: np.ndarray) -> None:
        """Add a shard of embeddings (rows match ``identities``), atomically."""
        if len(identities) == 0:
            return
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        ids = np.array(list(identities), dtype="U")
        stem = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        atomic_write_bytes(self.folder / f"{stem}.emb.npy", _npy_bytes(embeddings))
        atomic_write_bytes(self.folder / f"{stem}.ids.npy", _npy_bytes(ids))
        self._add_shard(ids, embeddings)

    def describe(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "n_cached": len(self), "n_shards": len(self._shards)}

"""Semantic counting with FAISS: a caption counts for concept c when cosine(caption, c) >= tau_c.

The concepts' unit vectors sit in a FAISS ``IndexFlatIP``; caption vectors stream through it in
batches, and one range search per batch (radius: the lowest reach, a concept's reach being its
threshold less ``near_margin``) returns the pairs near enough; those within their own concept's
reach are kept, and the ones at or above their concept's threshold are the hits. Memory holds one
batch and its hits, whatever the corpus size. (Dividing each concept's vector by its reach, so
that one radius fits every concept, returns half the pairs and is 6% faster, but its scores
differ from the plain product in the last bit, which flips hits lying at a threshold: 3 of 18
million on the benchmark's data. It was not kept.)

:class:`SemanticCounter` keeps, per concept, the number of captions counted, and the ``top_k``
captions nearest to it among the range results (score, id, caption; ties go to the earlier caption),
so a report can show what was counted and what just missed. Web corpora repeat alt-text: the
nearest hold each caption text once, at its best score, so that copies of one leave room for
others (the counts count every copy). :meth:`SemanticCounter.add` returns a
batch's hits (caption position, concept index, score) for per-caption outputs.

On a CPU shared with other work, FAISS's OpenMP threads spin while they wait, which slows FAISS
and whatever runs beside it; ``OMP_WAIT_POLICY=PASSIVE`` in the environment (set before the process
starts) avoids it (``benchmarks/semantic_speed.py`` measures both).

With the ``gpu`` extra and a CUDA device, ``gpu=True`` scores batches on the GPU (a brute-force
k-nearest search over all concepts, then the same thresholds); it was not run on a GPU when written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clipaudit.errors import InputError, SettingsError

# FAISS GPU's k-selection takes k <= 2048 (16384 when built with cuVS; 2048 is the floor): the GPU
# path selects every concept per caption
GPU_MAX_CONCEPTS = 2048


@dataclass(frozen=True)
class Hits:
    """One batch's hits, ordered by caption then concept: positions in the batch, concept
    indices and cosine scores."""

    rows: np.ndarray
    concepts: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class SemanticCounts:
    """What a semantic count found: per-concept counts over ``n_captions`` captions, and the
    nearest captions per concept (``nearest[name]``: dicts with score, id, caption)."""

    names: tuple[str, ...]
    counts: np.ndarray
    n_captions: int
    thresholds: np.ndarray
    nearest: dict[str, list[dict[str, Any]]]

    def as_dict(self) -> dict[str, int]:
        return dict(zip(self.names, self.counts.tolist(), strict=True))


def in_sorted(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``np.isin(values, keys)`` for sorted ``keys``, by binary search."""
    if not len(keys):
        return np.zeros(len(values), dtype=bool)
    position = np.minimum(np.searchsorted(keys, values), len(keys) - 1)
    return keys[position] == values


def _check_vectors(vectors: Any, dim: int, what: str) -> np.ndarray:
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != dim:
        raise InputError(f"{what}: expected (n, {dim}) vectors, got shape {array.shape}")
    return array


class SemanticCounter:
    """Streaming FAISS counter over caption batches (see the module docstring).

    ``vectors``: (k, dim) unit vectors of the concepts; ``thresholds``: (k,) cosine thresholds;
    ``top_k``: nearest captions kept per concept (0: none); ``near_margin``: how far below each
    concept's threshold the search reaches, so near misses can be kept among its nearest.
    """

    def __init__(
        self,
        vectors: np.ndarray,
        thresholds: Sequence[float] | np.ndarray,
        *,
        names: Sequence[str] | None = None,
        top_k: int = 5,
        near_margin: float = 0.0,
        gpu: bool = False,
    ):
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or not len(vectors):
            raise InputError(
                f"concept vectors must be a non-empty (k, dim) array, got {vectors.shape}"
            )
        self.k, self.dim = vectors.shape
        self.thresholds = np.asarray(thresholds, dtype=np.float32).reshape(-1)
        if self.thresholds.shape != (self.k,) or not np.all(np.isfinite(self.thresholds)):
            raise SettingsError(
                f"expected {self.k} finite thresholds (one per concept), got "
                f"{self.thresholds.shape[0]}"
            )
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0:
            raise SettingsError(f"top_k must be an integer >= 0, got {top_k!r}")
        if not (0.0 <= float(near_margin) <= 2.0):
            raise SettingsError(f"near_margin must be within [0, 2], got {near_margin!r}")
        self.names = tuple(names) if names is not None else tuple(map(str, range(self.k)))
        if len(self.names) != self.k:
            raise SettingsError(f"{len(self.names)} names for {self.k} concept vectors")
        self.top_k = top_k
        self.reach = (self.thresholds - np.float32(near_margin)).astype(np.float32)
        # FAISS keeps scores strictly above the radius; step one float below to keep ">="
        self.radius = float(np.nextafter(self.reach.min(), np.float32(-np.inf)))
        self.index = faiss.IndexFlatIP(self.dim)
        self.index.add(vectors)
        self.vectors = vectors
        self.gpu = None
        if gpu:
            if self.k > GPU_MAX_CONCEPTS:
                raise SettingsError(
                    f"gpu=True scores a caption against at most {GPU_MAX_CONCEPTS} concepts (FAISS "
                    f"GPU's largest k); this registry has {self.k}: count on the CPU (gpu=False)"
                )
            if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
                raise SettingsError(
                    "gpu=True needs faiss with GPU support (the 'gpu' extra) and a CUDA device"
                )
            self.gpu = faiss.StandardGpuResources()
        self.counts = np.zeros(self.k, dtype=np.int64)
        self.n_captions = 0
        self._top_scores = np.zeros((0,), dtype=np.float32)
        self._top_concepts = np.zeros((0,), dtype=np.int64)
        self._top_rows = np.zeros((0,), dtype=np.int64)
        self._top_counted = np.zeros((0,), dtype=bool)
        self._top_texts = np.zeros((0,), dtype=object)  # None: a caption whose text is unknown
        self._bar = np.full(self.k, -np.inf, dtype=np.float32)  # score a new caption must reach
        self._rows: dict[int, tuple[Any, str | None]] = {}

    def _search(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query row, concept, cosine) of every pair within its concept's reach, by row."""
        if self.gpu is not None:
            import faiss

            scores, concepts = faiss.knn_gpu(
                self.gpu, x, self.vectors, self.k, metric=faiss.METRIC_INNER_PRODUCT
            )
            concepts = concepts.astype(np.int64)
            keep = scores >= self.reach[concepts]
            rows = np.nonzero(keep)[0]
            return rows, concepts[keep], scores[keep]
        # FAISS's default query block (4,096 rows) beats larger ones here (65 against 69 ms per
        # 65,536 rows x 146 concepts at 16,384, on a quiet 2-core CPU)
        lims, scores, concepts = self.index.range_search(x, self.radius)
        rows = np.repeat(np.arange(len(x), dtype=np.int64), np.diff(lims).astype(np.int64))
        concepts = concepts.astype(np.int64)
        keep = scores >= self.reach[concepts]
        return rows[keep], concepts[keep], scores[keep]

    def add(
        self,
        vectors: np.ndarray,
        ids: Sequence[Any] | None = None,
        captions: Sequence[str] | None = None,
        *,
        first_row: int | None = None,
        counted: Callable[[Hits], np.ndarray] | None = None,
        blank: np.ndarray | None = None,
    ) -> Hits:
        """Count one batch of caption vectors; returns its hits. ``first_row``: the corpus row of
        the batch's first caption (default: the captions counted so far), which orders ties.
        ``counted``: given the batch's hits, the sorted pair keys (``row * k + concept``, rows in
        the batch) that the caller's method counts, which the nearest captions are flagged with
        (default: the hits themselves, i.e. ``score >= threshold``). ``blank``: a boolean per
        caption, true for one that holds no word, which counts for no concept and is nobody's
        nearest whatever its vector (an encoder embeds "" like any text); so is a caption whose
        vector is zero, as the store keeps one that says nothing."""
        x = _check_vectors(vectors, self.dim, "caption vectors")
        n = len(x)
        start = self.n_captions if first_row is None else int(first_row)
        for what, values in (("ids", ids), ("captions", captions), ("blank flags", blank)):
            if values is not None and len(values) != n:
                raise InputError(f"{n} caption vectors but {len(values)} {what}")
        if n == 0:
            empty = np.zeros(0, dtype=np.int64)
            return Hits(empty, empty, np.zeros(0, dtype=np.float32))
        rows, concepts, scores = self._search(x)
        if blank is not None and blank.any():
            said = ~blank[rows]
            rows, concepts, scores = rows[said], concepts[said], scores[said]
        zero = scores == 0  # a zero vector scores 0 with every concept: only then reached
        if zero.any():  # a caption that says nothing, as the store keeps it (encode_captions)
            said = np.ones(len(rows), dtype=bool)
            said[zero] = np.any(x[rows[zero]], axis=1)
            rows, concepts, scores = rows[said], concepts[said], scores[said]
        hit = scores >= self.thresholds[concepts]
        self.counts += np.bincount(concepts[hit], minlength=self.k)
        self.n_captions += n
        hits = Hits(rows[hit], concepts[hit], scores[hit])
        pair = hits.rows * self.k + hits.concepts
        if len(pair) > 1 and not np.all(pair[1:] > pair[:-1]):  # FAISS's order is usually this
            order = np.argsort(pair, kind="stable")
            hits = Hits(hits.rows[order], hits.concepts[order], hits.scores[order])
        keys = None if counted is None else np.asarray(counted(hits), dtype=np.int64)  # sorted
        if self.top_k:
            # only pairs that can enter a top-k are flagged (few, once the top-k fill up)
            maybe = scores >= self._bar[concepts]
            rows, concepts, scores = rows[maybe], concepts[maybe], scores[maybe]
            flags = hit[maybe] if keys is None else in_sorted(rows * self.k + concepts, keys)
            self._offer(rows, concepts, scores, flags, start, n, ids, captions)
        return hits

    def _offer(
        self,
        rows: np.ndarray,
        concepts: np.ndarray,
        scores: np.ndarray,
        counted: np.ndarray,
        start: int,
        n: int,
        ids: Sequence[Any] | None,
        captions: Sequence[str] | None,
    ) -> None:
        """Merge the batch's pairs into the per-concept top-k (score desc, then corpus row)."""
        if not len(rows):
            return
        texts = np.full(n, None, dtype=object) if captions is None else np.array(captions, object)
        self._merge(concepts, scores, rows + start, counted, texts, rows)
        # only the captions that made it into a top-k are looked up (in Python)
        batch = self._top_rows[(self._top_rows >= start) & (self._top_rows < start + n)]
        for row in np.unique(batch).tolist():
            if row not in self._rows:
                position = row - start
                row_id = ids[position] if ids is not None else row
                self._rows[row] = (
                    row_id.item() if isinstance(row_id, np.generic) else row_id,
                    captions[position] if captions is not None else None,
                )

    def _merge(
        self,
        concepts: np.ndarray,
        scores: np.ndarray,
        rows: np.ndarray,
        counted: np.ndarray,
        texts: np.ndarray,
        text_of: np.ndarray,
    ) -> None:
        """``texts[text_of[i]]``: the caption text of pair ``i`` (None: unknown); a batch's
        texts are looked up only for the pairs that may be kept, of many in a first batch."""
        c = np.concatenate([self._top_concepts, concepts])
        s = np.concatenate([self._top_scores, scores.astype(np.float32)])
        r = np.concatenate([self._top_rows, rows])
        f = np.concatenate([self._top_counted, counted.astype(bool)])
        t = np.concatenate([self._top_texts, texts])
        where = np.concatenate([np.arange(len(self._top_texts)), len(self._top_texts) + text_of])
        order = np.lexsort((r, -s, c))
        c, s, r, f, where = c[order], s[order], r[order], f[order], where[order]
        keep = self._distinct_top(c, r, t, where)
        self._top_concepts, self._top_scores, self._top_rows = c[keep], s[keep], r[keep]
        self._top_counted, self._top_texts = f[keep], t[where[keep]]
        full = np.bincount(self._top_concepts, minlength=self.k) >= self.top_k
        last = np.searchsorted(self._top_concepts, np.arange(self.k), side="right") - 1
        self._bar = np.where(full, self._top_scores[np.maximum(last, 0)], -np.inf).astype(
            np.float32
        )
        if len(self._rows) > 4 * len(self._top_rows) + 1024:
            kept = set(self._top_rows.tolist())
            self._rows = {row: value for row, value in self._rows.items() if row in kept}

    def _distinct_top(
        self, c: np.ndarray, r: np.ndarray, t: np.ndarray, where: np.ndarray
    ) -> np.ndarray:
        """Which pairs (concepts ``c``, rows ``r``, texts ``t[where]``; by concept, best first) are each
        concept's ``top_k`` distinct texts: a text's first pair, its best (a row is a text of its
        own when its text is unknown). Only each concept's first pairs are looked at, more
        where copies leave it short: a first batch holds many."""
        rank = np.arange(len(c)) - np.searchsorted(c, c, side="left")
        n_pairs = np.bincount(c, minlength=self.k)
        limit = self.top_k
        while True:
            window = np.flatnonzero(rank < limit)
            codes: dict[Any, int] = {}
            code = np.fromiter(
                (codes.setdefault(row if text is None else text, len(codes))
                 for text, row in zip(t[where[window]].tolist(), r[window].tolist(), strict=True)),
                dtype=np.int64,
                count=len(window),
            )  # fmt: skip
            first = window[np.unique(c[window] * max(len(codes), 1) + code, return_index=True)[1]]
            first.sort()
            n_distinct = np.bincount(c[first], minlength=self.k)
            if not np.any((n_distinct < self.top_k) & (n_pairs > limit)):
                break
            limit *= 4
        distinct_rank = np.arange(len(first)) - np.searchsorted(c[first], c[first], side="left")
        keep = np.zeros(len(c), dtype=bool)
        keep[first[distinct_rank < self.top_k]] = True
        return keep

    def nearest(self) -> dict[str, list[dict[str, Any]]]:
        """Per concept, the nearest captions kept: score (rounded to 1e-4), id, caption, and
        whether it was counted (see :meth:`add`)."""
        out: dict[str, list[dict[str, Any]]] = {name: [] for name in self.names}
        for c, s, r, f in zip(
            self._top_concepts.tolist(),
            self._top_scores.tolist(),
            self._top_rows.tolist(),
            self._top_counted.tolist(),
            strict=True,
        ):
            row_id, caption = self._rows[r]
            out[self.names[c]].append(
                {"score": round(float(s), 4), "id": row_id, "caption": caption, "counted": f}
            )
        return out

    def result(self) -> SemanticCounts:
        return SemanticCounts(
            self.names, self.counts.copy(), self.n_captions, self.thresholds.copy(), self.nearest()
        )

    # ----------------------------------------------------------------------- partial results

    def state(self) -> dict[str, Any]:
        """JSON-serialisable partial result (a shard's), for :meth:`merge_state`."""
        return {
            "n_captions": self.n_captions,
            "counts": self.counts.tolist(),
            "top": [
                [c, s, r, f, *self._rows[r]]
                for c, s, r, f in zip(
                    self._top_concepts.tolist(),
                    self._top_scores.tolist(),
                    self._top_rows.tolist(),
                    self._top_counted.tolist(),
                    strict=True,
                )
            ],
        }

    def merge_state(self, state: dict[str, Any]) -> None:
        """Add another counter's :meth:`state` (rows must be corpus rows: pass ``first_row``)."""
        if len(state["counts"]) != self.k:
            raise InputError(f"a partial result with {len(state['counts'])} concepts, not {self.k}")
        self.n_captions += int(state["n_captions"])
        self.counts += np.asarray(state["counts"], dtype=np.int64)
        if self.top_k and state["top"]:
            top = state["top"]
            for _, _, row, _, row_id, caption in top:
                self._rows.setdefault(int(row), (row_id, caption))
            self._merge(
                np.array([t[0] for t in top], dtype=np.int64),
                np.array([t[1] for t in top], dtype=np.float32),
                np.array([t[2] for t in top], dtype=np.int64),
                np.array([t[3] for t in top], dtype=bool),
                np.array([t[5] for t in top], dtype=object),
                np.arange(len(top)),
            )


def count_semantic(
    batches: Iterable[Any],
    vectors: np.ndarray,
    thresholds: Sequence[float] | np.ndarray,
    *,
    names: Sequence[str] | None = None,
    top_k: int = 5,
    near_margin: float = 0.0,
    per_caption: bool = False,
    gpu: bool = False,
) -> tuple[SemanticCounts, Hits | None]:
    """Count every batch (objects with ``vectors``, ``ids``, ``captions``, e.g.
    :class:`~clipaudit.semantic.store.EmbeddingBatch`) in one pass; with ``per_caption`` also the
    corpus-wide hits (caption row in the corpus, concept, score), held in memory: a caller that
    needs memory flat in corpus size writes each batch's hits from :meth:`SemanticCounter.add`.
    A caption of no word counts for no concept whatever its vector (LAION's embeddings give ""
    one), as in ``coverage count``."""
    from clipaudit.semantic.store import blank_captions

    counter = SemanticCounter(
        vectors, thresholds, names=names, top_k=top_k, near_margin=near_margin, gpu=gpu
    )
    collected: list[Hits] = []
    for batch in batches:
        start = counter.n_captions
        captions = getattr(batch, "captions", None)
        blank = None if captions is None else blank_captions(captions)
        hits = counter.add(batch.vectors, batch.ids, captions, blank=blank)
        if per_caption:
            collected.append(Hits(hits.rows + start, hits.concepts, hits.scores))
    pairs = None
    if per_caption:
        pairs = Hits(
            np.concatenate([h.rows for h in collected]) if collected else np.zeros(0, np.int64),
            np.concatenate([h.concepts for h in collected]) if collected else np.zeros(0, np.int64),
            np.concatenate([h.scores for h in collected]) if collected else np.zeros(0, np.float32),
        )
    return counter.result(), pairs

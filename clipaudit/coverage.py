"""Caption coverage: how many captions of a corpus mention each concept of a registry.

:func:`count_coverage` cuts the caption sources into shards (:mod:`clipaudit.readers`), matches every
caption in worker processes (:mod:`clipaudit.lexical`) on this machine or as Ray tasks on a cluster
(:mod:`clipaudit.engines`), and merges the per-shard partial results into a run folder
(:mod:`clipaudit.runs`)::

    RUN/concepts.{parquet,csv}     concept, group, category, count, rate
    RUN/groups.{parquet,csv}       group, category, count, rate, n_concepts, mean_concept_rate
    RUN/categories.{parquet,csv}   category, count, rate, n_concepts, mean_concept_rate
    RUN/examples.json              a few example captions per concept (deterministic choice),
                                   each with its input, file and id
    RUN/matches.parquet            with per_caption: input, file, id, concepts (one row per
                                   caption read; input: index into the manifest's inputs, file:
                                   the file it was read from, null for a dataset; (input, id)
                                   joins it back: null ids, and ids an earlier row of the same
                                   input has, are counted in the manifest's ids)
    RUN/manifest.json              inputs, registry, settings, counts, timings, status
    RUN/units/                     one partial result per finished shard (what a resume reuses;
                                   those of inputs no longer named are kept, in no result)

With a semantic ``method`` (``semantic``, ``both``, ``checked``: :mod:`clipaudit.coverage_semantic`)
the tables also hold ``<view>_count`` and ``<view>_rate`` for each view the method counts
(``semantic``; ``semantic`` and ``union``; ``checked``; ``mean_concept_rate`` stays the lexical
view's), ``matches.parquet`` holds the method's own matches (for ``both``, the union),
``examples.json`` stays the lexical hits' (what a semantic view counted is in ``nearest.json``),
and the run adds::

    RUN/nearest.json               per concept, the nearest captions (input, file, id, caption),
                                   their cosine, counted or not
    RUN/embeddings/<encoder>/      the captions' float16 embeddings, per shard (unless shared)

A group's or category's ``count`` is the number of captions mentioning at least one of its concepts.
Rates are counts divided by ``n_captions_read``: rows holding a valid caption string, empty ones
included; skipped rows (null, non-string, non-UTF-8, too long) are not in the denominator.

Every partial is written atomically when its shard is finished, with the identity of what the shard
read and of the matching code that counted it (by the worker process itself on this machine; on
Ray, by the driver, to which the task returns it), so a run killed at any moment (Ctrl-C, kill -9)
and restarted with the same run folder redoes only unfinished shards and shards whose input changed
(a file fixed, removed or added), and every shard after an upgrade of the matcher; outputs are
merged from the partials in corpus order and come out identical to an uninterrupted run's.
Nothing computed is lost: counted again with fewer inputs, the run keeps the partials (and the
embeddings) of the inputs no longer named, out of its results, and reuses them when those inputs
are named again unchanged; a partial goes when a count of its changed input replaces it, or when
``count_coverage(..., prune=True)`` reclaims the space.

Captions can be files and folders (see :mod:`clipaudit.readers`), a pandas DataFrame, or caption
strings (``texts=``, or a list of strings none of which names a path; see :func:`count_coverage`
for which is which): in-memory captions are written once into ``RUN/inputs/`` and read from there.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import hashlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from clipaudit import __version__
from clipaudit.coverage_semantic import (
    VIEWS,
    SemanticRun,
    SemanticShard,
    captions_per_label,
    read_nearest,
)
from clipaudit.engines import ENGINES
from clipaudit.errors import (
    WRITE_ERRNOS,
    CheckedFields,
    EngineError,
    InputError,
    RunFailedError,
    RunFolderError,
    SettingsError,
    Stopped,
    cannot_write,
    did_you_mean,
    keyword_checked,
    whole_line,
)
from clipaudit.filesystems import known_schemes, url_scheme
from clipaudit.lexical import (
    PROFILES,
    build_matcher,
    caption_crc32s,
    code_identity,
    concepts_not_counted,
    is_missing,
)
from clipaudit.provenance import (
    arrow_table,
    atomic_write_bytes,
    file_in_the_way,
    write_json,
    write_table,
)
from clipaudit.readers import (
    HF_PREFIX,
    BadShardError,
    ConnectionLostError,
    Shard,
    SkippedShard,
    Source,
    describe_source,
    pick_caption_column,
    plan_shards,
    resolve_sources,
    shard_file,
)
from clipaudit.registry import DEFAULT_REGISTRY, Registry, load_registry
from clipaudit.runs import (
    RunFolder,
    differences,
    run_folder_kind,
    run_given_as_captions,
    write_unit,
)
from clipaudit.text import counted

TABLES = ("concepts", "groups", "categories")  # each written as <name>.parquet and <name>.csv
RATE_DENOMINATOR = (
    "n_captions_read: rows holding a valid caption string, empty ones included; "
    "skipped rows (null, missing, non-string, non-UTF-8, too long, bad JSON) are excluded"
)
EXAMPLE_SELECTION = (
    "per concept, the distinct matching captions with the smallest CRC-32 of their UTF-8 text "
    "(a deterministic pseudo-random sample, the same however the corpus is sharded or resumed)"
)
_LIBRARIES = ("pyarrow", "pyahocorasick", "spacy", "spacy-lookups-data", "datasets", "pandas")
_MATCHES_SUFFIX = ".matches.parquet"
_CAPTION_FILE_SUFFIXES = (".parquet", ".jsonl", ".ndjson", ".txt")

# settings fields and the command-line flags that set them, so errors name both
FLAGS = {
    "profile": "--profile",
    "column": "--column",
    "id_column": "--id-column",
    "workers": "--workers",
    "per_caption": "--per-caption",
    "skip_bad": "--skip-bad",
    "examples_per_concept": "--examples",
    "max_caption_chars": "--max-chars",
    "spacy_model": "--spacy-model",
    "shard_rows": "--shard-rows",
    "hf_split": "--split",
    "verify_inputs": "--verify-inputs",
    "progress": "--progress/--no-progress",
    "engine": "--engine",
    "ray_address": "--ray-address",
    "method": "--method",
    "encoder": "--encoder",
    "calibration": "--calibration",
    "embeddings": "--embeddings",
    "embedding_store": "--embedding-store",
    "nearest": "--nearest",
    "device": "--device",
    "encode_batch": "--encode-batch",
}
# settings that only apply to the semantic methods
SEMANTIC_FIELDS = ("encoder", "calibration", "embeddings", "embedding_store")


def _named(field_name: str) -> str:
    flag = FLAGS.get(field_name)
    return f"{field_name} ({flag})" if flag else field_name


@dataclass(frozen=True)
class CoverageSettings(CheckedFields):
    """How a coverage run reads and matches captions. Fields marked in :data:`RESULT_FIELDS`
    change results, so a run folder can only be resumed with the same values."""

    profile: str = "curated"
    column: str | None = None  # caption column; None: caption, TEXT or text
    id_column: str | None = None  # None: id, key or SAMPLE_ID when present, else row numbers
    # shards counted at once: worker processes (local) or Ray tasks (ray); None: every core of
    # this machine (local) or of the Ray cluster (ray)
    workers: int | None = 1
    per_caption: bool = False
    skip_bad: bool = False
    examples_per_concept: int = 5
    max_caption_chars: int = 10_000
    spacy_model: str | None = None
    shard_rows: int = 250_000  # rows per shard (parquet: whole row groups adding up to this)
    # rows per record batch held in memory by a worker; None: 50,000 when counting lexically (a
    # batch's matching is a fixed number of array passes: larger batches cost less per caption),
    # 10,000 when a batch's embeddings are stored (the semantic methods' store layout)
    batch_rows: int | None = None
    hf_split: str = "train"
    verify_inputs: bool = False  # sha256 of every input byte, besides size, time and edges
    progress: bool = True
    engine: str = "local"  # local: this machine's processes; ray: a Ray cluster (clipaudit[ray])
    ray_address: str | None = None  # the Ray cluster (else RAY_ADDRESS, else one started here)
    # lexical (word rules only) | semantic | both | checked (clipaudit.coverage_semantic)
    method: str = "lexical"
    encoder: str | None = None  # st:NAME_OR_FOLDER, open_clip:MODEL[@TAG]; None or st: MiniLM
    calibration: str | None = None  # a calibration JSON for the encoder; None: defaults, flagged
    embeddings: str | None = None  # LAION text_emb_*.npy folder, row-aligned with the inputs
    embedding_store: str | None = None  # a store shared by runs; None: RUN/embeddings
    nearest: int = 5  # nearest captions kept per concept (semantic methods)
    near_margin: float = 0.05  # how far below its threshold a concept's nearest are sought
    device: str = "auto"  # where the encoder runs (auto: CUDA when present)
    encode_batch: int = 256  # captions per encoder batch

    def __post_init__(self) -> None:
        self._check_semantic()
        if self.profile not in PROFILES:
            raise SettingsError(
                f"unknown profile {self.profile!r}{did_you_mean(str(self.profile), PROFILES)}; "
                f"expected one of {', '.join(PROFILES)}"
            )
        if self.engine not in ENGINES:
            raise SettingsError(
                f"unknown engine {self.engine!r}{did_you_mean(str(self.engine), ENGINES)}; "
                f"expected one of {', '.join(ENGINES)}"
            )
        if self.ray_address is not None and self.engine != "ray":
            raise SettingsError(
                f"{_named('ray_address')} {self.ray_address!r} only applies to --engine ray; "
                "add --engine ray or drop the address"
            )
        for name in ("workers", "max_caption_chars", "shard_rows", "batch_rows"):
            value = getattr(self, name)
            if name in ("workers", "batch_rows") and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SettingsError(f"{_named(name)} must be a positive integer, got {value!r}")
        for item in fields(self):
            value = getattr(self, item.name)
            if item.type == "bool" and not isinstance(value, bool):  # "no" would count as on
                raise SettingsError(f"{_named(item.name)} must be True or False, got {value!r:.60}")
        examples = self.examples_per_concept
        if not isinstance(examples, int) or isinstance(examples, bool) or examples < 0:
            raise SettingsError(
                f"{_named('examples_per_concept')} must be an integer >= 0, got {examples!r}"
            )
        for name in ("column", "id_column", "spacy_model"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise SettingsError(
                    f"{_named(name)} must be a non-empty string or None, got {value!r}"
                )
        if self.spacy_model is not None and self.profile != "curated":
            raise SettingsError(
                f"{_named('spacy_model')} {self.spacy_model!r} only applies to the 'curated' "
                "profile; drop --spacy-model or use --profile curated"
            )

    def _check_semantic(self) -> None:
        from clipaudit.coverage_semantic import METHODS

        if self.method not in METHODS:
            raise SettingsError(
                f"unknown method {self.method!r}{did_you_mean(str(self.method), METHODS)}; "
                f"expected one of {', '.join(METHODS)}"
            )
        if self.method == "lexical":
            given = [name for name in SEMANTIC_FIELDS if getattr(self, name) is not None]
            if given:
                raise SettingsError(
                    f"{_named(given[0])} only applies to the semantic methods; add --method "
                    f"semantic, both or checked, or drop {FLAGS[given[0]]}"
                )
            return
        for name in SEMANTIC_FIELDS:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise SettingsError(f"{_named(name)} must be a non-empty string, got {value!r}")
        if self.encoder is not None:
            from clipaudit.coverage_semantic import resolve_encoder
            from clipaudit.semantic.encoders import parse_encoder

            parse_encoder(resolve_encoder(self.encoder))
        for name in ("calibration", "embeddings"):
            value = getattr(self, name)
            if value is not None and not Path(value).exists():
                raise SettingsError(f"{_named(name)} {value!r} does not exist")
        if self.calibration is not None:
            from clipaudit.semantic.calibration import Calibration

            # a malformed file is refused now, not once the encoder has loaded
            Calibration.load(self.calibration)
        if self.embedding_store is not None:
            _check_store_folder(self.embedding_store)
        if self.embeddings is not None and self.embedding_store is not None:
            raise SettingsError(
                f"{_named('embeddings')} are LAION's own, read in place: no store is written, so "
                f"{_named('embedding_store')} does not apply; drop one of them"
            )
        for name in ("nearest", "encode_batch"):
            value = getattr(self, name)
            least = 0 if name == "nearest" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise SettingsError(f"{_named(name)} must be an integer >= {least}, got {value!r}")
        margin = self.near_margin
        if not isinstance(margin, (int, float)) or isinstance(margin, bool) or not 0 <= margin <= 2:
            raise SettingsError(f"near_margin must be a number within [0, 2], got {margin!r}")

    def result_fields(self) -> dict[str, Any]:
        """The settings that change results (workers, skip_bad, batch size, progress and the
        engine do not; a semantic run's method, encoder and calibration are compared by
        identity, see :func:`clipaudit.coverage_semantic.SemanticRun.run_settings`)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in RESULT_FIELDS}

    @property
    def rows_per_batch(self) -> int:
        """``batch_rows``, or its default for the method."""
        if self.batch_rows is not None:
            return self.batch_rows
        return LEXICAL_BATCH_ROWS if self.method == "lexical" else EMBEDDED_BATCH_ROWS

    @classmethod
    def of(cls, value: CoverageSettings | dict[str, Any] | None, name: str) -> CoverageSettings:
        """``value`` as settings: given ones, a dict of their fields (unknown names refused with
        the closest ones), or the defaults for None; ``name`` is the argument's, for the error."""
        if isinstance(value, dict):
            return cls().replace(**value)
        if value is not None and not isinstance(value, cls):
            raise SettingsError(
                f"{name} must be CoverageSettings, a dict of their fields or None; got "
                f"{type(value).__name__} {value!r:.60}"
            )
        return value or cls()

    def replace(self, **changes: Any) -> CoverageSettings:
        """A copy with some fields changed; an unknown field name is a :class:`SettingsError`."""
        known = [f.name for f in fields(self)]
        for name in changes:
            if name not in known:
                raise SettingsError(
                    f"unknown coverage setting {name!r}{did_you_mean(name, known)}; "
                    f"settings are {', '.join(known)}"
                )
        return replace(self, **changes)


def _check_store_folder(store: str) -> None:
    """The embedding store is a folder, made when missing: refused when a file is in its way."""
    blocking = file_in_the_way(store)
    if blocking is not None:
        why = (
            "is a file"
            if blocking == Path(store)
            else f"cannot be made: {str(blocking)!r} is a file"
        )
        raise SettingsError(
            f"{_named('embedding_store')} {store!r} {why}; name a folder (made when missing)"
        )


LEXICAL_BATCH_ROWS, EMBEDDED_BATCH_ROWS = 50_000, 10_000  # CoverageSettings.batch_rows: None
# column and id_column are not here: each shard's identity holds the columns it read, resolved
# (the default's or the one named, the same when they agree), so a run reads them as it counts
RESULT_FIELDS = (
    "profile",
    "per_caption",
    "examples_per_concept",
    "max_caption_chars",
    "spacy_model",
    "shard_rows",
)
# recorded in a run's identity by earlier versions, no longer compared: a run recorded with them
# resumes. hf_split: a Hugging Face input's shards hold their split in their own identity (a
# changed split recounts them, as a changed input does), and other inputs have none; column and
# id_column: compared as each shard resolved them, not as they were typed
NO_LONGER_COMPARED = ("coverage.hf_split", "coverage.column", "coverage.id_column")


@dataclass(frozen=True)
class CoverageResult:
    """A finished coverage run: its tables, examples and manifest.

    ``arrow_tables`` holds the ``concepts``, ``groups`` and ``categories`` tables as pyarrow
    Tables; :attr:`concepts`, :attr:`groups` and :attr:`categories` are the same as pandas
    DataFrames (made when first asked for: a count need not import pandas). To change a table,
    replace its pyarrow Table (``dataclasses.replace(result, arrow_tables=...)``)."""

    out_dir: Path
    arrow_tables: dict[str, Any]
    examples: dict[str, Any]
    manifest: dict[str, Any]
    reused: bool = False  # the folder already held this complete run: nothing was recomputed
    _frames: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def concepts(self) -> Any:
        """Per concept: its group and category, the captions that mention it and their rate."""
        return self._frame("concepts")

    @property
    def groups(self) -> Any:
        """Per group: the captions that mention any of its concepts, their rate, and the mean
        rate of its concepts."""
        return self._frame("groups")

    @property
    def categories(self) -> Any:
        """Per category of groups, as :attr:`groups`."""
        return self._frame("categories")

    def _frame(self, name: str) -> Any:
        if name not in self._frames:
            self._frames[name] = self.arrow_tables[name].to_pandas()
        return self._frames[name]

    @property
    def n_captions_read(self) -> int:
        return self.manifest["n_captions_read"]

    def matches(self) -> Any:
        """Each caption's input (index into the manifest's inputs), file, id and concepts (a
        DataFrame), for a run made with ``per_caption``."""
        import pandas as pd

        path = self.out_dir / "matches.parquet"
        if not path.is_file():
            raise InputError(
                f"{self.out_dir} has no matches.parquet; count with per_caption=True "
                "(--per-caption) to keep each caption's matches"
            )
        return pd.read_parquet(path)

    @property
    def method(self) -> str:
        return self.manifest.get("method", "lexical")

    @property
    def concepts_not_counted(self) -> dict[str, str]:
        """The concepts the run's profile cannot count, each with why (the 'paper' profile's:
        :func:`~clipaudit.lexical.concepts_not_counted`): their lexical count is 0 by
        construction, not a measurement. Empty for a run counted before this was recorded."""
        return self.manifest.get("concepts_not_counted") or {}

    def nearest(self) -> dict[str, Any]:
        """Per concept, the captions nearest to it with their cosine scores and whether the run's
        method counted them (``nearest.json``; semantic methods only)."""
        return read_nearest(self.out_dir)

    @property
    def out(self) -> Path:
        """The run folder, as the other results name theirs (``out_dir``, its first name)."""
        return self.out_dir

    def __repr__(self) -> str:
        registry = self.manifest.get("registry", {}).get("name", "?")
        return (
            f"CoverageResult({str(self.out_dir)!r}: {counted(self.n_captions_read, 'caption')}, "
            f"{counted(self.arrow_tables['concepts'].num_rows, 'concept')} of {registry!r} in "
            f"{counted(self.arrow_tables['groups'].num_rows, 'group')}, "
            f"{self.manifest.get('profile', '?')} profile, {self.method} method)"
        )

    def _repr_html_(self) -> str:
        from html import escape

        views = VIEWS.get(self.method, ())
        columns = ["group", "category", "count", "rate"]
        columns += [f"{view}_{what}" for view in views for what in ("count", "rate")]
        table = self.groups[columns].to_html(index=False, float_format=lambda v: f"{v:.4f}")
        return f"<p><b>{escape(repr(self))}</b></p>{table}"


def load_coverage_run(path: str | Path, manifest: dict[str, Any]) -> CoverageResult:
    """A complete coverage run folder read back (:func:`clipaudit.runs.load_run`)."""
    import pyarrow.parquet as pq

    path = Path(path)
    examples = json.loads((path / "examples.json").read_text(encoding="utf-8"))
    # ParquetFile.read, not pq.read_table, which imports pyarrow.compute and pandas
    tables = {name: pq.ParquetFile(path / f"{name}.parquet").read() for name in TABLES}
    return CoverageResult(path, tables, examples, manifest)


@keyword_checked
def count_coverage(
    captions: Any = None,
    registry: str | Path | Registry = DEFAULT_REGISTRY,
    out: str | Path | None = None,
    settings: CoverageSettings | None = None,
    *,
    texts: Iterable[str | None] | None = None,
    overwrite: bool = False,
    prune: bool = False,
    **setting_changes: Any,
) -> CoverageResult:
    """Count, for every concept of ``registry``, the captions that mention it.

    What to count: ``captions`` or ``texts``, one of them.

    - ``texts``: caption strings held in memory (a list, any iterable, a pandas Series; None or
      NaN for a row without a caption), always counted as captions, whatever they say:
      ``texts=["."]`` is one caption, never the current folder. The unambiguous form for strings.
    - ``captions``, a :class:`CaptionSources`: always caption sources, a name that is none an
      error (what the CLI passes: a mistyped folder is never counted as a caption).
    - ``captions``, a ``str`` or an ``os.PathLike``: always one caption source: a ``.parquet``,
      ``.jsonl`` or ``.txt`` file, a folder of them, a saved dataset, ``hf:NAME`` or a URL.
    - ``captions``, a pandas DataFrame (its ``column``) or Series: captions in memory.
    - ``captions``, a list (or other iterable) of strings and paths: caption sources when every
      item names one (an ``os.PathLike``; a string that is ``hf:NAME``, a URL of a known scheme,
      ends in ``.parquet``, ``.jsonl``, ``.ndjson`` or ``.txt``, or names an existing file or
      folder), caption strings when none does (``["A red cat.", "a dog"]``), refused when mixed.
      So strings that happen to name existing paths (``["."]``, ``["README.md"]``) are read as
      sources there: pass captions as ``texts=`` (or a Series) to have them read as captions.

    ``registry``: a built-in name, a YAML path or a :class:`Registry`. ``out``: the run folder (a
    new temporary folder when None). Settings come from ``settings`` with any field replaced by
    keyword (``column="text"``, ``per_caption=True``, ``workers=2``); ``settings`` may be a dict
    of their fields too.

    Writes the run folder described in this module's docstring and returns its contents. Resumes
    a run folder holding the same run; refuses one of other settings with
    :class:`~clipaudit.errors.RunFolderError` unless ``overwrite``. Bad captions (a missing file,
    a folder without captions, a wrong ``column``, a damaged shard without ``skip_bad``) raise
    :class:`~clipaudit.errors.InputError`; settings out of range
    :class:`~clipaudit.errors.SettingsError`; a registry that cannot be loaded
    :class:`~clipaudit.errors.RegistryError`; a Ray cluster that cannot be joined
    :class:`~clipaudit.errors.EngineError`; a run in which every shard failed
    :class:`~clipaudit.errors.RunFailedError` (its folder is kept, marked failed).

    Counted again with fewer inputs, the run's results cover the inputs named now, and the
    records of the others (and their embeddings in the run's own store) are kept, reused when
    those inputs are named again unchanged; only the records of an input that changed are
    replaced (the manifest's ``timings``: ``shards_kept_unused``, ``shards_replaced``).
    ``prune``: remove the records and own-store embeddings of the inputs no longer named, and
    their captions staged in ``RUN/inputs/``, to reclaim the space (``shards_removed``).
    """
    if not isinstance(prune, bool):  # "no" would count as yes, and delete kept work
        raise SettingsError(f"prune must be True or False, got {prune!r:.60}")
    # captions held in memory become a table now, and named sources are looked at (their
    # columns, parquet footers): a mistake in either is refused before the encoder takes seconds
    # to load and before a run folder (or a temporary one) is made
    checked = check_captions(captions, settings, texts=texts, out=out, **setting_changes)
    settings = checked.settings
    registry = load_registry(registry)
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="clipaudit-coverage-"))
    matcher = build_matcher(registry, settings.profile, spacy_model=settings.spacy_model)
    looked_at = checked.looked_at
    # the encoder, concepts and calibration: their identities are part of the run's settings
    semantic = SemanticRun(settings, registry) if settings.method != "lexical" else None
    run_settings = _run_settings(settings, registry, semantic)
    with (
        _writable(out, settings.embedding_store),
        RunFolder(
            out,
            "coverage",
            run_settings,
            overwrite=overwrite,
            libraries=_LIBRARIES,
            compare=_compare_settings,
        ) as folder,
    ):
        if semantic is not None:  # which store the earlier sessions wrote to, kept for the next
            _note_semantic(folder, (folder.previous or {}).get("semantic"))
        if looked_at is None:  # captions given in memory: staged in the run folder, then read
            try:
                specs = _stage(checked.frame, out / "inputs")
            except UnicodeEncodeError as exc:
                raise _not_unicode(exc) from None
            looked_at = _look_at(specs, captions, out, settings)
        specs, resolved, inputs, plan = looked_at
        in_memory = all(Path(spec).parent == out / "inputs" for spec in specs)  # staged here
        if semantic is not None:
            semantic.open(out, resolved, previous=folder.previous)  # refuses another store
            _note_semantic(folder, semantic.manifest())
        run = _Dispatch(resolved, inputs, registry, matcher, settings, folder, plan, semantic)
        run.execute()
        moved = semantic is not None and semantic.moved  # merged again: the manifest says where
        # the same files named at other paths (a corpus moved or copied with its times) are the
        # same shards, but the manifest must name the inputs counted now: merged again
        renamed = not _same_inputs((folder.previous or {}).get("inputs"), inputs)
        # with prune, a complete run holding what its inputs do not need is merged again
        prunable = prune and _prunable(folder, run.planned, semantic)
        if folder.was_complete and run.unchanged and not (moved or renamed or prunable):
            reused = _reuse(out, folder.previous)
            if reused is not None:
                return reused
            # an output removed or damaged by hand: merged again from the shards' partials
        if settings.per_caption:
            _split_matches(folder)  # before the manifest, which lists the merged shards, changes
        folder.update(registry=registry.provenance(), inputs=inputs, corpus=_corpus_name(specs))
        if not run.finished:
            reasons = "; ".join(f"{s['shard']}: {s['reason']}" for s in run.skipped[:3])
            raise RunFailedError(
                f"no shard of the corpus could be read ({len(run.skipped)} skipped: {reasons}); "
                "nothing was counted"
            )
        result = _merge(out, registry, settings, run, inputs, folder, semantic)
        if result.manifest["n_captions_read"] == 0:  # its tables stay, all zero, for a look
            raise RunFailedError(_nothing_read(result.manifest, in_memory))
        # nothing computed is lost: the records of inputs no longer named are kept (in no
        # result), for when they are named again; those a count of the same input replaced go
        replaced = _replaced_units(folder, run.planned)  # read before their records go
        named = {shard.key for shard in run.planned}
        unused = set(folder.finished_units()) - named - replaced
        removed = set(folder.prune_units([*named, *(() if prune else unused)]))
        if semantic is not None:
            semantic.forget(replaced & removed)
            if prune:
                semantic.prune(run.planned)
        if prune:
            _prune_staged(out / "inputs", specs)
        fields = dict(result.manifest)
        timings = {
            **fields.pop("timings"),
            **run.timings(),
            "shards_replaced": len(replaced & removed),
            "shards_kept_unused": len(unused - removed),  # records of inputs no longer named
            "shards_removed": len(unused & removed),  # the same, removed by prune
        }
        manifest = folder.complete(**fields, timings=timings)
        if settings.per_caption:  # matches.parquet holds them, and the manifest says so now
            for shard in run.finished:
                folder.unit_path(shard.key, _MATCHES_SUFFIX).unlink(missing_ok=True)
        return replace(result, manifest=manifest)


@dataclass(frozen=True)
class CheckedCaptions:
    """What :func:`check_captions` found: the settings a count runs with and what it reads,
    either ``frame``, captions given in memory (a pandas DataFrame, staged into the run folder
    once one is made), or ``looked_at``, the caption sources named, resolved, described and
    their shards planned (:func:`_look_at`)."""

    settings: CoverageSettings
    frame: Any = None
    looked_at: (
        tuple[Sequence[str], list[Source], list[dict[str, Any]], Iterable[Shard | SkippedShard]]
        | None
    ) = None


def check_captions(
    captions: Any = None,
    settings: CoverageSettings | dict[str, Any] | None = None,
    *,
    texts: Iterable[str | None] | None = None,
    out: str | Path | None = None,
    given_as: str | None = None,
    **setting_changes: Any,
) -> CheckedCaptions:
    """Check what :func:`count_coverage` would count, as it checks it, without counting and
    without making a folder: ``captions`` or ``texts`` (as :func:`count_coverage` takes them),
    the settings (``settings`` with ``setting_changes``), and, for caption sources, that each
    exists and holds captions in the column counted (each parquet file's footer is read, each
    text file's lines found; a streamed ``hf:`` dataset's columns are read as it is counted, not
    here). ``out``: the run folder the count would write, whose files a
    caption folder holding it leaves out. ``given_as``: how the caller's user gave ``captions``
    (run_audit's "--captions, or captions= in Python"), named in the message of a source that
    cannot be resolved. What count_coverage itself calls first; run it before other work that a
    bad caption input would waste (:func:`clipaudit.run_audit` does).

    Raises :class:`~clipaudit.errors.InputError` for a missing source, a folder without
    captions, a wrong column (``column=``, ``--column``) or a damaged file, and
    :class:`~clipaudit.errors.SettingsError` for settings that do not hold.
    """
    if (captions is None) == (texts is None):
        raise InputError(
            "give what to count either as captions (a path, a list of paths, a DataFrame) or as "
            "texts= (caption strings in memory), "
            + ("not both" if texts is not None else "got neither")
        )
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise SettingsError(
            f"out (the run folder) must be a path or None, got {type(out).__name__} {out!r:.60}"
        )
    text_list = _caption_texts(texts) if texts is not None else None
    settings = CoverageSettings.of(settings, "settings").replace(**setting_changes)
    if isinstance(captions, Iterator):  # a generator is read once: for its kind, then its paths
        captions = list(captions)
    try:
        if text_list is not None:
            _refuse_columns(settings, "caption strings given as texts=")
            frame = _texts_frame(text_list)
        else:
            frame = _caption_frame(captions, settings)  # None: sources, read in place
            if frame is None:
                sources = _source_specs(captions)
                _refuse_run_folders(sources)
    except UnicodeEncodeError as exc:
        raise _not_unicode(exc) from None
    if settings.engine == "ray":
        from clipaudit.engines import check_ray

        check_ray(settings.ray_address)  # before anything is written: Ray missing, unreachable
    if frame is not None:
        return CheckedCaptions(settings, frame=frame)
    exclude = Path(out) if out is not None else None  # a new temporary folder: in no listing yet
    looked_at = _look_at(sources, captions, exclude, settings, given_as)
    return CheckedCaptions(settings, looked_at=looked_at)


def _look_at(
    specs: Sequence[str],
    captions: Any,
    out: Path | None,
    settings: CoverageSettings,
    given_as: str | None = None,
) -> tuple[Sequence[str], list[Source], list[dict[str, Any]], Iterable[Shard | SkippedShard]]:
    """The sources ``specs`` name, resolved and described, and their shards planned: a missing
    source, a folder without captions, a wrong column or a damaged parquet footer is an
    :class:`InputError` here. A streamed dataset's shards stay lazy (read as they are counted).
    ``given_as``: see :func:`check_captions`."""
    try:
        resolved = resolve_sources(specs, hf_split=settings.hf_split, exclude=out)
    except InputError as exc:
        notes = [f"given as {given_as}"] if given_as else []
        if _strings_read_as_sources(captions):
            notes.append(
                "the list's strings were read as caption sources, as each names one; to count "
                "the strings themselves as captions, pass them as texts=[...]"
            )
        if not notes:
            raise
        raise InputError(f"{exc} ({'; '.join(notes)})") from None
    _check_split(settings.hf_split, resolved)
    inputs = [describe_source(s, checksum=settings.verify_inputs) for s in resolved]
    plan = plan_shards(
        resolved,
        column=settings.column,
        id_column=settings.id_column,
        shard_rows=settings.shard_rows,
        skip_bad=settings.skip_bad,
        descriptions=inputs,
    )
    streamed = any(s.kind == "hf_stream" for s in resolved)
    return specs, resolved, inputs, plan if streamed else list(plan)


@contextlib.contextmanager
def _writable(out: Path, store: str | None = None) -> Iterator[None]:
    """A run folder that cannot be written (a full disk, a read-only mount or folder) stops the
    run with one message and the fix, not a traceback from whichever write met it first (a
    worker's, the lock's, the manifest's); the shards that finished are kept for the rerun.
    ``store``: the embedding store outside the run folder, which the run writes too."""
    try:
        yield
    except OSError as exc:
        name = exc.filename if isinstance(exc.filename, str) else None
        ours = name is not None and Path(name).resolve().is_relative_to(out.resolve())
        if exc.errno not in WRITE_ERRNOS and not (
            ours and exc.errno in (errno.EACCES, errno.EPERM)
        ):
            raise
        where = name or f"into the run folder {out}" + (
            f" or the embedding store {store}" if store else ""
        )
        raise RunFolderError(cannot_write(where, exc)) from None


def _reuse(out: Path, manifest: dict[str, Any]) -> CoverageResult | None:
    """The complete run in ``out`` read back; None when one of its outputs cannot be read
    (missing ones already made the folder incomplete, ``RunFolder.was_complete``; matches.parquet
    is checked with the shards, :func:`_merged_units`)."""
    try:
        return replace(load_coverage_run(out, manifest), reused=True)
    except (OSError, ValueError):  # pyarrow's ArrowInvalid and json's errors are ValueErrors
        return None


def _prunable(folder: RunFolder, planned: Sequence[Shard], semantic: SemanticRun | None) -> bool:
    """Whether the run folder holds records (or its own store embeddings) that no shard planned
    now needs: what ``prune`` removes."""
    named = {shard.key for shard in planned}
    if any(key not in named for key in folder.finished_units()):
        return True
    return semantic is not None and bool(semantic.unneeded(planned))


def _prune_staged(staging: Path, specs: Sequence[str]) -> None:
    """Remove the captions given in memory by earlier sessions (``staging``, ``RUN/inputs/``)
    that this session does not count: their records are pruned, so they would be read again."""
    named = {Path(spec).resolve() for spec in specs}
    for staged in staging.glob("captions-*.parquet"):
        if staged.resolve() not in named:
            staged.unlink(missing_ok=True)


def _replaced_units(folder: RunFolder, planned: Sequence[Shard]) -> set[str]:
    """The records of shards not planned now whose input is read now: earlier counts of a part
    of an input still named (its file changed, it has other parts now, or its row-number ids
    moved), which the shards counted now replace. The records of inputs no longer named are
    not among them: they are kept, to be reused when those inputs are named again."""
    keys = {shard.key for shard in planned}
    locations = {shard.location for shard in planned}
    labels = {shard.label for shard in planned}  # records written before they held a location
    replaced = set()
    for key in set(folder.finished_units()) - keys:
        with contextlib.suppress(OSError, ValueError):  # a record damaged by hand: not known
            record = json.loads(folder.unit_path(key).read_text(encoding="utf-8"))
            if not isinstance(record, dict):
                continue
            location, label = record.get("location"), record.get("shard")
            if isinstance(location, str):
                ours = location in locations
            else:
                ours = isinstance(label, str) and label in labels
            if ours:
                replaced.add(key)
    return replaced


def _same_inputs(recorded: Any, inputs: list[dict[str, Any]]) -> bool:
    """Whether a complete run's manifest records these inputs (specs, paths and identities),
    leaving out the columns its merge added to each."""
    if not isinstance(recorded, list) or not all(isinstance(r, dict) for r in recorded):
        return False
    described = json.loads(json.dumps(inputs, default=str))  # as the manifest stores them
    return [{k: v for k, v in r.items() if k != "columns"} for r in recorded] == described


def _compare_settings(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What changed between a run folder's settings and this session's (:func:`differences`),
    leaving out what no longer makes another run (:data:`NO_LONGER_COMPARED`)."""
    return differences(before, now, ignore=NO_LONGER_COMPARED)


def _check_split(split: str, sources: Sequence[Source]) -> None:
    """``--split`` selects a split of a Hugging Face dataset (``hf:NAME``, or a DatasetDict
    saved by ``save_to_disk``) and nothing else: another split than the default, given where no
    input has splits, is refused rather than ignored (it would select nothing)."""
    default = next(f.default for f in fields(CoverageSettings) if f.name == "hf_split")
    if split == default or any(source.split is not None for source in sources):
        return
    first = sources[0]
    raise SettingsError(
        f"{_named('hf_split')} {split!r} selects a split of a Hugging Face dataset (hf:NAME, or "
        "a DatasetDict saved by save_to_disk), and none of the inputs has splits "
        f"({first.spec!r} is a {first.kind} source); drop the split (--caption-split in clipaudit audit), or name the "
        "dataset whose split to count"
    )


def _note_semantic(folder: RunFolder, record: dict[str, Any] | None) -> None:
    """Put a semantic run's record (its embedding store, above all) in the manifest, so that a
    session killed before the end still tells the next one which store holds the run's
    embeddings; written unless the folder holds the complete run, which stays as it was until
    this session changes something."""
    if record is None:
        return
    folder.manifest["semantic"] = record
    if not folder.was_complete:
        folder.write_manifest()


def _nothing_read(manifest: dict[str, Any], in_memory: bool) -> str:
    """Why a run that read its shards found no caption in them, and the fix (for captions given
    in memory, in the API's terms: they have no column option to fix)."""
    reasons = ", ".join(f"{n:,} {why}" for why, n in manifest["skipped_reasons"].items())
    if in_memory:
        return (
            f"no caption was read: the {manifest['n_rows']:,} captions given were all skipped "
            f"({reasons}); give caption strings (None or NaN is no caption; one longer than "
            "max_caption_chars is skipped)"
        )
    bad = manifest["skipped_shards"]
    if bad:  # the captions may all be in the shards skipped: no column to blame
        rows = manifest["n_rows"] - sum(shard["n_rows"] or 0 for shard in bad)
        return (
            f"no caption was read: {len(bad)} shard(s) could not be read ("
            + "; ".join(f"{shard['shard']}: {shard['reason']}" for shard in bad[:3])
            + f"{'; ...' if len(bad) > 3 else ''}) and the other shards' {rows:,} rows hold no "
            f"caption{f' ({reasons})' if reasons else ''}; fix or replace the unreadable files, "
            "then run the same command again"
        )
    if manifest["n_rows"] == 0:  # no column to name: its files hold nothing
        return (
            "no caption was read: the corpus holds 0 rows (its files are empty); count a corpus "
            "that has captions"
        )
    if all(i.get("kind") == "txt" for i in manifest["inputs"]):  # lines, not columns
        return (
            f"no caption was read: the corpus holds {manifest['n_rows']:,} lines, all skipped "
            f"({reasons}); a text file holds one UTF-8 caption per line, each at most "
            "--max-chars characters"
        )
    columns = sorted({c["caption"] for i in manifest["inputs"] for c in i.get("columns", [])})
    return (
        f"no caption was read: the corpus holds {manifest['n_rows']:,} rows"
        + (f" ({reasons}) in column {', '.join(map(repr, columns))}" if reasons else "")
        + "; name the column that holds the captions with --column, or count a corpus that has "
        "captions"
    )


def _corpus_name(specs: Sequence[str]) -> str:
    """A short name for what was read: the first source's name (and how many more)."""
    first = Path(specs[0])
    name = "captions" if first.parent.name == "inputs" else (first.stem or first.name)
    return name if len(specs) == 1 else f"{name} (+{len(specs) - 1} more)"


def _run_settings(
    settings: CoverageSettings, registry: Registry, semantic: SemanticRun | None
) -> dict[str, Any]:
    """Everything a run's results depend on; a run folder is resumed only when this is equal.
    Inputs are not here: each shard records the identity of what it read (and, in a semantic
    run, what its embeddings come from)."""
    from importlib import metadata

    versions = {
        "clipaudit": __version__,
        "spacy-lookups-data": metadata.version("spacy-lookups-data"),
    }
    if settings.spacy_model:
        versions["spacy"] = metadata.version("spacy")
    record = {
        "coverage": settings.result_fields(),
        "registry": {"name": registry.name, "sha256": registry.sha256},
        "versions": versions,
    }
    if registry.selected_groups is not None:  # some groups of the file: its hash alone says all
        record["registry"]["groups"] = list(registry.selected_groups)
    if semantic is not None:
        record["semantic"] = semantic.run_settings()
    return record


# --------------------------------------------------------------------------- caption inputs


class CaptionSources(tuple):
    """Caption sources (files, folders, ``hf:NAME``, URLs) that are always read as sources, never
    as captions: ``count_coverage(CaptionSources(["typo_dir"]))`` fails on the missing folder,
    where a plain list of strings that names nothing is counted as captions. What the CLI passes.
    """

    def __new__(cls, sources: Iterable[str | os.PathLike]) -> CaptionSources:
        if isinstance(sources, (str, os.PathLike)):
            sources = [sources]
        if not isinstance(sources, Iterable):
            raise InputError(
                "caption sources are a path or an iterable of paths (files, folders, hf:NAME, "
                f"URLs), got {type(sources).__name__} {sources!r:.60}"
            )
        items = tuple(sources)
        for position, item in enumerate(items):
            if not isinstance(item, (str, os.PathLike)):
                raise InputError(
                    f"caption sources hold {type(item).__name__} {item!r:.60} (item {position}); "
                    "expected a path or a string naming a file, folder, hf:NAME or URL"
                )
        return super().__new__(cls, (str(item) for item in items))


def _not_unicode(exc: UnicodeEncodeError) -> InputError:
    """A caption holding a lone surrogate, as a bad decode leaves: no UTF-8 file can hold it."""
    return InputError(
        f"a caption is not valid Unicode text ({exc.object[:60]!r}: a lone surrogate at "
        f"position {exc.start}, as a bad decode leaves); drop it, or decode its source with "
        "errors='replace'"
    )


def _source_specs(captions: Any) -> list[str]:
    """Caption sources (a path, or a list of them, that :func:`_caption_frame` found to be no
    captions in memory) as :func:`clipaudit.readers.resolve_sources` takes them."""
    if isinstance(captions, (str, os.PathLike)):
        return [str(captions)]
    return [str(c) for c in captions]


def _stage(frame: Any, staging: Path) -> list[str]:
    """In-memory captions written once to ``staging/captions-<hash>.parquet`` (the same captions,
    the same file: a resumed run reads an unchanged input)."""
    data = frame.to_parquet(index=False)
    target = staging / f"captions-{hashlib.sha256(data).hexdigest()[:16]}.parquet"
    if not target.is_file():
        atomic_write_bytes(target, data)
    return [str(target)]


def _caption_texts(texts: Any) -> list[str | None]:
    """``count_coverage(texts=...)``'s captions as a list (None for a row without one), checked:
    strings, None or NaN only, and not one bare string (its characters are no captions)."""
    pd = sys.modules.get("pandas")
    if isinstance(texts, (str, bytes, os.PathLike)):
        raise InputError(
            f"texts= takes caption strings in a list, got one {type(texts).__name__} "
            f"{str(texts)!r:.60}: wrap it in a list (texts=[...]), or pass a caption file as "
            "captions"
        )
    if (pd is not None and isinstance(texts, pd.DataFrame)) or isinstance(texts, Mapping):
        table = "a dict" if isinstance(texts, Mapping) else "a DataFrame"
        as_frame = " (as pandas.DataFrame(...))" if isinstance(texts, Mapping) else ""
        raise InputError(
            f"texts= takes caption strings, got {table}; pass a DataFrame as captions{as_frame}, "
            "with column=... naming its caption column"
        )
    if not isinstance(texts, Iterable):
        raise InputError(f"texts= takes an iterable of caption strings, got {type(texts).__name__}")
    items: list[str | None] = []
    for position, text in enumerate(texts):
        if is_missing(text):  # None, NaN or pandas.NA: no caption
            items.append(None)
        elif isinstance(text, str):
            items.append(text)
        else:
            raise InputError(
                f"texts= holds {type(text).__name__} {text!r:.60} (item {position}); captions "
                "must be strings, or None or NaN for none"
            )
    if not items:
        raise InputError("no captions given: texts= is empty")
    return items


def _texts_frame(texts: list[str | None]) -> Any:
    import pandas as pd

    return pd.DataFrame({"caption": texts})  # as a list of captions is staged: the same file


def _strings_read_as_sources(captions: Any) -> bool:
    """Whether ``captions`` is a list of plain strings, each naming a caption source (the one
    form whose strings could have been meant as captions)."""
    return (
        isinstance(captions, (list, tuple))
        and not isinstance(captions, CaptionSources)  # sources by the caller's word
        and bool(captions)
        and all(isinstance(item, str) and _looks_like_path(item) for item in captions)
    )


def _caption_frame(captions: Any, settings: CoverageSettings) -> Any:
    """A DataFrame of in-memory captions (``id``, ``caption``...), or None when ``captions`` are
    caption sources (see :func:`count_coverage`).

    A pandas DataFrame (its ``column``, else caption, TEXT or text, with its ``id_column``, else
    id, key or SAMPLE_ID), a Series or an iterable of caption strings is a table, staged once by
    :func:`_stage`. A list of strings is read as
    sources when each one exists, ends in a caption-file suffix, starts with ``hf:`` or is a URL
    of a known scheme (``s3://``...), and as captions when none does."""
    if isinstance(captions, (str, os.PathLike, CaptionSources)):
        return None
    # a DataFrame or Series exists only once pandas is imported: paths need no pandas
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(captions, pd.DataFrame):
        columns = list(captions.columns)
        wanted = pick_caption_column(columns, settings.column, "the DataFrame", "column=")
        if settings.id_column is not None and settings.id_column not in columns:
            raise InputError(
                f"the DataFrame has no id column {settings.id_column!r}"
                f"{did_you_mean(settings.id_column, list(map(str, columns)))}; its columns are "
                f"{', '.join(map(str, columns))} (name one with id_column=, or leave it out for "
                "its id, key or SAMPLE_ID column, else row numbers)"
            )
        named = settings.id_column
        id_names = [named] if named is not None else ["id", "key", "SAMPLE_ID"]
        keep = [wanted, *[c for c in id_names if c in captions and c != wanted][:1]]
        frame = captions[keep].reset_index(drop=True)
        if pd.api.types.infer_dtype(frame[wanted], skipna=True) not in ("string", "empty"):
            row = next(
                i for i, v in enumerate(frame[wanted]) if not (isinstance(v, str) or pd.isna(v))
            )
            value = frame[wanted][row]
            raise InputError(
                f"the DataFrame's caption column {wanted!r} holds {type(value).__name__} "
                f"{value!r:.60} (row {row}); captions must be strings, or None or NaN for none"
            )
        ids = keep[1:]
        if ids and pd.api.types.infer_dtype(frame[ids[0]], skipna=True).startswith("mixed"):
            # ids of several types ("a1", 7): kept as text, as a parquet column has one type
            frame[ids[0]] = [None if pd.isna(v) else str(v) for v in frame[ids[0]]]
        return frame
    if pd is not None and isinstance(captions, pd.Series):
        _refuse_columns(settings, "captions given as a Series")
        return pd.DataFrame({"caption": captions.reset_index(drop=True)})
    if isinstance(captions, Mapping):  # iterating it would count its keys as captions
        keys = ", ".join(repr(str(key)) for key in list(captions)[:5])
        raise InputError(
            f"captions is a dict (keys {keys}); give a table of captions as "
            "pandas.DataFrame(...) with column=... naming its caption column, or the caption "
            "strings as a list"
        )
    if not isinstance(captions, Iterable):
        raise InputError(
            f"captions must be a path, a list of paths, a DataFrame or an iterable of strings; "
            f"got {type(captions).__name__}"
        )
    items = list(captions)
    if not items:
        raise InputError("no captions given: the list is empty")
    path_like = [_looks_like_path(item) for item in items]
    if all(path_like):
        return None
    if any(path_like):
        first = items[path_like.index(True)]
        raise InputError(
            f"the list mixes caption sources (e.g. {str(first)!r}) and caption strings; "
            "give either paths or captions (captions that name paths: texts=[...])"
        )
    not_text = next((item for item in items if not isinstance(item, str)), None)
    if not_text is not None:
        raise InputError(
            f"captions must be strings; got {type(not_text).__name__} {not_text!r} in the list"
        )
    _refuse_columns(settings, "captions given as a list of strings")
    import pandas as pd

    return pd.DataFrame({"caption": items})


def _refuse_columns(settings: CoverageSettings, what: str) -> None:
    """Captions given as strings are staged as the column "caption", numbered by row: another
    caption column, or an id column, names nothing (and the staged file's error would name a file
    the caller never made)."""
    if settings.column not in (None, "caption"):
        raise InputError(
            f"column={settings.column!r} names a caption column, but {what} have no columns; "
            "drop column= (it is for caption files and DataFrames)"
        )
    if settings.id_column is not None:
        raise InputError(
            f"id_column={settings.id_column!r} names an id column, but {what} have no columns "
            "and are numbered by row; drop id_column= (it is for caption files and DataFrames)"
        )


def _refuse_run_folders(specs: Sequence[str]) -> None:
    """A local clipaudit run folder named as captions: said to be a run (a URL's is said as its
    folder is listed, :func:`clipaudit.readers.resolve_sources`)."""
    for spec in specs:
        kind = None if "://" in spec else run_folder_kind(spec)
        if kind is not None:
            raise run_given_as_captions(spec, kind)


def _looks_like_path(item: Any) -> bool:
    if isinstance(item, os.PathLike):
        return True
    if not isinstance(item, str):
        return False
    return (
        item.startswith(HF_PREFIX)
        or url_scheme(item) in known_schemes()  # s3://..., hf://...: not "https://..." captions
        or item.lower().endswith(_CAPTION_FILE_SUFFIXES)
        or (len(item) < 4096 and "\n" not in item and Path(item).exists())
    )


# --------------------------------------------------------------------------- dispatching shards


class _Dispatch:
    """Takes the planned shards, reuses finished ones, runs the rest in worker processes (or
    inline) or as Ray tasks: any executor whose ``submit`` returns a
    :class:`concurrent.futures.Future`."""

    def __init__(
        self,
        sources: list[Source],
        inputs: list[dict[str, Any]],
        registry: Registry,
        matcher: Any,
        settings: CoverageSettings,
        folder: RunFolder,
        plan: Iterable[Shard | SkippedShard],
        semantic: SemanticRun | None = None,
    ):
        self.semantic = semantic
        self.plan = plan  # :func:`_look_at`'s: a list, or lazy for a streamed dataset
        self.sources = sources
        self.inputs = inputs
        self.registry = registry
        self.matcher = matcher
        self.settings = settings
        self.folder = folder
        self.planned: list[Shard] = []
        self.skipped: list[dict[str, Any]] = []
        self._bad_keys: set[str] = set()
        self.rows_done = self.shards_done = self.shards_resumed = 0
        self.seconds = 0.0
        self.engine: dict[str, Any] = {"engine": settings.engine}

    def execute(self) -> None:
        """Run every planned shard that has no record of the same identity in the run folder."""
        settings = self.settings
        plan = self.plan
        # a shard counted by other matching code is counted again (a resumed run after an upgrade)
        matcher = dict(zip(("lexicon", "code"), code_identity(), strict=True))
        plan = (
            replace(s, identity={**s.identity, "matcher": matcher}) if isinstance(s, Shard) else s
            for s in plan
        )
        if self.semantic is not None:  # a unit's identity holds what its embeddings come from
            plan = (
                replace(s, identity=self.semantic.unit_identity(s)) if isinstance(s, Shard) else s
                for s in plan
            )
        streamed = any(s.kind == "hf_stream" for s in self.sources)
        items: Iterable[Shard | SkippedShard] = plan if streamed else list(plan)
        todo = (
            None if streamed else [s for s in items if isinstance(s, Shard) and not self._done(s)]
        )
        options = _WorkerOptions(
            units_dir=str(self.folder.units),
            concept_groups=_concept_groups(self.registry),
            per_caption=settings.per_caption,
            examples_per_concept=settings.examples_per_concept,
            max_caption_chars=settings.max_caption_chars,
            batch_rows=settings.rows_per_batch,
            semantic=(
                self.semantic.worker_options(settings.workers or os.cpu_count() or 1)
                if self.semantic is not None
                else None
            ),
        )
        counter = None  # rows counted so far, shared with local workers (Ray's report per shard)
        if settings.engine == "ray" and todo != []:
            from clipaudit.engines import RayExecutor

            # Ray workers may not see the run folder: tasks return their records to be written here
            executor: Any = RayExecutor(
                _init_worker,
                (self.matcher, replace(options, units_dir=None), None, None),
                address=settings.ray_address,
                workers=settings.workers,
            )
            workers, self.window = executor.parallelism, executor.window
            if todo is not None:  # at once, never more than the shards to do (as local workers)
                workers = min(workers, len(todo))
            self.engine = executor.describe()
        else:
            if todo == []:  # every shard reused: no engine starts, whichever was asked for
                self.engine = {"engine": "local"}
            wanted = settings.workers or os.cpu_count() or 1
            self.window = 2 * wanted  # bounds memory when shards carry streamed rows
            # never more workers than shards to do: an idle worker only costs its start-up
            workers = wanted if todo is None else max(1, min(wanted, len(todo)))
            if workers == 1:
                counter = _InlineCounter()
                _init_worker(self.matcher, options, counter, None)
                executor = _InlineExecutor()
            else:
                import multiprocessing

                context = multiprocessing.get_context("spawn")
                counter = context.Value("q", 0)
                initargs = (self.matcher, options, counter, os.getpid())
                executor = ProcessPoolExecutor(
                    workers, mp_context=context, initializer=_init_worker, initargs=initargs
                )
                _start_without_sigint(executor, workers)
        total_rows = None if todo is None else sum(s.n_rows for s in todo)
        total_shards = None if todo is None else len(todo)
        clock = time.perf_counter()
        # every shard reused (a rerun given overwrite): no bar, which would stand empty at 0
        shown = settings.progress and todo != []
        with _Progress(counter, total_rows, total_shards, shown) as progress:
            try:
                self._run(executor, items, progress)
            except (KeyboardInterrupt, Stopped):
                executor.shutdown(wait=False, cancel_futures=True)  # Ctrl-C stops at once
                raise
            except BaseException:
                executor.shutdown(wait=True, cancel_futures=True)
                raise
            # waited for: a worker still starting when the run ends (its shards all done by the
            # other) would find the pool's semaphores gone with this process, and print
            # multiprocessing's traceback after the run's results
            executor.shutdown(wait=True)
        if settings.engine == "ray" and todo != []:  # what the run found, retried tasks included
            self.engine = executor.describe()
        self.seconds = time.perf_counter() - clock
        self.workers = workers

    def _done(self, shard: Shard) -> bool:
        """Whether an earlier session finished this very shard (same identity, its matches in
        its own file, whole, or in the merged matches.parquet of a complete run)."""
        record = self.folder.load_unit(shard.key, shard.identity)
        if record is None:
            return False
        if not self.settings.per_caption or shard.key in self._merged:
            return True
        # a matches file cut short or damaged by hand: the shard is counted again
        matches = self.folder.unit_path(shard.key, _MATCHES_SUFFIX)
        return _parquet_rows(matches) == record.get("n_captions_read")

    @cached_property
    def _merged(self) -> set[str]:
        """Shards whose matches an earlier complete run merged into matches.parquet."""
        return {key for key, _ in _merged_units(self.folder)}

    @property
    def finished(self) -> list[Shard]:
        """The shards with a partial result, in corpus order (all planned but the skipped)."""
        return [shard for shard in self.planned if shard.key not in self._bad_keys]

    @property
    def unchanged(self) -> bool:
        """Nothing counted or skipped this session, and the shards planned are those the folder's
        complete run merged: the folder already holds the result. (Not all the records in the
        folder: those of inputs no longer named are kept, in no run's results.)"""
        merged = (self.folder.previous or {}).get("units")  # [key, rows] each, in corpus order
        return (
            self.shards_done == 0
            and not self.skipped
            and isinstance(merged, list)
            and [s.key for s in self.planned]
            == [unit[0] if isinstance(unit, list) and unit else None for unit in merged]
        )

    def timings(self) -> dict[str, Any]:
        """This session's work; rates over its wall time, start-up and merge included."""
        return {
            "seconds_counting": round(self.seconds, 3),
            "rows_this_session": self.rows_done,
            "shards_this_session": self.shards_done,
            "shards_resumed": self.shards_resumed,
            "workers": getattr(self, "workers", self.settings.workers),
            **self.engine,
            "automaton": self.matcher.automaton,  # compiled or pyahocorasick: the same matches
        }

    def _pending(self, items: Iterable[Shard | SkippedShard], progress: Any) -> Iterator[Shard]:
        for item in items:
            if isinstance(item, SkippedShard):
                self.skipped.append({"shard": item.label, "reason": item.reason, "n_rows": None})
                continue
            self.planned.append(replace(item, payload=None))  # streamed rows are not kept
            if self._done(item):
                self.shards_resumed += 1
            elif self._embedded(item, progress):
                yield item

    def _embedded(self, shard: Shard, progress: Any) -> bool:
        """Encode a shard's captions here, in the driver, before a worker counts it (a semantic
        run without LAION embeddings); False when the shard is unreadable and skipped."""
        if self.semantic is None:
            return True
        try:
            self.semantic.embed(shard, progress=self.settings.progress, on_rows=progress.encoded)
        except BadShardError as exc:
            if not self.settings.skip_bad:
                raise
            self.skipped.append(
                {"shard": shard.label, "reason": exc.reason, "n_rows": shard.n_rows}
            )
            self._bad_keys.add(shard.key)
            return False
        return True

    def _run(self, executor: Any, items: Iterable[Shard | SkippedShard], progress: Any) -> None:
        pending = self._pending(items, progress)
        in_flight: dict[Future, Shard] = {}
        limit = self.window  # bounds memory when shards carry streamed rows
        while True:
            try:
                for shard in pending:
                    in_flight[executor.submit(_process_shard, shard)] = shard
                    if len(in_flight) >= limit:
                        break
            except InputError:  # the planner's (a bad file, a stream cut): keep what finishes
                self._drain(in_flight, progress)
                raise
            if not in_flight:
                return
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                shard = in_flight.pop(future)
                try:
                    summary = future.result()
                except (ConnectionLostError, EngineError):  # the network's, or a Ray worker lost
                    self._drain(in_flight, progress)  # a rerun resumes after what finished
                    raise
                except BrokenProcessPool:  # a worker killed (the out-of-memory killer): the pool
                    self._drain(in_flight, progress)  # is gone; what finished before is kept
                    raise EngineError(
                        "a worker process died while counting (killed, perhaps for lack of "
                        "memory); finished shards are kept: run the same command again, with "
                        "fewer --workers if memory is short"
                    ) from None
                except BadShardError as exc:
                    if not self.settings.skip_bad:
                        self._drain(in_flight, progress)  # keep what the running ones finish
                        raise
                    self.skipped.append(
                        {"shard": shard.label, "reason": exc.reason, "n_rows": shard.n_rows}
                    )
                    self._bad_keys.add(shard.key)
                    continue
                self._finished(shard, summary, progress)

    def _finished(self, shard: Shard, summary: dict[str, Any], progress: Any) -> None:
        """A shard is done: write its record when its worker returned it instead (Ray), count it."""
        if "record" in summary:
            if summary["matches"] is not None:  # first: a record means its matches are there
                atomic_write_bytes(
                    self.folder.unit_path(shard.key, _MATCHES_SUFFIX), summary["matches"]
                )
            self.folder.save_unit(shard.key, shard.identity, summary["record"])
        self.rows_done += summary["n_rows"]
        self.shards_done += 1
        progress.shard_done(summary["n_rows"])

    def _drain(self, in_flight: dict[Future, Shard], progress: Any) -> None:
        """Cancel what has not started, wait for what has, and keep what finished."""
        for future in in_flight:
            future.cancel()
        wait(in_flight)
        for future, shard in in_flight.items():
            if not future.cancelled() and future.exception() is None:
                self._finished(shard, future.result(), progress)


def _start_without_sigint(executor: ProcessPoolExecutor, workers: int) -> None:
    """Start the pool's processes with Ctrl-C ignored, which they keep (a Python started with
    SIGINT ignored leaves it so): Ctrl-C is the parent's to handle (it stops the pool), and
    workers print no tracebacks."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for _ in range(workers):  # a task per worker, none idle yet: each starts a process
            executor.submit(os.getpid)
    finally:
        signal.signal(signal.SIGINT, previous)


class _InlineCounter:
    """The rows read so far by shards run in this process: what a worker's shared ``Value`` is,
    without multiprocessing's imports and semaphore."""

    value = 0

    def get_lock(self) -> contextlib.nullcontext:
        return contextlib.nullcontext()


class _InlineExecutor:
    """Runs shards in this process, one at a time (workers=1): no start-up cost, same code."""

    def submit(self, fn: Any, *args: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


class _Progress:
    """One progress bar for every engine: rows (captions/s and time left) and shards done out of
    shards to do. Rows come from the local workers' shared counter as they are read, or, where
    workers share no memory with this process (Ray), from each finished shard. A semantic run
    encodes each shard's captions here, before a worker counts it, at a small fraction of the
    counting's speed: its rows are those encoded (:meth:`encoded`, per encoder batch), or
    counted where the counting is ahead; counted rows alone stood still for minutes, then
    leapt by a shard, showing the counting's rate and a time left the encoding never kept."""

    def __init__(self, counter: Any, total: int | None, shards: int | None, enabled: bool):
        self.counter = counter  # None: rows are reported per finished shard
        self.total = total
        self.shards = shards
        self.enabled = enabled
        self.n_shards = 0
        self.n_rows = 0  # rows of the finished shards
        self.n_encoded = 0  # rows encoded by the driver (or found encoded already)
        self._stop = threading.Event()

    def __enter__(self) -> _Progress:
        if self.enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=self.total, unit=" captions", unit_scale=True, desc="coverage", smoothing=0.1
            )
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()
        return self

    def shard_done(self, n_rows: int) -> None:
        self.n_shards += 1
        self.n_rows += n_rows
        if self.enabled:
            self.bar.set_postfix_str(f"shards {self.n_shards}/{self.shards or '?'}", refresh=False)

    def encoded(self, n_rows: int) -> None:
        self.n_encoded += n_rows

    @property
    def rows(self) -> int:
        counted = self.counter.value if self.counter is not None else self.n_rows
        # a shard is counted only once encoded: the encoding leads, but where nothing is to
        # encode (a lexical run, LAION's embeddings) or the store held it already
        return max(counted, self.n_encoded)

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            self.bar.update(self.rows - self.bar.n)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join()
            self.bar.update(self.rows - self.bar.n)
            self.bar.close()


# --------------------------------------------------------------------------- worker side


@dataclass(frozen=True)
class _WorkerOptions:
    units_dir: str | None  # None: return the record to the caller instead of writing it
    concept_groups: tuple[tuple[str, str, str], ...]  # (concept, group, category), registry order
    per_caption: bool
    examples_per_concept: int
    max_caption_chars: int
    batch_rows: int
    semantic: Any = None  # clipaudit.coverage_semantic.SemanticOptions of a semantic run


def _concept_groups(registry: Registry) -> tuple[tuple[str, str, str], ...]:
    category = {g.name: g.category for g in registry.groups}
    return tuple((c.name, c.group, category[c.group]) for c in registry.concepts)


_STATE: dict[str, Any] = {}


def _init_worker(matcher: Any, options: _WorkerOptions, counter: Any, parent: int | None) -> None:
    """Per-process set-up (spawn-safe): the matcher arrives built, once per worker."""
    _STATE.update(matcher=matcher, options=options, counter=counter)
    if parent is not None:
        threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    # a worker whose run was killed (kill -9) stops, busy or idle, instead of living on as an orphan
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _process_shard(shard: Shard) -> dict[str, Any]:
    """Match every caption of one shard and write its partial result; returns a short summary
    (with the partial, and the matches file's bytes, when the worker writes nothing itself)."""
    options: _WorkerOptions = _STATE["options"]
    counter = _STATE["counter"]
    clock, cpu_clock = time.perf_counter(), time.process_time()
    units_dir = Path(options.units_dir) if options.units_dir is not None else None
    tally = _ShardTally(_STATE["matcher"], options.examples_per_concept, options.concept_groups)
    semantic = (
        SemanticShard(options.semantic, shard, options.concept_groups)
        if options.semantic is not None
        else None
    )
    matches = (
        _MatchesWriter(units_dir, shard.key, _STATE["matcher"].concept_names)
        if options.per_caption
        else None
    )
    try:
        batches = shard.read(
            max_caption_chars=options.max_caption_chars, batch_rows=options.batch_rows
        )
        for part, batch in enumerate(batches):
            rows, concepts = tally.add(batch)
            if semantic is not None:  # the method's own matches
                rows, concepts = semantic.add(batch, part, rows, concepts)
            if matches is not None:
                matches.write(batch.ids, rows, concepts)
            if counter is not None:
                with counter.get_lock():
                    counter.value += batch.n_rows
        if matches is not None:
            matches.commit()
    finally:
        if matches is not None:
            matches.discard()
    partial = tally.partial(shard)
    if semantic is not None:
        partial["semantic"] = semantic.partial()
    partial["id_is_int"] = matches.id_is_int if matches is not None else None
    partial["seconds"] = round(time.perf_counter() - clock, 3)
    partial["cpu_seconds"] = round(time.process_time() - cpu_clock, 3)
    if units_dir is None:
        data = matches.data if matches is not None else None
        return {"key": shard.key, "n_rows": partial["n_rows"], "record": partial, "matches": data}
    write_unit(units_dir, shard.key, shard.identity, partial)
    return {"key": shard.key, "n_rows": partial["n_rows"]}


class _ShardTally:
    """Counts of one shard, added up batch by batch from the matcher's flat (caption, concept)
    pairs with array operations; only example candidates are looked at one by one."""

    def __init__(
        self,
        matcher: Any,
        examples_per_concept: int,
        concept_groups: Sequence[tuple[str, str, str]],
    ):
        self.match_pairs = matcher.match_pairs
        self.names = matcher.concept_names
        self.k = examples_per_concept
        self.group_names = list(dict.fromkeys(group for _, group, _ in concept_groups))
        self.category_names = list(dict.fromkeys(category for _, _, category in concept_groups))
        self.group_of = np.array([self.group_names.index(g) for _, g, _ in concept_groups])
        self.category_of = np.array([self.category_names.index(c) for _, _, c in concept_groups])
        self.concepts = np.zeros(len(self.names), dtype=np.int64)
        self.groups = np.zeros(len(self.group_names), dtype=np.int64)
        self.categories = np.zeros(len(self.category_names), dtype=np.int64)
        self.n_with_any = 0
        # per concept: the k smallest (crc, caption, id) so far, and the CRC a caption must not
        # exceed to enter (2**32, above any CRC-32, until k are kept)
        self.examples: list[list[tuple[int, str, Any]]] = [[] for _ in self.names]
        self.bar = np.full(len(self.names), 1 << 32, dtype=np.int64)
        self.n_rows = self.n_read = self.n_empty = 0
        self.skipped: Counter[str] = Counter()

    def add(self, batch: Any) -> tuple[np.ndarray, np.ndarray]:
        """Tally one batch; returns its matches as (caption position, concept index) arrays."""
        captions = batch.captions
        # one call per batch: per-caption calls cost more
        rows, concepts = self.match_pairs(captions)
        # a (caption, concept) pair occurs once, but a caption's group or category may recur
        self.concepts += np.bincount(concepts, minlength=len(self.concepts))
        self.groups += captions_per_label(
            rows, self.group_of[concepts], len(captions), len(self.groups)
        )
        self.categories += captions_per_label(
            rows, self.category_of[concepts], len(captions), len(self.categories)
        )
        matched = np.zeros(len(captions), dtype=bool)
        matched[rows] = True
        self.n_with_any += int(np.count_nonzero(matched))
        self.n_empty += captions.count("") + sum(map(str.isspace, captions))
        if self.k:
            self._offer_candidates(captions, batch.ids, np.flatnonzero(matched), rows, concepts)
        self.n_rows += batch.n_rows
        self.n_read += len(captions)
        self.skipped.update(batch.skipped)
        return rows, concepts

    def _offer_candidates(
        self,
        captions: list[str],
        ids: Sequence[Any],
        matched: np.ndarray,
        rows: np.ndarray,
        concepts: np.ndarray,
    ) -> None:
        """Offer the matches whose caption's CRC is within their concept's bar, by concept and
        CRC, so that a concept stops taking captions as soon as it holds k smaller ones
        (``matched``: the positions of the captions with a match, whose CRCs are needed)."""
        crc_of = np.zeros(len(captions), dtype=np.int64)
        crc_of[matched] = caption_crc32s(captions, matched)
        crcs = crc_of[rows]
        chosen = crcs <= self.bar[concepts]
        rows, concepts, crcs = rows[chosen], concepts[chosen], crcs[chosen]
        # corpus order last: the first copy of a caption is offered first and keeps its id
        order = np.lexsort((rows, crcs, concepts))
        for row, index, crc in zip(
            rows[order].tolist(), concepts[order].tolist(), crcs[order].tolist(), strict=True
        ):
            if crc <= self.bar[index]:
                self._offer(index, crc, captions[row], ids[row])

    def _offer(self, index: int, crc: int, caption: str, row_id: Any) -> None:
        """Keep the k distinct captions with the smallest (crc, caption), sorted."""
        kept = self.examples[index]
        if any(text == caption for _, text, _ in kept):
            return  # the first occurrence (corpus order) keeps its id
        bisect.insort(kept, (crc, caption, row_id), key=lambda entry: entry[:2])
        del kept[self.k :]
        if len(kept) == self.k:
            self.bar[index] = kept[-1][0]

    def partial(self, shard: Shard) -> dict[str, Any]:
        def nonzero(names: Sequence[str], counts: np.ndarray) -> dict[str, int]:
            return {
                name: count for name, count in zip(names, counts.tolist(), strict=True) if count
            }

        return {
            "key": shard.key,
            "shard": shard.label,
            "location": shard.location,  # its input: a later count of it replaces this record
            "first_row": shard.first_row,
            "n_rows": self.n_rows,
            "n_captions_read": self.n_read,
            "n_empty": self.n_empty,
            "skipped": dict(sorted(self.skipped.items())),
            "n_with_any_concept": self.n_with_any,
            "concepts": nonzero(self.names, self.concepts),
            "groups": nonzero(self.group_names, self.groups),
            "categories": nonzero(self.category_names, self.categories),
            "examples": {
                self.names[i]: [list(entry) for entry in kept]
                for i, kept in enumerate(self.examples)
                if kept
            },
        }


class _MatchesWriter:
    """One shard's per-caption matches, streamed to a temporary parquet file, renamed when done;
    or, without a folder (``shards_dir`` None), to memory, ``data`` once committed.

    Ids are stored as strings here; the merge turns them back into integers when every shard's
    ids were integers (a jsonl file may mix them)."""

    def __init__(self, shards_dir: Path | None, key: str, concept_names: Sequence[str]):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa = pa
        self.names = pa.array(concept_names, type=pa.string())
        self.schema = pa.schema([("id", pa.string()), ("concepts", pa.list_(pa.string()))])
        self.data: bytes | None = None
        if shards_dir is None:
            self.final = self.tmp = None
            self.sink = pa.BufferOutputStream()
            self.writer = pq.ParquetWriter(self.sink, self.schema)
        else:
            self.final = shards_dir / f"{key}{_MATCHES_SUFFIX}"
            self.tmp = shards_dir / f".{key}{_MATCHES_SUFFIX}.{os.getpid()}.tmp"
            shards_dir.mkdir(parents=True, exist_ok=True)  # the run's first unit makes units/
            self.writer = pq.ParquetWriter(self.tmp, self.schema)
        self.id_is_int = True

    def write(self, ids: Sequence[Any], rows: np.ndarray, concepts: np.ndarray) -> None:
        """Write a batch's rows: ``rows`` and ``concepts`` are its matches, ordered by row."""
        import pyarrow.compute as pc

        pa = self.pa
        try:
            id_array = pa.array(ids)
            id_text = pc.cast(id_array, pa.string())
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            # mixed types, integers past int64, lists, bytes that are no UTF-8: ids as text
            id_array = id_text = pa.array(
                [None if i is None else str(i) for i in ids], type=pa.string()
            )
        if not (pa.types.is_integer(id_array.type) or pa.types.is_null(id_array.type)):
            self.id_is_int = False
        offsets = np.searchsorted(rows, np.arange(len(ids) + 1)).astype(np.int32)
        names = pa.ListArray.from_arrays(offsets, self.names.take(concepts))
        table = pa.table({"id": id_text, "concepts": names})
        self.writer.write_table(table.cast(self.schema))

    def commit(self) -> None:
        self.writer.close()
        if self.tmp is None:
            self.data = self.sink.getvalue().to_pybytes()
        else:
            os.replace(self.tmp, self.final)

    def discard(self) -> None:
        self.writer.close()
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- merging


def _merge(
    out_dir: Path,
    registry: Registry,
    settings: CoverageSettings,
    run: _Dispatch,
    inputs: list[dict[str, Any]],
    folder: RunFolder,
    semantic: SemanticRun | None = None,
) -> CoverageResult:
    """Add up the partials of every planned shard, in corpus order, and write the outputs."""
    totals = {"n_rows": 0, "n_captions_read": 0, "n_empty": 0, "n_with_any_concept": 0}
    skipped: Counter[str] = Counter()
    concepts: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    # (crc, caption, id, input, file): which input a caption came from is known here, not to its
    # shard's record, which the same file reuses wherever it sits among the inputs
    examples: dict[str, list[tuple[int, str, Any, int, str | None]]] = {}
    origins = {
        shard.key: (shard.source, shard_file(run.sources[shard.source], shard))
        for shard in run.finished
    }
    ids_are_int = True
    cpu_seconds = 0.0
    order = []
    merged = semantic.merger() if semantic is not None else None
    for shard in run.finished:
        partial = json.loads(folder.unit_path(shard.key).read_text(encoding="utf-8"))
        order.append([shard.key, partial["n_captions_read"]])
        if merged is not None:  # its rows where they sit now, not where they were counted
            merged.add(
                partial["semantic"], shard.first_row - partial.get("first_row", shard.first_row)
            )
        cpu_seconds += partial["cpu_seconds"]
        for name in totals:
            totals[name] += partial[name]
        skipped.update(partial["skipped"])
        concepts.update(partial["concepts"])
        groups.update(partial["groups"])
        categories.update(partial["categories"])
        for name, found in partial["examples"].items():
            # bounded memory: only the k smallest distinct captions can ever be chosen
            kept = examples.get(name, []) + [
                (crc, text, row_id, *origins[shard.key]) for crc, text, row_id in found
            ]
            examples[name] = _smallest_distinct(kept, settings.examples_per_concept)
        ids_are_int = ids_are_int and partial["id_is_int"] is not False
    rows_counted = totals["n_rows"]  # what the shards' CPU seconds were spent on
    for shard in run.skipped:
        totals["n_rows"] += shard["n_rows"] or 0

    n_read = totals["n_captions_read"]
    columns = _tables(registry, n_read, concepts, groups, categories)
    if merged is not None:
        _add_views(columns, n_read, merged.views, VIEWS[settings.method])
    tables = {name: arrow_table(columns[name]) for name in TABLES}
    for name, table in tables.items():
        write_table(table, out_dir / name)
    example_doc = _examples(registry, settings.examples_per_concept, examples, concepts)
    write_json(out_dir / "examples.json", example_doc)
    outputs = [f"{name}.{fmt}" for name in tables for fmt in ("parquet", "csv")] + ["examples.json"]
    if merged is not None:
        nearest = semantic.nearest_document(
            merged.nearest_captions(run.finished, [origins[s.key] for s in run.finished]),
            registry,
        )
        write_json(out_dir / "nearest.json", nearest)
        outputs.append("nearest.json")
    ids = None
    if settings.per_caption:
        n_read = sum(n for _, n in order)
        ids = _merge_matches(
            folder, run.finished, out_dir / "matches.parquet", ids_are_int, n_read, origins
        )
        outputs.append("matches.parquet")

    by_source: dict[int, set[tuple[str | None, str | None]]] = {}
    for shard in run.finished:
        by_source.setdefault(shard.source, set()).add((shard.column, shard.id_column))
    for index, record in enumerate(inputs):
        used = sorted(by_source.get(index, set()), key=str)
        record["columns"] = [{"caption": c, "id": i or "row number"} for c, i in used]

    manifest = {
        "method": settings.method,
        "profile": settings.profile,
        "concepts_not_counted": concepts_not_counted(registry, settings.profile),
        "options": asdict(settings),
        "registry": registry.provenance(),
        "inputs": inputs,
        **totals,
        "n_skipped": sum(skipped.values()),
        "skipped_reasons": dict(sorted(skipped.items())),
        "n_shards": len(run.finished),
        "units": order,  # corpus order: each shard's key and rows in matches.parquet
        "skipped_shards": run.skipped,
        "rate_denominator": RATE_DENOMINATOR,
        "example_selection": EXAMPLE_SELECTION,
        "id_source": "the input's id column when it has one, else the row number across the corpus",
        # (input, id) names matches.parquet's rows: null ids, and ids repeated within one input,
        # cannot be joined back to the corpus, so they are counted, with the inputs that hold
        # them (None: no per-caption output, whose ids were not checked)
        "ids": ids,
        "timings": {  # of the shards' work in all sessions; count_coverage adds this session's
            "shard_cpu_seconds": round(cpu_seconds, 3),
            "captions_per_cpu_s": round(rows_counted / cpu_seconds, 1) if cpu_seconds else None,
        },
        "outputs": outputs,
    }
    if merged is not None:
        manifest["semantic"] = {
            **semantic.manifest(),
            "n_with_any_concept": {
                view: merged.views.get(view, {}).get("n_with_any_concept", 0)
                for view in VIEWS[settings.method]
            },
            **({"checked": merged.checked} if settings.method == "checked" else {}),
        }
    return CoverageResult(out_dir, tables, example_doc, manifest)


def _tables(
    registry: Registry,
    n_read: int,
    concepts: Counter[str],
    groups: Counter[str],
    categories: Counter[str],
) -> dict[str, dict[str, list[Any]]]:
    """The run's tables as columns (name -> values): per concept, per group, per category."""

    def rate(count: int) -> float:
        return count / n_read if n_read else float("nan")

    category_of = {g.name: g.category for g in registry.groups}
    # the rates of each group's and each category's concepts
    rates: dict[str, dict[str, list[float]]] = {"group": {}, "category": {}}
    for c in registry.concepts:
        for key, name in (("group", c.group), ("category", category_of[c.group])):
            rates[key].setdefault(name, []).append(rate(concepts[c.name]))
    tables = {
        "concepts": {
            "concept": [c.name for c in registry.concepts],
            "group": [c.group for c in registry.concepts],
            "category": [category_of[c.group] for c in registry.concepts],
            "count": [concepts[c.name] for c in registry.concepts],
            "rate": [rate(concepts[c.name]) for c in registry.concepts],
        }
    }

    def summary(key: str, names: Sequence[str], counts: Counter[str]) -> dict[str, list[Any]]:
        # the mean as pandas takes it (numpy's sum, then the division): NaN for no concepts
        members = [np.array(rates[key].get(name, []), dtype=np.float64) for name in names]
        return {
            "count": [counts[name] for name in names],
            "rate": [rate(counts[name]) for name in names],
            "n_concepts": [len(values) for values in members],
            "mean_concept_rate": [
                float(values.sum() / len(values)) if len(values) else float("nan")
                for values in members
            ],
        }

    group_names = [g.name for g in registry.groups]
    tables["groups"] = {
        "group": group_names,
        "category": [category_of[name] for name in group_names],
        **summary("group", group_names, groups),
    }
    category_names = list(registry.categories)
    tables["categories"] = {
        "category": category_names,
        **summary("category", category_names, categories),
    }
    return tables


def _add_views(
    tables: dict[str, dict[str, list[Any]]],
    n_read: int,
    views: dict[str, Any],
    names: Sequence[str],
) -> None:
    """``<view>_count`` and ``<view>_rate`` columns beside the lexical ones, for every table."""
    keys = {"concepts": "concept", "groups": "group", "categories": "category"}
    for view in names:
        found = views.get(view, {})
        for table, key in keys.items():
            columns = tables[table]
            counts = [int(found.get(table, {}).get(name, 0)) for name in columns[key]]
            columns[f"{view}_count"] = counts
            columns[f"{view}_rate"] = [
                count / n_read if n_read else float("nan") for count in counts
            ]


def _smallest_distinct(entries: list[tuple[Any, ...]], k: int) -> list[tuple[Any, ...]]:
    """The ``k`` distinct captions with the smallest (CRC, caption), each entry ``(crc, caption,
    id, ...)`` that of its first occurrence: the sort is stable and entries come in corpus
    order."""
    picked: list[tuple[Any, ...]] = []
    seen: set[str] = set()
    if k <= 0:
        return picked
    for entry in sorted(entries, key=lambda e: (e[0], e[1])):
        if entry[1] not in seen:
            seen.add(entry[1])
            picked.append(entry)
            if len(picked) == k:
                break
    return picked


def _examples(
    registry: Registry,
    k: int,
    found: dict[str, list[tuple[int, str, Any, int, str | None]]],
    counts: Counter[str],
) -> dict[str, Any]:
    chosen: dict[str, Any] = {}
    for concept in registry.concepts:
        picked = [
            {"input": source, "file": file, "id": row_id, "caption": text}
            for _, text, row_id, source, file in _smallest_distinct(found.get(concept.name, []), k)
        ]
        chosen[concept.name] = {
            "group": concept.group,
            "count": counts[concept.name],
            "examples": picked,
        }
    return {"examples_per_concept": k, "selection": EXAMPLE_SELECTION, "concepts": chosen}


def _merge_matches(
    folder: RunFolder,
    planned: list[Shard],
    target: Path,
    ids_are_int: bool,
    n_rows: int,
    origins: dict[str, tuple[int, str | None]],
) -> dict[str, Any]:
    """Concatenate the shards' matches files in corpus order, streaming (bounded memory), into
    ``matches.parquet`` (:func:`_split_matches` gets them back), each row with its input (index
    into the manifest's inputs) and file (``origins``, per shard key: the shards' own files leave
    them out, as a shard may sit elsewhere among the inputs next time). The shards' own files are
    removed once the manifest lists the merge (:func:`count_coverage`): a kill in between keeps
    them. Returns its rows whose id is null, and whose id an earlier row of the same input has,
    and the inputs holding them (:class:`_IdTally`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    id_type = pa.int64() if ids_are_int else pa.string()
    schema = pa.schema(
        [
            ("input", pa.int32()),
            ("file", pa.string()),
            ("id", id_type),
            ("concepts", pa.list_(pa.string())),
        ]
    )
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tally = _IdTally(folder.path, id_type, n_rows)
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for shard in planned:
                part = folder.unit_path(shard.key, _MATCHES_SUFFIX)
                source, file = origins[shard.key]
                try:
                    with pq.ParquetFile(part) as handle:
                        for batch in handle.iter_batches(columns=["id", "concepts"]):
                            n = batch.num_rows
                            table = pa.table(
                                {
                                    "input": pa.repeat(pa.scalar(source, pa.int32()), n),
                                    "file": pa.repeat(pa.scalar(file, pa.string()), n),
                                    "id": batch.column("id"),
                                    "concepts": batch.column("concepts"),
                                }
                            ).cast(schema)
                            writer.write_table(table)
                            tally.add(table.column("id").combine_chunks(), source)
                except (OSError, ValueError) as exc:  # a data page damaged by hand: whole footer
                    why = whole_line(exc, 200)  # arrow's messages span lines
                    raise RunFolderError(
                        f"{part} cannot be read ({type(exc).__name__}: {why}); the run "
                        "folder is damaged: delete that file and run the same command again to "
                        "count its shard again"
                    ) from None
        counts = tally.counts()
        os.replace(tmp, target)
        return counts
    finally:
        tmp.unlink(missing_ok=True)
        tally.close()


_IDS_PER_BUCKET = 1 << 24  # ids whose distinct values are counted at once (memory)


class _IdTally:
    """The null ids of matches.parquet and its repeated ones (rows whose id an earlier row of the
    same input has: rows are named by (input, id), and inputs numbered alike are no repeats),
    counted as it is written in bounded memory, as it may hold a whole corpus: the ids are spread
    by their hash over temporary files of at most about :data:`_IDS_PER_BUCKET` ids, where all
    copies of one id land together, and each file's distinct (input, id) pairs are counted
    alone."""

    def __init__(self, folder: Path, id_type: Any, n_rows: int):
        import pyarrow as pa

        self.pa = pa
        self.n_buckets = max(1, -(-n_rows // _IDS_PER_BUCKET))
        self.n_null = self.n_valid = 0
        self.flawed: set[int] = set()  # inputs with a null or repeated id
        schema = pa.schema([("input", pa.int32()), ("id", id_type)])
        # named as atomic writes' temporary files are: a killed run's are removed by the next
        self.paths = [folder / f".matches-ids-{i}.{os.getpid()}.tmp" for i in range(self.n_buckets)]
        self.writers = [pa.ipc.new_file(str(path), schema) for path in self.paths]

    def add(self, ids: Any, source: int) -> None:
        """Tally ``ids``, all of input ``source``."""
        if ids.null_count:
            self.n_null += ids.null_count
            self.flawed.add(source)
        ids = ids.drop_null()
        self.n_valid += len(ids)
        inputs = self.pa.repeat(self.pa.scalar(source, self.pa.int32()), len(ids))
        if self.n_buckets == 1:
            self.writers[0].write_batch(self.pa.record_batch([inputs, ids], ["input", "id"]))
            return
        if self.pa.types.is_integer(ids.type):  # multiplicative hashing: even patterned ids spread
            spread = ids.to_numpy().view(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
            buckets = (spread >> np.uint64(32)) % np.uint64(self.n_buckets)
        else:  # text: its CRC-32, computed in C
            texts = ids.to_pylist()
            buckets = caption_crc32s(texts, np.arange(len(texts))) % self.n_buckets
        for bucket in np.unique(buckets).tolist():
            chosen = self.pa.array(buckets == bucket)
            batch = [inputs.filter(chosen), ids.filter(chosen)]
            self.writers[bucket].write_batch(self.pa.record_batch(batch, ["input", "id"]))

    def counts(self) -> dict[str, Any]:
        for writer in self.writers:
            writer.close()
        n_repeated = 0
        for path in self.paths:
            with self.pa.memory_map(str(path)) as source:
                table = self.pa.ipc.open_file(source).read_all()
            inputs, ids = table.column("input"), table.column("id")
            if self.pa.types.is_integer(ids.type):  # sorting beats Arrow's hash on ints
                input_values, id_values = inputs.to_numpy(), ids.to_numpy()
                order = np.lexsort((id_values, input_values))
                input_values, id_values = input_values[order], id_values[order]
                again = (np.diff(input_values) == 0) & (np.diff(id_values) == 0)
                repeated = input_values[1:][again]
            else:  # each distinct (input, id) and how many rows hold it
                pairs = table.group_by(["input", "id"]).aggregate([([], "count_all")])
                extra = pairs.column("count_all").to_numpy() - 1
                repeated = np.repeat(pairs.column("input").to_numpy(), extra)
            n_repeated += len(repeated)
            self.flawed.update(np.unique(repeated).tolist())
        return {
            "n_null": self.n_null,
            "n_repeated": n_repeated,
            "inputs": sorted(self.flawed),
        }

    def close(self) -> None:
        for writer, path in zip(self.writers, self.paths, strict=True):
            with contextlib.suppress(self.pa.ArrowException):
                writer.close()  # closed already when counted
            path.unlink(missing_ok=True)


def _parquet_rows(path: Path) -> int | None:
    """The rows a parquet file's footer lists; None when it is missing or unreadable."""
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as handle:
            return handle.metadata.num_rows
    except (OSError, ValueError):  # pyarrow's ArrowInvalid is a ValueError
        return None


def _merged_units(folder: RunFolder) -> list[tuple[str, int]]:
    """The shards (key, rows) whose matches the earlier complete run merged into
    matches.parquet, in its order; none when that file is missing, unreadable, or does not hold
    the rows its manifest lists (damaged by hand), or the list is not one of (key, rows)."""
    order = (folder.previous or {}).get("units")
    if not isinstance(order, list) or not all(
        isinstance(unit, list)
        and len(unit) == 2
        and isinstance(unit[0], str)
        and isinstance(unit[1], int)
        for unit in order
    ):
        return []
    order = [(key, n_rows) for key, n_rows in order]
    if _parquet_rows(folder.path / "matches.parquet") != sum(n for _, n in order):
        return []
    return order


def _split_matches(folder: RunFolder) -> None:
    """Give the shards of an earlier complete run their matches files back from
    ``matches.parquet`` (cut by the rows each shard read), so that a run whose inputs changed
    recounts only the changed shards."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    merged = folder.path / "matches.parquet"
    order = _merged_units(folder)
    if not order:  # none, or left by a killed merge, or damaged: its shards were counted again
        merged.unlink(missing_ok=True)
        return
    with pq.ParquetFile(merged) as handle:
        # a shard's own file holds ids and concepts; its input and file are added by the merge
        batches = handle.iter_batches(columns=["id", "concepts"])
        schema = pa.schema([handle.schema_arrow.field(name) for name in ("id", "concepts")])
        pending: pa.Table = pa.table({"id": [], "concepts": []}, schema=schema)
        for key, n_rows in order:
            while pending.num_rows < n_rows:
                pending = pa.concat_tables([pending, pa.Table.from_batches([next(batches)])])
            target = folder.unit_path(key, _MATCHES_SUFFIX)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            pq.write_table(pending.slice(0, n_rows), tmp)
            os.replace(tmp, target)
            pending = pending.slice(n_rows)
    merged.unlink()

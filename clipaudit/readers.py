"""Caption sources, cut into shards of resumable work and read in bounded record batches.

A source is what the user names on the command line:

- a ``.parquet`` file, or a folder of shards (all its parquet files, found recursively and sorted
  by relative path; a folder without parquet files is read as its ``.jsonl`` files, then its
  ``.txt`` files). Parquet is read with pyarrow in record batches of only the needed columns;
- a ``.jsonl`` file (one JSON object per line) or a ``.txt`` file (one caption per line);
- a folder written by ``datasets.Dataset.save_to_disk`` (read by row ranges through ``datasets``);
- ``hf:NAME`` or ``hf:NAME:CONFIG``: a Hugging Face dataset by hub name or local path, read through
  ``datasets.load_dataset(..., streaming=True)``; the main process streams it in fixed-size chunks
  and hands them to the workers (a resumed run streams it again, skipping the finished chunks).
  A hub dataset is read at the commit its name resolves to when the run starts, which the
  manifest records; a local one's data files are recorded as a folder's;
- a URL (``s3://``, ``gs://``, ``hf://datasets/...``, ``file://``, or a scheme registered in
  :mod:`clipaudit.filesystems`) of a parquet, jsonl or txt file or of a folder of them, read through
  pyarrow's filesystems, by the workers wherever they run.

A shard is one unit of work a worker process can do alone: a run of a parquet file's row groups,
a byte range of a text file holding whole lines, a row range of a saved dataset, or one streamed
chunk. Every shard knows the global row number of its first row, so a caption's row number across
the whole corpus (its id when the input has no id column) does not depend on how work is spread.
Its ``identity`` is what it reads (its file's size, time and edge hash, its rows, its columns) and
its ``key`` a file name made from that, so a run folder recounts exactly the shards whose input
changed, whatever else was added or removed. Without an id column a shard's ids are row numbers
across the corpus, so its identity holds its first row too: a shard added or removed before it
makes it count again (its captions' ids moved). A streamed chunk is known by a hash of what it
holds; copies of one file at other paths are units of their own, and one file named twice is
refused.

Reading never crashes on a bad caption: null, missing, non-string, non-UTF-8 and over-long
values are counted by reason (:data:`SKIP_REASONS`) and left out; empty strings are kept (they are
captions that mention nothing). Text files are read as UTF-8 (a UTF-8 byte-order mark is dropped);
one that starts with a UTF-16 or UTF-32 byte-order mark, or whose start shows a one-byte encoding
(Windows-1252, Latin-1), is refused, as a bad shard, not counted as garbage.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import compress
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clipaudit.errors import InputError, did_you_mean, one_line
from clipaudit.filesystems import (
    cached_footer,
    display_url,
    network_error,
    remote_file_records,
    resolve_url,
    url_scheme,
)
from clipaudit.provenance import file_identity, file_record
from clipaudit.runs import (
    MANIFEST,
    manifest_run_kind,
    run_folder_kind,
    run_given_as_captions,
    unit_key,
)
from clipaudit.text import WIDE_BOMS, counted

CAPTION_COLUMNS = ("caption", "TEXT", "text")  # tried in order when no column is named
ID_COLUMNS = ("id", "key", "SAMPLE_ID")  # LAION-400M metadata calls it SAMPLE_ID, img2dataset key
SKIP_REASONS = ("null", "missing", "not_string", "not_utf8", "too_long", "bad_json")
HF_PREFIX = "hf:"

_KINDS_BY_SUFFIX = {".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "txt"}
_FOLDER_KIND_ORDER = ("parquet", "jsonl", "txt")
_FILE_KINDS = frozenset(_FOLDER_KIND_ORDER)  # a shard of one of them reads part of one file
_SKIP_BAD_HINT = "fix or remove the file, or pass --skip-bad to count and list bad shards instead"
_SAVED_HINT = (
    "save the dataset again with save_to_disk or remove the folder, or pass --skip-bad to count "
    "and list bad shards instead"
)
_TEXT_BLOCK_BYTES = 1 << 22
_UTF8_BOM = b"\xef\xbb\xbf"
_GZIP_MAGIC = b"\x1f\x8b"
# how a column is chosen, in the words of both callers: the command line and the Python API
_COLUMN_OPTION = "--column, or column= in Python"
_ID_COLUMN_OPTION = "--id-column, or id_column= in Python"
_TEXT_HEAD_BYTES = 1 << 16  # a text file's start, checked by _refuse_unreadable_text
_LEGACY_LINES = 5  # this many non-ASCII lines, none of them UTF-8, are no stray damage
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zip")
_TABLE_SUFFIXES = (".csv", ".tsv")  # not read: named with the fix when given
_COMPRESSED = "compressed"  # a folder's compressed caption files, as a kind never read
_TABLE = "table"  # a folder's CSV and TSV files, as a kind never read
_PATTERN = re.compile(r"[*?]|\[[^]]+\]|\{[^}]*(,|\.\.)[^}]*\}")  # a glob's or a brace pattern's
_COMMIT = re.compile(r"[0-9a-f]{40}")  # a git commit's hash, as the hub names revisions


class BadShardError(InputError):
    """A shard cannot be read (truncated or corrupt file); ``--skip-bad`` skips such shards."""

    def __init__(self, label: str, reason: str, hint: str = _SKIP_BAD_HINT):
        super().__init__(f"{label}: {reason}; {hint}")
        self.label = label
        self.reason = reason
        self.hint = hint

    def __reduce__(self) -> tuple[Any, ...]:
        # exceptions cross process boundaries by pickling; rebuild from the constructor arguments
        return (type(self), (self.label, self.reason, self.hint))


class ConnectionLostError(InputError):
    """Reading a shard stopped part-way on the network's error, not the file's (a connection reset
    or refused, a timeout, an HTTP client's own error): ``--skip-bad`` does not skip it, and a
    rerun resumes after the shards that finished."""

    def __init__(self, label: str, reason: str):
        super().__init__(
            f"{label}: reading stopped ({reason}); the file may be fine: check the network and "
            "run the same command again, which resumes after the shards that finished"
        )
        self.label = label
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.label, self.reason))


@contextmanager
def _reading(label: str, filesystem: Any) -> Iterator[None]:
    """Errors met reading a file, as the shard's: the network's (a remote file) as
    ConnectionLostError, a file that cannot be opened or read (removed since it was listed, not
    readable) as BadShardError; ours pass through."""
    try:
        yield
    except InputError:
        raise
    except Exception as exc:
        if filesystem is not None and network_error(exc):
            raise ConnectionLostError(label, one_line(exc)) from None
        if not isinstance(exc, OSError):
            raise
        raise BadShardError(label, f"cannot be read ({one_line(exc)})") from None


@dataclass(frozen=True)
class Source:
    """One input as the user named it, resolved to its kind and files (corpus order)."""

    spec: str
    kind: str  # parquet | jsonl | txt | hf_disk | hf_stream
    files: tuple[Path, ...] | tuple[str, ...] = ()  # paths inside ``filesystem`` for a URL
    root: Path | None = None  # a folder source; for a saved dataset, the folder of its split
    split: str | None = None  # a Hugging Face dataset's split (None: a saved single Dataset)
    filesystem: Any = field(default=None, repr=False, compare=False)  # a URL's; None: local
    scheme: str | None = None  # a URL's scheme
    # a folder's caption files of other kinds than the one it reads (relative paths), not read
    left_out: tuple[str, ...] = ()

    def name(self, path: Path | str) -> str:
        """How one of its files is named in messages, labels and manifests."""
        return display_url(self.scheme, str(path)) if self.scheme else str(path)


@dataclass(frozen=True)
class Shard:
    """A unit of work: which rows of which input, and where they sit in the corpus."""

    key: str  # stable name from its identity, also the name of its unit record
    source: int  # index of its Source
    kind: str
    location: str  # file path, saved-dataset folder, or hub name
    label: str  # for messages: file and part
    column: str | None  # caption column (None for txt)
    id_column: str | None
    first_row: int  # global row number of the shard's first row
    n_rows: int
    start: int = 0  # parquet: first row group; txt/jsonl: byte offset; hf_disk: first row
    stop: int = 0  # parquet: row group after the last; txt/jsonl: byte offset; hf_disk: row
    payload: tuple[list[Any], list[Any] | None] | None = field(
        default=None, repr=False, compare=False
    )
    identity: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    filesystem: Any = field(default=None, repr=False, compare=False)  # a URL's; None: local

    def read(self, *, max_caption_chars: int, batch_rows: int) -> Iterator[CaptionBatch]:
        """The shard's captions in batches of valid text; raises BadShardError when unreadable,
        ConnectionLostError when a remote file's reading stopped on the network's error."""
        raw = _RAW_READERS[self.kind](self, batch_rows)
        row = self.first_row
        try:
            self._check_unchanged()
            for values, ids, skipped in raw:
                yield _clean(values, ids, row, skipped, max_caption_chars)
                row += len(values)
            self._check_unchanged()  # and not rewritten while it was read
        except Exception as exc:
            if self.filesystem is None or not network_error(exc):
                raise
            raise ConnectionLostError(self.label, one_line(exc)) from None

    def _check_unchanged(self) -> None:
        """Raise BadShardError when the shard's file is not the one planned: a file rewritten
        since, or still being written, would be read by the planned row groups or byte ranges as
        other rows, counted under the identity of the file planned. A local file is compared by
        content (size and the hash of its edges, as its identity has them), not by time: a Ray
        node's copy made without the times reads; a URL's file by size and time, the store's.
        Saved datasets and streamed chunks have no file of their own."""
        planned = self.identity.get("content")
        if self.kind not in _FILE_KINDS or not isinstance(planned, dict):
            return
        with _reading(self.label, self.filesystem):
            if self.filesystem is None:
                stat = os.stat(self.location)
                if (stat.st_size, stat.st_mtime_ns) == (
                    planned.get("bytes"),
                    planned.get("mtime_ns"),
                ):
                    return  # as planned, by a stat alone: the edges' hash is read only otherwise
                now = file_record(self.location)
                compared = ("bytes", "edges_blake2b")
            else:
                info = self.filesystem.get_file_info(self.location)
                if info.size is None:  # gone (pyarrow's NotFound has no size)
                    raise FileNotFoundError(f"no file at {self.location}")
                now = {"bytes": info.size, "mtime_ns": info.mtime_ns}
                compared = ("bytes", "mtime_ns")
        changes = [
            f"{key} {planned[key]} then, {now[key]} now"
            for key in compared
            if None not in (planned.get(key), now[key]) and planned[key] != now[key]
        ]
        if changes:
            raise BadShardError(
                self.label,
                f"the file changed since the run was planned ({'; '.join(changes)})",
                "run the same command again once nothing writes to it: finished shards are "
                "kept, and the changed file is counted anew; or pass --skip-bad to count and "
                "list bad shards instead",
            )


def shard_file(source: Source, shard: Shard) -> str | None:
    """The file ``shard`` reads, as the manifest's record of ``source`` names it (a URL's as its
    URL); None for a dataset (saved or streamed), whose rows are known by no file of their own."""
    return source.name(shard.location) if shard.kind in _FILE_KINDS else None


@dataclass(frozen=True)
class SkippedShard:
    """A shard that could not even be opened while planning (``skip_bad``): counted, not read."""

    key: str
    source: int
    label: str
    reason: str
    n_rows: int | None = None


@dataclass
class CaptionBatch:
    """Valid captions of consecutive rows, with their ids, and what was skipped and why."""

    captions: list[str]
    ids: Sequence[Any]  # the id column's values, else global row numbers
    n_rows: int
    skipped: Counter[str]
    rows: Sequence[int] = ()  # each caption's row number across the corpus (skipped rows count)


# --------------------------------------------------------------------------- sources


def resolve_sources(
    specs: Iterable[str | Path], *, hf_split: str = "train", exclude: Path | None = None
) -> list[Source]:
    """Check that every named source exists and expand folders; raises InputError naming the first
    one that does not. ``exclude``: a folder whose files a folder source leaves out (the run's
    own folder, when it sits inside the corpus folder: its outputs are no captions)."""
    sources = []
    for spec in specs:
        text = str(spec)
        scheme = url_scheme(text) if isinstance(spec, str) else None
        if scheme is not None:
            sources.append(_url_source(text, scheme))
            continue
        if text.startswith(HF_PREFIX):
            if not text[len(HF_PREFIX) :].strip():
                raise InputError(f"{text!r}: expected hf:NAME or hf:NAME:CONFIG after 'hf:'")
            sources.append(Source(spec=text, kind="hf_stream", split=hf_split))
            continue
        path = Path(text)
        if not path.exists():
            raise InputError(
                f"caption source {text!r} does not exist"
                + _pattern_hint(text, "let the shell expand it (leave it unquoted)")
                + "; expected a .parquet, .jsonl or .txt file, a folder of them, a dataset folder "
                "saved by datasets' save_to_disk, or hf:NAME for a Hugging Face dataset"
            )
        if path.is_dir():
            sources.append(_folder_source(text, path, hf_split, exclude))
        elif path.suffix.lower() in _KINDS_BY_SUFFIX:
            sources.append(
                Source(spec=text, kind=_KINDS_BY_SUFFIX[path.suffix.lower()], files=(path,))
            )
        else:
            raise InputError(
                f"caption source {text!r}: unknown file type {path.suffix!r}; expected "
                f"{', '.join(_KINDS_BY_SUFFIX)} (or a folder, or hf:NAME)"
                + _not_read_hint(path.suffix)
            )
    if not sources:
        raise InputError("no caption source given; name at least one file, folder or hf:NAME")
    _refuse_repeats(sources)
    return sources


def _pattern_hint(spec: str, other_fix: str) -> str:
    """What to add to "does not exist" when the missing source is a glob or brace pattern, which
    is read as a name (a folder names its files)."""
    if not _PATTERN.search(spec):
        return ""
    return (
        ": patterns (* ? [...] {a,b} {0..9}) are not expanded here; name the folder, whose "
        f"caption files are all read, or {other_fix}"
    )


def _not_read_hint(suffix: str) -> str:
    """The fix to add to an unknown file type's message when the suffix is a compressor's, or a
    delimited table's (a CSV's quoted captions may span lines, which line shards would cut)."""
    if suffix.lower() in COMPRESSED_SUFFIXES:
        return "; compressed files are not read: decompress it first (e.g. gunzip -k FILE)"
    if suffix.lower() in _TABLE_SUFFIXES:
        # the caption columns read as text, and only an empty field as missing: pandas' defaults
        # make captions such as "None", "NA" or "null" missing and "1984" a number
        return (
            "; CSV and TSV files are not read: convert it to parquet first (e.g. python -c "
            "\"import pandas as p; p.read_csv('IN', sep=None, engine='python', "
            f"encoding='utf-8-sig', dtype=dict.fromkeys({CAPTION_COLUMNS!r}, str), "
            "keep_default_na=False, na_values=['']).to_parquet('OUT.parquet')\")"
        )
    return ""


def _refuse_repeats(sources: Sequence[Source]) -> None:
    """A file named twice (twice over, alone and inside a folder also named, by path and by
    ``file://`` URL, by ``gs://`` and ``gcs://``) would be counted twice: refused, as is a link to
    a file also read (in a folder, a link beside its target). Copies of one file at other paths
    are other captions, and count."""
    # where a file is -> (its filesystem, None for a local file; the source's spec; its path)
    first: dict[str, list[tuple[Any, str, str]]] = {}
    for source in sources:
        if source.kind == "hf_stream":
            continue
        local = source.filesystem is None or _local_filesystem(source.filesystem)
        for path in source.files:
            where = str(Path(path).resolve()) if local else str(path).strip("/")
            filesystem = None if local else source.filesystem
            same = first.setdefault(where, [])
            earlier = next((e for e in same if _same_filesystem(e[0], filesystem)), None)
            if earlier is None:
                same.append((filesystem, source.spec, str(path)))
                continue
            _, spec, other = earlier
            # a local file spelled two ways (a file:// URL, "a/../a") is named twice, not linked
            if not local or os.path.abspath(other) == os.path.abspath(path):
                raise InputError(
                    f"caption file {source.name(path)!r} is named twice (as {spec!r} and "
                    f"{source.spec!r}); name each file or folder once"
                )
            raise InputError(
                f"caption file {str(path)!r} (in {source.spec!r}) is the same file as "
                f"{other!r} (in {spec!r}), through a link, so its captions would be counted "
                "twice; remove the link, or name the files to count"
            )


def _local_filesystem(filesystem: Any) -> bool:
    import pyarrow.fs as pafs

    return isinstance(filesystem, pafs.LocalFileSystem)


def _same_filesystem(one: Any, other: Any) -> bool:
    """Whether two sources' filesystems are one store (None: the local one); pyarrow compares
    their options (an S3 endpoint, a hub client's settings)."""
    if one is None or other is None:
        return one is other
    return one.equals(other)


def _folder_source(spec: str, folder: Path, hf_split: str, exclude: Path | None) -> Source:
    if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
        data_dir = _saved_split_dir(folder, hf_split)
        files = _saved_files(data_dir)
        split = hf_split if data_dir != folder else None
        return Source(spec=spec, kind="hf_disk", files=files, root=data_dir, split=split)
    by_kind: dict[str, list[Path]] = {}
    excluded = exclude.resolve() if exclude is not None else None
    for path in _folder_files(spec, folder):
        if excluded is not None and path.resolve().is_relative_to(excluded):
            continue
        kind = _file_kind(path.name)
        if kind is not None:
            by_kind.setdefault(kind, []).append(path)

    def named(path: Path) -> str:
        return path.relative_to(folder).as_posix()

    picked = _one_kind(by_kind, named)
    if picked is not None:
        kind, files, left_out = picked
        return Source(spec=spec, kind=kind, files=files, root=folder, left_out=left_out)
    raise InputError(
        f"folder {spec!r} holds no caption files"
        + _unread_only(by_kind, named)
        + "; expected .parquet shards (or .jsonl or .txt files), or a dataset saved by datasets' "
        "save_to_disk"
    )


def _folder_files(spec: str, folder: Path) -> Iterator[Path]:
    """The files of a folder and its subfolders, but hidden ones (temporary files, caches) and
    those of hidden folders and of clipaudit run folders; links to folders are not followed. A
    folder that cannot be listed (permission denied) is an InputError naming it: pathlib's rglob
    passes over one, which would leave its shards out of the corpus unsaid."""

    def refuse(error: OSError) -> None:
        raise InputError(
            f"folder {spec!r}: cannot list {error.filename!r} ({one_line(error)}), so its caption "
            "files would be left out; make it readable (e.g. chmod -R a+rX FOLDER) or move it out "
            "of the folder"
        )

    for root, folders, files in os.walk(folder, onerror=refuse):
        # a clipaudit run inside (an audit written into the folder it counts) holds tables and
        # staged captions of its own, never the corpus's
        folders[:] = [
            name
            for name in folders
            if not name.startswith(".") and run_folder_kind(Path(root) / name) is None
        ]
        for name in files:
            path = Path(root) / name
            if not name.startswith(".") and path.is_file():
                yield path


def _url_source(url: str, scheme: str) -> Source:
    """A file or folder named by URL, listed through its filesystem."""
    import pyarrow.fs as pafs

    filesystem, path = resolve_url(url)
    try:
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            listed = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
        else:
            listed = []
    except Exception as exc:  # pyarrow's errors, or a hub client's own (httpx): all "unreadable"
        raise InputError(
            f"caption source {url!r} cannot be read ({one_line(exc)}); check the URL, the "
            f"network and the credentials of {scheme}://"
        ) from None
    if info.type == pafs.FileType.File:
        kind = _KINDS_BY_SUFFIX.get(Path(path).suffix.lower())
        if kind is None:
            raise InputError(
                f"caption source {url!r}: unknown file type {Path(path).suffix!r}; expected "
                f"{', '.join(_KINDS_BY_SUFFIX)} (or a folder of them)"
                + _not_read_hint(Path(path).suffix)
            )
        return Source(spec=url, kind=kind, files=(path,), filesystem=filesystem, scheme=scheme)
    if info.type != pafs.FileType.Directory:
        raise InputError(
            f"caption source {url!r} does not exist"
            + _pattern_hint(path, "name each file")  # the path: a URL's query holds "?"
            + "; expected a .parquet, .jsonl or .txt file or a folder of them at that URL"
        )
    base = path.strip("/")

    def relative(entry_path: str) -> str:  # some filesystems list "/a/b" under "a"
        return entry_path.strip("/")[len(base) :].lstrip("/")

    runs = _url_run_folders(url, filesystem, listed, relative)
    by_kind: dict[str, list[str]] = {}
    for entry in listed:
        parts = relative(entry.path).split("/")
        if entry.type != pafs.FileType.File or any(p.startswith(".") for p in parts):
            continue  # hidden files and folders: temporary files, caches
        if any("/".join(parts[:depth]) in runs for depth in range(1, len(parts))):
            continue  # a clipaudit run synced into the folder, as a local folder's
        kind = _file_kind(Path(entry.path).name)
        if kind is not None:
            by_kind.setdefault(kind, []).append(entry.path)
    picked = _one_kind(by_kind, relative)
    if picked is not None:
        kind, files, left_out = picked
        return Source(
            spec=url,
            kind=kind,
            files=files,
            filesystem=filesystem,
            scheme=scheme,
            left_out=left_out,
        )
    raise InputError(
        f"folder {url!r} holds no caption files"
        + _unread_only(by_kind, relative)
        + "; expected .parquet shards (or .jsonl or .txt files)"
    )


def _url_run_folders(
    url: str, filesystem: Any, listed: Sequence[Any], relative: Callable[[str], str]
) -> set[str]:
    """The folders (relative to ``url``) that hold a clipaudit run, read from their manifests;
    a ``url`` that is itself a run's folder is refused as a local one is."""
    import pyarrow.fs as pafs

    runs = set()
    for entry in listed:
        folder, _, name = relative(entry.path).rpartition("/")
        if name != MANIFEST or entry.type != pafs.FileType.File:
            continue
        try:
            with filesystem.open_input_stream(entry.path) as stream:
                kind = manifest_run_kind(stream.read(1 << 20))  # a run's manifest is small
        except Exception:  # an unreadable manifest is another tool's file: its folder is read
            continue
        if kind is not None and not folder:
            raise run_given_as_captions(url, kind)
        if kind is not None:
            runs.add(folder)
    return runs


def _file_kind(name: str) -> str | None:
    """A folder's file as a caption file: its kind, ``compressed`` for a compressed caption file
    (``part-0.jsonl.gz``: never read, so listed as left out, not passed over unsaid), ``table``
    for a CSV or TSV file (never read; named with the fix when the folder holds nothing else), or
    None."""
    path = Path(name)
    kind = _KINDS_BY_SUFFIX.get(path.suffix.lower())
    if kind is None and path.suffix.lower() in COMPRESSED_SUFFIXES:
        return _COMPRESSED if Path(path.stem).suffix.lower() in _KINDS_BY_SUFFIX else None
    if kind is None and path.suffix.lower() in _TABLE_SUFFIXES:
        return _TABLE
    return kind


def _unread_only(by_kind: dict[str, list[Any]], relative: Callable[[Any], str]) -> str:
    """What to add to "holds no caption files" when the folder holds caption files of kinds that
    are never read (compressed ones, tables): which, and the fix."""
    packed = sorted(relative(path) for path in by_kind.get(_COMPRESSED, []))
    if packed:
        return (
            f" it can read: {counted(len(packed), 'is compressed', 'are compressed')} (e.g. "
            f"{packed[0]}), which {'is' if len(packed) == 1 else 'are'} not read; decompress "
            f"{'it' if len(packed) == 1 else 'them'} first (e.g. gunzip -k FILE)"
        )
    tables = sorted(relative(path) for path in by_kind.get(_TABLE, []))
    if tables:
        said = counted(len(tables), "is a CSV or TSV table", "are CSV or TSV tables")
        return f" it can read: {said} (e.g. {tables[0]})" + (_not_read_hint(Path(tables[0]).suffix))
    return ""


def _one_kind(
    by_kind: dict[str, list[Any]], relative: Callable[[Any], str]
) -> tuple[str, tuple[Any, ...], tuple[str, ...]] | None:
    """A folder reads one kind of caption file, the first of :data:`_FOLDER_KIND_ORDER` it holds
    (a README.txt beside parquet shards is no caption file): that kind, its files in path order,
    and the other kinds' files (relative paths), which are left out and said so."""
    kind = next((kind for kind in _FOLDER_KIND_ORDER if kind in by_kind), None)
    if kind is None:
        return None
    # tables beside caption files are more often their metadata (stats, urls) than captions
    others = [
        relative(path)
        for other, paths in by_kind.items()
        if other not in (kind, _TABLE)
        for path in paths
    ]
    return kind, tuple(sorted(by_kind[kind], key=relative)), tuple(sorted(others))


def _saved_files(folder: Path) -> tuple[Path, ...]:
    """The arrow files of a saved dataset, as its ``state.json`` names them: one saved again into
    the same folder with fewer shards leaves the others there, read by nothing. All of the
    folder's arrow files when the state is unreadable or names others (the planner reports a
    damaged folder); names are taken only as files of the folder (the state is untrusted)."""
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        names = [entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, LookupError, TypeError):  # missing, not JSON, another shape
        names = []
    if names and all(
        isinstance(name, str) and Path(name).name == name and (folder / name).is_file()
        for name in names
    ):
        return tuple(folder / name for name in names)
    return tuple(sorted(folder.glob("*.arrow")))


def _saved_split_dir(folder: Path, split: str) -> Path:
    dict_file = folder / "dataset_dict.json"
    if not dict_file.is_file():
        return folder
    try:
        splits = json.loads(dict_file.read_text(encoding="utf-8")).get("splits", [])
    except (ValueError, AttributeError):  # not JSON, or not an object
        splits = None
    if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits):
        raise InputError(
            f"{str(dict_file)!r} is not a datasets split list (expected JSON like "
            '{"splits": ["train"]}); save the dataset again with save_to_disk'
        )
    if split not in splits:
        raise InputError(
            f"saved dataset {str(folder)!r} has no split {split!r}{did_you_mean(split, splits)}; "
            f"its splits are {', '.join(splits)} (choose one with --split; --caption-split in clipaudit audit)"
        )
    return folder / split


def describe_source(source: Source, *, checksum: bool = False) -> dict[str, Any]:
    """What a manifest records about a source: kind and files with their identities
    (:func:`clipaudit.provenance.file_record`; sha256 too with ``checksum``) and, for a local
    path given relative, its absolute path (``absolute``); a streamed
    dataset (``hf:``): name, config, split and which version of it is read
    (:func:`_stream_version`)."""
    record: dict[str, Any] = {"spec": source.spec, "kind": source.kind}
    if source.kind != "hf_stream" and source.scheme is None and not Path(source.spec).is_absolute():
        # index and query read a run's inputs again, from whatever directory they are run in
        record["absolute"] = str(Path(source.spec).absolute())
    if source.left_out:
        record["left_out"] = list(source.left_out)
    if source.kind == "hf_stream":
        name, config = _hf_name(source)
        record.update(name=name, config=config, split=source.split)
        record.update(_stream_version(name, config, source.split, checksum))
    else:
        if source.kind == "hf_disk":
            record["split"] = source.split
        if source.filesystem is not None:  # concurrently: each file costs a round trip or two
            paths = [str(path) for path in source.files]
            urls = [source.name(path) for path in paths]
            record["files"] = remote_file_records(source.filesystem, paths, urls, checksum=checksum)
        else:
            record["files"] = [_local_record(path, checksum) for path in source.files]
    return record


def _local_record(path: Path | str, checksum: bool) -> dict[str, Any]:
    """A local file's :func:`clipaudit.provenance.file_record`, or, for one that cannot be read
    (permission denied, removed since its folder was listed), the path and why: the planner
    then reports the file as a bad shard (skipped and listed with ``skip_bad``), as it would a
    file it cannot open, instead of the run stopping on a traceback."""
    try:
        return file_record(path, checksum=checksum)
    except OSError as exc:
        return {"path": str(path), "unreadable": one_line(exc)}


def _stream_version(name: str, config: str | None, split: str, checksum: bool) -> dict[str, Any]:
    """Which version of a streamed dataset is read: a hub dataset's commit (its name resolved
    now; the stream is read at that commit, :func:`_open_stream`), a local dataset folder's
    data files of the split (their identities, as a folder source's)."""
    builder = _stream_builder(name, config)
    # a hub dataset's builder names its repo, and its hash is the commit resolved (what
    # load_dataset(revision=) takes); a copy cached offline has none ("auto")
    if getattr(builder, "repo_id", None) is not None and _COMMIT.fullmatch(str(builder.hash)):
        return {"revision": builder.hash}
    files = [str(path) for path in (builder.config.data_files or {}).get(split, [])]
    if any(url_scheme(path) is not None for path in files):
        return {}  # remote files without commits (a hub bucket): its chunks' hashes tell
    return {"files": [file_record(path, checksum=checksum) for path in files]}


def _hf_name(source: Source) -> tuple[str, str | None]:
    name, _, config = source.spec[len(HF_PREFIX) :].partition(":")
    return name, config or None


# --------------------------------------------------------------------------- planning


def plan_shards(
    sources: Sequence[Source],
    *,
    column: str | None = None,
    id_column: str | None = None,
    shard_rows: int = 250_000,
    skip_bad: bool = False,
    descriptions: Sequence[dict[str, Any]] | None = None,
) -> Iterator[Shard | SkippedShard]:
    """Cut the sources into shards, in corpus order, with global row numbers.

    ``descriptions`` are the sources' :func:`describe_source` records (made here when not given);
    each shard's identity holds its files' identities from them.
    Lazy: a streamed hub dataset is read here, chunk by chunk, as the caller consumes shards.
    A parquet file whose footer cannot be read yields a :class:`SkippedShard` with ``skip_bad``
    and raises :class:`BadShardError` without it.
    """
    _refuse_columns_of_text(sources, column=column, id_column=id_column)
    planner = _Planner(column, id_column, shard_rows, skip_bad)
    for index, source in enumerate(sources):
        description = descriptions[index] if descriptions is not None else describe_source(source)
        yield from planner.plan(index, source, description)


def _refuse_columns_of_text(
    sources: Sequence[Source], *, column: str | None, id_column: str | None
) -> None:
    """A caption or id column named for a corpus of text files alone, which have no columns (a
    line is a caption, numbered by its row): refused, not passed over unsaid. Beside a file with
    columns, the option is that file's."""
    if not sources or any(source.kind != "txt" for source in sources):
        return
    for option, value in (("column", column), ("id_column", id_column)):
        if value is not None:
            flag = "--" + option.replace("_", "-")
            raise InputError(
                f"{flag} {value!r} names a column, but every caption source is a text file, which "
                f"has none (each line is a caption, numbered by its row; e.g. {sources[0].spec}); "
                f"drop {flag} ({option}= in Python), or give the captions as .parquet or .jsonl "
                "with that column"
            )


class _Planner:
    def __init__(
        self,
        column: str | None,
        id_column: str | None,
        shard_rows: int,
        skip_bad: bool,
    ):
        self.column = column
        self.id_column = id_column
        self.shard_rows = shard_rows
        self.skip_bad = skip_bad
        self.next_row = 0
        self.planned: dict[str, int] = {}  # shard identities planned so far, and their copies
        # each source's caption and id columns, as its first file with them set them (no option
        # naming them), and where: one corpus reads one column, whatever its other files hold
        self.picked: dict[int, tuple[str, str | None, object]] = {}

    def plan(
        self, index: int, source: Source, description: dict[str, Any]
    ) -> Iterator[Shard | SkippedShard]:
        if source.kind == "hf_stream":
            content = {k: description[k] for k in ("name", "config", "split")}
            yield from self._stream(index, source, content, description.get("revision"))
        elif source.kind == "hf_disk":
            files = [file_identity(f) for f in description["files"]]
            yield from self._saved(index, source, files)
        else:
            for file_index, path in enumerate(source.files):
                record = description["files"][file_index]
                content = file_identity(record)
                if "unreadable" in record:
                    yield self._unreadable(index, path, content, source, record["unreadable"])
                elif source.kind == "parquet":
                    footer = cached_footer(description["files"][file_index])
                    yield from self._parquet(index, path, content, source, footer)
                else:
                    yield from self._text(index, path, source.kind, content, source)

    def _unreadable(
        self, index: int, path: Path | str, content: Any, source: Source, why: str
    ) -> SkippedShard:
        """A file whose identity could not be read (permission denied, the store refusing the
        credentials, removed since it was listed): a bad shard, skipped with ``skip_bad``."""
        name, reason = source.name(path), f"cannot be read ({why})"
        if self.skip_bad:
            return self._skipped(index, path, content, name, reason)
        if source.scheme is None:
            raise BadShardError(name, reason)
        raise BadShardError(
            name,
            reason,
            f"check that it exists and that the credentials of {source.scheme}:// may read it, "
            "then run the same command again (finished shards are kept); or pass --skip-bad to "
            "count and list bad shards instead",
        )

    def _shard(self, n_rows: int, content: Any, **fields: Any) -> Shard:
        """A shard named by its identity: what it reads, not where it sits in the corpus."""
        identity = {
            "kind": fields["kind"],
            "content": content,
            "rows": [fields.get("start", 0), fields.get("stop", 0)],
            "column": fields["column"],
            "id_column": fields["id_column"],
        }
        if fields["id_column"] is None:  # ids are row numbers across the corpus: where it sits
            identity["first_row"] = self.next_row
        # copies of one file at other paths read the same: each copy is a unit of its own
        read = json.dumps(identity, sort_keys=True, default=str)
        copies = self.planned.get(read, 0)
        self.planned[read] = copies + 1
        if copies:
            identity["copy"] = copies
        label = f"{Path(fields['location']).stem}-{fields.pop('part'):05d}"
        shard = Shard(
            key=unit_key(label, identity),
            first_row=self.next_row,
            n_rows=n_rows,
            identity=identity,
            **fields,
        )
        self.next_row += n_rows
        return shard

    def _parquet(
        self, index: int, path: Path | str, content: Any, source: Source, footer: Any = None
    ) -> Iterator[Shard | SkippedShard]:
        """``footer``: the file's parsed footer when it was read already (a URL's identity)."""
        name = source.name(path)
        try:
            if footer is not None:
                meta, schema = footer, footer.schema.to_arrow_schema()
            else:
                with _parquet_file(path, source.filesystem) as handle:
                    meta, schema = handle.metadata, handle.schema_arrow
        except (OSError, pa.ArrowException) as exc:
            if source.filesystem is not None and network_error(exc):
                raise ConnectionLostError(name, one_line(exc)) from None
            reason = f"unreadable parquet file ({one_line(exc)})"
            if not self.skip_bad:
                raise BadShardError(name, reason) from None
            yield self._skipped(index, path, content, name, reason)
            return
        where = name if source.filesystem is not None else path
        columns = self._checked(
            lambda: self._columns(index, schema.names, where, schema), index, path, content, name
        )
        if isinstance(columns, SkippedShard):
            yield columns
            return
        column, id_column = columns
        groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        for part, (first, stop) in enumerate(_runs(groups, self.shard_rows)):
            n_rows = sum(groups[first:stop])
            label = (
                name
                if (first, stop) == (0, len(groups))
                else (f"{name} (row groups {first}-{stop - 1})")
            )
            yield self._shard(
                n_rows,
                content,
                part=part,
                source=index,
                kind="parquet",
                location=str(path),
                label=label,
                column=column,
                id_column=id_column,
                start=first,
                stop=stop,
                filesystem=source.filesystem,
            )

    def _columns(
        self, index: int, names: Sequence[str], where: Any, schema: pa.Schema | None = None
    ) -> tuple[str, str | None]:
        """A file's caption and id columns: those the options name, else those of its source
        (source ``index``), which its first file sets. A later file without them is refused:
        read from another column of its own, a folder would mix columns unsaid. One its schema
        names twice is refused (pyarrow reads neither of them), as is a caption column that
        ``schema`` (None: unknown, as in JSON lines) says is not text."""
        picked = self.picked.get(index)
        if picked is None or self.column is not None:
            column = pick_caption_column(names, self.column, where)
        else:
            column = _picked_column(names, picked[0], "caption", _COLUMN_OPTION, picked[2], where)
        if picked is None or self.id_column is not None:
            id_column = _pick_id_column(names, self.id_column, where)
        else:
            id_column = _picked_column(names, picked[1], "id", _ID_COLUMN_OPTION, picked[2], where)
        for name in (column, id_column):
            if name is not None and names.count(name) > 1:
                raise InputError(
                    f"{where}: {names.count(name)} of its columns are named {name!r}; expected "
                    "one of each name: rewrite the file with distinct column names"
                )
        if schema is not None:
            _refuse_non_text(schema, column, where)
        self.picked.setdefault(index, (column, id_column, where))
        return column, id_column

    def _checked(
        self, check: Callable[[], Any], index: int, path: Path | str, content: Any, name: str
    ) -> Any:
        """What ``check`` returns or, with ``skip_bad``, a skipped shard when it raises
        InputError (no caption column, text that is not UTF-8, a damaged saved dataset: bad
        shards like unreadable ones)."""
        try:
            return check()
        except ConnectionLostError:  # the network's, not the file's: never skipped
            raise
        except InputError as exc:
            if not self.skip_bad:
                raise
            reason = exc.reason if isinstance(exc, BadShardError) else str(exc)
            return self._skipped(index, path, content, name, reason)

    def _skipped(
        self, index: int, path: Path | str, content: Any, name: str, reason: str
    ) -> SkippedShard:
        return SkippedShard(
            key=unit_key(Path(path).stem, content), source=index, label=name, reason=reason
        )

    def _text(
        self, index: int, path: Path | str, kind: str, content: Any, source: Source
    ) -> Iterator[Shard | SkippedShard]:
        name = source.name(path)
        where = name if source.filesystem is not None else path

        def check() -> tuple[tuple[str | None, str | None], Any] | None:
            """The file's columns and line cuts (None: no record), each read of it checked."""
            with _reading(name, source.filesystem):
                _refuse_unreadable_text(path, source.filesystem, where)
                columns: tuple[str | None, str | None] = (None, None)
                if kind == "jsonl":
                    keys = _jsonl_keys(path, source.filesystem, where)
                    if keys is None:
                        return None
                    columns = self._columns(index, keys, where)
                return columns, _line_cuts(path, self.shard_rows, source.filesystem)

        checked = self._checked(check, index, path, content, name)
        if isinstance(checked, SkippedShard):
            yield checked
            return
        if checked is None:  # a jsonl file of blank lines alone (an empty shard): no record
            return
        (column, id_column), (cuts, n_lines) = checked
        for part, (start, stop, first_line) in enumerate(cuts):
            last_line = cuts[part + 1][2] if part + 1 < len(cuts) else n_lines
            single = len(cuts) == 1
            label = name if single else f"{name} (lines {first_line + 1}-{last_line})"
            yield self._shard(
                last_line - first_line,
                content,
                part=part,
                source=index,
                kind=kind,
                location=str(path),
                label=label,
                column=column,
                id_column=id_column,
                start=start,
                stop=stop,
                filesystem=source.filesystem,
            )

    def _saved(self, index: int, source: Source, content: Any) -> Iterator[Shard | SkippedShard]:
        def check() -> tuple[Any, tuple[str, str | None]]:
            dataset = _load_saved(str(source.root))
            schema = dataset.features.arrow_schema
            return dataset, self._columns(index, dataset.column_names, source.root, schema)

        checked = self._checked(check, index, str(source.root), content, str(source.root))
        if isinstance(checked, SkippedShard):
            yield checked
            return
        dataset, (column, id_column) = checked
        for part, first in enumerate(range(0, dataset.num_rows, self.shard_rows)):
            stop = min(first + self.shard_rows, dataset.num_rows)
            yield self._shard(
                stop - first,
                content,
                part=part,
                source=index,
                kind="hf_disk",
                location=str(source.root),
                label=f"{source.root} (rows {first}-{stop - 1})",
                column=column,
                id_column=id_column,
                start=first,
                stop=stop,
            )

    def _stream(
        self, index: int, source: Source, content: Any, revision: str | None
    ) -> Iterator[Shard]:
        """``revision``: the hub commit the manifest records, which the stream reads (not one
        pushed since); its chunks are known by what they hold, so a new commit recounts only
        the chunks it changed."""
        name, config = _hf_name(source)
        dataset = _open_stream(name, config, source.split, revision)
        names = dataset.column_names
        if names is None:  # features unknown until the first example is read
            names = list(next(_stream_chunks(dataset.iter(batch_size=1), source.spec), {}))
        column = pick_caption_column(names, self.column, source.spec)
        id_column = _pick_id_column(names, self.id_column, source.spec)
        features = getattr(dataset, "features", None)  # None: types known only from the rows
        if features is not None:
            _refuse_non_text(features.arrow_schema, column, source.spec)
        dataset = dataset.select_columns([c for c in (column, id_column) if c])
        chunks = _stream_chunks(dataset.iter(batch_size=self.shard_rows), source.spec)
        for part, chunk in enumerate(chunks):
            captions = chunk[column]
            ids = chunk[id_column] if id_column else None
            first = self.next_row
            # a stream has no file to fingerprint: a chunk is known by what it holds, so that a
            # dataset changed since an earlier session is counted again, not reused
            digest = hashlib.sha256(
                json.dumps([captions, ids], default=str, ensure_ascii=False).encode("utf-8")
            ).hexdigest()
            yield self._shard(
                len(captions),
                {**content, "chunk": part, "chunk_rows": self.shard_rows, "sha256": digest},
                part=part,
                source=index,
                kind="hf_stream",
                location=name,
                label=f"{source.spec} (rows {first}-{first + len(captions) - 1})",
                column=column,
                id_column=id_column,
                payload=(captions, ids),
            )


def _stream_chunks(chunks: Iterator[Any], spec: str) -> Iterator[Any]:
    """A hub stream's chunks; the network's error part-way is ConnectionLostError (the shards
    planned before it are counted first, as the planner yields them)."""
    rows = 0
    while True:
        try:
            chunk = next(chunks)
        except StopIteration:
            return
        except Exception as exc:
            if not network_error(exc):
                raise
            raise ConnectionLostError(f"{spec} (rows from {rows})", one_line(exc)) from None
        rows += len(next(iter(chunk.values()), ()))
        yield chunk


def _runs(sizes: list[int], target: int) -> list[tuple[int, int]]:
    """Consecutive index ranges whose sizes add up to at least ``target`` (the last may be less)."""
    runs, first, total = [], 0, 0
    for i, size in enumerate(sizes):
        total += size
        if total >= target:
            runs.append((first, i + 1))
            first, total = i + 1, 0
    if first < len(sizes) or not runs:
        runs.append((first, len(sizes)))
    return runs


def _open_binary(path: Path | str, filesystem: Any) -> Any:
    """A binary file object: a local file, or a file of a URL's filesystem (buffered, seekable)."""
    if filesystem is None:
        return open(path, "rb")
    return io.BufferedReader(filesystem.open_input_file(str(path)), buffer_size=1 << 20)


def _parquet_file(path: Path | str, filesystem: Any) -> pq.ParquetFile:
    if filesystem is None:
        return pq.ParquetFile(path)
    return pq.ParquetFile(str(path), filesystem=filesystem)


def _line_cuts(
    path: Path | str, lines_per_part: int, filesystem: Any = None
) -> tuple[list[tuple[int, int, int]], int]:
    """Byte ranges of whole lines, ``lines_per_part`` lines each: ``[(start, stop, first_line)]``,
    and the number of lines (a last line without a newline counts)."""
    import numpy as np

    cut_ends: list[int] = []  # byte offset just after every lines_per_part-th newline
    n_newlines, offset, last_byte = 0, 0, b""
    with _open_binary(path, filesystem) as handle:
        while block := handle.read(_TEXT_BLOCK_BYTES):
            newlines = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10)
            # newline k (1-based, whole file) ends a part when k is a multiple of lines_per_part
            first_cut = -n_newlines % lines_per_part or lines_per_part
            cut_ends.extend(int(offset + p + 1) for p in newlines[first_cut - 1 :: lines_per_part])
            n_newlines += len(newlines)
            offset += len(block)
            last_byte = block[-1:]
    n_lines = n_newlines + (1 if offset and last_byte != b"\n" else 0)
    if cut_ends and cut_ends[-1] == offset:
        cut_ends.pop()  # the last part ends at the end of the file anyway
    starts = [0, *cut_ends]
    stops = [*cut_ends, offset]
    return [
        (a, b, i * lines_per_part) for i, (a, b) in enumerate(zip(starts, stops, strict=True))
    ], n_lines


def _refuse_legacy_encoding(head: bytes, where: object) -> None:
    """Text in a one-byte encoding (Windows-1252, Latin-1: a spreadsheet's export) read as UTF-8
    would lose exactly its captions with accents, each skipped as not UTF-8: refused when
    :data:`_LEGACY_LINES` or more of the lines of its start hold non-ASCII bytes and none of them
    is UTF-8 (web text with a few damaged lines among good ones is read, those counted)."""
    lines = head.split(b"\n")
    if len(head) == _TEXT_HEAD_BYTES:
        lines.pop()  # may be cut inside a character
    wide = [line for line in lines if not line.isascii()]
    if len(wide) < _LEGACY_LINES:
        return
    for line in wide:
        try:
            line.decode("utf-8")
            return
        except UnicodeDecodeError:
            pass
    raise InputError(
        f"{where}: none of the {len(wide)} lines with non-ASCII bytes in its first "
        f"{len(head):,} bytes is valid UTF-8: it is in another encoding, and their captions "
        "would be skipped; re-save it as UTF-8 (e.g. iconv -f WINDOWS-1252 -t UTF-8 FILE > NEW, "
        "naming its encoding)"
    )


def _refuse_unreadable_text(path: Path | str, filesystem: Any, where: object) -> None:
    """Text is read as UTF-8 lines ending in LF: a file whose start shows it is not would be
    counted as garbage, or as one caption, so it is refused: UTF-16 or UTF-32 (a byte-order mark,
    as Windows PowerShell's ``>`` writes, or many NUL bytes), a one-byte encoding
    (:func:`_refuse_legacy_encoding`), gzip data, or lines ending in CR alone (classic Mac OS)."""
    with _open_binary(path, filesystem) as handle:
        head = handle.read(_TEXT_HEAD_BYTES)
    for mark, encoding in WIDE_BOMS:
        if head.startswith(mark):
            raise InputError(f"{where} is {encoding}; re-save it as UTF-8")
    if head.startswith(_GZIP_MAGIC):
        raise InputError(
            f"{where} is gzip-compressed; decompress it first (e.g. gunzip -c FILE > NEW)"
        )
    n_nul = head.count(0)
    if n_nul * 4 > len(head):  # a stray NUL in a caption is kept; this many is no UTF-8 text
        raise InputError(
            f"{where}: {n_nul} of its first {len(head)} bytes {'is' if n_nul == 1 else 'are'} "
            "NUL; expected UTF-8 text, got "
            "UTF-16 or UTF-32 without a byte-order mark, or binary data; re-save it as UTF-8"
        )
    _refuse_legacy_encoding(head, where)
    if b"\r" in head and b"\n" not in head:
        raise InputError(
            f"{where}: its lines end in CR alone (no LF in its first {len(head):,} bytes), so it "
            "would be read as one caption; re-save it with LF or CRLF line endings "
            "(e.g. tr '\\r' '\\n' < OLD > NEW)"
        )


def _jsonl_keys(
    path: Path | str, filesystem: Any = None, where: object = None, max_lines: int = 1000
) -> list[str] | None:
    """The keys of the first JSON object in the file (the columns a caption can come from); None
    when it holds blank lines alone, or nothing: no record to read."""
    n_lines = n_blank = n_not_utf8 = 0
    with _open_binary(path, filesystem) as handle:
        for _, line in zip(range(max_lines), handle, strict=False):
            n_lines += 1
            if not line.strip():
                n_blank += 1
                continue
            try:
                record = json.loads(line)
            except UnicodeDecodeError:
                n_not_utf8 += 1
                continue
            except (ValueError, RecursionError):  # not JSON, or nested past Python's limit
                continue
            if isinstance(record, dict):
                return list(record)
    if n_blank == n_lines < max_lines:  # the whole file was read
        return None
    if n_not_utf8:
        raise InputError(
            f"{where or path}: no JSON object in its first {counted(n_lines, 'line')}, "
            f"{n_not_utf8} of "
            "them not valid UTF-8; re-save it as UTF-8"
        )
    raise InputError(
        f"{where or path}: no JSON object in its first {counted(n_lines, 'line')}; expected "
        "JSON lines "
        'such as {"id": 1, "caption": "a dog on a beach"}'
    )


def pick_caption_column(
    names: Sequence[str], wanted: str | None, where: object, option: str = _COLUMN_OPTION
) -> str:
    """The caption column of a table whose columns are ``names``: ``wanted``, else the one of
    :data:`CAPTION_COLUMNS` it holds. Two of those (caption and TEXT) are refused: which one
    would be counted showed only in the manifest. ``option``: how the caller names a column."""
    if wanted is not None:
        if wanted in names:
            return wanted
        raise InputError(
            f"{where}: no caption column {wanted!r}{did_you_mean(wanted, map(str, names))}; its "
            f"columns are {', '.join(map(str, names)) or 'none'} (choose one with {option})"
        )
    found = [name for name in CAPTION_COLUMNS if name in names]
    if not found:
        raise InputError(
            f"{where}: no caption column: looked for {', '.join(CAPTION_COLUMNS)}; its columns "
            f"are {', '.join(map(str, names)) or 'none'} (choose one with {option})"
        )
    if len(found) > 1:
        raise InputError(
            f"{where}: holds more than one caption column ({', '.join(found)}); expected one "
            f"when none is named: name one with {option}"
        )
    return found[0]


def _picked_column(
    names: Sequence[str], picked: str | None, what: str, option: str, first: object, where: object
) -> str | None:
    """The column a source's first file set (None: no id column, so row numbers), which a
    later file must hold."""
    if picked is None or picked in names:
        return picked
    raise InputError(
        f"{where}: no {what} column {picked!r}, which the {what}s of its folder are read from (as "
        f"its first file, {first}, has it); its columns are {', '.join(map(str, names)) or 'none'} "
        f"(name a {what} column every file of the folder has with {option}; or move this file out "
        "of the folder and name it as a source of its own)"
    )


def _text_type(dtype: pa.DataType, *, binary: bool = True) -> bool:
    """Whether a column of ``dtype`` holds captions: strings of any encoding (a dictionary of
    them, as pandas' category writes), no values at all (null: a column of Nones), or, with
    ``binary``, bytes, decoded value by value (Hive and Impala write text as unannotated
    binary; values that are no UTF-8 are counted as such)."""
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return True
    if pa.types.is_string_view(dtype) or pa.types.is_null(dtype):
        return True
    kinds = (pa.types.is_binary, pa.types.is_large_binary, pa.types.is_binary_view)
    return binary and any(kind(dtype) for kind in kinds)


def _refuse_non_text(schema: pa.Schema, column: str, where: object) -> None:
    """A caption column of another type (a struct, a list, numbers) would count every row as
    not a string, after reading them all: refused before any is read."""
    dtype = schema.field(column).type
    if _text_type(dtype):
        return
    text = [
        f.name for f in schema if not pa.types.is_null(f.type) and _text_type(f.type, binary=False)
    ]
    fix = (
        f"choose a text column with {_COLUMN_OPTION}: its text columns are {', '.join(text)}"
        if text
        else "it has no text column: rewrite it with its captions in a string column (a "
        "struct's or a list's text flattened), or leave it out of the corpus"
    )
    raise InputError(
        f"{where}: caption column {column!r} is {dtype}, not text; expected strings (or a "
        f"dictionary of them, or UTF-8 bytes); {fix}"
    )


def _pick_id_column(names: Sequence[str], wanted: str | None, where: object) -> str | None:
    if wanted is None:
        return next((name for name in ID_COLUMNS if name in names), None)
    if wanted in names:
        return wanted
    raise InputError(
        f"{where}: no id column {wanted!r}{did_you_mean(wanted, names)}; its columns are "
        f"{', '.join(map(str, names))} (choose one with {_ID_COLUMN_OPTION}; or leave it out to "
        "use row numbers)"
    )


# --------------------------------------------------------------------------- reading

# A raw reader yields (values, ids or None, skip counts) per batch. Values are an Arrow array, or a
# list of str for good text, bytes to be decoded, or anything else (None, numbers) to be skipped.
RawBatch = tuple[list[Any], Sequence[Any] | None, Counter[str]]


def _read_parquet(shard: Shard, batch_rows: int) -> Iterator[RawBatch]:
    columns = [c for c in (shard.column, shard.id_column) if c]
    try:
        with _parquet_file(shard.location, shard.filesystem) as handle:
            batches = handle.iter_batches(
                batch_size=batch_rows, row_groups=range(shard.start, shard.stop), columns=columns
            )
            for batch in batches:
                ids = batch.column(shard.id_column).to_pylist() if shard.id_column else None
                yield batch.column(shard.column), ids, Counter()
    except (OSError, pa.ArrowException) as exc:
        if shard.filesystem is not None and network_error(exc):
            raise  # Shard.read says so
        raise BadShardError(shard.label, f"unreadable parquet data ({one_line(exc)})") from None


def _arrow_values(array: pa.Array) -> list[Any]:
    try:
        return array.to_pylist()
    except UnicodeDecodeError:
        # a string column holding invalid UTF-8: hand the raw bytes over, to be counted one by one
        return array.cast(pa.binary()).to_pylist()


def _text_lines(shard: Shard, batch_rows: int) -> Iterator[list[bytes]]:
    """The shard's lines (without line endings), about ``batch_rows`` at a time; a file that
    cannot be opened or read (removed since the run was planned) is a bad shard, as a parquet
    file's is."""
    with _reading(shard.label, shard.filesystem):
        yield from _text_blocks(shard, batch_rows)


def _text_blocks(shard: Shard, batch_rows: int) -> Iterator[list[bytes]]:
    pending = b""
    lines: list[bytes] = []
    with _open_binary(shard.location, shard.filesystem) as handle:
        handle.seek(shard.start)
        remaining = shard.stop - shard.start
        at_start = shard.start == 0
        while remaining > 0:
            block = handle.read(min(_TEXT_BLOCK_BYTES, remaining))
            if not block:
                raise BadShardError(
                    shard.label, "the file is shorter than when the run was planned"
                )
            remaining -= len(block)
            if at_start:  # a UTF-8 byte-order mark (some editors write one) is no caption text
                block = block.removeprefix(_UTF8_BOM)
                at_start = False
            parts = (pending + block).split(b"\n")
            pending = parts.pop()
            lines.extend(parts)
            if len(lines) >= batch_rows:
                yield lines
                lines = []
    if pending:
        lines.append(pending)
    if lines:
        yield lines


def _read_txt(shard: Shard, batch_rows: int) -> Iterator[RawBatch]:
    for lines in _text_lines(shard, batch_rows):
        lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
        try:  # the whole batch at once when it is valid UTF-8 (lines hold no "\n")
            values: list[Any] = b"\n".join(lines).decode("utf-8").split("\n")
        except UnicodeDecodeError:
            values = lines  # decoded, or counted as not UTF-8, one by one
        yield values, None, Counter()


def _read_jsonl(shard: Shard, batch_rows: int) -> Iterator[RawBatch]:
    column, id_column = shard.column, shard.id_column
    for lines in _text_lines(shard, batch_rows):
        values: list[Any] = []
        ids: list[Any] | None = [] if id_column else None
        skipped: Counter[str] = Counter()
        for line in lines:
            record = _json_record(line, skipped)
            if record is None:
                values.append(_NOT_A_RECORD)
            else:
                values.append(_json_text(record.get(column, _MISSING)))
            if ids is not None:
                ids.append(record.get(id_column) if record is not None else None)
        yield values, ids, skipped


class _Marker:
    """Placeholder value for a row that has no caption value at all (counted elsewhere)."""


_NOT_A_RECORD = _Marker()  # blank or malformed line: already counted (or ignored when blank)
_MISSING = _Marker()  # a JSON object without the caption key


def _json_record(line: bytes, skipped: Counter[str]) -> dict[str, Any] | None:
    if not line.strip():
        return None  # blank lines are no records: not counted, though they keep their row number
    try:
        record = json.loads(line)
    except UnicodeDecodeError:
        skipped["not_utf8"] += 1
        return None
    except (ValueError, RecursionError):  # not JSON, or nested past Python's limit
        skipped["bad_json"] += 1
        return None
    if not isinstance(record, dict):
        skipped["bad_json"] += 1
        return None
    return record


def _json_text(value: Any) -> Any:
    """A JSON string that cannot be UTF-8 (a lone surrogate from a "\\ud800" escape) becomes
    bytes, which then fail to decode and are counted as not UTF-8."""
    if type(value) is str and not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogatepass")
    return value


def _read_saved(shard: Shard, batch_rows: int) -> Iterator[RawBatch]:
    dataset = _load_saved(shard.location)
    columns = [c for c in (shard.column, shard.id_column) if c]
    table = dataset.select_columns(columns).with_format("arrow")[shard.start : shard.stop]
    for batch in table.to_batches(max_chunksize=batch_rows):
        ids = batch.column(shard.id_column).to_pylist() if shard.id_column else None
        yield batch.column(shard.column), ids, Counter()


def _read_payload(shard: Shard, batch_rows: int) -> Iterator[RawBatch]:
    captions, ids = shard.payload
    for start in range(0, len(captions), batch_rows):
        stop = start + batch_rows
        yield captions[start:stop], ids[start:stop] if ids is not None else None, Counter()


_RAW_READERS = {
    "parquet": _read_parquet,
    "txt": _read_txt,
    "jsonl": _read_jsonl,
    "hf_disk": _read_saved,
    "hf_stream": _read_payload,
}


def _clean(
    values: list[Any] | pa.Array,
    ids: Sequence[Any] | None,
    first_row: int,
    skipped: Counter[str],
    max_chars: int,
) -> CaptionBatch:
    """Keep the valid captions (decoding bytes), count the rest by reason."""
    n_rows = len(values)
    rows = range(first_row, first_row + n_rows)
    if ids is None:
        ids = rows
    if isinstance(values, pa.Array):
        checked = _string_captions(values, ids, rows, max_chars, skipped)
        if checked is not None:
            return CaptionBatch(*checked[:2], n_rows, skipped, checked[2])
        values = _arrow_values(values)
    bad: list[int] = []
    for i, value in enumerate(values):
        if type(value) is str:
            if len(value) > max_chars:
                skipped["too_long"] += 1
                bad.append(i)
            continue
        text, reason = _decoded(value, max_chars)
        if reason is None:
            values[i] = text
        else:
            if value is not _NOT_A_RECORD:
                skipped[reason] += 1
            bad.append(i)
    if not bad:
        return CaptionBatch(values, ids, n_rows, skipped, rows)
    drop = set(bad)
    keep = [i for i in range(n_rows) if i not in drop]
    return CaptionBatch(
        [values[i] for i in keep], [ids[i] for i in keep], n_rows, skipped, [rows[i] for i in keep]
    )


def _decoded(value: Any, max_chars: int) -> tuple[str | None, str | None]:
    """A non-str value as ``(caption, None)`` when it is bytes of an acceptable caption, else
    ``(None, why it is no caption)``."""
    if value is None:
        return None, "null"
    if value is _MISSING:
        return None, "missing"
    if isinstance(value, bytes):
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            return None, "not_utf8"
        return (None, "too_long") if len(text) > max_chars else (text, None)
    return None, "not_string"


def _string_captions(
    array: pa.Array, ids: Sequence[Any], rows: Sequence[int], max_chars: int, skipped: Counter[str]
) -> tuple[list[str], Sequence[Any], Sequence[int]] | None:
    """The valid captions of a string column, their ids and row numbers, with nulls counted and
    dropped by the column's validity bitmap, without a Python loop per caption; None for another
    type of column, or a string column holding over-long values or invalid UTF-8, which are
    checked value by value instead.

    Lengths and nulls are read off the array's buffers: Arrow's kernels (``pyarrow.compute``, 40
    ms to import) run only when a value may be too long, and never with a Python scalar argument,
    whose conversion imports pandas."""
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        return None
    n_null = array.null_count
    valid = None
    if n_null:
        bits = np.unpackbits(np.frombuffer(array.buffers()[0], dtype=np.uint8), bitorder="little")
        valid = bits[array.offset : array.offset + len(array)].astype(bool).tolist()
        ids, rows = list(compress(ids, valid)), list(compress(rows, valid))
    if len(array) and _longest_bytes(array) > max_chars:
        import pyarrow.compute as pc  # rarely needed: importing it costs 40 ms

        if pc.max(pc.utf8_length(array)).as_py() > max_chars:
            return None
    try:
        texts = array.to_pylist()
    except UnicodeDecodeError:
        return None
    if valid is not None:
        texts = list(compress(texts, valid))
        skipped["null"] += n_null
    return texts, ids, rows


def _longest_bytes(array: pa.Array) -> int:
    """The UTF-8 length of a string array's longest value, read off its offsets: no value has
    more characters than bytes."""
    dtype = np.int64 if pa.types.is_large_string(array.type) else np.int32
    offsets = np.frombuffer(array.buffers()[1], dtype=dtype)
    return int(np.diff(offsets[array.offset : array.offset + len(array) + 1]).max())


# --------------------------------------------------------------------------- datasets


def _load_saved(folder: str) -> Any:
    """A dataset saved by ``save_to_disk`` (memory-mapped; a DatasetDict's split is its
    subfolder), loaded once per process for each state of its files: a dataset saved again in
    the same session (a notebook) is read anew, never from the earlier load. Raises
    BadShardError when the folder is damaged (a cut arrow file, a state.json without files)."""
    try:
        version = tuple(
            sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in Path(folder).iterdir())
        )
        return _load_saved_version(folder, version)
    except Exception as exc:  # datasets raises OSError, KeyError, ValueError...: all "damaged"
        reason = f"not a readable dataset saved by datasets' save_to_disk ({one_line(exc)})"
        raise BadShardError(folder, reason, _SAVED_HINT) from None


@lru_cache(maxsize=8)
def _load_saved_version(folder: str, version: tuple[Any, ...]) -> Any:
    """``version``: the state of the folder's files, which makes the cache key."""
    import datasets

    return datasets.load_from_disk(folder)


def _open_stream(name: str, config: str | None, split: str, revision: str | None = None) -> Any:
    """The split of a hub dataset or local dataset folder, streamed (at ``revision``, a hub
    commit, when given)."""
    builder = _stream_builder(name, config, revision)
    with _hub_errors(name, config, split):
        return builder.as_streaming_dataset(split=split)


def _stream_builder(name: str, config: str | None, revision: str | None = None) -> Any:
    """``datasets``' builder of a hub dataset or local dataset folder (what ``load_dataset``
    streams from), resolved to a hub commit."""
    import datasets

    # a save_to_disk folder: load_dataset refuses one, and a builder would misread its files
    if (Path(name) / "state.json").is_file():
        raise InputError(
            f"{HF_PREFIX}{name}: a dataset folder saved by datasets' save_to_disk is read "
            f"without {HF_PREFIX!r}; name the folder itself: {name}"
        )
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    # "json", "parquet", ...: datasets' loaders, which without data files read every file
    # under the working folder
    if name in _PACKAGED_DATASETS_MODULES:
        raise InputError(
            f"{HF_PREFIX}{name} names datasets' {name!r} loader, not a dataset; name the caption "
            "files or their folder themselves (without 'hf:'), or a hub dataset (hf:OWNER/NAME)"
        )
    with _hub_errors(name, config, None):
        return datasets.load_dataset_builder(name, config, revision=revision)


@contextmanager
def _hub_errors(name: str, config: str | None, split: str | None) -> Iterator[None]:
    """Any error opening a hub dataset as one InputError (the hub client and ``datasets`` raise
    many types; all mean "cannot open this")."""
    try:
        yield
    except Exception as exc:
        from clipaudit.hub import hub_refused

        where = f"config {config!r}" + (f", split {split!r}" if split is not None else "")
        # asked only now that opening failed: offline, the fix is another way in, not the name
        refused = hub_refused()
        fix = (
            f"{refused}; on a machine that reaches the hub, save it with datasets' save_to_disk "
            "and give that folder (without 'hf:'), or check the name and config (hf:NAME:CONFIG)"
            if refused
            else "check the name, config (hf:NAME:CONFIG), split (--split; --caption-split in "
            "clipaudit audit) and the network"
        )
        raise InputError(
            f"cannot open Hugging Face dataset {name!r} ({where}): {one_line(exc)}; {fix}"
        ) from None

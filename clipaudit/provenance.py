"""Where every output came from, and how it is written (atomically, so a kill never leaves half a file)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from clipaudit import __version__

PACKAGE_ROOT = Path(__file__).resolve().parent
# mkstemp creates files readable by the owner only; outputs get the usual umask-derived mode
_UMASK = os.umask(0)
os.umask(_UMASK)


@cache
def git_hash() -> str | None:
    """The commit of the clipaudit source tree, with ``-dirty`` if it has local changes; None outside git."""
    repo = PACKAGE_ROOT.parent
    if not (repo / ".git").exists():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if commit and dirty else (commit or None)


def library_versions(names: Iterable[str] = ()) -> dict[str, str | None]:
    """Versions of the named distributions (plus python and clipaudit), None when not installed."""
    from importlib import metadata

    versions: dict[str, str | None] = {
        "python": platform.python_version(),
        "clipaudit": __version__,
    }
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def base_manifest(kind: str, libraries: Iterable[str] = ()) -> dict[str, Any]:
    """The fields every manifest carries: what produced it, with which code, when and where."""
    return {
        "kind": kind,
        "created": now_iso(),
        "clipaudit_version": __version__,
        "git_hash": git_hash(),
        "versions": library_versions(libraries),
        "platform": platform.platform(),
        "command": sys.argv,
        # the folder the command ran in: what the relative paths it was given are relative to
        "working_directory": os.getcwd(),
    }


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


EDGE_BYTES = 1 << 16


def file_record(path: str | os.PathLike, *, checksum: bool = False) -> dict[str, Any]:
    """What identifies an input file without reading all of it: size, modification time and a
    hash of its first and last 64 KiB (a parquet file's footer: row count and schema); with
    ``checksum``, the sha256 of every byte as well (``--verify-inputs``)."""
    path = Path(path)
    stat = path.stat()
    edges = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        edges.update(handle.read(EDGE_BYTES))
        if stat.st_size > EDGE_BYTES:
            handle.seek(max(EDGE_BYTES, stat.st_size - EDGE_BYTES))
            edges.update(handle.read(EDGE_BYTES))
    record = {
        "path": str(path),
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "edges_blake2b": edges.hexdigest(),
    }
    if checksum:
        record["sha256"] = sha256_file(path)
    return record


def file_identity(record: dict[str, Any]) -> dict[str, Any]:
    """The part of a :func:`file_record` that says whether the content changed (not where the
    file is: a corpus moved with its times kept resumes)."""
    return {key: value for key, value in record.items() if key != "path"}


def recorded_path(target: str | os.PathLike, base: str | os.PathLike) -> str:
    """How an output records a folder it uses: relative to ``base`` when inside it (so a run
    moved or copied as a whole still finds it), else absolute. Read back with ``base / recorded``."""
    target, base = Path(target).resolve(), Path(base).resolve()
    return target.relative_to(base).as_posix() if target.is_relative_to(base) else str(target)


def file_in_the_way(folder: str | os.PathLike) -> Path | None:
    """The file, ``folder`` itself or the nearest of its parents that exists, that keeps
    ``folder`` from being a folder or being made; None when there is none."""
    path = Path(folder)
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    return existing if existing is not None and not existing.is_dir() else None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_table(
    table: Any, path: str | os.PathLike, formats: Iterable[str] = ("parquet", "csv")
) -> list[Path]:
    """Write a table as ``path.parquet`` and/or ``path.csv`` (``path`` without suffix), atomically.

    ``table``: a pandas DataFrame, or a pyarrow Table, which is written without importing pandas
    (the coverage merge writes its tables so) and whose CSV reads as the DataFrame's would: text
    quoted only where needed, floats as Python writes them, a missing or NaN value empty."""
    import io

    path = Path(path)
    arrow = not hasattr(table, "to_csv")
    written = []
    for fmt in formats:
        target = path.parent / f"{path.name}.{fmt}"  # a name may hold dots: "Mr. Men"
        buffer = io.BytesIO()
        if fmt == "parquet" and arrow:
            import pyarrow.parquet as pq

            pq.write_table(table, buffer)
        elif fmt == "parquet":
            table.to_parquet(buffer, index=False)
        elif fmt == "csv":
            text = _csv_text(table) if arrow else table.to_csv(index=False)
            buffer.write(text.encode("utf-8"))
        else:
            raise ValueError(f"unknown table format {fmt!r}; expected 'parquet' or 'csv'")
        atomic_write_bytes(target, buffer.getvalue())
        written.append(target)
    return written


# the columns of run tables that hold names: read as text, never as numbers or missing values
NAME_COLUMNS = ("model", "group", "concept", "category", "true", "predicted", "corpus")


def read_table_csv(path: str | os.PathLike) -> Any:
    """A CSV table of :func:`write_table` as a DataFrame: the :data:`NAME_COLUMNS` as text, so
    that a concept named "null", "NA" or "1" stays that name, and an empty cell of any other
    column missing (NaN)."""
    import pandas as pd

    columns = pd.read_csv(path, nrows=0).columns
    names = [c for c in columns if c in NAME_COLUMNS]
    return pd.read_csv(
        path,
        dtype=dict.fromkeys(names, str),
        keep_default_na=False,
        na_values={c: [""] for c in columns if c not in names},
    )


def arrow_table(columns: dict[str, list[Any]]) -> Any:
    """A pyarrow Table of int, float and str columns (name -> values), built from buffers:
    ``pa.array`` and ``pa.table`` import pandas (about 0.2 s) to check whether they were given
    pandas objects, and a coverage count has no other use for pandas."""
    import numpy as np
    import pyarrow as pa

    arrays = []
    for name, values in columns.items():
        if values and all(isinstance(v, str) for v in values):  # an empty column: int64
            data = [v.encode("utf-8") for v in values]
            offsets = np.cumsum([0, *map(len, data)], dtype=np.int64)
            buffers = [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(data))]
            arrays.append(pa.Array.from_buffers(pa.large_string(), len(values), buffers))
            continue
        kinds = {type(v) for v in values}
        if not kinds <= {int, float}:
            raise TypeError(f"column {name!r}: expected int, float or str values, got {kinds}")
        dtype, arrow_type = (np.int64, pa.int64()) if kinds <= {int} else (np.float64, pa.float64())
        buffers = [None, pa.py_buffer(np.asarray(values, dtype=dtype))]
        arrays.append(pa.Array.from_buffers(arrow_type, len(values), buffers))
    return pa.Table.from_arrays(arrays, names=list(columns))


def _csv_text(table: Any) -> str:
    import csv
    import io
    import math

    def cell(value: Any) -> Any:
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else value

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.column_names)
    columns = [table.column(name).to_pylist() for name in table.column_names]
    writer.writerows(map(cell, row) for row in zip(*columns, strict=True))
    return out.getvalue()

"""Caption files anywhere pyarrow reads them: local paths, or URLs (``s3://``, ``gs://``,
``hf://datasets/...``, ``file://``, and any scheme registered with :func:`register_filesystem`).

A URL is resolved here, once, to a pyarrow filesystem and a path inside it; readers then open files
through that filesystem, in the main process or in workers (the filesystem travels with each shard,
pickled, so workers need no registration of their own). Credentials are left to each library's usual
configuration: AWS and GCS environment variables, configuration files and instance roles for
pyarrow's S3 and GCS filesystems, ``HF_TOKEN`` or ``huggingface-cli login`` for ``hf://``. A
``gs://`` request that fails for the network or the credentials is retried for
:data:`GCS_RETRY_SECONDS`, not the 15 minutes of the GCS client's own default (``gs://...?
retry_limit_seconds=N`` sets another limit).

A remote file's identity (:func:`remote_file_record`) is read without reading the file: its size and
modification time from the filesystem, an ETag or content hash when the filesystem reports one, and,
for parquet, the footer (row count, schema, and a hash of its bytes, which change with any row
group); other files get a hash of their first and last 64 KiB, as local files do. Every byte is
hashed only with ``checksum`` (``--verify-inputs``). A file the store refuses to read (its
permissions, the credentials) is recorded as unreadable, for the planner to report as a bad shard;
the network's error stops the run (:func:`network_error` tells them apart).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

from clipaudit.errors import InputError, did_you_mean, one_line
from clipaudit.provenance import EDGE_BYTES

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_PARQUET_MAGIC = b"PAR1"

# scheme -> factory(url) -> (pyarrow filesystem, path inside it)
Factory = Callable[[str], tuple[Any, str]]
_FACTORIES: dict[str, Factory] = {}
# (url, footer hash) -> the parsed footer read for a file's identity, for the planner to take
# instead of reading it again (one request per file less, on corpora of thousands of files)
_FOOTERS: dict[tuple[str, str], Any] = {}
_FOOTER_THREADS = 16  # remote footers are read this many at a time (latency, not bandwidth)
# how long pyarrow's GCS client retries a request that fails for the network or the credentials
# (it stops at once on a missing file or a refusal): its own default is 15 minutes, in silence,
# which is how long gs:// without credentials or network took to say anything; a URL's own
# ?retry_limit_seconds=N wins
GCS_RETRY_SECONDS = 60
# pyarrow's S3 (AWS SDK) and GCS (google-cloud-cpp) clients raise plain OSErrors; their transient
# statuses (the network, a throttled or unavailable service) say the file may be fine
_CLOUD_NETWORK_STATUS = re.compile(
    r"AWS Error (NETWORK_CONNECTION|REQUEST_TIMEOUT|SLOW_DOWN|SERVICE_UNAVAILABLE|THROTTLING"
    r"|INTERNAL_FAILURE)\b|google::cloud::Status\((UNAVAILABLE|DEADLINE_EXCEEDED|RESOURCE_EXHAUSTED)\b"
)
# an HTTP client's error for these statuses (the hub's HfHubHTTPError, an OSError, carries its
# response) is the service's, busy or down for a while: a timeout, rate limiting, a server error
_TRANSIENT_HTTP_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def network_error(error: BaseException) -> bool:
    """Whether an error met reading a file is the network's: Python's connection and timeout
    errors (socket's, requests'), pyarrow's S3 and GCS clients' (plain OSErrors, told apart by
    their status), an HTTP error of a transient status, or a foreign error that is neither an
    OSError nor Arrow's nor ours (httpx's and aiohttp's are no OSError); a corrupt file, or one
    the store refuses to read, raises OSError or Arrow's errors."""
    import pyarrow as pa

    if isinstance(error, ConnectionError | TimeoutError):
        return True
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status in _TRANSIENT_HTTP_STATUS:
        return True
    if isinstance(error, OSError) and _CLOUD_NETWORK_STATUS.search(str(error)):
        return True
    return not isinstance(error, OSError | pa.ArrowException | InputError | UnicodeError)


def url_scheme(text: str) -> str | None:
    """The scheme of ``text`` when it is a URL (``s3`` of ``s3://bucket/key``), else None."""
    found = _URL.match(text)
    return found.group(1).lower() if found else None


def register_filesystem(scheme: str, factory: Factory) -> None:
    """Read ``SCHEME://...`` sources through ``factory(url)``, which returns a pyarrow filesystem
    and the path inside it (for example ``pyarrow.fs.PyFileSystem(FSSpecHandler(fs))`` around any
    fsspec filesystem). A filesystem that workers must use is pickled to them, so it must pickle to
    the same storage (an fsspec ``memory://`` filesystem does not: read it with one worker)."""
    _FACTORIES[scheme.lower()] = factory


def unregister_filesystem(scheme: str) -> None:
    _FACTORIES.pop(scheme.lower(), None)


def known_schemes() -> list[str]:
    return sorted(_FACTORIES)


def resolve_url(url: str) -> tuple[Any, str]:
    """The pyarrow filesystem of ``url`` and the path inside it; :class:`InputError` for an
    unknown scheme or a URL its filesystem refuses."""
    scheme = url_scheme(url)
    if scheme is None:
        raise InputError(f"{url!r} is not a URL; expected SCHEME://PATH")
    factory = _FACTORIES.get(scheme)
    if factory is None and scheme in ("http", "https"):  # no listing, no ranged reads to count on
        raise InputError(
            f"caption source {url!r}: web URLs are not read; download the file first (curl -LO "
            "URL) and name the copy, or name a Hugging Face dataset's files as "
            "hf://datasets/OWNER/NAME/PATH"
        )
    if factory is None:
        raise InputError(
            f"caption source {url!r}: unknown URL scheme '{scheme}://'"
            f"{did_you_mean(scheme, _FACTORIES)}; expected one of "
            f"{', '.join(s + '://' for s in known_schemes())}, or a local path "
            "(another scheme can be added with clipaudit.filesystems.register_filesystem)"
        )
    try:
        return factory(url)
    except InputError:
        raise
    except ImportError as exc:  # what the scheme's filesystem comes from is not installed
        raise InputError(
            f"caption source {url!r}: reading {scheme}:// needs the {exc.name or exc} package, "
            f"which is not installed here: pip install {exc.name or exc}"
        ) from None
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...: all mean "not this URL"
        if isinstance(exc, NotImplementedError) and type(exc).__module__.startswith("pyarrow"):
            raise InputError(  # a pyarrow built without S3 or GCS (conda's pyarrow-core)
                f"caption source {url!r}: this pyarrow cannot read {scheme}:// ({one_line(exc)}); "
                "install a build that can: pip install --force-reinstall pyarrow, or conda "
                "install -c conda-forge pyarrow (not pyarrow-core)"
            ) from None
        raise InputError(
            f"caption source {url!r}: its filesystem refused it ({one_line(exc)}); check the URL "
            f"and the credentials of {scheme}://"
        ) from None


def display_url(scheme: str, path: str) -> str:
    """How a file of a URL source is named in messages and manifests."""
    return f"{scheme}://{path.lstrip('/')}" if scheme != "file" else f"file://{path}"


def _pyarrow_uri(url: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    filesystem, path = pafs.FileSystem.from_uri(url)
    return filesystem, path


def _google_cloud_storage(url: str) -> tuple[Any, str]:
    from urllib.parse import parse_qs, urlsplit

    if "retry_limit_seconds" not in parse_qs(urlsplit(url).query):
        url += f"{'&' if '?' in url else '?'}retry_limit_seconds={GCS_RETRY_SECONDS}"
    return _pyarrow_uri(url)


def _hugging_face(url: str) -> tuple[Any, str]:
    from huggingface_hub import HfFileSystem
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    path = url.split("://", 1)[1]
    if not path.startswith(("datasets/", "spaces/")) and path.count("/") < 2:
        raise InputError(
            f"{url!r}: expected hf://datasets/OWNER/NAME/PATH (a file or folder of a dataset repo)"
        )
    return PyFileSystem(FSSpecHandler(HfFileSystem())), path


def _local(url: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    return pafs.LocalFileSystem(), url.split("://", 1)[1]


register_filesystem("s3", _pyarrow_uri)
for _scheme in ("gs", "gcs"):
    register_filesystem(_scheme, _google_cloud_storage)
register_filesystem("hf", _hugging_face)
register_filesystem("file", _local)


# --------------------------------------------------------------------------- identity


def remote_file_record(
    filesystem: Any, path: str, url: str, *, checksum: bool = False
) -> dict[str, Any]:
    """What identifies a file of a filesystem without reading it all (see the module docstring).
    A file the store will not read (its permissions, the credentials, gone since it was listed)
    is ``{"path": url, "unreadable": why}``, as a local file's record is: one file, not the run,
    which the planner reports as a bad shard (skipped and listed with ``--skip-bad``). The
    network's error raises InputError: the file may be fine, and the run is stopped."""
    try:
        return _remote_file_record(filesystem, path, url, checksum)
    except Exception as exc:  # the network or the store (pyarrow's errors, a hub client's httpx)
        if not network_error(exc):
            return {"path": url, "unreadable": one_line(exc)}
        raise InputError(
            f"{url}: could not read it ({one_line(exc)}); check the connection and the "
            "credentials, then run the same command again (finished shards are kept)"
        ) from None


def _remote_file_record(filesystem: Any, path: str, url: str, checksum: bool) -> dict[str, Any]:
    import pyarrow.fs as pafs

    info = filesystem.get_file_info(path)
    if info.type != pafs.FileType.File:
        raise FileNotFoundError("no such file (it was listed a moment ago; is it being written?)")
    record: dict[str, Any] = {"path": url, "bytes": info.size, "mtime_ns": info.mtime_ns}
    tag = _content_tag(filesystem, path)
    if tag is not None:
        record["etag"] = tag
    with filesystem.open_input_file(path) as handle:
        size = info.size
        tail = handle.read_at(min(size, EDGE_BYTES), size - min(size, EDGE_BYTES))
        footer = _parquet_footer(handle, tail, size) if path.lower().endswith(".parquet") else None
        if footer is not None:
            metadata, fields = footer
            record.update(fields)
            _FOOTERS[(url, fields["footer_blake2b"])] = metadata
        else:  # not parquet, or a broken one (the planner reports it): the edges, as for local files
            edges = hashlib.blake2b(digest_size=16)
            edges.update(handle.read_at(min(size, EDGE_BYTES), 0))
            if size > EDGE_BYTES:
                edges.update(tail[-max(0, size - EDGE_BYTES) :])
            record["edges_blake2b"] = edges.hexdigest()
    if checksum:
        digest = hashlib.sha256()
        with filesystem.open_input_stream(path) as stream:
            while block := stream.read(1 << 20):
                digest.update(block)
        record["sha256"] = digest.hexdigest()
    return record


def remote_file_records(
    filesystem: Any, paths: list[str], urls: list[str], *, checksum: bool = False
) -> list[dict[str, Any]]:
    """:func:`remote_file_record` of many files, read concurrently, in their order."""
    from concurrent.futures import ThreadPoolExecutor

    if len(paths) <= 1:
        return [
            remote_file_record(filesystem, p, u, checksum=checksum)
            for p, u in zip(paths, urls, strict=True)
        ]
    with ThreadPoolExecutor(min(_FOOTER_THREADS, len(paths))) as pool:
        return list(
            pool.map(
                lambda pair: remote_file_record(filesystem, *pair, checksum=checksum),
                zip(paths, urls, strict=True),
            )
        )


def cached_footer(record: dict[str, Any]) -> Any:
    """The parquet footer (``pyarrow.parquet.FileMetaData``) read for this record's identity in
    this process, once (None when there is none: the caller reads the file)."""
    return _FOOTERS.pop((record.get("path"), record.get("footer_blake2b")), None)


def _parquet_footer(handle: Any, tail: bytes, size: int) -> tuple[Any, dict[str, Any]] | None:
    """The parsed footer, and its row count, schema and a hash of its bytes for the identity;
    None when there is no valid footer."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(tail) < 12 or tail[-4:] != _PARQUET_MAGIC:
        return None
    length = int.from_bytes(tail[-8:-4], "little")
    if length + 8 > size - 4:
        return None
    footer = (
        tail[-(length + 8) :]
        if length + 8 <= len(tail)
        else handle.read_at(length + 8, size - length - 8)
    )
    try:
        metadata = pq.read_metadata(pa.BufferReader(footer))
    except (OSError, pa.ArrowException):
        return None
    schema = metadata.schema.to_arrow_schema()
    return metadata, {
        "rows": metadata.num_rows,
        "row_groups": metadata.num_row_groups,
        "schema": [f"{field.name}: {field.type}" for field in schema],
        "footer_blake2b": hashlib.blake2b(footer, digest_size=16).hexdigest(),
    }


def _content_tag(filesystem: Any, path: str) -> str | None:
    """An ETag or content hash, where an fsspec filesystem under pyarrow's ``FSSpecHandler``
    reports one (s3fs, gcsfs, HfFileSystem); pyarrow's own S3 and GCS filesystems do not."""
    handler = getattr(filesystem, "handler", None)
    fsspec_fs = getattr(handler, "fs", None)
    if fsspec_fs is None:
        return None
    try:
        info = fsspec_fs.info(path)
    except Exception:  # the tag is a bonus; size, time and footer already identify the file
        return None
    lfs = info.get("lfs")
    if isinstance(lfs, dict) and lfs.get("sha256"):
        return f"sha256:{lfs['sha256']}"
    for key in ("blob_id", "ETag", "etag", "md5Hash", "crc32c"):
        if info.get(key):
            return str(info[key]).strip('"')
    return None

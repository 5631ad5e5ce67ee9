"""Caption sources named by URL (s3://, gs://, hf://, or a registered scheme), their identities
without reading them whole, and the engine settings and errors that need no Ray installed.

Real s3 and gs are not reachable here: remote reading is tested through an fsspec in-memory
filesystem registered for a test scheme, by the same code path (scheme -> filesystem -> listing,
identity, planning, reading) that s3:// and gs:// take."""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import subprocess
import sys
import time
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipaudit import filesystems
from clipaudit.coverage import CoverageSettings, count_coverage
from clipaudit.errors import EngineError, InputError, SettingsError, one_line
from clipaudit.readers import BadShardError, plan_shards, resolve_sources
from tests.test_coverage import REPO, TINY_REGISTRY, assert_same_outputs

CAPTIONS = {
    "a": [f"a red cat number {i}" for i in range(30)] + ["a hot dog", "two puppies"],
    "b": ["a happy kitten", "nothing here", "", None, "a dog and a cat"] * 7,
}


@pytest.fixture
def tiny(tmp_path):
    from clipaudit.registry import load_registry

    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_REGISTRY)
    return load_registry(path)


@pytest.fixture
def memory_bucket():
    """A fresh bucket of an fsspec in-memory filesystem behind ``memtest://``; yields a function
    that puts bytes at a key and returns the key's URL."""
    from fsspec.implementations.memory import MemoryFileSystem
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    memory = MemoryFileSystem()
    bucket = f"bucket-{uuid.uuid4().hex[:8]}"

    def factory(url: str):
        return PyFileSystem(FSSpecHandler(memory)), "/" + url.split("://", 1)[1]

    def put(key: str, data: bytes) -> str:
        memory.pipe(f"/{bucket}/{key}", data)
        return f"memtest://{bucket}/{key}"

    filesystems.register_filesystem("memtest", factory)
    put.bucket = f"memtest://{bucket}"
    try:
        yield put
    finally:
        filesystems.unregister_filesystem("memtest")
        if memory.exists(f"/{bucket}"):
            memory.rm(f"/{bucket}", recursive=True)


def parquet_bytes(captions, row_group_size=10) -> bytes:
    """Uncompressed: a caption changed for one of the same length keeps the file's size."""
    buffer = io.BytesIO()
    ids = [f"id-{i}" for i in range(len(captions))]
    table = pa.table({"id": ids, "caption": captions})
    pq.write_table(table, buffer, row_group_size=row_group_size, compression="none")
    return buffer.getvalue()


def count(sources, tiny, out, **options):
    settings = CoverageSettings(
        **{"progress": False, "per_caption": True, "shard_rows": 10, **options}
    )
    return count_coverage(sources, tiny, out, settings)


def corpus_in_both(tmp_path, memory_bucket):
    """CAPTIONS as parquet files in the bucket's corpus/ and in the local folder returned."""
    local = tmp_path / "corpus"
    local.mkdir()
    for name, captions in CAPTIONS.items():
        data = parquet_bytes(captions)
        memory_bucket(f"corpus/{name}.parquet", data)
        (local / f"{name}.parquet").write_bytes(data)
    return local


def test_a_folder_url_counts_what_the_same_files_on_disk_count(tiny, tmp_path, memory_bucket):
    local = corpus_in_both(tmp_path, memory_bucket)
    memory_bucket("corpus/.partial/c.parquet", b"an unfinished upload")  # hidden: ignored
    remote = count([f"{memory_bucket.bucket}/corpus"], tiny, tmp_path / "remote")
    on_disk = count([local], tiny, tmp_path / "local")
    assert_same_outputs(tmp_path / "remote", tmp_path / "local")
    assert remote.manifest["n_shards"] == on_disk.manifest["n_shards"] == 8
    files = remote.manifest["inputs"][0]["files"]
    assert [f["path"] for f in files] == [
        f"{memory_bucket.bucket}/corpus/a.parquet",
        f"{memory_bucket.bucket}/corpus/b.parquet",
    ]
    # the identity, from the footer alone: rows and schema as pyarrow reads them from the file
    metadata = pq.read_metadata(local / "a.parquet")
    assert files[0]["rows"] == metadata.num_rows == 32
    assert files[0]["row_groups"] == metadata.num_row_groups == 4
    assert files[0]["schema"] == ["id: string", "caption: string"]
    assert files[0]["bytes"] == (local / "a.parquet").stat().st_size
    assert "sha256" not in files[0]
    assert remote.concepts.set_index("concept")["count"].to_dict() == {
        "dog": 1 + 7,  # "hot dog" is no dog; "two puppies" and "a dog and a cat" are
        "cat": 30 + 7 + 7,
        "red": 30,
        "happy": 7,
    }


def test_a_changed_remote_file_is_detected_and_only_its_shards_are_recounted(
    tiny, tmp_path, memory_bucket
):
    url_a = memory_bucket("c/a.parquet", parquet_bytes(CAPTIONS["a"]))
    memory_bucket("c/b.parquet", parquet_bytes(CAPTIONS["b"]))
    out = tmp_path / "run"
    first = count([f"{memory_bucket.bucket}/c"], tiny, out)
    assert first.manifest["timings"]["shards_this_session"] == 8
    # same size, same schema, one caption changed: no modification time here, the footer's
    # statistics and sizes tell
    changed = list(CAPTIONS["a"])
    changed[0] = "a red dog number 0"
    data = parquet_bytes(changed)
    assert len(data) == len(parquet_bytes(CAPTIONS["a"]))
    memory_bucket("c/a.parquet", data)
    again = count([f"{memory_bucket.bucket}/c"], tiny, out)
    timings = again.manifest["timings"]
    assert (timings["shards_this_session"], timings["shards_resumed"]) == (4, 4)
    assert again.concepts.set_index("concept")["count"].to_dict() == {
        "dog": 9,
        "cat": 43,
        "red": 30,
        "happy": 7,
    }
    fresh = count([url_a, f"{memory_bucket.bucket}/c/b.parquet"], tiny, tmp_path / "fresh")
    assert_same_outputs(out, tmp_path / "fresh")
    assert fresh.manifest["timings"]["shards_this_session"] == 8


def test_verify_inputs_hashes_every_byte_of_a_remote_file(tiny, tmp_path, memory_bucket):
    data = parquet_bytes(CAPTIONS["b"])
    url = memory_bucket("one.parquet", data)
    result = count([url], tiny, tmp_path / "run", verify_inputs=True)
    record = result.manifest["inputs"][0]["files"][0]
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["mtime_ns"] is None  # the in-memory filesystem keeps no modification time


def test_remote_text_and_json_lines_read_like_local_ones(tiny, tmp_path, memory_bucket):
    lines = ["A red cat.", "a hot dog", "Two puppies", "nothing here"] * 5
    text = ("\n".join(lines) + "\n").encode()
    jsonl = "".join(f'{{"id": {i}, "caption": "{c}"}}\n' for i, c in enumerate(lines)).encode()
    (tmp_path / "c.txt").write_bytes(text)
    (tmp_path / "c.jsonl").write_bytes(jsonl)
    for name in ("c.txt", "c.jsonl"):
        url = memory_bucket(name, (tmp_path / name).read_bytes())
        remote = count([url], tiny, tmp_path / f"remote-{name}", shard_rows=6)
        count([tmp_path / name], tiny, tmp_path / f"local-{name}", shard_rows=6)
        assert_same_outputs(tmp_path / f"remote-{name}", tmp_path / f"local-{name}")
        assert remote.manifest["n_shards"] == 4
        assert remote.manifest["inputs"][0]["files"][0]["edges_blake2b"]


def test_a_broken_remote_parquet_file_is_named_by_its_url(tmp_path, memory_bucket):
    url = memory_bucket("bad/x.parquet", b"PAR1 not really parquet")
    sources = resolve_sources([url])
    with pytest.raises(BadShardError, match=r"memtest://bucket-\w+/bad/x\.parquet: unreadable"):
        list(plan_shards(sources))
    skipped = list(plan_shards(sources, skip_bad=True))
    assert [s.label for s in skipped] == [url]


def test_a_remote_file_changed_after_planning_is_a_bad_shard_named_by_its_url(memory_bucket):
    """An object written again since the run was planned (a longer export) would be read by the
    planned byte ranges as other lines: refused, as a local file is."""
    url = memory_bucket("grown.txt", b"a dog\na ca")  # its last line half uploaded
    (shard,) = plan_shards(resolve_sources([url]))
    memory_bucket("grown.txt", b"a dog\na cat\na cow\n")
    with pytest.raises(BadShardError) as failed:
        list(shard.read(max_caption_chars=100, batch_rows=10))
    assert failed.value.label == url
    assert failed.value.reason == (
        "the file changed since the run was planned (bytes 10 then, 18 now)"
    )


def test_remote_footers_are_read_once_and_concurrently_for_identity_and_planning(tmp_path):
    """Each remote file costs one open while planning (its identity and row groups come from the
    same footer), however many files there are."""
    import threading

    from fsspec.implementations.memory import MemoryFileSystem
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    from clipaudit.readers import describe_source

    opened: list[str] = []
    threads: set[int] = set()

    class Counting(FSSpecHandler):
        def open_input_file(self, path):
            opened.append(path)
            threads.add(threading.get_ident())
            time.sleep(0.01)  # a round trip
            return super().open_input_file(path)

    memory = MemoryFileSystem()
    bucket = f"/footers-{uuid.uuid4().hex[:8]}"
    for part in range(40):
        memory.pipe(f"{bucket}/p-{part:02d}.parquet", parquet_bytes(CAPTIONS["a"]))
    filesystems.register_filesystem(
        "counted", lambda url: (PyFileSystem(Counting(memory)), "/" + url.split("://", 1)[1])
    )
    try:
        (source,) = resolve_sources([f"counted:/{bucket}"])
        description = describe_source(source)
        assert len(opened) == 40 and len(threads) > 1
        shards = list(plan_shards([source], shard_rows=10, descriptions=[description]))
        assert len(opened) == 40, "the planner read footers again"
        assert len(shards) == 40 * 4 and shards[-1].first_row == 39 * 32 + 30
    finally:
        filesystems.unregister_filesystem("counted")
        memory.rm(bucket, recursive=True)


class ConnectError(Exception):
    """Like httpx's, which the Hugging Face client raises: no OSError."""


@pytest.mark.parametrize(
    "error",
    [ConnectionResetError(104, "Connection reset by peer"), ConnectError("Connection refused")],
)
def test_a_connection_lost_while_reading_identities_is_one_clear_error(tmp_path, error):
    from fsspec.implementations.memory import MemoryFileSystem
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    from clipaudit.readers import describe_source

    class Dropping(FSSpecHandler):
        def open_input_file(self, path):
            raise error

    memory = MemoryFileSystem()
    bucket = f"/dropping-{uuid.uuid4().hex[:8]}"
    memory.pipe(f"{bucket}/p.parquet", parquet_bytes(CAPTIONS["a"]))
    filesystems.register_filesystem(
        "dropping", lambda url: (PyFileSystem(Dropping(memory)), "/" + url.split("://", 1)[1])
    )
    try:
        (source,) = resolve_sources([f"dropping:/{bucket}/p.parquet"])
        reason = rf"\({type(error).__name__}: .*Connection"
        with pytest.raises(InputError, match=rf"p\.parquet: could not read it {reason}"):
            describe_source(source)
    finally:
        filesystems.unregister_filesystem("dropping")
        memory.rm(bucket, recursive=True)


# pyarrow's S3 client's error when a connection drops: a plain OSError, told apart by its status
S3_DROP = (
    "AWS Error NETWORK_CONNECTION during GetObject operation: curlCode: 56, Failure when "
    "receiving data from the peer"
)
GCS_DROP = (
    "google::cloud::Status(UNAVAILABLE: Retry policy exhausted, with a last message of "
    "PerformWork() - CURL error [56]"
)


def hub_error(status: int, message: str) -> Exception:
    """The hub client's error for an HTTP status (an OSError), as it raises it."""
    import types

    from huggingface_hub.errors import HfHubHTTPError

    response = types.SimpleNamespace(status_code=status, headers={}, request=None)
    return HfHubHTTPError(message, response=response)


# a store's refusal to read one object (its permissions, the credentials): the file's, not the
# network's, as pyarrow's S3 client and the hub client raise it
DENIED = [
    PermissionError(13, "Permission denied"),
    OSError(
        "When reading information for key 'corpus/b.parquet' in bucket 'x': AWS Error "
        "ACCESS_DENIED during HeadObject operation: No response body."
    ),
    hub_error(403, "403 Client Error: Forbidden for url: https://hf.co/x"),
]


@pytest.mark.parametrize("error", DENIED, ids=["permission", "s3", "hub"])
def test_a_remote_file_whose_identity_cannot_be_read_is_a_bad_shard(tiny, tmp_path, error):
    """An object of a folder URL that is listed but may not be read stops the run with a message
    naming it and the fix, or, with --skip-bad, is skipped and listed like any bad shard, the
    other files counted."""
    from fsspec.implementations.memory import MemoryFileSystem
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    class Refusing(FSSpecHandler):
        def get_file_info(self, paths):
            if any(path.endswith("/b.parquet") for path in paths):
                raise error
            return super().get_file_info(paths)

        def open_input_file(self, path):
            if path.endswith("/b.parquet"):
                raise error
            return super().open_input_file(path)

    memory = MemoryFileSystem()
    bucket = f"/denied-{uuid.uuid4().hex[:8]}"
    local = tmp_path / "a.parquet"
    local.write_bytes(parquet_bytes(CAPTIONS["a"]))
    for name, captions in CAPTIONS.items():
        memory.pipe(f"{bucket}/{name}.parquet", parquet_bytes(captions))
    filesystems.register_filesystem(
        "denied", lambda url: (PyFileSystem(Refusing(memory)), "/" + url.split("://", 1)[1])
    )
    denied = f"denied://{bucket.lstrip('/')}/b.parquet"
    try:
        with pytest.raises(BadShardError) as stopped:
            count([f"denied:/{bucket}"], tiny, tmp_path / "run")
        assert stopped.value.label == denied
        assert one_line(error) in stopped.value.reason
        assert "credentials of denied://" in str(stopped.value)
        assert "--skip-bad" in str(stopped.value)
        result = count([f"denied:/{bucket}"], tiny, tmp_path / "run", skip_bad=True)
    finally:
        filesystems.unregister_filesystem("denied")
        memory.rm(bucket, recursive=True)
    (skipped,) = result.manifest["skipped_shards"]
    assert skipped["shard"] == denied and one_line(error) in skipped["reason"]
    assert result.manifest["inputs"][0]["files"][1] == {
        "path": denied,
        "unreadable": one_line(error),
    }
    alone = count([local], tiny, tmp_path / "local")
    assert result.n_captions_read == alone.n_captions_read == len(CAPTIONS["a"])
    assert result.concepts.equals(alone.concepts)


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("parquet", ConnectError("Connection reset (a test's)")),
        ("txt", ConnectError("Connection reset (a test's)")),
        ("parquet", OSError(S3_DROP)),
        ("txt", OSError(GCS_DROP)),
        ("parquet", hub_error(429, "429 Client Error: Too Many Requests for url: https://hf.co/x")),
    ],
)
def test_a_connection_lost_while_counting_stops_the_run_and_a_rerun_resumes(
    tiny, tmp_path, monkeypatch, kind, error
):
    """The network drops once the run is planned, while file b is read: the run stops with one
    message (not a bad shard: --skip-bad does not skip it), keeps a's shards, and the same
    command resumes after them once the network is back."""
    from fsspec.implementations.memory import MemoryFileSystem
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    from clipaudit import coverage
    from clipaudit.readers import ConnectionLostError

    dropped = []  # non-empty while the connection is down

    class Dropping:
        def __init__(self, handle, path):
            self.handle, self.path = handle, path

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def read(self, *args, **kwargs):
            if dropped and self.path.endswith(f"b.{kind}"):
                raise error
            return self.handle.read(*args, **kwargs)

    memory = MemoryFileSystem(skip_instance_cache=True)  # its own open, the store shared
    memory.open = lambda path, mode="rb", **kw: Dropping(
        MemoryFileSystem.open(memory, path, mode, **kw), path
    )
    bucket = f"/lost-{uuid.uuid4().hex[:8]}"
    local = tmp_path / "corpus"
    local.mkdir()
    for name, captions in CAPTIONS.items():
        data = (
            parquet_bytes(captions)
            if kind == "parquet"
            else "".join(f"{caption or ''}\n" for caption in captions).encode()
        )
        memory.pipe(f"{bucket}/{name}.{kind}", data)
        (local / f"{name}.{kind}").write_bytes(data)
    planned = coverage.plan_shards

    def plan_then_drop(*args, **kwargs):
        shards = list(planned(*args, **kwargs))
        dropped.append(True)
        return iter(shards)

    monkeypatch.setattr(coverage, "plan_shards", plan_then_drop)
    filesystems.register_filesystem(
        "lost", lambda url: (PyFileSystem(FSSpecHandler(memory)), "/" + url.split("://", 1)[1])
    )
    try:
        source = [f"lost:/{bucket}"]
        reason = re.escape(one_line(error))
        with pytest.raises(ConnectionLostError, match=rf"b\.{kind}.*reading stopped \({reason}\)"):
            count(source, tiny, tmp_path / "run", skip_bad=True)
        dropped.clear()
        monkeypatch.setattr(coverage, "plan_shards", planned)
        resumed = count(source, tiny, tmp_path / "run")
    finally:
        filesystems.unregister_filesystem("lost")
        memory.rm(bucket, recursive=True)
    assert resumed.manifest["timings"]["shards_resumed"] == 4  # a's 32 rows, 10 a shard
    assert resumed.manifest["skipped_shards"] == []
    count([local], tiny, tmp_path / "local")
    assert_same_outputs(tmp_path / "run", tmp_path / "local")


@pytest.mark.parametrize("kind", ["txt", "jsonl"])
@pytest.mark.parametrize("error", [ConnectError("Connection reset (a test's)"), OSError(S3_DROP)])
def test_a_connection_lost_while_planning_a_text_file_is_one_clear_error(
    tiny, tmp_path, monkeypatch, kind, error
):
    """Planning reads a remote text file (its head checked, then its lines cut into shards) after
    its identity: the network's error there is the same one message as while counting, with
    --skip-bad too (the file is not skipped as bad), and the same command counts it once the
    network is back."""
    from fsspec.implementations.memory import MemoryFileSystem
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    from clipaudit import coverage
    from clipaudit.readers import ConnectionLostError

    planning = []  # a file's opens since the identities were read, while the network drops

    class Dropping:
        def __init__(self, handle):
            self.handle = handle
            self.dropped = bool(planning) and planning[-1] > 0  # once the head was checked
            if planning:
                planning[-1] += 1

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def read(self, *args, **kwargs):
            if self.dropped:
                raise error
            return self.handle.read(*args, **kwargs)

    memory = MemoryFileSystem(skip_instance_cache=True)
    memory.open = lambda path, mode="rb", **kw: Dropping(
        MemoryFileSystem.open(memory, path, mode, **kw)
    )
    captions = ["A red cat.", "a hot dog", "Two puppies", "nothing here"] * 5
    data = (
        "".join(f'{{"caption": "{c}"}}\n' for c in captions)
        if kind == "jsonl"
        else "".join(f"{c}\n" for c in captions)
    ).encode()
    bucket = f"/plan-{uuid.uuid4().hex[:8]}"
    memory.pipe(f"{bucket}/c.{kind}", data)
    (tmp_path / f"c.{kind}").write_bytes(data)
    described = coverage.describe_source

    def describe_then_drop(*args, **kwargs):
        record = described(*args, **kwargs)
        planning.append(0)
        return record

    monkeypatch.setattr(coverage, "describe_source", describe_then_drop)
    filesystems.register_filesystem(
        "planlost", lambda url: (PyFileSystem(FSSpecHandler(memory)), "/" + url.split("://", 1)[1])
    )
    url = f"planlost:/{bucket}/c.{kind}"
    try:
        with pytest.raises(ConnectionLostError) as stopped:
            count([url], tiny, tmp_path / "run", skip_bad=True, shard_rows=6)
        assert str(stopped.value).startswith(
            f"planlost://{bucket.lstrip('/')}/c.{kind}: reading stopped ({one_line(error)}); "
            "the file may be fine"
        )
        monkeypatch.undo()
        planning.clear()
        resumed = count([url], tiny, tmp_path / "run", shard_rows=6)
    finally:
        filesystems.unregister_filesystem("planlost")
        memory.rm(bucket, recursive=True)
    assert resumed.manifest["skipped_shards"] == [] and resumed.manifest["n_shards"] == 4
    count([tmp_path / f"c.{kind}"], tiny, tmp_path / "local", shard_rows=6)
    assert_same_outputs(tmp_path / "run", tmp_path / "local")


def test_a_hub_stream_lost_before_its_first_row_is_one_clear_error(tiny, tmp_path, monkeypatch):
    """A hub dataset whose columns are known only from its first row (no features in its
    metadata): the network's error reading that row is the stream's one message, as later."""
    import json

    from clipaudit import readers
    from clipaudit.readers import ConnectionLostError

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    folder = tmp_path / "hub_like"
    folder.mkdir()
    records = [{"caption": f"a red cat number {i}", "id": i} for i in range(5)]
    (folder / "part.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    opened = readers._open_stream
    up = [False]

    class Unfeatured:  # columns unknown until a row is read; the connection is down at first
        def __init__(self, dataset):
            self.dataset, self.column_names = dataset, None

        def iter(self, batch_size):
            if not up[0]:
                raise ConnectError("[Errno 111] Connection refused (a test's)")
            yield from self.dataset.iter(batch_size=batch_size)

        def __iter__(self):  # rows one by one (what this module read them with before)
            return iter(self.dataset) if up[0] else self.iter(1)

        def select_columns(self, columns):
            return self.dataset.select_columns(columns)

    monkeypatch.setattr(readers, "_open_stream", lambda *args: Unfeatured(opened(*args)))
    with pytest.raises(ConnectionLostError) as lost:
        count([f"hf:{folder}"], tiny, tmp_path / "run", shard_rows=2)
    assert str(lost.value).startswith(
        f"hf:{folder} (rows from 0): reading stopped (ConnectError: [Errno 111] Connection "
        "refused (a test's)); the file may be fine"
    )
    up[0] = True
    resumed = count([f"hf:{folder}"], tiny, tmp_path / "run", shard_rows=2)
    assert resumed.manifest["n_shards"] == 3 and resumed.n_captions_read == 5
    assert resumed.concepts.set_index("concept")["count"]["red"] == 5


def test_an_unreachable_hub_is_one_line_and_exit_code_2(tmp_path, monkeypatch, capsys):
    """hf:// with no network: the hub client's own error (httpx's, no OSError) while listing."""
    from huggingface_hub import HfFileSystem

    from clipaudit.cli import main

    def unreachable(self, path, **kwargs):
        raise ConnectError("[Errno 111] Connection refused (a test's)")

    monkeypatch.setattr(HfFileSystem, "info", unreachable)
    url = "hf://datasets/someorg/nonexist/data.parquet"
    with pytest.raises(InputError) as stopped:
        resolve_sources([url])
    assert str(stopped.value) == (
        f"caption source {url!r} cannot be read (ConnectError: [Errno 111] Connection refused "
        "(a test's)); check the URL, the network and the credentials of hf://"
    )
    with pytest.raises(SystemExit) as exited:
        main(["coverage", "count", url, "--out", str(tmp_path / "run")])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {stopped.value}"]


def test_url_schemes_resolve_to_pyarrow_filesystems_and_unknown_ones_are_refused():
    import pyarrow.fs as pafs

    s3, path = filesystems.resolve_url("s3://laion-bucket/meta/part-0.parquet?region=us-east-1")
    assert isinstance(s3, pafs.S3FileSystem) and path == "laion-bucket/meta/part-0.parquet"
    gs, path = filesystems.resolve_url("gs://laion-bucket/meta")
    assert isinstance(gs, pafs.GcsFileSystem) and path == "laion-bucket/meta"
    hf, path = filesystems.resolve_url("hf://datasets/laion/relaion2B-en-research-safe/part-0")
    assert isinstance(hf, pafs.PyFileSystem)
    assert type(hf.handler.fs).__name__ == "HfFileSystem"
    assert path == "datasets/laion/relaion2B-en-research-safe/part-0"
    local, path = filesystems.resolve_url("file:///tmp/captions")
    assert isinstance(local, pafs.LocalFileSystem) and path == "/tmp/captions"
    with pytest.raises(InputError, match=r"unknown URL scheme 's3a://' \(did you mean 's3'\?\)"):
        resolve_sources(["s3a://bucket/x.parquet"])
    with pytest.raises(InputError, match=r"expected hf://datasets/OWNER/NAME/PATH"):
        filesystems.resolve_url("hf://laion")
    web = "https://huggingface.co/datasets/laion/x/resolve/main/part-0.parquet"
    with pytest.raises(InputError) as refused:
        resolve_sources([web])
    assert str(refused.value) == (
        f"caption source {web!r}: web URLs are not read; download the file first (curl -LO URL) "
        "and name the copy, or name a Hugging Face dataset's files as hf://datasets/OWNER/NAME/PATH"
    )
    # a caption that looks like a web address stays a caption
    assert not any(
        filesystems.url_scheme(c) in filesystems.known_schemes() for c in ["https://x.org/a"]
    )


def test_gs_that_cannot_be_reached_is_one_clear_error_within_the_retry_limit(monkeypatch):
    """pyarrow's GCS client retries a request the network or the credentials fail for 15
    minutes, in silence, unless told otherwise: gs:// (here at a local port nothing listens on,
    with no credentials) says it cannot be read once the retry limit has passed; a URL's own
    limit wins."""
    from datetime import timedelta

    def retry_limit(url: str) -> timedelta:
        gcs, _ = filesystems.resolve_url(url)
        return gcs.__reduce__()[1][0]["retry_time_limit"]

    assert retry_limit("gs://bucket/x.parquet") == timedelta(seconds=60)
    assert retry_limit("gcs://bucket/x?retry_limit_seconds=300&project_id=p") == timedelta(
        seconds=300
    )
    monkeypatch.setattr(filesystems, "GCS_RETRY_SECONDS", 2)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"gs://bucket/x.parquet?endpoint_override=127.0.0.1:{port}&scheme=http"
    assert retry_limit(url) == timedelta(seconds=2)
    # with the limit applied the error comes after 2 s of retries; without it, after 15 minutes
    with pytest.raises(InputError, match=rf"caption source '{re.escape(url)}' cannot be read"):
        resolve_sources([url])


def test_a_scheme_whose_library_is_missing_names_what_to_install(monkeypatch):
    """hf:// without the hub client, s3:// with a pyarrow built without S3 (conda's
    pyarrow-core): one message naming what to install, not "check the credentials"."""
    import types

    import pyarrow

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import now raises ImportError
    url = "hf://datasets/laion/relaion2B-en-research-safe/part-0.parquet"
    with pytest.raises(InputError) as missing:
        resolve_sources([url])
    assert str(missing.value) == (
        f"caption source {url!r}: reading hf:// needs the huggingface_hub package, which is not "
        "installed here: pip install huggingface_hub"
    )

    def without_s3(uri):
        raise pyarrow.ArrowNotImplementedError("Got S3 URI but Arrow compiled without S3 support")

    stub = types.SimpleNamespace(FileSystem=types.SimpleNamespace(from_uri=without_s3))
    monkeypatch.setitem(sys.modules, "pyarrow.fs", stub)
    monkeypatch.setattr(pyarrow, "fs", stub, raising=False)
    with pytest.raises(InputError) as unbuilt:
        resolve_sources(["s3://bucket/x.parquet"])
    assert str(unbuilt.value) == (
        "caption source 's3://bucket/x.parquet': this pyarrow cannot read s3:// "
        "(ArrowNotImplementedError: Got S3 URI but Arrow compiled without S3 support); install a "
        "build that can: pip install --force-reinstall pyarrow, or conda install -c conda-forge "
        "pyarrow (not pyarrow-core)"
    )


def test_a_remote_file_named_twice_is_refused_and_a_copy_counts(tiny, tmp_path, memory_bucket):
    """One file by its URL twice, inside a folder URL also named, or by path and by file:// URL,
    would be counted twice: refused, as a local file named twice is; a copy at another key is
    other captions."""
    data = parquet_bytes(CAPTIONS["a"])
    url = memory_bucket("corpus/a.parquet", data)
    folder = f"{memory_bucket.bucket}/corpus"
    local = tmp_path / "a.parquet"
    local.write_bytes(data)
    for specs, named in (
        ([url, url], url),
        ([folder, url], url),
        ([local, f"file://{local}"], f"file://{local}"),
    ):
        with pytest.raises(InputError) as refused:
            resolve_sources(specs)
        assert str(refused.value) == (
            f"caption file {named!r} is named twice (as {str(specs[0])!r} and {specs[1]!r}); "
            "name each file or folder once"
        )
    copy = memory_bucket("copy/a.parquet", data)
    both = count([url, copy], tiny, tmp_path / "run")
    assert both.n_captions_read == 2 * len(CAPTIONS["a"])


def test_a_run_synced_into_a_folder_url_is_left_out_as_a_local_one_is(
    tiny, tmp_path, memory_bucket
):
    """A coverage run synced into the caption folder (``aws s3 sync runs/ s3://corpus/runs/``)
    holds parquet tables without a caption column: left out, as a local folder leaves its runs
    out, not refused for the column. Another tool's manifest.json hides nothing, and the run's
    own folder named as captions is said to be a run."""
    local = corpus_in_both(tmp_path, memory_bucket)
    on_disk = count([local], tiny, local / "runs" / "first")  # written into the folder it counts
    for path in sorted((local / "runs").rglob("*")):
        if path.is_file():
            memory_bucket(f"corpus/{path.relative_to(local).as_posix()}", path.read_bytes())
    assert any(p.suffix == ".parquet" for p in (local / "runs" / "first").rglob("*"))
    other = {"kind": "report", "tool": "not clipaudit"}  # no clipaudit_version: no run of ours
    memory_bucket("corpus/notes/manifest.json", json.dumps(other).encode())
    memory_bucket("corpus/notes/c.parquet", parquet_bytes(["a happy dog"]))
    (local / "notes").mkdir()
    (local / "notes" / "manifest.json").write_text(json.dumps(other))
    (local / "notes" / "c.parquet").write_bytes(parquet_bytes(["a happy dog"]))
    remote = count([f"{memory_bucket.bucket}/corpus"], tiny, tmp_path / "remote")
    files = [f["path"].rsplit("/corpus/", 1)[1] for f in remote.manifest["inputs"][0]["files"]]
    assert files == ["a.parquet", "b.parquet", "notes/c.parquet"]
    assert remote.n_captions_read == on_disk.n_captions_read + 1
    count([local], tiny, tmp_path / "local")  # its own run, and the other tool's files, read
    assert_same_outputs(tmp_path / "remote", tmp_path / "local")
    run_url = f"{memory_bucket.bucket}/corpus/runs/first"
    with pytest.raises(InputError) as refused:
        resolve_sources([run_url])
    assert str(refused.value) == (
        f"{run_url!r} is a clipaudit run folder (a coverage run), not captions; give the caption "
        "files or folder the run should count"
    )


def test_a_missing_remote_source_is_one_clear_error(memory_bucket):
    with pytest.raises(InputError, match=r"memtest://.*/nothing' does not exist"):
        resolve_sources([f"{memory_bucket.bucket}/nothing"])
    memory_bucket("corpus/part-0.parquet", parquet_bytes(["a dog"]))
    pattern = f"{memory_bucket.bucket}/corpus/part-*.parquet"  # no shell expands a URL's glob
    with pytest.raises(InputError) as refused:
        resolve_sources([pattern])
    assert str(refused.value) == (
        f"caption source {pattern!r} does not exist: patterns (* ? [...] {{a,b}} {{0..9}}) are "
        "not expanded here; name the folder, whose caption files are all read, or name each "
        "file; expected a .parquet, .jsonl or .txt file or a folder of them at that URL"
    )


# --------------------------------------------------------------------------- engine settings


def test_engine_settings_are_checked_when_made():
    with pytest.raises(SettingsError, match=r"unknown engine 'rai' \(did you mean 'ray'\?\)"):
        CoverageSettings(engine="rai")
    with pytest.raises(SettingsError, match=r"ray_address \(--ray-address\) .* only applies to"):
        CoverageSettings(ray_address="10.0.0.1:6379")
    assert CoverageSettings(engine="ray", workers=None).workers is None
    assert "engine" not in CoverageSettings(engine="ray").result_fields()


def test_the_ray_engine_without_ray_says_how_to_install_it(tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(EngineError, match=r"pip install 'clipaudit\[ray\]'"):
        count(["a red cat"], tiny, tmp_path / "run", engine="ray")
    assert not (tmp_path / "run").exists()  # refused before anything was written
    blocked = (
        "import sys; sys.modules['ray'] = None; from clipaudit.cli import main; "
        f"main(['coverage', 'count', {str(REPO / 'README.md')!r}, '--out', "
        f"{str(tmp_path / 'cli')!r}, '--engine', 'ray'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", blocked], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --engine ray needs Ray, which is not installed here; pip install "
        "'clipaudit[ray]' (or count with --engine local)"
    ]


def test_an_unreachable_cluster_fails_in_seconds(tiny, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    clock = time.monotonic()
    with pytest.raises(
        EngineError, match=rf"cannot reach the Ray cluster at '127\.0\.0\.1:{port}'"
    ):
        count(["a red cat"], tiny, tmp_path / "run", engine="ray")
    assert time.monotonic() - clock < 5
    assert not (tmp_path / "run").exists()
    with pytest.raises(EngineError, match=r"is not HOST:PORT"):
        count(["a red cat"], tiny, tmp_path / "run", engine="ray", ray_address="nowhere")
    monkeypatch.setitem(sys.modules, "grpc", None)
    with pytest.raises(
        EngineError, match=r"Ray Client address, which needs pip install 'ray\[client\]'"
    ):
        count(
            ["a red cat"],
            tiny,
            tmp_path / "run",
            engine="ray",
            ray_address=f"ray://127.0.0.1:{port}",
        )


@pytest.mark.parametrize(
    "answer",
    [None, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"],
    ids=["silent", "http"],
)
def test_an_address_where_no_ray_cluster_answers_is_refused_not_waited_on(tiny, tmp_path, answer):
    """Something listens at the address but is no Ray head node (the dashboard's port, another
    service, a host that accepts and says nothing): Ray would wait on it without end."""
    pytest.importorskip("ray")
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    held = []

    def serve():
        while True:
            try:
                connection, _ = server.accept()
            except OSError:  # closed: the test is over
                return
            held.append(connection)
            if answer is not None:
                connection.recv(1024)
                connection.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    try:
        with pytest.raises(EngineError) as refused:
            count(
                ["a red cat"], tiny, tmp_path / "run", engine="ray", ray_address=f"127.0.0.1:{port}"
            )
    finally:
        server.close()
        for connection in held:
            connection.close()
    assert str(refused.value).startswith(
        f"something answers at the Ray address '127.0.0.1:{port}' but not as a Ray cluster does"
    )
    assert "not the dashboard's" in str(refused.value)
    assert not (tmp_path / "run").exists()


def test_the_library_and_the_command_line_do_not_import_ray_or_the_hub_client():
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, clipaudit.cli, clipaudit.coverage, clipaudit.engines, "
            "clipaudit.filesystems; print(sorted({'ray', 'huggingface_hub'} & set(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr

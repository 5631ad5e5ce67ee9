"""The hub checks (clipaudit.hub) on the paths that need no model: a hub caption dataset, image
dataset or sentence-transformers encoder that cannot be opened offline is refused without torch
and open_clip being imported (about 6 s spent on an error)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# each path's call, made in a fresh interpreter; the message must still say what to do offline
PATHS = {
    "captions": (
        "from clipaudit.readers import plan_shards, resolve_sources\n"
        "for shard in plan_shards(resolve_sources(['hf:clipaudit-test-org/never-cached'])):\n"
        "    list(shard.read())\n",
        ("'clipaudit-test-org/never-cached'", "save_to_disk"),
    ),
    "images": (
        "from clipaudit.images import check_image_source\n"
        "check_image_source('hf:clipaudit-test-org/never-cached')\n",
        ("'clipaudit-test-org/never-cached'", "save_to_disk", "--images"),
    ),
    "encoder": (
        "from clipaudit.semantic.encoders import load_encoder, parse_encoder\n"
        "load_encoder(parse_encoder('st:clipaudit-test-org/never-cached', device='cpu'))\n",
        ("'clipaudit-test-org/never-cached' is not a local folder, is not downloaded",),
    ),
}


@pytest.mark.parametrize("path", sorted(PATHS))
def test_a_hub_source_refused_offline_imports_neither_torch_nor_open_clip(path, tmp_path):
    code, words = PATHS[path]
    probe = (
        "import json, sys\nfrom clipaudit.errors import ClipAuditError\ntry:\n"
        + "".join(f"    {line}\n" for line in code.splitlines())
        + "except ClipAuditError as exc:\n    message = str(exc)\nelse:\n    message = None\n"
        "print(json.dumps([message, sorted({'torch', 'open_clip'} & set(sys.modules))]))"
    )
    cache = tmp_path / "hf"  # empty: nothing cached
    env = {
        **os.environ,
        "HF_HOME": str(cache),
        "HF_HUB_CACHE": str(cache / "hub"),
        "HF_DATASETS_CACHE": str(cache / "datasets"),
        "SENTENCE_TRANSFORMERS_HOME": str(cache / "st"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,  # a hub name is no folder here
        env={**env, "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    message, heavy = json.loads(result.stdout.splitlines()[-1])
    assert message is not None, "no error raised"
    for word in ("HF_HUB_OFFLINE is set (unset it to download)", *words):
        assert word in message, message
    assert heavy == [], f"{path}: imported {heavy} to say {message!r}"

"""The peer tool, CLIP_benchmark, in its own venv (its pins are not clipaudit's), and how to call it.

``peer_python()`` creates ``benchmarks/data/peer-venv`` with uv on first use and installs
``clip-benchmark`` there (uv from ``.tools/bin/uv``, ``$PATH``, or installed with pip into ``.tools``
as the Makefile does); ``run_peer(job, folder)`` runs ``peer_clip_benchmark.py`` with that venv's
python.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PEER_VENV = REPO / "benchmarks" / "data" / "peer-venv"
# clip-benchmark 1.6.2 imports requests without declaring it, and its acc1 (float() of a 1-element
# array) fails on numpy >= 2.4
PEER_PACKAGES = ("clip-benchmark", "requests", "numpy<2.4")
PEER_PROBE = (
    "import clip_benchmark.cli, clip_benchmark.webdataset_builder, numpy; "
    "assert numpy.lib.NumpyVersion(numpy.__version__) < '2.4.0'"
)

# the scripts here import clipaudit and the tiny test model from this checkout
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _uv() -> str:
    local = REPO / ".tools" / "bin" / "uv"
    if local.exists():
        return str(local)
    found = shutil.which("uv")
    if found:
        return found
    base = getattr(sys, "_base_executable", sys.executable)  # a uv-made venv has no pip
    subprocess.run(
        [base, "-m", "pip", "install", "--quiet", "--target", str(REPO / ".tools"), "uv"],
        check=True,
    )
    return str(local)


def peer_python() -> Path:
    """The peer venv's python, creating the venv and installing CLIP_benchmark when missing."""
    python = PEER_VENV / "bin" / "python"
    if (
        python.exists()
        and subprocess.run([str(python), "-c", PEER_PROBE], capture_output=True).returncode == 0
    ):
        return python
    uv = _uv()
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    if not python.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([uv, "venv", "--python", base, str(PEER_VENV)], check=True, env=env)
    subprocess.run(
        [uv, "pip", "install", "--python", str(python), *PEER_PACKAGES], check=True, env=env
    )
    return python


def peer_versions() -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in "
        "('clip-benchmark', 'open_clip_torch', 'torch', 'numpy', 'webdataset')}))"
    )
    done = subprocess.run(
        [str(peer_python()), "-c", code], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def run_peer(job: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Run CLIP_benchmark on ``job`` (see peer_clip_benchmark.py) and return its results."""
    folder.mkdir(parents=True, exist_ok=True)
    job_file, result_file = folder / "peer_job.json", folder / "peer_result.json"
    job_file.write_text(json.dumps(job, indent=2))
    script = Path(__file__).with_name("peer_clip_benchmark.py")
    subprocess.run([str(peer_python()), str(script), str(job_file), str(result_file)], check=True)
    return json.loads(result_file.read_text())

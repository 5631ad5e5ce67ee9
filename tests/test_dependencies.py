"""The project's rule: a dependency is declared exactly when the package's code imports it."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# distribution -> the top-level modules it gives (where they are not the distribution's name)
MODULES = {
    "open_clip_torch": {"open_clip"},
    "pyahocorasick": {"ahocorasick"},
    "faiss-cpu": {"faiss"},
    "faiss-gpu-cu12": {"faiss"},
    "scikit-learn": {"sklearn"},
    "pyyaml": {"yaml"},
    "pillow": {"PIL"},
    "ray": {"ray", "grpc"},  # ray[client]: grpc, which ray:// addresses need
}


def _imported() -> set[str]:
    """The third-party top-level modules that clipaudit/ imports, anywhere in a module."""
    found: set[str] = set()
    for path in (REPO / "clipaudit").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names and name != "clipaudit"}


def test_every_dependency_is_imported_and_every_import_declared():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    declared = [
        *project["dependencies"],
        *(d for name in ("gpu", "ray", "minilm") for d in extras[name]),
    ]
    modules: set[str] = set()
    for requirement in declared:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement)[0].lower()
        modules |= MODULES.get(name, {name.replace("-", "_")})
    imported = _imported()
    assert sorted(imported - modules) == [], "imported but not declared"
    assert sorted(modules - imported) == [], "declared but never imported"

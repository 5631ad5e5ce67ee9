"""clipaudit: audit which visual concepts an OpenCLIP model is aware of, and explain why.

The public API is imported lazily so that ``import clipaudit`` (and ``clipaudit --help``) stays fast:
torch, open_clip, spaCy and FAISS load only when a function that needs them runs.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_PUBLIC = {
    "load_registry": "clipaudit.registry",
    "list_registries": "clipaudit.registry",
    "Registry": "clipaudit.registry",
    "Concept": "clipaudit.registry",
    "Group": "clipaudit.registry",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'clipaudit' has no attribute {name!r}")

"""clipaudit: audit which visual concepts an OpenCLIP model is aware of, and explain why.

The public API, imported lazily so that ``import clipaudit`` (and ``clipaudit --help``) stays fast
(torch, open_clip, spaCy and FAISS load only when a function that needs them runs)::

    import clipaudit

    clipaudit.match_captions(["A brown dog on the beach."])       # [["dog", "brown", "beach"]]
    coverage = clipaudit.count_coverage(df, column="text", registry="cai2025", out="runs/cov")
    clipaudit.calibrate("gold.jsonl", "minilm.json")                # thresholds for an encoder
    both = clipaudit.count_coverage(df, out="runs/sem", method="both", calibration="minilm.json")
    clipaudit.index_run("runs/sem"); clipaudit.query_run("runs/sem", "origami").count
    awareness = clipaudit.run_zeroshot(("ViT-B-32", "laion400m_e32"), "images/", "runs/zs")
    run = clipaudit.load_run("runs/cov")                           # any run folder, typed
    report = clipaudit.build_report([coverage, awareness], "runs/report")
    everything = clipaudit.run_audit(df, "images/", ("ViT-B-32", "laion400m_e32"), "runs/audit")

Each function that reads a registry takes a built-in name, a YAML path or a :class:`Registry`. The
results are :class:`CoverageResult`, :class:`ZeroShotRun`, :class:`Report` and :class:`AuditRun`
(``help()`` on each lists its tables). A call that cannot be done raises one subclass of
``clipaudit.errors.ClipAuditError`` (``InputError``, ``SettingsError``, ``RegistryError``,
``ModelError``, ``RunFolderError``, ``RunFailedError``, ``EngineError``), whose message says
what was expected, what was given and what to do.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_PUBLIC = {
    "load_registry": "clipaudit.registry",
    "list_registries": "clipaudit.registry",
    "Registry": "clipaudit.registry",
    "Concept": "clipaudit.registry",
    "Group": "clipaudit.registry",
    "match_captions": "clipaudit.lexical",
    "count_coverage": "clipaudit.coverage",
    "CoverageResult": "clipaudit.coverage",
    "CoverageSettings": "clipaudit.coverage",
    "CaptionSources": "clipaudit.coverage",
    "calibrate": "clipaudit.coverage_semantic",
    "index_run": "clipaudit.coverage_semantic",
    "query_run": "clipaudit.coverage_semantic",
    "CalibrationReport": "clipaudit.coverage_semantic",
    "run_zeroshot": "clipaudit.zeroshot",
    "ZeroShotRun": "clipaudit.zeroshot",
    "ModelSpec": "clipaudit.models",
    "load_run": "clipaudit.runs",
    "build_report": "clipaudit.report",
    "Report": "clipaudit.report",
    "run_audit": "clipaudit.audit",
    "AuditRun": "clipaudit.audit",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    module = _submodule(__name__, name)
    if module is not None:
        return module
    raise AttributeError(f"module 'clipaudit' has no attribute {name!r}")


def _submodule(package: str, name: str) -> ModuleType | None:
    """``package``'s submodule ``name``, loaded on first use as the functions are (None when there
    is none): ``clipaudit.errors.InputError`` and ``clipaudit.semantic.calibration`` work after a
    bare ``import clipaudit``, not only once something else happened to import them."""
    if not name.isidentifier() or name.startswith("_"):
        return None
    from importlib.util import find_spec

    if find_spec(f"{package}.{name}") is None:
        return None
    return importlib.import_module(f"{package}.{name}")


def __dir__() -> list[str]:
    """The public names and the submodules, loaded or not (tab completion in Jupyter lists
    them), not what the package imports for itself (``Any``, ``importlib``)."""
    import pkgutil

    modules = {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}
    dunders = {name for name in globals() if name.startswith("__")}
    return sorted({*dunders, *_PUBLIC, *modules})

"""Semantic caption coverage: caption embeddings, FAISS counting, sense checks, calibration and an
index for new-concept queries (issue 15).

- :mod:`~clipaudit.semantic.encoders`: text encoders (sentence-transformers, OpenCLIP text towers);
- :mod:`~clipaudit.semantic.store`: float16 caption-embedding shards (resumable), LAION's own;
- :mod:`~clipaudit.semantic.concepts`: concept and query vectors from the same encoder;
- :mod:`~clipaudit.semantic.counting`: FAISS counting with per-concept thresholds, nearest captions;
- :mod:`~clipaudit.semantic.calibration`: thresholds fitted on labelled captions, cross-validated;
- :mod:`~clipaudit.semantic.checked`: the ``checked`` method (lexical hits sense-checked, plus
  semantic-only additions);
- :mod:`~clipaudit.semantic.index`: a flat or IVF-PQ index over a run's captions.

``coverage count --method semantic|both|checked`` puts them together
(:mod:`clipaudit.coverage_semantic`).

Nothing here imports torch, FAISS, sentence-transformers or open_clip at import time; the names
below are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from clipaudit import _submodule

_PUBLIC = {
    "EncoderSpec": "encoders",
    "TextEncoder": "encoders",
    "load_encoder": "encoders",
    "parse_encoder": "encoders",
    "minilm_path": "encoders",
    "same_encoder": "encoders",
    "EmbeddingStore": "store",
    "EmbeddingBatch": "store",
    "embed_parts": "store",
    "embed_texts": "store",
    "LaionEmbeddings": "store",
    "ConceptEmbeddings": "concepts",
    "concept_embeddings": "concepts",
    "query_vectors": "concepts",
    "SemanticCounter": "counting",
    "SemanticCounts": "counting",
    "count_semantic": "counting",
    "Calibration": "calibration",
    "Evidence": "calibration",
    "gather_evidence": "calibration",
    "concat_evidence": "calibration",
    "fit_calibration": "calibration",
    "calibration_for": "calibration",
    "cross_validate": "calibration",
    "transfer": "calibration",
    "SenseChecker": "checked",
    "CheckedPairs": "checked",
    "CaptionIndex": "index",
    "IndexSettings": "index",
    "QueryResult": "index",
}

__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f"clipaudit.semantic.{_PUBLIC[name]}"), name)
    module = _submodule(__name__, name)
    if module is not None:
        return module
    raise AttributeError(f"module 'clipaudit.semantic' has no attribute {name!r}")

"""Concept embeddings: what a caption is compared with, made by the caption encoder itself.

For every concept of a registry, two unit vectors:

- ``vectors``: the renormalised mean of the normalised embeddings of its distinct ``prompts``,
  ``synonyms`` and ``gloss`` (prompt ensembling, as CLIP's zero-shot classifiers do): what
  semantic counting compares a caption with;
- ``glosses``: the embedding of the gloss alone, which fixes the concept's sense: what the sense
  check of the ``checked`` method compares a caption with a lexical hit with.

A free-text query (a concept no registry names, "origami") is embedded with :func:`query_vectors`,
the same way from its words.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipaudit.errors import InputError
from clipaudit.registry import Registry
from clipaudit.semantic.encoders import TextEncoder, check_finite, normalise, unknown_only
from clipaudit.semantic.store import holds_no_word


@dataclass(frozen=True)
class ConceptEmbeddings:
    """Unit vectors of a registry's concepts, and the encoder that made them."""

    names: tuple[str, ...]
    vectors: np.ndarray  # (n_concepts, dim) float32: prompts + synonyms + gloss, averaged
    glosses: np.ndarray  # (n_concepts, dim) float32: the gloss alone
    encoder: dict[str, Any]
    texts: dict[str, list[str]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise InputError(f"no concept {name!r} among the embedded concepts") from None


def concept_texts(concept: Any) -> list[str]:
    """The distinct texts a concept's vector averages: its prompts, synonyms and gloss."""
    texts = [*concept.prompts, *concept.synonyms, concept.gloss]
    return list(dict.fromkeys(t.strip() for t in texts if t and t.strip()))


def _read_cached(path: Path, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray] | None:
    """Cached concept and gloss vectors of ``shape``, or None when the file is missing or
    damaged (it is then embedded again and rewritten)."""
    try:
        with np.load(path, allow_pickle=False) as held:
            vectors, glosses = held["vectors"], held["glosses"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    fits = vectors.shape == shape == glosses.shape and np.isfinite(vectors).all()
    return (vectors, glosses) if fits and np.isfinite(glosses).all() else None


def concept_embeddings(
    registry: Registry, encoder: TextEncoder, *, cache: str | Path | None = None
) -> ConceptEmbeddings:
    """Embed every concept of ``registry`` with ``encoder`` (one encoder call for all texts).

    ``cache``: a folder (a run's embedding store) where the vectors are kept as
    ``concepts-<hash>.npz``, the hash covering the encoder's identity and every text embedded, so
    a later run with the same encoder and concepts reads them instead of encoding again."""
    from clipaudit.semantic.encoders import IDENTITY_KEYS

    texts = {c.name: concept_texts(c) for c in registry.concepts}
    flat = [t for name in texts for t in texts[name]]
    glosses = [c.gloss for c in registry.concepts]
    path = None
    if cache is not None:
        from clipaudit.runs import fingerprint

        identity = {key: encoder.identity.get(key) for key in IDENTITY_KEYS}
        # a list, in the registry's order: the fingerprint sorts a mapping's keys, and rows are
        # read back by position (two concepts of one gloss, swapped, took each other's vectors)
        ordered = [[name, texts[name], gloss] for name, gloss in zip(texts, glosses, strict=True)]
        key = fingerprint({"encoder": identity, "concepts": ordered})
        path = Path(cache) / f"concepts-{key}.npz"
    held = _read_cached(path, (len(texts), encoder.dim)) if path is not None else None
    if held is not None:
        vectors, gloss_vectors = held
    else:
        encoded = check_finite(encoder, flat + glosses, encoder.encode(flat + glosses))
        vectors = np.empty((len(texts), encoder.dim), dtype=np.float32)
        position = 0
        for row, name in enumerate(texts):
            n = len(texts[name])
            vectors[row] = encoded[position : position + n].mean(axis=0)
            position += n
        vectors, gloss_vectors = normalise(vectors), normalise(encoded[position:])
        if path is not None:
            from clipaudit.provenance import atomic_write_bytes

            buffer = io.BytesIO()
            np.savez(buffer, vectors=vectors, glosses=gloss_vectors)
            atomic_write_bytes(path, buffer.getvalue())
    return ConceptEmbeddings(
        names=tuple(texts),
        vectors=vectors,
        glosses=gloss_vectors,
        encoder=dict(encoder.identity),
        texts=texts,
    )


def query_vectors(queries: Sequence[str | Sequence[str]], encoder: TextEncoder) -> np.ndarray:
    """One unit vector per query: a text, or several words for one concept (averaged)."""
    groups = [[q] if isinstance(q, str) else list(q) for q in queries]
    if any(
        not g or not all(isinstance(t, str) and not holds_no_word(t) for t in g) for g in groups
    ):
        raise InputError("a query must be a non-empty text or a list of non-empty texts")
    texts = [t for g in groups for t in g]
    unknown = np.flatnonzero(unknown_only(encoder, texts))
    if len(unknown):  # its vector is [UNK]'s, shared by every emoji: it would find nothing said
        raise InputError(
            f"query {texts[unknown[0]]!r:.60} is unknown to the encoder "
            f"{encoder.identity.get('model', '?')} (every token of it is outside its "
            "vocabulary, as emoji are to MiniLM): put it in words, e.g. 'cat' for a cat emoji"
        )
    encoded = check_finite(encoder, texts, encoder.encode(texts))
    out = np.empty((len(groups), encoder.dim), dtype=np.float32)
    position = 0
    for row, group in enumerate(groups):
        out[row] = encoded[position : position + len(group)].mean(axis=0)
        position += len(group)
    return normalise(out)

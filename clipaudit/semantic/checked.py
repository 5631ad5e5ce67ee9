"""The ``checked`` method: lexical hits whose sense the caption's embedding confirms, plus
semantic-only hits above a high threshold.

For a batch of captions with lexical pairs (caption, concept) from
:meth:`clipaudit.lexical.Matcher.match_pairs`:

1. sense check: a lexical pair is kept when cos(caption, gloss of the concept) >= the concept's
   ``sense`` threshold; with a precomputed embedding this is one dot product per pair;
2. additions: a (caption, concept) pair without a lexical hit is added when cos(caption, concept)
   >= the concept's ``additions`` threshold, found with the FAISS counter's range search.

Costs: with precomputed caption embeddings (a run's shards, LAION's ``text_emb``), the check is a
row-wise product and the additions one range search per batch. With an encoder and no embeddings,
only captions holding a lexical pair *in doubt* (a concept whose sense threshold can reject, i.e. is
above -1) are encoded when additions are off; additions need every caption's embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clipaudit.errors import InputError
from clipaudit.semantic.calibration import ACCEPT_NONE, Calibration
from clipaudit.semantic.concepts import ConceptEmbeddings
from clipaudit.semantic.counting import SemanticCounter
from clipaudit.semantic.encoders import TextEncoder
from clipaudit.semantic.store import blank_captions, encode_captions

KEPT, DROPPED, ADDED = "kept", "dropped", "added"


@dataclass(frozen=True)
class CheckedPairs:
    """The ``checked`` pairs of a batch, ordered by caption then concept.

    ``rows``/``concepts``: the pairs counted (kept lexical hits and additions); ``added``: which of
    them are semantic-only; ``scores``: the cosine that decided each (gloss cosine for kept pairs,
    concept cosine for additions). ``dropped_rows``/``dropped_concepts``: lexical pairs the sense
    check rejected. ``n_encoded``: captions this call encoded (0 with precomputed vectors).
    """

    rows: np.ndarray
    concepts: np.ndarray
    added: np.ndarray
    scores: np.ndarray
    dropped_rows: np.ndarray
    dropped_concepts: np.ndarray
    dropped_scores: np.ndarray
    n_encoded: int = 0


class SenseChecker:
    """Applies the ``checked`` method to batches (see the module docstring).

    ``concepts`` and ``calibration`` must list the same concepts in the same order as the lexical
    matcher (``calibration.for_concepts(matcher.concept_names)``). ``additions=False`` keeps only
    the sense check. ``encoder`` encodes captions when a batch comes without vectors.
    """

    def __init__(
        self,
        concepts: ConceptEmbeddings,
        calibration: Calibration,
        *,
        additions: bool = True,
        encoder: TextEncoder | None = None,
    ):
        if tuple(calibration.names) != tuple(concepts.names):
            raise InputError(
                "the calibration and the concept embeddings list different concepts; use "
                "calibration.for_concepts(concepts.names)"
            )
        self.concepts = concepts
        self.calibration = calibration
        self.sense = np.asarray(calibration.thresholds["sense"], dtype=np.float32)
        self.doubtful = self.sense > -1.0
        add = np.asarray(calibration.thresholds["additions"], dtype=np.float32)
        self.additions = bool(additions) and bool(np.any(add <= 1.0))
        self.counter = (
            SemanticCounter(
                concepts.vectors, np.minimum(add, ACCEPT_NONE), names=concepts.names, top_k=0
            )
            if self.additions
            else None
        )
        self.encoder = encoder

    def check(
        self,
        lexical_rows: np.ndarray,
        lexical_concepts: np.ndarray,
        *,
        n_captions: int,
        vectors: np.ndarray | None = None,
        captions: Sequence[str] | None = None,
        blank: np.ndarray | None = None,
    ) -> CheckedPairs:
        """Check one batch's lexical pairs; ``vectors`` (n_captions x dim, unit) or ``captions``
        (encoded as needed with the encoder) give the captions' embeddings. ``blank``: captions
        that hold no word, which no addition counts (see :meth:`SemanticCounter.add`); default:
        those of ``captions`` when given."""
        rows = np.asarray(lexical_rows, dtype=np.int64)
        concepts = np.asarray(lexical_concepts, dtype=np.int64)
        n_encoded = 0
        if blank is None and captions is not None:  # an encoder embeds "" near some concept
            blank = blank_captions(captions)
        if vectors is None:
            if captions is None or self.encoder is None:
                raise InputError("checking needs the captions' vectors, or captions and an encoder")
            if len(captions) != n_captions:
                raise InputError(f"{len(captions)} captions for a batch of {n_captions}")
            need = (
                np.arange(n_captions)
                if self.additions
                else np.unique(rows[self.doubtful[concepts]])
            )
            vectors = np.zeros((n_captions, self.concepts.dim), dtype=np.float32)
            if len(need):
                # as the store embeds them: zero for a caption that says nothing to the encoder
                vectors[need] = encode_captions(self.encoder, [captions[i] for i in need.tolist()])
            n_encoded = len(need)
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (n_captions, self.concepts.dim):
            raise InputError(
                f"expected ({n_captions}, {self.concepts.dim}) caption vectors, got {vectors.shape}"
            )
        sense = np.ones(len(rows), dtype=np.float32)
        doubt = self.doubtful[concepts]
        if doubt.any():
            sense[doubt] = np.einsum(
                "ij,ij->i", vectors[rows[doubt]], self.concepts.glosses[concepts[doubt]]
            )
        keep = ~doubt | (sense >= self.sense[concepts])
        out_rows, out_concepts, out_scores = rows[keep], concepts[keep], sense[keep]
        added = np.zeros(len(out_rows), dtype=bool)
        if self.counter is not None:
            hits = self.counter.add(vectors, blank=blank)
            k = len(self.concepts.names)
            new = ~np.isin(hits.rows * k + hits.concepts, rows * k + concepts)
            out_rows = np.concatenate([out_rows, hits.rows[new]])
            out_concepts = np.concatenate([out_concepts, hits.concepts[new]])
            out_scores = np.concatenate([out_scores, hits.scores[new]])
            added = np.concatenate([added, np.ones(int(new.sum()), dtype=bool)])
        order = np.lexsort((out_concepts, out_rows))
        return CheckedPairs(
            out_rows[order], out_concepts[order], added[order], out_scores[order],
            rows[~keep], concepts[~keep], sense[~keep], n_encoded,
        )  # fmt: skip

    def check_captions(
        self, matcher: Any, captions: Sequence[str], vectors: np.ndarray | None = None
    ) -> CheckedPairs:
        """Match ``captions`` lexically with ``matcher`` and check the pairs."""
        if tuple(matcher.concept_names) != tuple(self.concepts.names):
            raise InputError(
                "the lexical matcher and the concept embeddings list different concepts"
            )
        rows, concepts = matcher.match_pairs(list(captions))
        return self.check(
            rows, concepts, n_captions=len(captions), vectors=vectors, captions=captions
        )

"""Text normalisation shared by the registry (to compare synonyms) and the lexical matcher."""

from __future__ import annotations

import re
import unicodedata

_NON_WORD = re.compile(r"[^0-9a-z]+")


def normalize(text: str) -> str:
    """Lower-case, fold accents, and turn every run of non-alphanumerics into one space.

    ``"T-Shirts!"`` -> ``"t shirts"``; ``"Café's"`` -> ``"cafe s"``. Padding the result with
    spaces makes every word boundary a literal space, which is what lets an exact-match
    automaton match whole words only.
    """
    text = text.lower()
    if not text.isascii():
        text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _NON_WORD.sub(" ", text).strip()

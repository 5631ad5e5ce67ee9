"""Text normalisation shared by the registry (to compare synonyms) and the lexical matcher."""

from __future__ import annotations

import re
import unicodedata

_NON_WORD = re.compile(r"[^0-9a-z]+")
# bytes.translate table: upper-case ASCII -> lower-case, other non-alphanumerics -> space
ASCII_TABLE = bytes(
    c + 32 if 65 <= c <= 90 else c if 48 <= c <= 57 or 97 <= c <= 122 else 32 for c in range(256)
)


def normalize(text: str) -> str:
    """Lower-case, fold accents, and turn every run of non-alphanumerics into one space.

    ``"T-Shirts!"`` -> ``"t shirts"``; ``"Café's"`` -> ``"cafe s"``. Padding the result with
    spaces makes every word boundary a literal space, which is what lets an exact-match
    automaton match whole words only.
    """
    if text.isascii():
        # the hot path of caption matching: one translate is about 4x faster than re.sub
        folded = text.encode("ascii").translate(ASCII_TABLE).decode("ascii").strip()
        return " ".join(folded.split()) if "  " in folded else folded
    text = unicodedata.normalize("NFKD", text.lower()).encode("ascii", "ignore").decode("ascii")
    return _NON_WORD.sub(" ", text).strip()


def slug(label: str) -> str:
    """A file-system-safe form of a model or group label (for ``confusion/<model>/<group>.csv``)."""
    return re.sub(r"[^A-Za-z0-9._@+-]+", "_", label).strip("_") or "model"

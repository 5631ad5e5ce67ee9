"""Text normalisation shared by the registry (to compare synonyms) and the lexical matcher."""

from __future__ import annotations

import codecs
import hashlib
import html
import re
import unicodedata
from html.entities import html5

# bytes.translate table: upper-case ASCII -> lower-case, other non-alphanumerics -> space
ASCII_TABLE = bytes(
    c + 32 if 65 <= c <= 90 else c if 48 <= c <= 57 or 97 <= c <= 122 else 32 for c in range(256)
)
# the same for folded text (:func:`fold`), which is lower-cased before folding: upper case that
# folding makes ("TM" from the trade mark sign) is no letter either
FOLDED_TABLE = bytes(32 if 65 <= c <= 90 else b for c, b in enumerate(ASCII_TABLE))
# dropped from a word, not read as a break in it: combining marks, which NFKD splits off
# accented letters ("é" -> "e" + U+0301), and the invisible characters that Unicode's word
# segmentation (UAX #29) reads as part of the word they stand in: a soft hyphen ("&shy;" in web
# text), zero-width joiners, the word joiner and its deprecated twin U+FEFF, direction marks
# and isolates, variation selectors (an emoji's U+FE0F). "d\u00adog" and "d\ufeffog" are "dog".
# A zero-width space (U+200B) is not among them: it marks a word boundary where no space shows.
_COMBINING = re.compile(
    "[\u00ad\u200c-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufe00-\ufe0f\ufeff"
    "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]+"
)
codecs.register_error("clipaudit.space", lambda error: (" ", error.end))
# an HTML character reference ("&eacute;", "&#233;", "&#xE9;"), which web alt-text often holds
_REFERENCE = re.compile(r"&(?:[A-Za-z][A-Za-z0-9]{1,31}|#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6});")


def unescape(text: str) -> str:
    """``text`` with its HTML character references decoded: "cat&eacute;gorie" is "catégorie",
    not a cat and a "gorie"; a name HTML does not define stays as written."""
    return _REFERENCE.sub(_decoded, text) if "&" in text else text


def _decoded(reference: re.Match[str]) -> str:
    # a whole name only: html.unescape would read "&notaname;" as "&not" and "aname;"
    if reference[0][1] == "#":
        return html.unescape(reference[0])
    return html5.get(reference[0][1:], reference[0])


def fold(text: str, *, cased: bool = False) -> bytes:
    """Text as ASCII bytes: lower-cased, compatibility-decomposed (full-width letters, ligatures),
    accents dropped ("é" -> "e"), and every other run of non-ASCII characters (a dash, a
    bullet, another script) one space. ``cased``: not lower-cased, so that the case of each
    letter can be read beside the lower-cased folding ("İ" is "I" here, "i" there)."""
    decomposed = unicodedata.normalize("NFKD", text if cased else text.lower())
    return _COMBINING.sub("", decomposed).encode("ascii", "clipaudit.space")


def normalize(text: str) -> str:
    """Decode HTML character references (:func:`unescape`), lower-case, fold accents, and turn
    every run of non-alphanumerics into one space.

    ``"T-Shirts!"`` -> ``"t shirts"``; ``"Café's"`` -> ``"cafe s"``; ``"1994–2007"`` -> ``"1994
    2007"``. Padding the result with spaces makes every word boundary a literal space, which is
    what lets an exact-match automaton match whole words only.
    """
    text = unescape(text)
    if text.isascii():
        # the hot path of caption matching: one translate is about 4x faster than re.sub
        folded = text.encode("ascii").translate(ASCII_TABLE).decode("ascii").strip()
        return " ".join(folded.split()) if "  " in folded else folded
    return " ".join(fold(text).translate(FOLDED_TABLE).decode("ascii").split())


def unseen_character(text: str) -> str | None:
    """The first character of ``text`` that :func:`normalize` turns into a word break or drops
    though it looks like part of a word or like nothing, or None: an invisible format character
    (a zero-width space, a soft hyphen: a name holding one is another string than it shows) or a letter or digit of another script than Latin, such as a Cyrillic look-alike
    ("ԁog" normalises to "og"). Latin letters folding drops (ß, ø) are not among them: text
    holding them normalises alike on every side."""
    if text.isascii():
        return None
    for character in text:
        if unicodedata.category(character) == "Cf" or (
            character.isalnum()
            and not normalize(character)
            and not unicodedata.name(character, "").startswith("LATIN")
        ):
            return character
    return None


# characters a terminal acts on rather than shows: C0/C1 controls (escape sequences, carriage
# returns, newlines) and the bidirectional overrides that reorder what follows them
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]+")


def control_character(text: str) -> str | None:
    """The first character of ``text`` that a terminal acts on rather than shows (see
    :func:`inert_line`), a line break or a tab aside; None when there is none."""
    for run in _UNPRINTABLE.findall(text):
        for character in run:
            if character not in "\t\n\r":
                return character
    return None


def inert_line(text: str) -> str:
    """``text`` (a web caption, an id) safe to print on one terminal line: every run of control
    or direction characters is one space, so an alt-text cannot move the cursor, recolour the
    terminal or rename its window, and a caption with line breaks stays on its own line."""
    return _UNPRINTABLE.sub(" ", text)


def is_prompt_template(template: str) -> bool:
    """Whether ``template`` formats with exactly one concept: one bare ``{}`` field and no other
    brace ("a photo of a {}."; not "{0}", "{c}", "{style}" or a stray "{")."""
    import string

    try:
        fields = [
            (name, spec, conversion)
            for _, name, spec, conversion in string.Formatter().parse(template)
            if name is not None
        ]
    except ValueError:  # a stray "{" or "}"
        return False
    return fields == [("", "", None)]


# byte-order marks of text that is not UTF-8, UTF-32's first: its little-endian one starts with
# UTF-16's (caption files and registries both name the encoding a file was saved in)
WIDE_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
_STEM_CHARS = 48


def file_stem(name: str) -> str:
    """A file or folder name for ``name`` that no other name gets: its :func:`slug` when that is
    the name itself (``Animal``, ``tiny-clip@a``), else the slug, cut to a length every file
    system takes, and a hash of the exact name (``Mr. Men`` and ``Mr Men``, ``Größe`` and
    ``Grüße``, two labels a slug makes alike, each get their own)."""
    stem = slug(name)
    if stem == name and len(stem) <= _STEM_CHARS:
        return stem
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=4).hexdigest()
    return f"{stem[:_STEM_CHARS]}-{digest}"


def slug(label: str) -> str:
    """A file-system-safe form of a model or group label (for ``confusion/<model>/<group>.csv``)."""
    text = re.sub(r"[^A-Za-z0-9._@+-]+", "_", label).strip("_") or "model"
    return "_" + text if set(text) == {"."} else text  # "." and ".." name no new folder


def counted(n: int, one: str, many: str | None = None) -> str:
    """ "1 shard", "2 shards", "1,000 captions", "1 corpus" / "2 corpora" with ``many`` given."""
    return f"{n:,} {one if n == 1 else many or one + 's'}"

"""Which registry concepts a caption mentions: the lexical matcher behind caption coverage.

Two profiles (:data:`PROFILES`):

- ``paper`` reproduces the counting of Cai et al.: a concept is mentioned when one of its
  ``paper_synonyms`` occurs anywhere in the lower-cased caption, as a substring, flaws included
  ("that" counts as hat, "train" as rain). One Aho-Corasick pass over the caption.
- ``curated`` (the default) counts mentions in the gloss's sense: whole words only, any noun
  inflection ("puppies" -> dog, "geese" -> goose) and adjective degree ("shinier"), multi-word
  phrases in order and adjacent, and never inside one of the concept's negative contexts
  ("hot dog" is no dog), before a head noun it only modifies ("dog bed", "phone case",
  "iPhone 4/4S Case", "iPhone 4 Silicone Case": the registry's ``modifier_of``), shortly after a
  cue against it ("a case for an iPhone", "songs by hip hop artist"), or inside a street address
  ("143 Park Road"), a company's name ("Red Dot Studios") or the name after a lower-case "by"
  ("Ring by Jenny Bird").
  Colourway words count in colourway position only ("Sweatshirt - Forest" is green), makes with
  a model ("1986 Ferrari 328" is a car), and word lists that say a concept together ("X vs Y"
  with a sport: an athlete); see :mod:`clipaudit.registry`. No phrase, context or compound spans
  a separator (``, ; : | ( ) [ ] { } ! ?``): "chairs, table, lamps" holds no table lamp.

The hot path (normalising and folding a batch, the automaton pass) is compiled where the package
was built with a C compiler (``clipaudit._scan``, see :class:`KeyScanner`), pyahocorasick, numpy
and :mod:`unicodedata` otherwise, with the same results.

The caption is normalised (:func:`clipaudit.text.normalize`) and padded with spaces, so every
word boundary is a literal space and one exact-match automaton over ``" form "`` keys finds
whole-word mentions of every surface form, head noun and cue at once. A batch of captions is
normalised and searched as one text, and its hits are resolved with array operations; only rare
ones are looked at one by one (makes, colourway words out of place, street types after a number,
the words after a concept's noun followed by a model designation or after a cue).

Inflections are generated when the matcher is built, from spaCy's English lookup tables
(spacy-lookups-data) and its suffix rules, never by lemmatising captions (lemmatising "tired"
gives "tire", "parking" gives "park"). Only forms a caption would use are generated: a
phrase's head is inflected and nothing else ("station wagons", never "stationed wagon"). Verb
inflections are not generated: for the registry's nouns they name another sense ("tied",
"parked", "training", "dressed", "coated"); participles and activities that do name a concept
("raining", "tired", "playing tennis") are listed as synonyms.

With ``spacy_model`` (a trained English pipeline the user has installed, e.g.
``en_core_web_sm``) the curated matcher also drops a hit on a word that the pipeline tags as a
verb ("tie your shoes", "park the car") when the matched synonym is a base form that English also
uses as a verb. The pipeline only runs on captions with such a hit, and the default (no pipeline)
stays automaton-only.

Building a curated matcher reads the lookup tables without importing spaCy and generates the
key tables, which are cached on disk as JSON (:func:`matcher_cache_dir`), one file per registry
content, lexicon version and matcher code, so a later build only reads them back. Matchers
pickle, so worker processes can build their own or receive one.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import gzip
import hashlib
import json
import os
import re
import sys
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import accumulate, chain, pairwise
from pathlib import Path
from typing import Any

import ahocorasick
import numpy as np

try:  # built with the package when a C compiler was at hand (hatch_build.py)
    from clipaudit import _scan
except ImportError:
    _scan = None

from clipaudit.errors import InputError, SettingsError, did_you_mean, keyword_checked, one_line
from clipaudit.provenance import atomic_write_text
from clipaudit.registry import DEFAULT_REGISTRY, TOGETHER_LISTS, Registry, load_registry
from clipaudit.text import ASCII_TABLE, fold, normalize, unescape

PROFILES = ("curated", "paper")
DEFAULT_PROFILE = "curated"

# A concept word this many words or fewer after a cue against it is not a mention: "a case for
# an Apple iPhone 7", "songs by hip hop artist". Model designations between do not count ("Fit
# For Audi A4 B6 B7 Sedan"). Cues are resolved for hits at most _CUE_REACH characters apart.
CUE_WINDOW = 3
_CUE_REACH = 80
# Phrases that say which thing a product fits ("Fit for Audi A4 sedan"): cues against every
# concept that other objects are made for.
FIT_CUES = ("fit for", "fits for", "compatible with", "for use with", "replacement for")

# A concept word and its head noun may stand this many model designations apart ("iPhone 4/4S
# Case", "Galaxy S7 Edge Case"): words with a digit and these model words.
MODEL_GAP = 3
_WORD_REACH = 8
_MODEL_WORDS = frozenset(
    {"plus", "pro", "max", "mini", "ultra", "lite", "edge", "air", "se", "x", "xl", "xs", "xr"}
)
# A concept word and its head may also stand this many title words apart: capitalised, no
# function word ("iPhone 4 Silicone Case"), at most _TITLE_REACH characters from noun to head
_TITLE_GAP = 3
_TITLE_REACH = 64
# Heads that title words between do not reach: works that may show what the words before them
# name ("Zebra Jungle Art Print", "Snow Covered Peaks Framed Print": a depiction, not a pattern or a
# use), and "free", an adjective ("snow free", not "snow Royalty Free Stock Photo")
_UNTITLED_HEADS = (
    *("print", "poster", "photo", "photograph", "picture", "image", "painting", "canvas"),
    *("art", "artwork", "illustration", "drawing", "design", "wallpaper", "figurine", "free"),
)

# An address: a house number, or a listing's "for sale in", then at most _ADDRESS_WORDS name
# words and a street type ("1617 Landmark Road", "flat to rent in Phoenix Road"). The name and
# the street type are a proper name, no concept (LABELLING.md rule 5).
_ADDRESS_WORDS = 3
_STREET_TYPES = (
    *("road", "street", "avenue", "lane", "drive", "boulevard", "trail", "way", "court"),
    *("close", "crescent", "place", "terrace", "parkway", "highway", "circle", "circuit"),
    *("square", "grove", "rd", "st", "ave", "blvd", "hwy"),
)
_LISTING_CUES = tuple(
    f"{what} in"
    for what in (
        *("for sale", "to rent", "for rent", "to let", "property", "properties", "house"),
        *("houses", "flat", "flats", "apartment", "apartments", "home", "homes", "bungalow"),
        *("cottage", "condo", "land", "plot"),
    )
)
_LISTING_ENDINGS = tuple(f" {cue}" for cue in _LISTING_CUES)
_ADDRESS_REACH = 40  # a house number or a listing cue this many characters before a street type
# A company's name: at most _NAME_WORDS capitalised words before a word that makes a name a
# company's ("High Street Textile Testing Services Ltd", "Red Dot Studios", "The Pretty Dress
# Company"). Its words are a proper name, no concept (LABELLING.md rule 5). Words that also say
# what a business does ("services", "systems", "games", "press", "records") are not among them:
# "Dog Grooming Services" is about dogs.
_NAME_WORDS = 4
_COMPANY_WORDS = (
    *("ltd", "inc", "llc", "plc", "gmbh", "corp", "corporation", "company", "studios"),
    *("productions", "entertainment", "publishing", "publishers", "holdings", "industries"),
    *("enterprises", "technologies", "associates"),
)
_NAME_JOINERS = frozenset({"and", "of", "the"})  # lower-case words inside a name
# A name after a lower-case "by" ("earrings by Jenna Green"): at most this many capitalised words,
# none of them an article ("by The Lake" is a place)
_BY_NAME_WORDS = 2
_ARTICLES = frozenset({"the", "a", "an", "this", "that", "these", "those", "my", "our", "your"})
# a model year before a make ("1986 Ferrari 328"); an ordinal is no model ("4th of July")
_YEAR = re.compile(r"(?:19|20)\d\d")
_ORDINAL = re.compile(r"\d+(?:st|nd|rd|th)")
_DIGIT = re.compile(r"[0-9]")

# spaCy tags for which a base-form hit is another sense of the word ("tie" in "tie a knot").
_VERB_TAGS = frozenset({"VERB", "AUX"})
_SPACE, _NEWLINE = ord(" "), ord("\n")


def build_matcher(
    registry: str | Path | Registry,
    profile: str = DEFAULT_PROFILE,
    *,
    spacy_model: str | None = None,
) -> Matcher:
    """A caption matcher for every concept of ``registry`` (a built-in name, a YAML path or a
    :class:`Registry`) under ``profile`` (``curated``/``paper``).

    ``spacy_model`` names an installed trained English spaCy pipeline (package name or path)
    used for part-of-speech checks by the curated profile; None keeps matching automaton-only and
    offline.
    """
    if profile not in PROFILES:
        raise SettingsError(
            f"unknown matching profile {profile!r}{did_you_mean(str(profile), PROFILES)}; "
            f"profiles are {', '.join(PROFILES)}"
        )
    registry = load_registry(registry)  # a Registry is returned as it is
    if profile == "paper":
        if spacy_model is not None:
            raise SettingsError(
                f"spacy_model={spacy_model!r} only applies to the 'curated' profile; the 'paper' "
                "profile is plain substring matching. Drop the spaCy model or use profile='curated'"
            )
        return PaperMatcher(registry)
    return CuratedMatcher(registry, spacy_model=spacy_model)


class Matcher:
    """Finds the concepts a caption mentions with one Aho-Corasick automaton pass.

    Subclasses implement :meth:`match_indices`, and may batch :meth:`match_batch`.
    """

    profile: str

    def __init__(self, registry: Registry):
        self.concept_names: tuple[str, ...] = tuple(c.name for c in registry.concepts)

    def match_indices(self, caption: str | None) -> list[int]:
        """Indices into :attr:`concept_names` of the concepts ``caption`` mentions, ascending."""
        raise NotImplementedError

    def match_batch(self, captions: Sequence[str | None]) -> list[list[int]]:
        """:meth:`match_indices` of each caption, in order (subclasses may batch the work)."""
        return [self.match_indices(caption) for caption in captions]

    def match_pairs(self, captions: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`match_batch` flattened: two int64 arrays, the position of a caption in
        ``captions`` and the index of a concept it mentions, ordered by caption then concept."""
        hits = self.match_batch(captions)
        counts = np.fromiter(map(len, hits), np.int64, len(hits))
        rows = np.repeat(np.arange(len(hits)), counts)
        return rows, np.fromiter(chain.from_iterable(hits), np.int64, len(rows))

    @property
    def automaton(self) -> str:
        """Which automaton pass this matcher runs (``compiled`` or ``pyahocorasick``)."""
        return "pyahocorasick"

    def match(self, caption: str | None) -> list[str]:
        """Names of the concepts ``caption`` mentions, in registry order, without duplicates."""
        names = self.concept_names
        return [names[i] for i in self.match_indices(caption)]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(profile={self.profile!r}, concepts={len(self.concept_names)})"
        )


def _not_text(caption: Any) -> InputError:
    return InputError(
        f"a caption must be a string or None, got {type(caption).__name__} {caption!r:.60}"
    )


def is_missing(value: Any) -> bool:
    """Whether ``value`` is no caption: None, NaN, or ``pandas.NA`` (what a pandas ``string``
    column holds for a missing value)."""
    if value is None or (isinstance(value, float) and value != value):
        return True
    pandas = sys.modules.get("pandas")  # NA exists only once pandas is imported
    return pandas is not None and value is pandas.NA


def _text(caption: Any) -> str:
    """A caption as text: "" for no caption (:func:`is_missing`); raises InputError for a
    non-text."""
    if is_missing(caption):
        return ""
    if not isinstance(caption, str):  # 0, False, b"", [] too: no text, though falsy
        raise _not_text(caption)
    return caption


def has_paper_synonyms(registry: Registry) -> bool:
    """Whether any concept of ``registry`` lists the paper's synonyms (the built-in ``cai2025``
    does; a registry of one's own usually does not)."""
    return any(concept.paper_synonyms for concept in registry.concepts)


def concepts_not_counted(registry: Registry, profile: str) -> dict[str, str]:
    """The concepts of ``registry`` that ``profile`` cannot count, each with why, in registry
    order: the 'paper' profile reads only paper_synonyms, so a concept without them counts 0
    whatever the captions say (the profile refuses a registry with none at all), and so does one
    whose every synonym a later concept also lists, since a shared synonym counts for the last
    concept listing it (:class:`PaperMatcher`)."""
    if profile != "paper":
        return {}
    claimed_by: dict[str, str] = {}  # synonym -> the last concept listing it, which counts it
    for concept in registry.concepts:
        for synonym in concept.paper_synonyms:
            claimed_by[synonym.lower()] = concept.name
    not_counted = {}
    for concept in registry.concepts:
        if not concept.paper_synonyms:
            not_counted[concept.name] = "no paper_synonyms"
            continue
        owners = {claimed_by[synonym.lower()] for synonym in concept.paper_synonyms}
        if concept.name not in owners:
            later = ", ".join(sorted(owners))
            not_counted[concept.name] = f"its paper_synonyms all count for {later}"
    return not_counted


class PaperMatcher(Matcher):
    """The paper's counting: case-insensitive substring matching of ``paper_synonyms``.

    As in the paper's code, which maps each synonym to one concept, a synonym that several
    concepts list ("bike" under motorcycle and bicycle) counts for the last of them only.
    """

    profile = "paper"

    def __init__(self, registry: Registry):
        if not has_paper_synonyms(registry):  # else every count is 0, which reads as a finding
            raise SettingsError(
                f"registry {registry.name!r} lists no paper_synonyms, the only words the 'paper' "
                "profile counts; count with the 'curated' profile, or add each concept's "
                "paper_synonyms to the registry"
            )
        super().__init__(registry)
        self._automaton = ahocorasick.Automaton()
        for index, concept in enumerate(registry.concepts):
            for synonym in concept.paper_synonyms:
                self._automaton.add_word(synonym.lower(), index)
        self._automaton.make_automaton()

    def match_indices(self, caption: str | None) -> list[int]:
        caption = _text(caption)
        if not caption:
            return []
        return sorted({index for _, index in self._automaton.iter(caption.lower())})


class KeyScanner:
    """Every occurrence of a set of distinct, non-empty ASCII keys in a text, as flat int64 pairs
    (the offset of the key's last character, the key's index), by end offset and, at one end, the
    longest key first.

    The pass is compiled (``clipaudit._scan``: a dense automaton, one table read per byte) when
    the package was built with a C compiler, and pyahocorasick's otherwise; both give the same
    pairs, and :attr:`route` says which one runs. Pickles as its keys and is rebuilt (tens of
    milliseconds) where it is unpickled.
    """

    def __init__(self, keys: Sequence[str]):
        self.keys = tuple(keys)
        if len(set(self.keys)) != len(self.keys) or not all(k and k.isascii() for k in self.keys):
            raise ValueError("a key scanner takes distinct, non-empty ASCII keys")
        self._compiled = _scan
        if self._compiled is not None:
            self.route = "compiled"
            self._tables = self._compiled.build([key.encode("ascii") for key in self.keys])
        else:
            self.route = "pyahocorasick"
            self._automaton = ahocorasick.Automaton()
            for index, key in enumerate(self.keys):
                self._automaton.add_word(key, index)
            self._automaton.make_automaton()

    def hits(self, text: str, chars: np.ndarray) -> np.ndarray:
        """The pairs in ``text``, whose ASCII bytes ``chars`` are (a contiguous uint8 array)."""
        if self.route == "compiled":
            return np.frombuffer(self._compiled.scan(self._tables, chars), dtype=np.int64)
        if not self.keys:  # an automaton without keys cannot be iterated
            return np.zeros(0, dtype=np.int64)
        # (end, key) of every hit, flat: no list of pairs is built
        return np.fromiter(chain.from_iterable(self._automaton.iter(text)), np.int64)

    def __getstate__(self) -> dict[str, Any]:
        return {"keys": self.keys}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["keys"])


def caption_crc32s(captions: list[str], positions: np.ndarray) -> np.ndarray:
    """``zlib.crc32`` of the UTF-8 of each caption at ``positions`` (int64), compiled where the
    automaton pass is (a coverage run's examples are the captions of smallest CRC)."""
    positions = np.ascontiguousarray(positions, dtype=np.int64)
    if len(positions) and not 0 <= positions.min() <= positions.max() < len(captions):
        raise IndexError(f"caption positions out of range 0..{len(captions) - 1}")
    if _scan is not None:
        return np.frombuffer(_scan.crc32(captions, positions), dtype=np.uint32).astype(np.int64)
    texts = map(captions.__getitem__, positions.tolist())
    return np.fromiter(map(zlib.crc32, map(str.encode, texts)), np.int64, count=len(positions))


# What a key of the curated automaton can be; each role maps a key's form to integers.
ROLES = (
    "forms",  # the concepts the form names
    "modifiers",  # the concepts whose base noun (or make) this form is: it can modify a head
    "heads",  # the concepts the form is a ``modifier_of`` head of
    "negated",  # the concepts the form is a negative context of
    "cued",  # the concepts the form is a cue against (``not_after``, "case for", FIT_CUES)
    "checked",  # the concepts whose form is also a verb (the spaCy check)
    "colourways",  # the colour concepts the form names in colourway position
    "makes",  # the concepts the form names with a model designation
    "together",  # concept * TOGETHER_LISTS + list, for each ``together`` list holding the form
    "models",  # a model word ("plus", "edge": the integer 0)
    "streets",  # a street type (the integer 0)
    "listings",  # a listing's "for sale in" (the integer 0)
    "companies",  # a word that ends a company's name ("ltd", "studios": the integer 0)
    "attributions",  # "by", before the name a work or product is by (the integer 0)
    "untitled",  # a head no title words reach (:data:`_UNTITLED_HEADS`: the integer 0)
)


@dataclass(frozen=True)
class _Batch:
    """Captions normalised and joined into one text (:func:`_prepare`)."""

    # the captions with their HTML character references decoded: what the rules that read a
    # caption's case, and the spaCy check, read ("Caf&eacute;" is the word "Café")
    captions: Sequence[str | None]
    text: str
    chars: np.ndarray  # the text's bytes
    # a bit per offset of the text (little-endian in each byte), set where a word begins with an
    # upper-case letter in its caption (a folded caption has none until CuratedMatcher._cased
    # marks those of the captions a rule reads the case of)
    capitals: bytes
    newlines: np.ndarray  # offsets of the "\n"s between captions
    # offsets of the spaces that stand for a mark, ascending: a separator (no phrase spans it);
    # a mark that opens a colourway, or closes one; a mark that coordinates two colours
    seps: np.ndarray
    opens: np.ndarray
    closes: np.ndarray
    coords: np.ndarray
    dashes: np.ndarray  # offsets of the spaces that stand for a spaced dash
    # the rows whose caption is not ASCII, ascending: folding them dropped their case (capitals)
    non_ascii: np.ndarray

    def capitalised(self, offsets: np.ndarray) -> np.ndarray:
        """Whether a word beginning at each offset begins with an upper-case letter (offsets
        past the text's end are not)."""
        bits = np.frombuffer(self.capitals, dtype=np.uint8)
        at = np.minimum(offsets, len(self.text) - 1)
        return ((bits[at >> 3] >> (at & 7).astype(np.uint8)) & 1).astype(bool)

    def row_starts(self, rows: np.ndarray) -> np.ndarray:
        """Offset of the space that opens each caption of ``rows``."""
        return np.concatenate([[0], self.newlines + 1])[rows]

    def row_ends(self, rows: np.ndarray) -> np.ndarray:
        """Offset just after the space that closes each caption of ``rows``."""
        return np.append(self.newlines, len(self.text))[rows]

    def sep_before(self, offsets: np.ndarray) -> np.ndarray:
        """The offset of the last separator at or before each offset (-1 where there is none)."""
        return _last_at_or_before(self.seps, offsets)

    def segment_start(self, offsets: np.ndarray) -> np.ndarray:
        """The offset of the last separator or mark that opens a colourway (" - ", "/", "|",
        ":") at or before each offset (-1 where there is none)."""
        return np.maximum(self.sep_before(offsets), _last_at_or_before(self.opens, offsets))

    def crossed(self, first: np.ndarray, last: np.ndarray) -> np.ndarray:
        """Whether a separator stands at one of the offsets ``first..last`` (inclusive)."""
        return _crossed(self.seps, first, last)


@dataclass(frozen=True)
class _Hits:
    """The automaton's hits in a batch: ``text[starts:ends]`` is the key (" form "), from the
    space before the form to the space after it."""

    starts: np.ndarray
    ends: np.ndarray
    keys: np.ndarray
    rows: np.ndarray  # the caption of each hit
    heads: np.ndarray  # the hits of head nouns, by ascending start
    models: np.ndarray  # the starts of the hits of model words, ascending


class CuratedMatcher(Matcher):
    """Whole-word matching of curated synonyms and their inflections, with the sense rules.

    The automaton maps each key (``" form "``) to its position in the key tables, which give for
    each of the :data:`ROLES` the integers the key holds (the concepts it names, the concepts it
    is a negative context of...). A batch of captions is one text (:func:`_prepare`); its hits
    make (hit, concept) pairs, which the rules add or drop with array operations
    (:meth:`match_pairs`). A single caption is a batch of one.
    """

    profile = "curated"

    def __init__(self, registry: Registry, *, spacy_model: str | None = None):
        super().__init__(registry)
        if spacy_model is not None and (
            not isinstance(spacy_model, (str, os.PathLike)) or not str(spacy_model).strip()
        ):
            raise SettingsError(
                "spacy_model must name an installed spaCy pipeline or the folder of a saved one "
                f"(e.g. 'en_core_web_sm'), or be None, got {spacy_model!r:.60}"
            )
        self.spacy_model = None if spacy_model is None else os.fspath(spacy_model)
        self._nlp: Any = _load_pipeline(self.spacy_model) if self.spacy_model else None
        roles = _key_tables(registry)
        keys = sorted(set().union(*roles.values()))
        self._scanner = KeyScanner([f" {form} " for form in keys])
        self._lengths = np.array([len(form) + 2 for form in keys], dtype=np.int64)
        self._phrase = np.array([" " in form for form in keys], dtype=bool)
        self._tables = {
            role: _Ragged([roles[role].get(form, ()) for form in keys]) for role in ROLES
        }
        self._matrices()
        self._heads = self._tables["heads"].sizes > 0
        self._models = self._tables["models"].sizes > 0
        self._streets = self._tables["streets"].sizes > 0
        self._listings = self._tables["listings"].sizes > 0
        self._companies = self._tables["companies"].sizes > 0
        self._attributions = self._tables["attributions"].sizes > 0
        self._untitled = self._tables["untitled"].sizes > 0
        # keys whose rules read the case of their caption's words (:meth:`_cased`); a head's
        # only with a modifier before it (a title compound)
        self._reads_case = self._attributions | self._companies
        self._modifier = self._tables["modifiers"].sizes > 0
        group_index = {group.name: i for i, group in enumerate(registry.groups)}
        self._group_of = np.array([group_index[c.group] for c in registry.concepts])
        self._together_lists = np.array([len(c.together) for c in registry.concepts])

    @property
    def automaton(self) -> str:
        return self._scanner.route

    def _matrices(self) -> None:
        # by key and concept: the key's form can modify a head, is a head, may be a verb
        n = len(self.concept_names)
        self._modifies = self._tables["modifiers"].matrix(n)
        self._heads_of = self._tables["heads"].matrix(n)
        self._checked = self._tables["checked"].matrix(n)

    def match_indices(self, caption: str | None) -> list[int]:
        return self.match_batch([caption])[0]

    def match_batch(self, captions: Sequence[str | None]) -> list[list[int]]:
        """:meth:`match_indices` of each caption, computed for the whole batch at once."""
        captions = captions if isinstance(captions, list) else list(captions)
        rows, concepts = self.match_pairs(captions)
        bounds = np.searchsorted(rows, np.arange(len(captions) + 1)).tolist()
        flat = concepts.tolist()
        return [flat[start:stop] for start, stop in pairwise(bounds)]

    def match_pairs(self, captions: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`match_batch` flattened, with one automaton pass over the whole batch.

        The batch is one text (:func:`_prepare`), and its hits are resolved with array
        operations: per-caption calls would spend most of their time starting an automaton
        iteration and in Python code per hit.
        """
        # by position, as a list: a pandas Series' labels or a generator would not do
        captions = captions if isinstance(captions, list) else list(captions)
        if not captions:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        batch = _prepare(captions)
        hits = self._hits(batch)
        batch = self._cased(batch, hits)
        hit, concepts = self._pairs(batch, hits)
        keep = ~self._vetoed(batch, hits, hit, concepts)
        if self._nlp is not None:
            keep[keep] = ~self._verbs(batch, hits, hit[keep], concepts[keep])
        n = len(self.concept_names)
        pairs = np.concatenate([hits.rows[hit[keep]] * n + concepts[keep], self._together(hits)])
        pairs = _distinct(pairs)
        return pairs // n, pairs % n

    # ----------------------------------------------------------------------- hits and pairs

    def _hits(self, batch: _Batch) -> _Hits:
        """The automaton's hits, less the phrases that span a separator ("chairs, table lamps")."""
        flat = self._scanner.hits(batch.text, batch.chars)
        ends, keys = flat[0::2] + 1, flat[1::2]
        starts = ends - self._lengths[keys]
        if len(batch.seps):
            phrases = np.flatnonzero(self._phrase[keys])
            spanning = phrases[batch.crossed(starts[phrases] + 1, ends[phrases] - 2)]
            if len(spanning):
                keep = np.ones(len(keys), dtype=bool)
                keep[spanning] = False
                starts, ends, keys = starts[keep], ends[keep], keys[keep]
        heads = np.flatnonzero(self._heads[keys])
        return _Hits(
            starts,
            ends,
            keys,
            rows=np.searchsorted(batch.newlines, starts),  # the "\n"s before a hit
            heads=heads[np.argsort(starts[heads], kind="stable")],
            models=starts[self._models[keys]],  # one-word keys: in the order of their ends
        )

    def _cased(self, batch: _Batch, hits: _Hits) -> _Batch:
        """The batch with the capitalised words of its non-ASCII captions marked in
        :attr:`_Batch.capitals`, where a rule reads them: the batch's passes mark those of ASCII
        captions only, as folding lower-cases ("Ring by Jenny Bird \U0001f525" is read as
        "Ring by Jenny Bird" is). Only captions holding a key whose rule reads case are looked
        at (a name's, a title compound's), folded once more with their case kept
        (:func:`_word_capitals`)."""
        if not len(batch.non_ascii):
            return batch
        odd = np.zeros(len(batch.newlines) + 1, dtype=bool)
        odd[batch.non_ascii] = True
        rows, keys = hits.rows[odd[hits.rows]], hits.keys[odd[hits.rows]]
        modified = _distinct(rows[self._modifier[keys]])
        titles = modified[_isin_sorted(modified, _distinct(rows[self._heads[keys]]))]
        rows = _distinct(np.concatenate([rows[self._reads_case[keys]], titles]))
        if not len(rows):
            return batch
        # (the batch's captions are text: _prepare made a missing one "")
        counts, capital = _word_capitals([batch.captions[row] for row in rows.tolist()])
        # the space before each word of those captions in the batch's text (theirs alone)
        starts = batch.row_starts(rows)
        _, within = _ranges(starts, batch.row_ends(rows) - starts)
        spaces = within[batch.chars[within] == _SPACE]
        low = np.searchsorted(spaces, starts)
        high = np.searchsorted(spaces, batch.row_ends(rows) - 1)  # not the closing space
        paired = counts == high - low  # else folding made other words: their case is unknown
        which, at = _ranges(low[paired], (high - low)[paired])
        first = np.concatenate([[0], np.cumsum(np.maximum(counts, 0))])[:-1][paired]
        upper = capital[first[which] + at - low[paired][which]]
        offsets = spaces[at[upper]] + 1
        bits = np.frombuffer(batch.capitals, dtype=np.uint8).copy()
        np.bitwise_or.at(bits, offsets >> 3, (1 << (offsets & 7)).astype(np.uint8))
        return dataclasses.replace(batch, capitals=bits.tobytes())

    def _pairs(self, batch: _Batch, hits: _Hits) -> tuple[np.ndarray, np.ndarray]:
        """One (hit, concept) pair for each concept a hit names: each concept of its key (several
        for a shared form), a colour in colourway position, a make with a model."""
        hit, concepts = self._tables["forms"].expand(hits.keys)
        colour_hit, colours = self._colourways(batch, hits)
        if len(colour_hit):
            # a colourway names the colour: the word's other senses do not count ("- Forest")
            keep = ~np.isin(hit, colour_hit)
            hit, concepts = hit[keep], concepts[keep]
        make_hit, made = self._makes(batch, hits)
        return (
            np.concatenate([hit, colour_hit, make_hit]),
            np.concatenate([concepts, colours, made]),
        )

    def _colourways(self, batch: _Batch, hits: _Hits) -> tuple[np.ndarray, np.ndarray]:
        """(hit, colour) pairs of colourway words where they give a colourway: a segment of
        their own after a dash, slash, pipe or colon ("Sweatshirt - Forest", "Color: Gold"), or
        coordinated with a colour of the same group ("Black OR Camel", "Black/Gold")."""
        hit, colours = self._tables["colourways"].expand(hits.keys)
        if not len(hit):
            return hit, colours
        ends = hits.ends[hit]
        placed = _isin_sorted(hits.starts[hit], batch.opens) & (
            _isin_sorted(ends - 1, batch.closes)
            | (batch.chars[np.minimum(ends, len(batch.text) - 1)] == _NEWLINE)
            | (ends == len(batch.text))
        )
        others = np.flatnonzero(~placed)
        if len(others):
            placed[others] = self._coordinated(batch, hits, hit[others], colours[others])
        return hit[placed], colours[placed]

    def _coordinated(
        self, batch: _Batch, hits: _Hits, hit: np.ndarray, colours: np.ndarray
    ) -> np.ndarray:
        """Whether each colourway hit is coordinated with a hit of another concept of its
        colour's group: next to it across a slash, dash, "&", "+" or comma ("Black/Gold"), or
        across "and", "or", "n" ("Black OR Camel"). A metal is no partner: "silver or gold
        jewelry" are metals."""
        text, starts, lasts = batch.text, hits.starts[hit], hits.ends[hit] - 1
        # where a partner's key would end (its last space) or start, for each colourway hit
        sides = []
        for start, end, marked_start, marked_end in zip(
            starts.tolist(),
            lasts.tolist(),
            _isin_sorted(starts, batch.coords).tolist(),
            _isin_sorted(lasts, batch.coords).tolist(),
            strict=True,
        ):
            if not marked_start:
                before = text.rfind(" ", 0, start)
                start = before if text[before + 1 : start] in _COORDINATORS else -1
            if not marked_end:
                after = text.find(" ", end + 1)
                end = after if text[end + 1 : after] in _COORDINATORS else -1
            sides.append((start, end))
        result = np.zeros(len(hit), dtype=bool)
        candidates = [i for i, (left, right) in enumerate(sides) if max(left, right) >= 0]
        if not candidates:
            return result
        near = np.flatnonzero(np.isin(hits.rows, hits.rows[hit[candidates]]))
        other, concepts = self._tables["forms"].expand(hits.keys[near])
        other, groups = near[other], self._group_of[concepts].tolist()
        # the groups of the words (metals aside) whose key ends (its last space) or starts there
        ending: dict[int, set[int]] = {}
        starting: dict[int, set[int]] = {}
        for start, end, group in zip(
            hits.starts[other].tolist(), (hits.ends[other] - 1).tolist(), groups, strict=True
        ):
            if text[start + 1 : end] not in _METALS:
                ending.setdefault(end, set()).add(group)
                starting.setdefault(start, set()).add(group)
        for i in candidates:
            group, (left, right) = self._group_of[colours[i]], sides[i]
            result[i] = group in ending.get(left, ()) or group in starting.get(right, ())
        return result

    def _makes(self, batch: _Batch, hits: _Hits) -> tuple[np.ndarray, np.ndarray]:
        """(hit, concept) pairs of makes with a model: a model designation next ("Ferrari 599",
        "Lexus RX 330") or a model year right before ("1986 Ferrari"); not after "for" ("Floor
        Mat For Ford Edge 2015") nor when its segment of the caption names a head of the
        concept, a part the model fits ("Mercedes W123 Headlight", "Black Rims Wheels BMW E36")."""
        hit, concepts = self._tables["makes"].expand(hits.keys)
        if not len(hit):
            return hit, concepts
        # a digit in the next 30 characters, or four before: where a model or a year can be
        chars = batch.chars
        after = chars[(hits.ends[hit][:, None] + np.arange(30)).clip(max=len(chars) - 1)]
        before = chars[(hits.starts[hit][:, None] - np.arange(1, 5)).clip(min=0)]
        modelled = ((after >= ord("0")) & (after <= ord("9"))).any(axis=1)
        modelled |= ((before >= ord("0")) & (before <= ord("9"))).all(axis=1)
        hit, concepts = hit[modelled], concepts[modelled]
        text, rows = batch.text, hits.rows[hit]
        row_ends = batch.row_ends(rows)
        keep = []
        for start, end, row_start, row_end in zip(
            hits.starts[hit].tolist(),
            hits.ends[hit].tolist(),
            batch.row_starts(rows).tolist(),
            row_ends.tolist(),
            strict=True,
        ):
            before = _word_before(text, row_start, start)
            after = text[end - 1 : min(row_end, end + 30)].split()[:2]
            keep.append(before != "for" and (_is_model(after) or bool(_YEAR.fullmatch(before))))
        fits = np.array(keep, dtype=bool)
        fits &= ~self._heads_in(batch, hits, rows, concepts, hits.starts[hit])
        return hit[fits], concepts[fits]

    def _heads_in(
        self, batch: _Batch, hits: _Hits, rows: np.ndarray, concepts: np.ndarray, at: np.ndarray
    ) -> np.ndarray:
        """Whether a hit of a head of each concept stands in the segment (between separators) of
        the offset ``at`` of its caption (``rows``), before it or after: a listing names the part
        first as often as last ("Mercedes W123 Headlight", "Black Rims Wheels BMW E36")."""
        n = len(self.concept_names)
        # the heads of the makes' captions (heads come by start, so by caption too)
        made, head_rows = _distinct(rows), hits.rows[hits.heads]
        low = np.searchsorted(head_rows, made)
        heads = hits.heads[_ranges(low, np.searchsorted(head_rows, made, "right") - low)[1]]
        which, headed = self._tables["heads"].expand(hits.keys[heads])
        # a segment is named by its caption and the number of separators before it; a key that
        # starts on a separator's space stands after it
        segments = len(batch.seps) + 1
        head = heads[which]
        head_segments = np.searchsorted(batch.seps, hits.starts[head], "right")
        named = (hits.rows[head] * segments + head_segments) * n + headed
        wanted = (rows * segments + np.searchsorted(batch.seps, at, "right")) * n + concepts
        return _isin_sorted(wanted, np.unique(named))

    def _heads_within(
        self, hits: _Hits, concepts: np.ndarray, first: np.ndarray, last: np.ndarray
    ) -> np.ndarray:
        """Whether a hit of a head of each concept starts at an offset in ``first..last``."""
        heads = hits.heads
        starts = hits.starts[heads]
        low = np.searchsorted(starts, first)
        pair, position = _ranges(low, np.searchsorted(starts, last, "right") - low)
        found = pair[self._heads_of[hits.keys[heads[position]], concepts[pair]]]
        return np.bincount(found, minlength=len(concepts)) > 0

    # ----------------------------------------------------------------------- vetoes

    def _vetoed(
        self,
        batch: _Batch,
        hits: _Hits,
        hit: np.ndarray,
        concepts: np.ndarray,
    ) -> np.ndarray:
        """Which (hit, concept) pairs are no mention: inside the span of a negative context of
        the concept, within :data:`CUE_WINDOW` words after a cue against it, before a head it
        modifies, in a street address or a company's name, or right before such a pair of the
        same concept ("terrier dog bed")."""
        vetoed = self._in_contexts(batch, hits, hit, concepts)
        vetoed |= self._after_cues(batch, hits, hit, concepts)
        vetoed |= self._modifying(batch, hits, hit, concepts)
        vetoed |= self._in_title_compounds(batch, hits, hit, concepts, vetoed)
        vetoed |= self._in_addresses(batch, hits, hit)
        vetoed |= self._in_company_names(batch, hits, hit)
        vetoed |= self._in_attributed_names(batch, hits, hit)
        if vetoed.any():
            # offsets in the batch's text name a caption too: a pair by the space it ends on,
            # and the vetoed ones by the space they start on. Each step looks only at the pairs
            # vetoed in the step before: a caption of thousands of chained words stays linear
            n = len(self.concept_names)
            before = (hits.ends[hit] - 1) * n + concepts
            order = np.argsort(before, kind="stable")
            ordered = before[order]
            newly = np.flatnonzero(vetoed)
            while len(newly):
                marks = hits.starts[hit[newly]] * n + concepts[newly]
                low = np.searchsorted(ordered, marks)
                _, position = _ranges(low, np.searchsorted(ordered, marks, "right") - low)
                chained = order[position]
                newly = np.unique(chained[~vetoed[chained]])
                vetoed[newly] = True
        return vetoed

    def _in_contexts(
        self, batch: _Batch, hits: _Hits, hit: np.ndarray, concepts: np.ndarray
    ) -> np.ndarray:
        """Pairs inside the span of a hit of a negative context of their concept."""
        vetoed = np.zeros(len(hit), dtype=bool)
        starts, ends = hits.starts[hit], hits.ends[hit]
        # a context holding the pair starts at most the longest key's length before its end
        longest = int(self._lengths.max(initial=0))
        table = self._tables["negated"]
        pair, context = self._joined_hits(
            table, batch, hits, hit, concepts, hits.starts, (ends - longest, starts)
        )
        vetoed[pair[ends[pair] <= hits.ends[context]]] = True
        return vetoed

    def _after_cues(
        self, batch: _Batch, hits: _Hits, hit: np.ndarray, concepts: np.ndarray
    ) -> np.ndarray:
        """Pairs that begin within :data:`CUE_WINDOW` words after a hit of a cue against their
        concept, model designations between not counted ("Fit For Audi A4 B6 B7 Sedan")."""
        vetoed = np.zeros(len(hit), dtype=bool)
        starts = hits.starts[hit]
        # the cue's last space at most _CUE_REACH characters before the hit's first space
        window = (starts - _CUE_REACH, starts)
        table = self._tables["cued"]
        pair, cue = self._joined_hits(table, batch, hits, hit, concepts, hits.ends - 1, window)
        # the words between the cue and the hit: from the cue's last space to the hit's first
        gap_start, gap_end = hits.ends[cue] - 1, starts[pair]
        text = batch.text
        for index, start, end in zip(
            pair.tolist(), gap_start.tolist(), gap_end.tolist(), strict=True
        ):
            words = text[start:end].split()
            if len(words) - sum(map(_is_model_token, words)) <= CUE_WINDOW:
                vetoed[index] = True
        return vetoed

    def _modifying(
        self, batch: _Batch, hits: _Hits, hit: np.ndarray, concepts: np.ndarray
    ) -> np.ndarray:
        """Pairs of a concept's noun right before a head of the concept, or model designations
        apart from it ("dog bed", "iPhone 4/4S Case"), with no separator between."""
        vetoed = np.zeros(len(hit), dtype=bool)
        if not len(hits.heads):
            return vetoed
        candidates = np.flatnonzero(self._modifies[hits.keys[hit], concepts])
        space = hits.ends[hit[candidates]] - 1  # the modifier's last space
        adjacent = self._heads_within(hits, concepts[candidates], space, space)
        vetoed[candidates[adjacent & ~batch.crossed(space, space)]] = True
        # model designations between: the word after the modifier is a model word or has a digit
        # (in its first _WORD_REACH characters)
        chars = batch.chars[
            (space[:, None] + np.arange(1, _WORD_REACH + 1)).clip(max=len(batch.chars) - 1)
        ]
        in_word = np.cumprod(chars != _SPACE, axis=1, dtype=bool)
        digit = in_word & (chars >= ord("0")) & (chars <= ord("9"))
        apart = ~adjacent & (digit.any(axis=1) | _isin_sorted(space, hits.models))
        candidates, space = candidates[apart], space[apart]
        if not len(candidates):
            return vetoed
        text = batch.text
        row_ends = batch.row_ends(hits.rows[hit[candidates]]).tolist()
        after = np.array(
            [
                _after_model(text, start, row_end)
                for start, row_end in zip(space.tolist(), row_ends, strict=True)
            ],
            dtype=np.int64,
        )
        found = self._heads_within(hits, concepts[candidates], after, after)
        vetoed[candidates[found & ~batch.crossed(space, after)]] = True
        return vetoed

    def _in_title_compounds(
        self, batch: _Batch, hits: _Hits, hit: np.ndarray, concepts: np.ndarray, vetoed: np.ndarray
    ) -> np.ndarray:
        """Pairs of a concept's noun before a head of the concept with title words between: at
        most :data:`_TITLE_GAP` words the caption capitalises that are no function word, and at
        most :data:`MODEL_GAP` model designations ("iPhone 4 Silicone Case", "Iphone 6/6s Black
        Enamel Case", "Dog Memory Foam Bed"). A product title names its object last; the words
        before it say what it is for or made of. Case is read from the caption (capitals):
        in "a dog on a red bed" or "a phone and its black case" lower-case words stand between,
        and the dog and the phone count; a separator or a dash ends a title's compound
        ("Greenhills dress - SM socks"). ``vetoed``: pairs other rules dropped, not looked at."""
        titled = np.zeros(len(hit), dtype=bool)
        if not len(hits.heads):
            return titled
        candidates = np.flatnonzero(self._modifies[hits.keys[hit], concepts] & ~vetoed)
        space = hits.ends[hit[candidates]] - 1  # the modifier's last space
        # a title capitalises the word after the noun (or it is a model number)
        last = len(batch.chars) - 1
        following = (space + 1).clip(max=last)
        after = batch.chars[following]
        capital = batch.capitalised(following) | ((after >= ord("0")) & (after <= ord("9")))
        candidates, space = candidates[capital], space[capital]
        # the first head of the concept after that word, within reach: heads of other concepts
        # between are more title words ("Bonnet Lock Bumper Clip")
        head_starts = hits.starts[hits.heads]
        low = np.searchsorted(head_starts, space + 1)
        pair, at = _ranges(low, np.searchsorted(head_starts, space + _TITLE_REACH, "right") - low)
        of_concept = self._heads_of[hits.keys[hits.heads[at]], concepts[candidates[pair]]]
        pair, at = pair[of_concept], at[of_concept]
        nearest = np.unique(pair, return_index=True)[1]  # each range ascends: its first head
        candidates, space = candidates[pair[nearest]], space[pair[nearest]]
        head, start = hits.heads[at[nearest]], head_starts[at[nearest]]
        # in the same caption, a capitalised word, with no separator or dash between
        found = hits.rows[head] == hits.rows[hit[candidates]]
        found &= ~self._untitled[hits.keys[head]] & batch.capitalised(start + 1)
        found &= ~batch.crossed(space, start) & ~_crossed(batch.dashes, space, start)
        # the words between, one by one: few pairs get here
        text, capitals = batch.text, batch.capitals
        for index, first, end in zip(
            candidates[found].tolist(), space[found].tolist(), start[found].tolist(), strict=True
        ):
            if _title_words(text, capitals, first, end):
                titled[index] = True
        return titled

    def _in_addresses(self, batch: _Batch, hits: _Hits, hit: np.ndarray) -> np.ndarray:
        """Pairs inside a street address: a house number, or a listing's "for sale in", then at
        most :data:`_ADDRESS_WORDS` name words and a street type ("1 Carolina Wren Trail",
        "house for sale in Manchester Road"); the name and the street type are no concepts."""
        vetoed = np.zeros(len(hit), dtype=bool)
        streets = np.flatnonzero(self._streets[hits.keys])
        if not len(streets):
            return vetoed
        # only street types with a digit or a listing cue shortly before can end an address
        starts = hits.starts[streets]
        window = (starts[:, None] - np.arange(1, _ADDRESS_REACH + 1)).clip(min=0)
        digits = batch.chars[window]
        candidate = ((digits >= ord("0")) & (digits <= ord("9"))).any(axis=1)
        listings = np.flatnonzero(self._listings[hits.keys])
        if len(listings):
            after = np.searchsorted(hits.ends[listings] - 1, starts)  # listings ending before
            previous = listings[(after - 1).clip(min=0)]
            candidate |= (after > 0) & (starts - hits.ends[previous] < _ADDRESS_REACH)
        streets = streets[candidate]
        row_starts = batch.row_starts(hits.rows[streets])
        starts = hits.starts[streets]
        begins = np.maximum(row_starts, batch.sep_before(starts))  # a name ends at a separator
        spans = [
            (first, end)
            for start, end, begin, row_start in zip(
                starts.tolist(),
                hits.ends[streets].tolist(),
                begins.tolist(),
                row_starts.tolist(),
                strict=True,
            )
            if (first := _address_start(batch.text, start, begin, row_start)) is not None
        ]
        return _inside(spans, hits, hit)

    def _in_company_names(self, batch: _Batch, hits: _Hits, hit: np.ndarray) -> np.ndarray:
        """Pairs inside a company's name: capitalised words, at most :data:`_NAME_WORDS`, before
        a company word and after any separator or dash ("High Street Textile Testing Services
        Ltd", not "Popover Blouse - New York & Company"). Case is read from the caption
        (capitals), as the batch's text is lower-case: "a red truck of the company" holds no
        name."""
        vetoed = np.zeros(len(hit), dtype=bool)
        companies = np.flatnonzero(self._companies[hits.keys])
        if not len(companies):
            return vetoed
        rows = hits.rows[companies]
        starts = hits.starts[companies]
        row_starts = batch.row_starts(rows)
        # each caption's words, whether each is capitalised and the spaces before them, once per
        # caption (a caption of thousands of company words is read once, not once for each),
        # the spaces and their case of all those captions found at once
        holding = _distinct(rows)
        opens, closes = batch.row_starts(holding), batch.row_ends(holding) - 1
        owner, at = _ranges(opens, closes - opens)
        space = batch.chars[at] == _SPACE
        spaces = at[space]
        following = batch.chars[spaces + 1]
        capitalised = batch.capitalised(spaces + 1) | (following >= ord("0")) & (
            following <= ord("9")
        )
        bounds = np.searchsorted(owner[space], np.arange(len(holding) + 1)).tolist()
        spaces_of, capitalised_of = spaces.tolist(), capitalised.tolist()
        words = {
            row: (
                batch.text[open_ + 1 : close].split(" "),
                capitalised_of[low:high],
                spaces_of[low:high],
            )
            for row, open_, close, low, high in zip(
                holding.tolist(), opens.tolist(), closes.tolist(), bounds[:-1], bounds[1:],
                strict=True,
            )
        }  # fmt: skip
        spans = []
        for row, begin, start, end in zip(
            rows.tolist(),
            np.maximum(row_starts, batch.segment_start(starts)).tolist(),
            starts.tolist(),
            hits.ends[companies].tolist(),
            strict=True,
        ):
            first = _name_start(*words[row], start, begin)
            if first is not None:
                spans.append((first, end))
        return _inside(spans, hits, hit)

    def _in_attributed_names(self, batch: _Batch, hits: _Hits, hit: np.ndarray) -> np.ndarray:
        """Pairs inside the name a work or product is by: at most :data:`_BY_NAME_WORDS`
        capitalised words right after a lower-case "by", up to a separator or a dash ("Greeting
        Card by Jenna Green", "a camp set up by Turkish Red Crescent", "Ring by Jenny Bird in
        Silver"; LABELLING.md rules 5 and 6). Case is read from the caption (capitals): a
        capitalised "By" (a title's case, all capitals) or a lower-case word after "by" tells of
        no name ("Cabin By Red Barn", "lit by red lamps")."""
        bys = np.flatnonzero(self._attributions[hits.keys])
        space = hits.ends[bys] - 1  # the space after "by"
        named = ~batch.capitalised(hits.starts[bys] + 1) & batch.capitalised(space + 1)
        bys, space = bys[named], space[named]
        if not len(bys):
            return np.zeros(len(hit), dtype=bool)
        # where the name must end: the caption's end, or a separator or dash before it
        ends = batch.row_ends(hits.rows[bys]) - 1
        marks = batch.closes  # the separators and the marks that open a colourway
        if len(marks):
            after = np.searchsorted(marks, space, "right")
            bounded = after < len(marks)
            ends[bounded] = np.minimum(ends[bounded], marks[after[bounded]])
        # only a name with a key ending in it can hold a pair (hits come by their ends)
        near = np.searchsorted(hits.ends, ends + 1, "right") > np.searchsorted(hits.ends, space + 2)
        space, ends = space[near], ends[near]
        text, capitals = batch.text, batch.capitals
        spans = [
            span
            for start, end in zip(space.tolist(), ends.tolist(), strict=True)
            if (span := _attributed_name(text, capitals, start, end))
        ]
        return _inside(spans, hits, hit)

    # ----------------------------------------------------------------------- added pairs

    def _together(self, hits: _Hits) -> np.ndarray:
        """Pairs (as ``row * n + concept``) of the concepts a caption holds a word of each
        ``together`` list of ("X vs Y" and a sport)."""
        hit, codes = self._tables["together"].expand(hits.keys)
        if not len(hit):
            return hit
        n = len(self.concept_names)
        # each (caption, concept, list) once, then the captions holding every list of a concept
        found = _distinct(hits.rows[hit] * (n * TOGETHER_LISTS) + codes) // TOGETHER_LISTS
        pairs, counts = np.unique(found, return_counts=True)
        return pairs[counts == self._together_lists[pairs % n]]

    def _verbs(
        self,
        batch: _Batch,
        hits: _Hits,
        hit: np.ndarray,
        concepts: np.ndarray,
    ) -> np.ndarray:
        """Which pairs on a word that English also uses as a verb the pipeline tags as a verb
        only ("tie your shoes"); a caption is tagged only when another pair does not already
        give the concept."""
        n = len(self.concept_names)
        unsure = self._checked[hits.keys[hit], concepts]
        verbs = np.zeros(len(hit), dtype=bool)
        if not unsure.any():
            return verbs
        pair_keys = hits.rows[hit] * n + concepts
        sure = pair_keys[~unsure]
        tags: dict[int, dict[str, set[str]]] = {}
        for index in np.flatnonzero(unsure & ~np.isin(pair_keys, sure)).tolist():
            row = int(hits.rows[hit[index]])
            if row not in tags:
                tags[row] = {}
                for token in self._nlp(_text(batch.captions[row])):
                    tags[row].setdefault(normalize(token.text), set()).add(token.pos_)
            word = batch.text[hits.starts[hit[index]] + 1 : hits.ends[hit[index]] - 1]
            found = tags[row].get(word)
            verbs[index] = bool(found) and found <= _VERB_TAGS
        return verbs

    def _joined_hits(
        self,
        table: _Ragged,
        batch: _Batch,
        hits: _Hits,
        hit: np.ndarray,
        concepts: np.ndarray,
        offsets: np.ndarray,
        window: tuple[np.ndarray, np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each (hit, concept) pair joined with the hits in the same caption whose keys list
        that concept in ``table`` (negative contexts or cues) and whose offset (``offsets``, by
        hit) is within the pair's ``window`` (first and last offsets, by pair): the pair's
        index and the other hit's. A window, not the caption: a caption of thousands of such
        words would join each with each."""
        other = np.flatnonzero(table.sizes[hits.keys])  # only the hits whose keys list any
        which, listed = table.expand(hits.keys[other])
        n = len(self.concept_names)
        # only the pairs of a concept that some of those hits list can join
        listed_here = np.zeros(n, dtype=bool)
        listed_here[listed] = True
        candidates = np.flatnonzero(listed_here[concepts])
        if not len(candidates):
            return candidates, candidates
        other = other[which]
        # the other hits by caption and concept, then offset; each (caption, concept) numbered
        other_keys = hits.rows[other] * n + listed
        order = np.lexsort((offsets[other], other_keys))
        other, other_keys = other[order], other_keys[order]
        keys = _distinct(other_keys)
        scale = len(batch.text) + 1
        codes = np.searchsorted(keys, other_keys) * scale + offsets[other]  # ascending
        pair_keys = hits.rows[hit[candidates]] * n + concepts[candidates]
        group = np.searchsorted(keys, pair_keys).clip(max=len(keys) - 1)
        joined = keys[group] == pair_keys
        candidates, base = candidates[joined], group[joined] * scale
        low, high = window
        first = np.searchsorted(codes, base + low[candidates].clip(min=0), "left")
        last = np.searchsorted(codes, base + high[candidates], "right")
        pair, position = _ranges(first, last - first)  # each pair with each of its other hits
        return candidates[pair], other[position]

    def __getstate__(self) -> dict[str, Any]:
        # a spaCy pipeline is reloaded by name in the receiving process rather than pickled, and
        # the matrices, rebuilt from the tables, are most of a matcher's size
        matrices = ("_modifies", "_heads_of", "_checked")
        return {k: v for k, v in self.__dict__.items() if k not in matrices} | {"_nlp": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._matrices()
        if self.spacy_model:
            self._nlp = _load_pipeline(self.spacy_model)


# words that coordinate two colours of a colourway ("Black OR Camel", "Red N Gold"), and
# metals, which coordinate as metals ("silver or gold jewelry")
_COORDINATORS = frozenset({"and", "or", "n"})
_METALS = frozenset({"silver", "gold", "bronze", "copper", "platinum", "brass"})


def _address_start(text: str, start: int, begin: int, row_start: int) -> int | None:
    """Where the name of an address ending in a street type at ``start`` begins (the space
    before it), or None when the words before make no address; ``begin``: a separator or the
    caption's first space, before which no name goes."""
    position, names = start, 0
    while position > begin:
        space = text.rfind(" ", begin, position)
        word = text[space + 1 : position]
        if word.isdigit():  # a house number
            return space
        if names == _ADDRESS_WORDS or word in _FUNCTION_WORDS:
            break
        names += 1
        position = space
    if names and text.endswith(_LISTING_ENDINGS, row_start, position):
        return position
    return None


def _crossed(marks: np.ndarray, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Whether one of ``marks`` (ascending offsets) stands at one of ``first..last`` (inclusive)."""
    return np.searchsorted(marks, last, "right") > np.searchsorted(marks, first)


def _last_at_or_before(marks: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    return np.append(-1, marks)[np.searchsorted(marks, offsets, "right")]


def _inside(spans: list[tuple[int, int]], hits: _Hits, hit: np.ndarray) -> np.ndarray:
    """Which hits of ``hit`` lie inside one of ``spans`` (first space, last space + 1); spans
    that overlap end in the order they begin."""
    inside = np.zeros(len(hit), dtype=bool)
    if spans:
        first, last = np.array(spans, dtype=np.int64).T
        order = np.argsort(first)
        first, last = first[order], last[order]
        at = np.searchsorted(first, hits.starts[hit], "right") - 1
        inside = (at >= 0) & (hits.ends[hit] <= last[at.clip(min=0)])
    return inside


def _name_start(
    words: list[str], capitalised: list[bool], spaces: list[int], start: int, begin: int
) -> int | None:
    """Where the company name that ends in the company word at ``start`` (the space before it
    in the batch's text) begins: the space before its first word, or None when the word before
    the company word is not capitalised. ``words``: the caption's words in the batch's text;
    ``capitalised``: whether each begins with a capital or a digit in the caption; ``spaces``:
    the offset of the space before each in the batch's text; ``begin``: the space (a
    separator's, or the caption's first) before which no name goes. A name is at most
    :data:`_NAME_WORDS` words."""
    last = bisect.bisect_left(spaces, start)  # the company word's position in the caption
    if not capitalised[last]:
        return None
    first = last
    while last - first < _NAME_WORDS and spaces[first] > begin:
        if not (capitalised[first - 1] or words[first - 1] in _NAME_JOINERS):
            break
        first -= 1
    while first < last and words[first] in _NAME_JOINERS:  # "of", "the" open no name
        first += 1
    return None if first == last else spaces[first]


def _attributed_name(text: str, capitals: bytes, space: int, end: int) -> tuple[int, int] | None:
    """The span (first space, last space + 1) of the name after the "by" followed by the space
    at ``space`` in ``text`` (a batch's lower-case text; ``capitals``: its capitalised words): at
    most :data:`_BY_NAME_WORDS` capitalised words, the first no article, the last space at most
    ``end``; None when there is none (:meth:`CuratedMatcher._in_attributed_names`)."""
    last = space
    for _ in range(_BY_NAME_WORDS):
        following = text.find(" ", last + 1)
        if following < 0 or following > end or not _capital_at(capitals, last + 1):
            break
        if last == space and text[last + 1 : following] in _ARTICLES:
            return None
        last = following
    return (space, last + 1) if last > space else None


def _title_words(text: str, capitals: bytes, space: int, head_start: int) -> bool:
    """Whether the words of ``text`` (a batch's lower-case text) between the spaces at ``space``
    and ``head_start`` are title words: at most :data:`_TITLE_GAP` capitalised (``capitals``: the
    batch's capitalised words) that are no function word, and at most :data:`MODEL_GAP` model
    designations (:meth:`CuratedMatcher._in_title_compounds`)."""
    titled = models = 0
    offset = space + 1
    for word in text[space + 1 : head_start].split():
        if _is_model_token(word):
            models += 1
        elif _capital_at(capitals, offset) and word not in _FUNCTION_WORDS:
            titled += 1
        else:
            return False
        offset += len(word) + 1
    return titled <= _TITLE_GAP and models <= MODEL_GAP and titled + models > 0


def _word_capitals(captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Which words of ``captions`` (non-ASCII, references decoded), as
    :func:`clipaudit.text.normalize` makes them, the caption writes with an upper-case first
    letter: the number of words of each caption, and a flag for each word, in order.
    Upper case that folding makes of no letter ("TM" of "™") is no capital: it is no word.
    All captions are folded at once, as :func:`_fold_each` folds them, with their case kept: no
    code point folds to other letters so than lower-cased, and a caption whose words came out
    otherwise than in the batch is not paired with them (:meth:`CuratedMatcher._cased`)."""
    text = "\0".join(caption.replace("\0", " ") for caption in captions)
    cased = fold(text, cased=True)
    chars = np.frombuffer(cased.lower(), dtype=np.uint8)
    word = ((chars >= ord("a")) & (chars <= ord("z"))) | ((chars >= ord("0")) & (chars <= ord("9")))
    starts = np.flatnonzero(word & ~np.concatenate([[False], word[:-1]]))
    breaks = np.flatnonzero(chars == 0)
    counts = np.bincount(np.searchsorted(breaks, starts), minlength=len(captions))
    upper = np.frombuffer(cased, dtype=np.uint8)[starts]
    return counts, (upper >= ord("A")) & (upper <= ord("Z"))


def _capital_at(capitals: bytes, offset: int) -> bool:
    """Whether the word at ``offset`` begins with an upper-case letter (:attr:`_Batch.capitals`)."""
    return bool(capitals[offset >> 3] >> (offset & 7) & 1)


def _after_model(text: str, space: int, row_end: int) -> int:
    """The space after the model designation that follows the space at ``space`` (at most
    :data:`MODEL_GAP` words): where a head would begin; -1 for a longer one."""
    for _ in range(MODEL_GAP):
        end = text.find(" ", space + 1, row_end)
        if end < 0 or not _is_model_token(text[space + 1 : end]):
            return space
        space = end
    end = text.find(" ", space + 1, row_end)
    return -1 if end >= 0 and _is_model_token(text[space + 1 : end]) else space


def _word_before(text: str, row_start: int, start: int) -> str:
    """The word before the space at ``start``, in the caption that opens at ``row_start``."""
    space = text.rfind(" ", row_start, start)
    return text[space + 1 : start] if space >= 0 else ""


def _has_digit(word: str) -> bool:
    return _DIGIT.search(word) is not None


def _is_model_number(word: str) -> bool:
    """A word of a model designation with a digit, not an ordinal ("599", "e350", not "4th")."""
    return _has_digit(word) and not _ORDINAL.fullmatch(word)


def _is_model(words: list[str]) -> bool:
    """Whether the words after a make begin with a model designation: a model number ("599"),
    or a series of up to three letters and a model number ("RX 330", "F-150")."""
    return bool(words) and (
        _is_model_number(words[0])
        or (len(words) > 1 and len(words[0]) <= 3 and _is_model_number(words[1]))
    )


def _is_model_token(word: str) -> bool:
    """A word of a model designation: one with a digit ("4s", "a4") or a model word ("plus",
    "edge", "x")."""
    return word in _MODEL_WORDS or _has_digit(word)


def _isin_sorted(values: np.ndarray, sorted_values: np.ndarray) -> np.ndarray:
    """``np.isin(values, sorted_values)`` for an ascending ``sorted_values``, by binary search."""
    if not len(sorted_values):
        return np.zeros(len(values), dtype=bool)
    at = np.searchsorted(sorted_values, values).clip(max=len(sorted_values) - 1)
    return sorted_values[at] == values


# --------------------------------------------------------------------------- batches of captions

# bytes.translate tables for a batch joined with " \0 ": normalize's table with "\0" to "\n";
# for folded text, upper case to space (what normalize's table for folded text does, the rest
# left for the batch's table); and the marks a character is, as bits: a separator, a mark that
# opens a colourway, one that coordinates colours, and a hyphen (a dash, which opens and
# coordinates, when a space stands beside it)
_BATCH_TABLE = bytes([_NEWLINE]) + ASCII_TABLE[1:]
_FOLD_CASE = bytes(_SPACE if 65 <= c <= 90 else c for c in range(256))
_SEPARATOR, _OPENS, _COORDINATES, _HYPHEN, _DASH = 1, 2, 4, 8, 16
_MARKS = {
    **dict.fromkeys(";()[]{}!?", _SEPARATOR),
    ",": _SEPARATOR | _COORDINATES,
    ":": _SEPARATOR | _OPENS,
    "|": _SEPARATOR | _OPENS,
    "/": _OPENS | _COORDINATES,
    "&": _COORDINATES,
    "+": _COORDINATES,
    "-": _HYPHEN,
}
_KIND_TABLE = bytes(_MARKS.get(chr(c), 0) for c in range(256))
_SPACED_DASH = _OPENS | _COORDINATES | _DASH  # a hyphen with a space beside it
# marks that folding makes spaces, as the ASCII marks of their kind of boundary
_UNICODE_MARKS = (("\u2013", " - "), ("\u2014", " - "), ("\u2022", " | "), ("\u00b7", " | "))


def _prepare(captions: Sequence[str | None]) -> _Batch:
    """A batch of captions as one text: each normalised as :func:`clipaudit.text.normalize`
    does and padded with spaces, joined by "\\n", which no key contains, so no hit spans two
    captions; with the offsets of the spaces that stand for a separator (``, ; : | ( ) [ ] { }
    ! ?``) and for the marks of colourways (a spaced dash, a slash, a pipe, a colon, "&",
    "+", a comma). One pass in C (``clipaudit._scan.prepare``) where it was built, array
    operations over the joined text (:func:`_marked`) otherwise."""
    captions = _unescaped(captions)
    if _scan is None:
        text, marks, kind, capitals = _marked(_joined(captions))
        newlines = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == _NEWLINE)
        cased = [index for index, caption in enumerate(captions) if not caption.isascii()]
    else:
        fold_index, fold_blob = _fold_tables()
        try:
            odd, cased = _scan.non_ascii(captions, fold_index)
        except TypeError:  # None or a non-text among them
            captions = [_text(caption) for caption in captions]
            odd, cased = _scan.non_ascii(captions, fold_index)
        folded = _fold_each([captions[index] for index in odd])  # what the table cannot fold
        text, marks, kind, newlines, capitals = _scan.prepare(
            captions,
            folded,
            fold_index,
            fold_blob,
            _BATCH_TABLE,
            _KIND_TABLE,
            _HYPHEN,
            _SPACED_DASH,
        )
        marks, kind = np.frombuffer(marks, dtype=np.int64), np.frombuffer(kind, dtype=np.uint8)
        newlines = np.frombuffer(newlines, dtype=np.int64)
    return _Batch(
        captions=captions,
        text=text.decode("ascii"),
        chars=np.frombuffer(text, dtype=np.uint8),
        capitals=capitals,
        newlines=newlines,
        seps=marks[(kind & _SEPARATOR) != 0],
        opens=marks[(kind & _OPENS) != 0],
        closes=marks[(kind & (_SEPARATOR | _OPENS)) != 0],
        coords=marks[(kind & _COORDINATES) != 0],
        dashes=marks[(kind & _DASH) != 0],
        non_ascii=np.array(cased, dtype=np.int64),
    )


def _unescaped(captions: Sequence[str | None]) -> Sequence[str | None]:
    """The captions with their HTML character references decoded (:func:`clipaudit.text.unescape`):
    only those holding an "&" (4% of LAION's) are looked at, found in C where it was built."""
    try:
        holding = (
            _scan.ampersands(captions)
            if _scan is not None
            else [index for index, caption in enumerate(captions) if "&" in caption]
        )
    except TypeError:  # None or a non-text among them
        captions = [_text(caption) for caption in captions]
        return _unescaped(captions)
    if not holding:
        return captions
    captions = list(captions)
    for index in holding:
        captions[index] = unescape(captions[index])
    return captions


def _joined(captions: Sequence[str | None]) -> bytes:
    """The captions joined by " \\0 " and padded with spaces, as ASCII bytes: the non-ASCII ones
    folded (:func:`_fold_each`), a caption's own "\\0" a space."""
    try:
        joined = " \0 ".join(captions)
    except TypeError:  # None or a non-text among them
        captions = [_text(caption) for caption in captions]
        joined = " \0 ".join(captions)
    if joined.count("\0") != len(captions) - 1:
        captions = [caption.replace("\0", " ") for caption in captions]
        joined = " \0 ".join(captions)
    if not joined.isascii():
        ascii_ = np.fromiter(map(str.isascii, captions), dtype=bool, count=len(captions))
        odd = np.flatnonzero(~ascii_).tolist()
        captions = list(captions)
        for index, caption in zip(odd, _fold_each([captions[i] for i in odd]), strict=True):
            captions[index] = caption
        joined = " \0 ".join(captions)
    return b" " + joined.encode("ascii") + b" "


def _marked(data: bytes) -> tuple[bytes, np.ndarray, np.ndarray, bytes]:
    """``data`` (a batch's joined ASCII text) translated with runs of spaces made one, its marks
    (the offset of the space each mark became and the kinds of the marks there, or-ed), and
    the words that begin with an upper-case letter (:attr:`_Batch.capitals`). The pass that
    ``clipaudit._scan.prepare`` makes in C, with array operations."""
    chars = np.frombuffer(data.translate(_BATCH_TABLE), dtype=np.uint8)
    # a run of spaces becomes one, as normalize's strip and split do within a padded caption
    spaces = chars == _SPACE
    removed = np.flatnonzero(spaces[1:] & spaces[:-1]) + 1
    keep = np.ones(len(chars), dtype=bool)
    keep[removed] = False
    kinds = np.frombuffer(data.translate(_KIND_TABLE), dtype=np.uint8)
    marks = np.flatnonzero(kinds != 0)  # (faster than on the uint8 values themselves)
    kind = kinds[marks]
    hyphen = np.flatnonzero(kind == _HYPHEN)  # a dash when a space stands beside it
    spaced = (chars[marks[hyphen] - 1] == _SPACE) | (chars[marks[hyphen] + 1] == _SPACE)
    kind[hyphen] = np.where(spaced, _SPACED_DASH, 0)
    marks, kind = marks[kind != 0], kind[kind != 0]
    # each mark became a space of a run that is now one space: its offset in the result, with
    # the marks of all the run's characters
    marks = marks - np.searchsorted(removed, marks, "right")
    first = np.ones(len(marks), dtype=bool)
    first[1:] = marks[1:] != marks[:-1]
    marks = marks[first]
    kind = np.bitwise_or.reduceat(kind, np.flatnonzero(first)) if len(kind) else kind
    raw = np.frombuffer(data, dtype=np.uint8)
    text = chars[keep]
    starts = np.zeros(len(text), dtype=bool)
    starts[1:] = text[:-1] == _SPACE
    capitals = ((raw >= ord("A")) & (raw <= ord("Z")))[keep] & starts
    size = len(text) // 8 + 1  # as the C pass sizes it
    bits = np.packbits(capitals, bitorder="little").tobytes()
    return text.tobytes(), marks, kind, bits + bytes(size - len(bits))


# Code points that fold alone as they fold in a text (no lower-casing or decomposition depends on
# their neighbours; Greek is left out: its capital sigma lower-cases by position), which the
# compiled pass folds by table: Latin, IPA and combining marks, Cyrillic, Latin Extended
# Additional, punctuation to miscellaneous symbols, CJK punctuation, full-width forms.
_FOLD_RANGES = (
    (0x80, 0x370), (0x400, 0x530), (0x1E00, 0x1F00), (0x2000, 0x2C00), (0x3000, 0x3040),
    (0xFF00, 0xFFF0),
)  # fmt: skip


@cache
def _fold_tables() -> tuple[bytes, bytes]:
    """The compiled pass's fold table: for each code point of :data:`_FOLD_RANGES`, the ASCII
    text :func:`_fold_each` folds it to, as ``offset << 5 | length`` into a blob (uint32 per code
    point up to the last range's end; 0xFFFFFFFF for the others, folded by :func:`_fold_each`)."""
    points = [point for low, high in _FOLD_RANGES for point in range(low, high)]
    index = np.full(_FOLD_RANGES[-1][1], 0xFFFFFFFF, dtype=np.uint32)
    blob = bytearray()
    for point, folded in zip(points, _fold_each([chr(p) for p in points]), strict=True):
        if len(folded) < 32:
            index[point] = len(blob) << 5 | len(folded)
            blob += folded.encode("ascii")
    return index.tobytes(), bytes(blob)


def _fold_each(captions: list[str]) -> list[str]:
    """Each caption folded as :func:`clipaudit.text.normalize` folds text (ASCII, lower case),
    its punctuation kept, the dashes and bullets of :data:`_UNICODE_MARKS` as ASCII marks, a
    "\\0" as a space; all folded at once."""
    text = "\0".join(captions)
    if text.count("\0") != max(len(captions) - 1, 0):
        text = "\0".join(caption.replace("\0", " ") for caption in captions)
    for mark, ascii_mark in _UNICODE_MARKS:
        if mark in text:
            text = text.replace(mark, ascii_mark)
    return fold(text).translate(_FOLD_CASE).decode("ascii").split("\0") if captions else []


def _distinct(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)``, which is several times slower on a batch's hits (it hashes first)."""
    values = np.sort(values)
    first = np.ones(len(values), dtype=bool)
    first[1:] = values[1:] != values[:-1]
    return values[first]


class _Ragged:
    """A list of int lists as two arrays, so that the lists of many items are looked up at once."""

    def __init__(self, lists: Sequence[Sequence[int]]):
        self.offsets = np.array([0, *accumulate(map(len, lists))], dtype=np.int64)
        self.values = np.array([v for values in lists for v in values], dtype=np.int64)
        self.sizes = np.diff(self.offsets)

    def expand(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every value of every item's list, with the position in ``items`` it belongs to."""
        listed = np.flatnonzero(self.sizes[items])  # most items list nothing for most roles
        starts = self.offsets[items[listed]]
        which, positions = _ranges(starts, self.sizes[items[listed]])
        return listed[which], self.values[positions]

    def matrix(self, n: int) -> np.ndarray:
        """A boolean item x value matrix, true where the item's list holds the value (< ``n``)."""
        found = np.zeros((len(self.sizes), n), dtype=bool)
        found[np.repeat(np.arange(len(self.sizes)), self.sizes), self.values] = True
        return found


def _ranges(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ranges ``starts[i] .. starts[i] + counts[i] - 1`` concatenated, each position with its
    ``i``."""
    which = np.repeat(np.arange(len(counts)), counts)
    offsets = np.cumsum(counts) - counts  # where each range begins in the result
    return which, starts[which] + np.arange(len(which)) - offsets[which]


# --------------------------------------------------------------------------- key tables


def _key_tables(registry: Registry) -> dict[str, dict[str, list[int]]]:
    """For each of :data:`ROLES`, the forms holding it and their integers: read from the cache
    (:func:`matcher_cache_dir`) when it holds this registry's, built and cached otherwise."""
    path = _cache_path(registry)
    if path is not None:
        try:
            tables = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            tables = None
        if _valid_tables(tables, len(registry.concepts)):
            return tables
    tables = _build_tables(registry)
    if path is not None:
        with contextlib.suppress(OSError):  # a cache that cannot be written is only slower
            atomic_write_text(path, json.dumps(tables, separators=(",", ":")))
            # the newest files stay: older ones are of registries and code since changed
            others = [
                file
                for file in path.parent.glob("*.json")
                if file != path and _CACHE_NAME.fullmatch(file.name)  # only ours, in any folder
            ]
            others.sort(key=lambda file: file.stat().st_mtime)
            for old in others[: max(0, len(others) + 1 - _CACHE_FILES)]:
                old.unlink(missing_ok=True)
    return tables


def _build_tables(registry: Registry) -> dict[str, dict[str, list[int]]]:
    lexicon = _english_lexicon()
    roles: dict[str, dict[str, set[int]]] = {role: {} for role in ROLES}

    def add(role: str, forms: Iterable[str], value: int = 0) -> None:
        for form in forms:
            roles[role].setdefault(form, set()).add(value)

    def forms_of(phrase: str) -> list[str]:
        return [form for form, _ in lexicon.phrase_forms(normalize(phrase))]

    head_forms = cache(lambda heads: _head_forms(lexicon, heads))
    for index, concept in enumerate(registry.concepts):
        own: set[str] = set()
        for synonym in map(normalize, concept.synonyms):
            for form, verb_like in lexicon.phrase_forms(synonym):
                own.add(form)
                add("forms", [form], index)
                if verb_like:
                    add("checked", [form], index)
            if _can_modify(lexicon, synonym):
                add("modifiers", [synonym], index)
        for make in map(normalize, concept.makes):
            add("makes", forms_of(make), index)
            add("modifiers", [make], index)
        add("colourways", map(normalize, concept.colourways), index)
        for number, words in enumerate(concept.together):
            for word in words:
                add("together", forms_of(word), index * TOGETHER_LISTS + number)
        for context in concept.negative_contexts:
            add("negated", forms_of(context), index)
        group = registry.group(concept.group)
        heads = group.modifier_of + concept.modifier_of
        add("heads", head_forms(heads) - own, index)
        add("cued", _cues(lexicon, head_forms(heads), group.not_after + concept.not_after), index)
    add("models", _MODEL_WORDS)
    add("streets", chain.from_iterable(map(forms_of, _STREET_TYPES)))
    add("listings", _LISTING_CUES)
    add("companies", _COMPANY_WORDS)
    add("attributions", ["by"])
    add("untitled", chain.from_iterable(map(forms_of, _UNTITLED_HEADS)))
    return {role: {form: sorted(v) for form, v in sorted(t.items())} for role, t in roles.items()}


def _valid_tables(tables: Any, n_concepts: int) -> bool:
    """Whether a cache file's content has the shape :func:`_build_tables` gives."""
    if not isinstance(tables, dict) or list(tables) != list(ROLES):
        return False
    top = n_concepts * TOGETHER_LISTS
    return all(
        isinstance(table, dict)
        and all(
            isinstance(form, str)
            and isinstance(values, list)
            and all(isinstance(v, int) and 0 <= v < top for v in values)
            for form, values in table.items()
        )
        for table in tables.values()
    )


_CACHE_FILES = 16  # the most key tables a cache folder keeps


def matcher_cache_dir() -> Path | None:
    """Where built key tables are cached: ``$CLIPAUDIT_MATCHER_CACHE`` (``off`` for nowhere),
    else ``$XDG_CACHE_HOME/clipaudit/matchers`` (``~/.cache`` by default)."""
    chosen = os.environ.get("CLIPAUDIT_MATCHER_CACHE")
    if chosen:
        return None if chosen == "off" else Path(chosen).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "clipaudit" / "matchers"


_CACHE_NAME = re.compile(r"[0-9a-f]{32}\.json")


def _cache_path(registry: Registry) -> Path | None:
    """The cache file of a registry's key tables: named by a hash of its groups and concepts as
    they are (a registry changed in code included, not only its file), the lexicon's version and
    this code; None when the cache is off."""
    folder = matcher_cache_dir()
    if folder is None:
        return None
    content = [
        [dataclasses.asdict(group) for group in registry.groups],
        [dataclasses.asdict(concept) for concept in registry.concepts],
    ]
    identity = json.dumps([content, *code_identity()], default=str, sort_keys=True)
    return folder / f"{hashlib.sha256(identity.encode()).hexdigest()[:32]}.json"


@cache
def code_identity() -> tuple[str, str]:
    """The lexicon's version and a hash of the code that turns a registry into key tables and
    matches captions: what a cache of tables, or a coverage run's finished shard, was made by."""
    import spacy_lookups_data

    from clipaudit import registry, text

    digest = hashlib.sha256()
    for module in (__file__, registry.__file__, text.__file__):
        digest.update(Path(module).read_bytes())
    return spacy_lookups_data.__version__, digest.hexdigest()


def _can_modify(lexicon: _Lexicon, synonym: str) -> bool:
    """Whether a normalised synonym can modify a head noun ("dog" in "dog bed").

    A modifier in an English compound is a singular noun, so a plural is no modifier ("trains
    pass" is a clause); only the synonym as listed is taken, never its plural. Neither are
    adjectives and participles, which describe the head rather than say what it is for ("a
    snowy forest", "a frozen pond"), nor activities ("playing tennis"). A model number names a
    thing ("Ford F-150 Floor Mats"), whatever the tables say of "150".
    """
    words = synonym.split(" ")
    first, last = words[0], words[-1]
    noun = lexicon.is_noun(last) or last.isdigit()
    return noun and lexicon.lookup.get(first, first) == first


def _head_forms(lexicon: _Lexicon, heads: Iterable[str]) -> set[str]:
    """The forms of ``modifier_of`` heads; a head whose "-s" form is mostly a verb after a noun
    phrase ("a man in a shirt stands", "snow covers the hill") is taken in the singular only."""
    return {
        form
        for head in map(normalize, heads)
        for form, _ in lexicon.phrase_forms(head)
        if form == head or head.split(" ")[-1] not in _VERB_LIKE_HEADS
    }


def _cues(lexicon: _Lexicon, heads: set[str], not_after: Iterable[str]) -> Iterator[str]:
    """Cues against a concept: its ``not_after`` phrases ("by" for authorship), and for a concept
    that other objects are made for (one with ``modifier_of`` heads) each head form followed by
    "for" ("case for", "cases for": "a case for an iPhone 7") and the phrases of
    :data:`FIT_CUES`."""
    for cue in map(normalize, not_after):
        yield from (form for form, _ in lexicon.phrase_forms(cue))
    if heads:
        yield from FIT_CUES
        yield from (f"{head} for" for head in heads)


def _load_pipeline(name: str) -> Any:
    import spacy

    try:
        nlp = spacy.load(name, exclude=["ner", "parser", "lemmatizer", "textcat"])
    except Exception as exc:  # a user's pipeline: its files fail in many ways (config, meta, code)
        # spaCy's OSError for a package's name: none is installed (not a dependency it lacks)
        if isinstance(exc, OSError) and not ("/" in name or os.sep in name or Path(name).exists()):
            raise SettingsError(
                f"spaCy pipeline {name!r} is not installed ({one_line(exc)}); install it with "
                f"`python -m spacy download {name}` (e.g. en_core_web_sm), pass the path of a "
                "saved pipeline, or leave spacy_model unset to match without part-of-speech checks"
            ) from None
        raise SettingsError(
            f"{name!r} cannot be loaded as a spaCy pipeline ({one_line(exc)}); pass the folder "
            "a pipeline was saved to (nlp.to_disk) or the name of an installed one such as "
            "en_core_web_sm, or leave spacy_model unset to match without part-of-speech checks"
        ) from None
    if nlp.lang != "en":  # its tags would be read as English ones: every check a guess
        raise SettingsError(
            f"spaCy pipeline {name!r} is for language {nlp.lang!r}, and the curated profile's "
            "part-of-speech check reads English captions; use an English pipeline such as "
            "en_core_web_sm"
        )
    # its length limit guards the parser's and NER's memory, which are not loaded; a caption
    # of a million characters is tagged like any other
    nlp.max_length = sys.maxsize
    if (
        not nlp.has_pipe("tagger")
        and not nlp.has_pipe("morphologizer")
        and not nlp.has_pipe("attribute_ruler")
    ):
        raise SettingsError(
            f"spaCy pipeline {name!r} has no tagger, morphologizer or attribute_ruler, so it "
            f"cannot tag parts of speech (its components: {', '.join(nlp.pipe_names) or 'none'}); "
            "use a trained pipeline such as en_core_web_sm"
        )
    return nlp


# --------------------------------------------------------------------------- inflections


@cache
def _english_lexicon() -> _Lexicon:
    return _Lexicon.from_spacy_lookups()


class _Lexicon:
    """Surface forms of English words, generated from spaCy's lemma lookup tables.

    The tables map surface forms to lemmas; generation runs the suffix rules backwards (lemma ->
    candidate form) and keeps a candidate only when the tables agree it is a form of that lemma,
    which guards against bad reverse look-ups (the table's "saw" -> "see" is a verb form and is
    never produced by the noun rules). Irregular forms come from the exception table ("geese").
    A word the tables do not know gets the regular English plural ("hoodies").
    """

    def __init__(
        self,
        lookup: dict[str, str],
        exceptions: dict[str, dict[str, list[str]]],
        index: dict[str, list[str]],
        rules: dict[str, list[list[str]]],
    ):
        self.lookup = lookup
        self.rules = rules
        self.nouns = frozenset(index.get("noun", ()))
        self.adjectives = frozenset(index.get("adj", ()))
        self.verbs = frozenset(index.get("verb", ()))
        self.known = frozenset(word for words in index.values() for word in words)
        self.irregular: dict[str, dict[str, set[str]]] = {}
        for pos in ("noun", "adj"):
            table: dict[str, set[str]] = {}
            for form, lemmas in exceptions.get(pos, {}).items():
                for lemma in lemmas:
                    if lemma != form:
                        table.setdefault(lemma, set()).add(form)
            self.irregular[pos] = table

    @classmethod
    def from_spacy_lookups(cls) -> _Lexicon:
        # read the package's files directly: importing spaCy itself costs seconds per worker
        try:
            import spacy_lookups_data
        except ImportError:
            raise SettingsError(
                "the curated profile needs spaCy's lookup tables: install spacy-lookups-data "
                "(`pip install spacy-lookups-data`)"
            ) from None
        paths = spacy_lookups_data.en

        def table(name: str) -> Any:
            path = Path(str(paths[name]))
            if not path.exists():
                path = path.with_name(path.name + ".gz")
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt", encoding="utf-8") as handle:
                return json.load(handle)

        return cls(
            table("lemma_lookup"), table("lemma_exc"), table("lemma_index"), table("lemma_rules")
        )

    def word_forms(self, word: str) -> set[str]:
        """``word`` and its noun plurals, plus comparative/superlative when it is an adjective."""
        forms = {word} | self._plurals(word)
        if word in self.adjectives:
            forms |= self.irregular["adj"].get(word, set())
            forms |= self._ruled_forms(word, "adj")
        return forms

    def is_noun(self, word: str) -> bool:
        """Whether ``word`` is a noun in its base form: not an adjective only ("snowy") and not
        a form of another lemma ("skiing", "frozen"); a word the tables do not know counts."""
        if self.lookup.get(word, word) != word:
            return False
        return word in self.nouns or word not in self.adjectives

    def _plurals(self, word: str) -> set[str]:
        plurals = self.irregular["noun"].get(word, set()) | self._ruled_forms(word, "noun")
        if not plurals and self._takes_regular_plural(word):
            plurals = {_regular_plural(word)}
        return plurals

    def _takes_regular_plural(self, word: str) -> bool:
        """Whether a word without a plural in the tables gets the regular one: a noun, or a word
        the tables do not know ("hoodie"). Never a word that is already a form of another lemma
        ("pants", "colored", "raining"), a function word ("from below"), an unknown participle
        ("colorized"), or a word in "-s": a plural ("khakis") or a mass noun ("tennis"), since
        the tables list the plurals of most count nouns in "-s" ("buses", "glasses"); a noun in
        "-ss" is singular, and takes "-es" where the tables miss it ("crosses")."""
        plural_like = word.endswith("s") and not word.endswith("ss")
        if word in _FUNCTION_WORDS or plural_like or self.lookup.get(word, word) != word:
            return False
        if word in self.known:
            return word in self.nouns
        return not word.endswith(("ed", "ing"))

    def _ruled_forms(self, word: str, pos: str) -> set[str]:
        forms = set()
        for form_suffix, lemma_suffix in self.rules.get(pos, ()):
            if word.endswith(lemma_suffix) and len(word) > len(lemma_suffix):
                stem = word[: len(word) - len(lemma_suffix)]
                for candidate in _with_suffix(stem, form_suffix):
                    # an adjective degree that is a word of its own is a lookup artefact
                    # ("matter" is not a degree of "matte")
                    if self.lookup.get(candidate) == word and (
                        pos != "adj" or candidate not in self.known
                    ):
                        forms.add(candidate)
        return forms

    def phrase_forms(self, phrase: str) -> Iterator[tuple[str, bool]]:
        """Surface forms of a normalised phrase, each with a flag for part-of-speech checks.

        Only forms a caption would use are generated: the phrase's head is inflected and nothing
        else. The head is the last word ("ice creams", "station wagons"), or a noun before "of"
        ("glasses of", "slices of orange"). A leading word takes no verb inflections, since in a
        noun compound they name no thing ("stationed wagon", "parked bench"); an activity is
        listed in each form captions use ("playing tennis", "plays tennis"). The flag is True for
        a one-word form that English also uses as a verb ("tie", "ties").
        """
        if not phrase:
            return
        words = phrase.split(" ")
        head = words.index("of", 1) - 1 if "of" in words[1:] else len(words) - 1
        before, word, after = " ".join(words[:head]), words[head], " ".join(words[head + 1 :])
        if head == len(words) - 1:
            forms = self.word_forms(word)
        else:  # a noun before "of" takes its plurals; another word ("shy of") stays as it is
            noun = word in self.nouns and word not in _FUNCTION_WORDS
            forms = {word} | (self._plurals(word) if noun else set())
        # only a one-word synonym's base form or its third-person "-s" form can be a verb
        single = len(words) == 1 and word in self.verbs
        verb_forms = self._third_person(word) | {word} if single else set()
        for form in sorted(forms):
            yield " ".join(part for part in (before, form, after) if part), form in verb_forms

    def _third_person(self, verb: str) -> set[str]:
        candidates = _with_suffix(verb, "s") | _with_suffix(verb, "es")
        return {form for form in candidates if self.lookup.get(form) == verb}


# words that end a phrase without being a noun ("from below", "zoomed in"): never pluralised
_FUNCTION_WORDS = frozenset(
    {
        *("a", "an", "the", "and", "of", "in", "on", "at", "to", "from", "by", "with", "for"),
        *("into", "onto", "over", "under", "above", "below", "up", "down", "out", "off"),
        *("through", "around", "like", "back", "away"),
    }
)


# nouns whose "-s" form after a noun phrase is mostly a verb ("the train passes", "a man in a
# shirt stands"): as heads of ``modifier_of`` they are matched in the singular only
_VERB_LIKE_HEADS = frozenset(
    {
        *("stand", "sit", "rest", "hang", "pass", "stop", "cover", "fly", "float", "feed"),
        *("hide", "shine", "light", "lift", "lock", "park", "launch", "dock", "drain", "damage"),
        *("shelter", "wear", "press", "set", "show", "sign", "mount", "hook", "track", "trail"),
        *("cut", "box", "rack", "tower", "seat", "house", "tap", "mix", "star", "host", "check"),
        *("guard", "shop", "place", "name", "address", "pin", "form", "tag", "plant", "pump"),
        *("board", "dress", "face", "head", "line", "top", "hold", "work", "look", "play", "run"),
        *("walk", "ride", "turn", "wait", "pose", "race", "jump", "fall", "land", "sail", "cross"),
    }
)


def _with_suffix(stem: str, suffix: str) -> set[str]:
    """``stem + suffix``, plus the doubled final consonant English spelling uses ("redder")."""
    candidates = {stem + suffix}
    if (
        suffix[:1] in {"e", "i"}
        and len(stem) >= 3
        and stem[-1] not in "aeiouwxy"
        and (stem[-2] in "aeiou" and stem[-3] not in "aeiou")
    ):
        candidates.add(stem + stem[-1] + suffix)
    return candidates


def _regular_plural(word: str) -> str:
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if len(word) > 1 and word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def surface_forms(registry: Registry, concept: str) -> list[str]:
    """Every surface form the curated profile matches for ``concept`` (for inspection and docs)."""
    lexicon = _english_lexicon()
    found = registry.concept(concept)
    forms: Iterable[str] = (
        form for synonym in found.synonyms for form, _ in lexicon.phrase_forms(normalize(synonym))
    )
    return sorted(set(forms))


@keyword_checked
def match_captions(
    captions: str | Iterable[str],
    registry: str | Path | Registry = DEFAULT_REGISTRY,
    profile: str = DEFAULT_PROFILE,
    *,
    spacy_model: str | None = None,
) -> list[str] | list[list[str]]:
    """The concepts each caption mentions, by name in registry order: a list of names for one
    caption, a list of such lists for an iterable of captions.

    ``clipaudit.match_captions(["A brown dog on the beach."])`` -> ``[["dog", "brown", "beach"]]``.
    ``registry`` is a built-in name, a YAML path or a :class:`Registry`; ``profile`` the
    matching profile (``curated``, or ``paper``: the paper's substring counting);
    ``spacy_model`` an installed trained spaCy pipeline for the curated profile's part-of-speech
    checks. Raises :class:`~clipaudit.errors.InputError` for captions of another type (a
    DataFrame among them: give its caption column), :class:`~clipaudit.errors.RegistryError`
    for a registry that cannot be loaded and :class:`~clipaudit.errors.SettingsError` for an
    unknown profile.
    """
    # checked before the matcher is built; bytes iterate as numbers, no captions
    if not isinstance(captions, (str, Iterable)) or isinstance(captions, (bytes, bytearray)):
        raise InputError(
            "captions must be one caption string or an iterable of them (None for a row without "
            f"a caption), got {type(captions).__name__} {captions!r:.60}"
        )
    if hasattr(captions, "columns"):  # a DataFrame iterates over its column names
        raise InputError(
            f"captions must be one caption string or an iterable of them, got a "
            f"{type(captions).__name__} (whose iteration gives its column names); give its caption "
            "column: match_captions(df[column])"
        )
    matcher = build_matcher(load_registry(registry), profile, spacy_model=spacy_model)
    if isinstance(captions, str):
        return matcher.match(captions)
    names = matcher.concept_names
    return [[names[i] for i in hits] for hits in matcher.match_batch(list(captions))]

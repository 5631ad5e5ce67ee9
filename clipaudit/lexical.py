"""Which registry concepts a caption mentions: the lexical matcher behind caption coverage.

Two profiles (:data:`PROFILES`):

- ``paper`` reproduces the counting of Cai et al.: a concept is mentioned when one of its
  ``paper_synonyms`` occurs anywhere in the lower-cased caption, as a substring, flaws included
  ("that" counts as hat, "train" as rain). One Aho-Corasick pass over the caption.
- ``curated`` (the default) counts mentions in the gloss's sense: whole words only, any noun
  inflection ("puppies" -> dog, "geese" -> goose) and adjective degree ("shinier"), multi-word
  phrases in order and adjacent, and never inside one of the concept's negative contexts
  ("hot dog" is no dog), before a head noun it only modifies ("dog bed", "phone case": the
  registry's ``modifier_of``), or shortly after a cue against it ("a case for an iPhone",
  "songs by hip hop artist"). The caption is normalised (:func:`clipaudit.text.normalize`) and
  padded with spaces, so every word boundary is a literal space and one exact-match automaton
  over ``" form "`` keys finds whole-word mentions of every surface form at once. A batch of
  captions is normalised and searched as one text, and its hits are resolved with array
  operations.

Inflections are generated when the matcher is built, from spaCy's English lookup tables
(spacy-lookups-data) and its suffix rules, never by lemmatising captions (lemmatising "tired"
gives "tire", "parking" gives "park"). Only forms a caption would use are generated: a
phrase's head is inflected and nothing else ("station wagons", never "stationed wagon"). Verb
inflections are not generated: for the registry's nouns they name another sense ("tied",
"parked", "training", "dressed", "coated"); participles and activities that do name a concept
("raining", "tired", "playing tennis") are listed as synonyms.

With ``spacy_model`` (a trained pipeline the user has installed, e.g. ``en_core_web_sm``) the
curated matcher also drops a hit on a word that the pipeline tags as a verb ("tie your shoes",
"park the car") when the matched synonym is a base form that English also uses as a verb. The
pipeline only runs on captions with such a hit, and the default (no pipeline) stays
automaton-only.

Matchers are cheap to build (the lookup tables are read without importing spaCy) and pickle,
so worker processes can build their own or receive one.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator, Sequence
from functools import cache
from itertools import accumulate, chain, pairwise
from operator import itemgetter
from pathlib import Path
from typing import Any

import ahocorasick
import numpy as np

from clipaudit.errors import InputError, SettingsError, did_you_mean
from clipaudit.registry import DEFAULT_REGISTRY, Registry, load_registry
from clipaudit.text import ASCII_TABLE, normalize

PROFILES = ("curated", "paper")
DEFAULT_PROFILE = "curated"

# A concept word this many words or fewer after a cue against it is not a mention: "a case for
# an Apple iPhone 7", "songs by hip hop artist". Cues are resolved like negative contexts, with the
# words between counted as spaces, for hits at most _CUE_REACH characters apart.
CUE_WINDOW = 3
_CUE_REACH = 80
# Phrases that say which thing a product fits ("Fit for Audi A4 sedan"): cues against every
# concept that other objects are made for.
FIT_CUES = ("fit for", "fits for", "compatible with", "for use with", "replacement for")

# spaCy tags for which a base-form hit is another sense of the word ("tie" in "tie a knot").
_VERB_TAGS = frozenset({"VERB", "AUX"})
_SPACE, _NEWLINE = ord(" "), ord("\n")


def build_matcher(
    registry: Registry, profile: str = DEFAULT_PROFILE, *, spacy_model: str | None = None
) -> Matcher:
    """A caption matcher for every concept of ``registry`` under ``profile`` (``curated``/``paper``).

    ``spacy_model`` names an installed trained spaCy pipeline (package name or path) used for
    part-of-speech checks by the curated profile; None keeps matching automaton-only and offline.
    """
    if profile not in PROFILES:
        raise SettingsError(
            f"unknown matching profile {profile!r}{did_you_mean(str(profile), PROFILES)}; "
            f"profiles are {', '.join(PROFILES)}"
        )
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

    Subclasses fill ``_automaton`` and implement :meth:`match_indices`.
    """

    profile: str

    def __init__(self, registry: Registry):
        self.concept_names: tuple[str, ...] = tuple(c.name for c in registry.concepts)
        self._automaton = ahocorasick.Automaton()

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

    def match(self, caption: str | None) -> list[str]:
        """Names of the concepts ``caption`` mentions, in registry order, without duplicates."""
        names = self.concept_names
        return [names[i] for i in self.match_indices(caption)]

    def _finish(self, keys: dict[str, Any]) -> None:
        for key, value in keys.items():
            self._automaton.add_word(key, value)
        self._automaton.make_automaton()

    def _iter(self, text: str) -> Iterator[tuple[int, Any]]:
        # an automaton without keys (a registry without paper synonyms) cannot be iterated
        return self._automaton.iter(text) if len(self._automaton) else iter(())

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(profile={self.profile!r}, concepts={len(self.concept_names)})"
        )


def _not_text(caption: Any) -> InputError:
    return InputError(
        f"a caption must be a string or None, got {type(caption).__name__} {caption!r:.60}"
    )


def _text(caption: Any) -> str:
    """A caption as text: "" for None (no caption); raises InputError for a non-text."""
    if not caption:
        return ""
    if not isinstance(caption, str):
        raise _not_text(caption)
    return caption


class PaperMatcher(Matcher):
    """The paper's counting: case-insensitive substring matching of ``paper_synonyms``.

    As in the paper's code, which maps each synonym to one concept, a synonym that several
    concepts list ("bike" under motorcycle and bicycle) counts for the last of them only.
    """

    profile = "paper"

    def __init__(self, registry: Registry):
        super().__init__(registry)
        keys = {
            synonym.lower(): index
            for index, concept in enumerate(registry.concepts)
            for synonym in concept.paper_synonyms
        }
        self._finish(keys)

    def match_indices(self, caption: str | None) -> list[int]:
        if not caption:
            return []
        if not isinstance(caption, str):
            raise _not_text(caption)
        return sorted({index for _, index in self._iter(caption.lower())})


class CuratedMatcher(Matcher):
    """Whole-word matching of curated synonyms and their inflections, outside negative contexts.

    The automaton maps each key (``" form "``) to its position in the key tables: its length,
    its concepts, the concepts it is a negative context of or a cue against, and the concepts a
    part-of-speech check decides. A key whose only role is to be a form of one concept is
    *plain*: ``_plain`` holds that concept's index, and -1 for every other key. Captions that hit
    another key are resolved with the hits' spans: a hit inside a negative-context span of its
    concept, or within :data:`CUE_WINDOW` words after a cue against it, does not count, nor does
    a hit of the same concept right before such a hit. :meth:`match_indices` resolves one
    caption in Python; :meth:`match_pairs` applies the same rules to a whole batch with arrays
    (tests check that they agree).
    """

    profile = "curated"

    def __init__(self, registry: Registry, *, spacy_model: str | None = None):
        super().__init__(registry)
        self.spacy_model = spacy_model
        self._nlp: Any = _load_pipeline(spacy_model) if spacy_model else None
        lexicon = _english_lexicon()
        forms: dict[str, set[int]] = {}
        negated: dict[str, set[int]] = {}
        checked: dict[str, set[int]] = {}
        cued: dict[str, set[int]] = {}  # cue -> concepts not mentioned shortly after it
        for index, concept in enumerate(registry.concepts):
            own: set[str] = set()
            for synonym in concept.synonyms:
                for form, verb_like in lexicon.phrase_forms(normalize(synonym)):
                    own.add(form)
                    forms.setdefault(form, set()).add(index)
                    if verb_like and spacy_model:
                        checked.setdefault(form, set()).add(index)
            for context in concept.negative_contexts:
                for form, _ in lexicon.phrase_forms(normalize(context)):
                    negated.setdefault(form, set()).add(index)
            group = registry.group(concept.group)
            heads = group.modifier_of + concept.modifier_of
            for context in _modifier_contexts(lexicon, concept.synonyms, own, heads):
                negated.setdefault(context, set()).add(index)
            for cue in _cues(lexicon, heads, group.not_after + concept.not_after):
                cued.setdefault(cue, set()).add(index)
        keys = sorted(forms.keys() | negated.keys() | cued.keys())
        self._finish({f" {form} ": position for position, form in enumerate(keys)})
        self._lengths = [len(form) + 2 for form in keys]

        def table(sets: dict[str, set[int]]) -> list[tuple[int, ...]]:
            return [tuple(sorted(sets[form])) if form in sets else () for form in keys]

        self._concepts, self._negated = table(forms), table(negated)
        self._cued, self._checked = table(cued), table(checked)
        self._plain = [
            concepts[0] if len(concepts) == 1 and not (negated or cued or checked) else -1
            for concepts, negated, cued, checked in zip(
                self._concepts, self._negated, self._cued, self._checked, strict=True
            )
        ]
        # the same tables as arrays, for whole batches
        self._length_array = np.array(self._lengths, dtype=np.int64)
        self._concepts_of, self._negated_of = _Ragged(self._concepts), _Ragged(self._negated)
        self._cued_of = _Ragged(self._cued)
        self._checked_any = np.array(list(map(bool, self._checked)), dtype=bool)

    def match_indices(self, caption: str | None) -> list[int]:
        caption = _text(caption)
        text = f" {normalize(caption)} "
        keys = {key for _, key in self._iter(text)}
        plain = {self._plain[key] for key in keys}
        if -1 in plain:
            return self._resolve(caption, text, keys)
        return sorted(plain)

    def match_batch(self, captions: Sequence[str | None]) -> list[list[int]]:
        """:meth:`match_indices` of each caption, computed for the whole batch at once."""
        rows, concepts = self.match_pairs(captions)
        bounds = np.searchsorted(rows, np.arange(len(captions) + 1)).tolist()
        flat = concepts.tolist()
        return [flat[start:stop] for start, stop in pairwise(bounds)]

    def match_pairs(self, captions: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`match_batch` flattened, with one automaton pass over the whole batch.

        Per-caption calls spend most of their time starting an automaton iteration and in
        Python code per hit; here the batch is one text (:func:`_joined`) and its hits are
        resolved with array operations.
        """
        if not len(captions):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        text, newlines = _joined(captions)
        hits = list(self._iter(text))
        ends = np.fromiter(map(itemgetter(0), hits), np.int64, len(hits))
        keys = np.fromiter(map(itemgetter(1), hits), np.int64, len(hits))
        rows = np.searchsorted(newlines, ends)  # a hit's caption: the "\n"s before it
        # one (hit, concept) pair for each concept of the hit's key (several for a shared form)
        hit, concepts = self._concepts_of.expand(keys)
        keep = ~self._vetoed(text, rows, ends, keys, hit, concepts)
        n = len(self.concept_names)
        pairs = rows[hit[keep]] * n + concepts[keep]
        unsure = _distinct(rows[self._checked_any[keys]])
        if len(unsure):
            # a part-of-speech check decides: these captions go through the tagger one by one
            pairs = pairs[~np.isin(pairs // n, unsure)]
            tagged = [
                row * n + index
                for row in unsure.tolist()
                for index in self.match_indices(captions[row])
            ]
            pairs = np.concatenate([pairs, np.array(tagged, dtype=np.int64)])
        pairs = _distinct(pairs)
        return pairs // n, pairs % n

    def _vetoed(
        self,
        text: str,
        rows: np.ndarray,
        ends: np.ndarray,
        keys: np.ndarray,
        hit: np.ndarray,
        concepts: np.ndarray,
    ) -> np.ndarray:
        """Which (hit, concept) pairs lie inside the span of a hit of a negative context of that
        concept, or begin within :data:`CUE_WINDOW` words after a hit of a cue against it, or
        modify such a pair: a hit of the same concept right before it ("terrier dog bed")."""
        vetoed = np.zeros(len(hit), dtype=bool)
        starts = ends - self._length_array[keys]
        n = len(self.concept_names)
        pair_keys = rows[hit] * n + concepts  # a pair by its caption and concept
        pair, context = self._joined_hits(self._negated_of, rows, keys, pair_keys)
        inner = hit[pair]
        inside = (starts[context] <= starts[inner]) & (ends[inner] <= ends[context])
        vetoed[pair[inside]] = True
        pair, cue = self._joined_hits(self._cued_of, rows, keys, pair_keys)
        # the words between the cue and the hit: the spaces from the cue's last to the hit's first
        gap_start, gap_end = ends[cue] - 1, starts[hit[pair]]
        near = (gap_start <= gap_end) & (gap_end - gap_start <= _CUE_REACH)
        for index, start, end in zip(
            pair[near].tolist(), gap_start[near].tolist(), gap_end[near].tolist(), strict=True
        ):
            if text.count(" ", start, end) <= CUE_WINDOW:
                vetoed[index] = True
        if vetoed.any():
            # offsets in the batch's text name a caption too: a pair by the space it ends on,
            # and the vetoed ones by the space they start on
            before = (ends[hit] - 1) * n + concepts
            while True:
                marks = np.sort(starts[hit[vetoed]] * n + concepts[vetoed])
                at = np.searchsorted(marks, before).clip(max=len(marks) - 1)
                chained = ~vetoed & (marks[at] == before)
                if not chained.any():
                    break
                vetoed |= chained
        return vetoed

    def _joined_hits(
        self, table: _Ragged, rows: np.ndarray, keys: np.ndarray, pair_keys: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each (hit, concept) pair (by ``pair_keys``) joined with the hits in the same caption
        whose keys list that concept in ``table`` (negative contexts or cues): the pair's index
        and the other hit's."""
        other = np.flatnonzero(table.sizes[keys])  # only the hits whose keys list any
        which, listed = table.expand(keys[other])
        n = len(self.concept_names)
        # only the pairs of a concept that some of those hits list can join
        listed_here = np.zeros(n, dtype=bool)
        listed_here[listed] = True
        candidates = np.flatnonzero(listed_here[pair_keys % n])
        if not len(candidates):
            return candidates, candidates
        other = other[which]
        other_keys = rows[other] * n + listed
        order = np.argsort(other_keys)
        sorted_keys = other_keys[order]
        first = np.searchsorted(sorted_keys, pair_keys[candidates], "left")
        last = np.searchsorted(sorted_keys, pair_keys[candidates], "right")
        pair, position = _ranges(first, last - first)  # each pair with each of its other hits
        return candidates[pair], other[order[position]]

    def _resolve(self, caption: str, text: str, keys: set[int]) -> list[int]:
        """Concepts of a caption that hits keys other than plain forms."""
        if not any(self._negated[key] or self._cued[key] or self._checked[key] for key in keys):
            return sorted({index for key in keys for index in self._concepts[key]})
        hits: list[tuple[int, int, int]] = []  # (start, end, concept)
        vetoes: list[tuple[int, int, tuple[int, ...]]] = []
        cues: list[tuple[int, tuple[int, ...]]] = []  # (the cue's last space, concepts)
        checked: set[tuple[int, int, int]] = set()
        for end, key in self._iter(text):
            start = end - self._lengths[key]
            hits.extend((start, end, index) for index in self._concepts[key])
            checked.update((start, end, index) for index in self._checked[key])
            if self._negated[key]:
                vetoes.append((start, end, self._negated[key]))
            if self._cued[key]:
                cues.append((end - 1, self._cued[key]))
        vetoed = {
            (start, end, index)
            for start, end, index in hits
            if any(s <= start and end <= e and index in negated for s, e, negated in vetoes)
            or any(
                index in against
                and cue <= start <= cue + _CUE_REACH
                and text.count(" ", cue, start) <= CUE_WINDOW
                for cue, against in cues
            )
        }
        # a hit of the same concept right before a vetoed one modifies it ("terrier dog bed")
        chained = vetoed
        while chained:
            starts = {(start, index) for start, _, index in chained}
            chained = {hit for hit in hits if (hit[1] - 1, hit[2]) in starts} - vetoed
            vetoed |= chained
        result: set[int] = set()
        unsure: dict[int, list[str]] = {}  # concept -> words whose part of speech decides
        for hit in hits:
            start, end, index = hit
            if hit in vetoed:
                continue
            if hit in checked:
                unsure.setdefault(index, []).append(text[start + 2 : end])
            else:
                result.add(index)
        if unsure.keys() - result:
            result.update(self._confirmed_by_tags(caption, unsure))
        return sorted(result)

    def _confirmed_by_tags(self, caption: str, unsure: dict[int, list[str]]) -> set[int]:
        """The concepts with at least one hit that the pipeline does not tag as a verb."""
        tags: dict[str, set[str]] = {}
        for token in self._nlp(caption):
            tags.setdefault(normalize(token.text), set()).add(token.pos_)
        return {
            index
            for index, words in unsure.items()
            if any(tags.get(word, set()) - _VERB_TAGS or word not in tags for word in words)
        }

    def __getstate__(self) -> dict[str, Any]:
        # a spaCy pipeline is reloaded by name in the receiving process rather than pickled
        return {**self.__dict__, "_nlp": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.spacy_model:
            self._nlp = _load_pipeline(self.spacy_model)


def _modifier_contexts(
    lexicon: _Lexicon, synonyms: Iterable[str], own: set[str], heads: Iterable[str]
) -> Iterator[str]:
    """Negative contexts from a concept's ``modifier_of`` heads: each noun synonym followed by
    each form of each head ("dog bed", "dog beds"), except where the head or the whole phrase is
    itself a form of the concept (``own``: "tote bag" is a bag, "tea cup" is tea when tea lists
    it).

    A modifier in an English compound is singular, so plural synonyms are left out ("trains
    pass" is a clause). So are adjectives and participles, which describe the head rather than
    say what it is for ("a snowy forest", "a frozen pond"). A head whose "-s" form is mostly a
    verb after a noun phrase ("a man in a shirt stands", "snow covers the hill") is taken in
    the singular only.
    """
    head_forms = _head_forms(lexicon, heads)
    for synonym in map(normalize, synonyms):
        words = synonym.split(" ")
        first, last = words[0], words[-1]
        if not lexicon.is_noun(last) or lexicon.lookup.get(first, first) != first:
            continue  # an adjective, a participle or an activity ("playing tennis")
        for head in head_forms - own:
            if f"{synonym} {head}" not in own:
                yield f"{synonym} {head}"


def _head_forms(lexicon: _Lexicon, heads: Iterable[str]) -> set[str]:
    """The forms of ``modifier_of`` heads, the verb-like ones in the singular only."""
    return {
        form
        for head in map(normalize, heads)
        for form, _ in lexicon.phrase_forms(head)
        if form == head or head.split(" ")[-1] not in _VERB_LIKE_HEADS
    }


def _cues(lexicon: _Lexicon, heads: Iterable[str], not_after: Iterable[str]) -> Iterator[str]:
    """Cues against a concept: its ``not_after`` phrases ("by" for authorship), and for a concept
    that other objects are made for (one with ``modifier_of`` heads) each head followed by "for"
    ("case for", "cases for": "a case for an iPhone 7") and the phrases of :data:`FIT_CUES`."""
    for cue in map(normalize, not_after):
        yield from (form for form, _ in lexicon.phrase_forms(cue))
    heads = list(heads)
    if heads:
        yield from FIT_CUES
        yield from (f"{head} for" for head in _head_forms(lexicon, heads))


def _joined(captions: Sequence[str | None]) -> tuple[str, np.ndarray]:
    """A batch of captions as one text: each normalised and padded with spaces as
    :meth:`CuratedMatcher.match_indices` does, joined by "\\n", which no key contains, so no hit
    spans two captions; and the offsets of those "\\n"s."""
    try:
        joined = " \n ".join(captions)
    except TypeError:  # None or a non-text among them
        captions = [_text(caption) for caption in captions]
        joined = " \n ".join(captions)
    if not joined.isascii():  # the batch normalisation below is normalize's ASCII path
        captions = [text if text.isascii() else normalize(text) for text in captions]
        joined = " \n ".join(captions)
    chars = np.frombuffer(f" {joined} ".encode("ascii").translate(ASCII_TABLE), dtype=np.uint8)
    # the translation made every "\n" a space, as a caption's own "\n" must be: put back the
    # separators, after caption i at 1 + (the lengths of captions 0..i) + 3 * i + 1
    lengths = np.fromiter(map(len, captions), dtype=np.int64, count=len(captions))
    chars = chars.copy()
    chars[np.cumsum(lengths)[:-1] + 3 * np.arange(len(captions) - 1) + 2] = _NEWLINE
    # a run of spaces becomes one, as normalize's strip and split do within a padded caption
    keep = np.ones(len(chars), dtype=bool)
    keep[1:] = (chars[1:] != _SPACE) | (chars[:-1] != _SPACE)
    chars = chars[keep]
    return chars.tobytes().decode("ascii"), np.flatnonzero(chars == _NEWLINE)


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
        starts = self.offsets[items]
        which, positions = _ranges(starts, self.offsets[items + 1] - starts)
        return which, self.values[positions]


def _ranges(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ranges ``starts[i] .. starts[i] + counts[i] - 1`` concatenated, each position with its
    ``i``."""
    which = np.repeat(np.arange(len(counts)), counts)
    offsets = np.cumsum(counts) - counts  # where each range begins in the result
    return which, starts[which] + np.arange(len(which)) - offsets[which]


def _load_pipeline(name: str) -> Any:
    import spacy

    try:
        nlp = spacy.load(name, exclude=["ner", "parser", "lemmatizer", "textcat"])
    except OSError as exc:
        raise SettingsError(
            f"spaCy pipeline {name!r} is not installed ({str(exc).splitlines()[0][:120]}); install "
            f"it with `python -m spacy download {name}` (e.g. en_core_web_sm), pass the path of a "
            "saved pipeline, or leave spacy_model unset to match without part-of-speech checks"
        ) from None
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
        the tables list the plurals of count nouns in "-s" ("buses", "glasses")."""
        if word in _FUNCTION_WORDS or word.endswith("s") or self.lookup.get(word, word) != word:
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
    """
    matcher = build_matcher(load_registry(registry), profile, spacy_model=spacy_model)
    if isinstance(captions, str):
        return matcher.match(captions)
    names = matcher.concept_names
    return [[names[i] for i in hits] for hits in matcher.match_batch(list(captions))]

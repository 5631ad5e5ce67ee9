"""Which registry concepts a caption mentions: the lexical matcher behind caption coverage.

Two profiles (:data:`PROFILES`):

- ``paper`` reproduces the counting of Cai et al.: a concept is mentioned when one of its
  ``paper_synonyms`` occurs anywhere in the lower-cased caption, as a substring, flaws included
  ("that" counts as hat, "train" as rain). One Aho-Corasick pass over the caption.
- ``curated`` (the default) counts mentions in the gloss's sense: whole words only, any noun
  inflection ("puppies" -> dog, "geese" -> goose) and adjective degree ("shinier"), multi-word
  phrases in order and adjacent, and never inside one of the concept's negative contexts
  ("hot dog" is no dog). The caption is normalised (:func:`clipaudit.text.normalize`) and padded
  with spaces, so every word boundary is a literal space and one exact-match automaton over
  ``" form "`` keys finds whole-word mentions of every surface form at once.

Inflections are generated when the matcher is built, from spaCy's English lookup tables
(spacy-lookups-data) and its suffix rules, never by lemmatising captions (lemmatising "tired"
gives "tire", "parking" gives "park"). Verb inflections are not generated: for the registry's
nouns they name another sense ("tied", "parked", "training", "dressed", "coated"); participles
that do name a concept ("raining", "tired") are listed as synonyms.

With ``spacy_model`` (a trained pipeline the user has installed, e.g. ``en_core_web_sm``) the
curated matcher also drops a hit on a word that the pipeline tags as a verb ("tie your shoes",
"park the car") when the matched synonym is a base form that English also uses as a verb. The
pipeline only runs on the few captions with such a hit, so the default speed is kept.

Matchers are cheap to build (the lookup tables are read without importing spaCy) and pickle,
so worker processes can build their own or receive one.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import ahocorasick

from clipaudit.errors import InputError, SettingsError, did_you_mean
from clipaudit.registry import Registry
from clipaudit.text import normalize

PROFILES = ("curated", "paper")
DEFAULT_PROFILE = "curated"

# spaCy tags for which a base-form hit is another sense of the word ("tie" in "tie a knot").
_VERB_TAGS = frozenset({"VERB", "AUX"})


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
        return f"{type(self).__name__}(profile={self.profile!r}, concepts={len(self.concept_names)})"


def _checked_text(caption: Any) -> str:
    if isinstance(caption, str):
        return caption
    raise InputError(f"a caption must be a string or None, got {type(caption).__name__} {caption!r:.60}")


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
        return sorted({index for _, index in self._iter(_checked_text(caption).lower())})


class CuratedMatcher(Matcher):
    """Whole-word matching of curated synonyms and their inflections, outside negative contexts.

    Automaton values are ``(key_length, concepts, negated, pos_checked)``: the concepts the key
    is a surface form of, the concepts it is a negative context of, and the concepts whose hit
    on this key a part-of-speech check may veto (used only with a spaCy pipeline).
    """

    profile = "curated"

    def __init__(self, registry: Registry, *, spacy_model: str | None = None):
        super().__init__(registry)
        lexicon = _english_lexicon()
        forms: dict[str, set[int]] = {}
        negated: dict[str, set[int]] = {}
        checked: dict[str, set[int]] = {}
        for index, concept in enumerate(registry.concepts):
            for synonym in concept.synonyms:
                for form, verb_like in lexicon.phrase_forms(normalize(synonym)):
                    forms.setdefault(form, set()).add(index)
                    if verb_like:
                        checked.setdefault(form, set()).add(index)
            for context in concept.negative_contexts:
                for form, _ in lexicon.phrase_forms(normalize(context)):
                    negated.setdefault(form, set()).add(index)
        keys = {}
        for form in forms.keys() | negated.keys():
            keys[f" {form} "] = (
                len(form) + 2,
                tuple(sorted(forms.get(form, ()))),
                tuple(sorted(negated.get(form, ()))),
                tuple(sorted(checked.get(form, ()))),
            )
        self._finish(keys)
        self.spacy_model = spacy_model
        self._nlp: Any = _load_pipeline(spacy_model) if spacy_model else None

    def match_indices(self, caption: str | None) -> list[int]:
        if not caption:
            return []
        text = f" {normalize(_checked_text(caption))} "
        hits: list[tuple[int, int, tuple[int, ...], tuple[int, ...]]] = []
        vetoes: list[tuple[int, int, tuple[int, ...]]] = []
        for end, (length, concepts, negated, checked) in self._iter(text):
            if concepts:
                hits.append((end - length, end, concepts, checked))
            if negated:
                vetoes.append((end - length, end, negated))
        if not vetoes and self._nlp is None:
            return sorted({index for _, _, concepts, _ in hits for index in concepts})
        found: set[int] = set()
        unsure: dict[int, list[str]] = {}  # concept -> words whose tag decides the hit
        for start, end, concepts, checked in hits:
            for index in concepts:
                if any(s <= start and end <= e and index in neg for s, e, neg in vetoes):
                    continue
                if self._nlp is not None and index in checked:
                    unsure.setdefault(index, []).append(text[start + 1 : end - 1])
                else:
                    found.add(index)
        if unsure.keys() - found:
            found.update(self._confirmed_by_tags(caption, unsure))
        return sorted(found)

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
    if not nlp.has_pipe("tagger") and not nlp.has_pipe("morphologizer") and not nlp.has_pipe(
        "attribute_ruler"
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
        for pos in ("noun", "verb", "adj"):
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
            with gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(
                path, encoding="utf-8"
            ) as handle:
                return json.load(handle)

        return cls(table("lemma_lookup"), table("lemma_exc"), table("lemma_index"), table("lemma_rules"))

    def word_forms(self, word: str) -> set[str]:
        """``word`` and its noun plurals, plus comparative/superlative when it is an adjective."""
        plurals = self.irregular["noun"].get(word, set()) | self._ruled_forms(word, "noun")
        if not plurals and (word in self.nouns or word not in self.known):
            plurals = {_regular_plural(word)}
        forms = {word} | plurals
        if word in self.adjectives:
            forms |= self.irregular["adj"].get(word, set())
            forms |= self._ruled_forms(word, "adj")
        return forms

    def _ruled_forms(self, word: str, pos: str) -> set[str]:
        forms = set()
        for form_suffix, lemma_suffix in self.rules.get(pos, ()):
            if word.endswith(lemma_suffix) and len(word) > len(lemma_suffix):
                stem = word[: len(word) - len(lemma_suffix)]
                for candidate in _with_suffix(stem, form_suffix):
                    if self.lookup.get(candidate) == word:
                        forms.add(candidate)
        return forms

    def phrase_forms(self, phrase: str) -> Iterator[tuple[str, bool]]:
        """Surface forms of a normalised phrase (its last word inflected), each with a flag:
        True when the form is a base word that English also uses as a verb (a POS check applies).
        """
        if not phrase:
            return
        *head, last = phrase.split(" ")
        # only a one-word synonym's base form or its third-person "-s" form can be a verb
        verb_forms = self._third_person(last) | {last} if not head and last in self.verbs else set()
        # a phrase that starts with a verb ("play tennis") takes its inflections too ("playing tennis")
        firsts = sorted(self.verb_forms(head[0])) if head else [""]
        middle = " ".join(head[1:])
        for first in firsts:
            prefix = " ".join(part for part in (first, middle) if part)
            for form in sorted(self.word_forms(last)):
                yield (f"{prefix} {form}" if prefix else form), form in verb_forms

    def verb_forms(self, word: str) -> set[str]:
        """``word`` and, when it is a verb, its inflections ("ride" -> "rides", "riding", "rode")."""
        if word not in self.verbs:
            return {word}
        return {word} | self.irregular["verb"].get(word, set()) | self._ruled_forms(word, "verb")

    def _third_person(self, verb: str) -> set[str]:
        candidates = _with_suffix(verb, "s") | _with_suffix(verb, "es")
        return {form for form in candidates if self.lookup.get(form) == verb}


def _with_suffix(stem: str, suffix: str) -> set[str]:
    """``stem + suffix``, plus the doubled final consonant English spelling uses ("redder")."""
    candidates = {stem + suffix}
    if suffix[:1] in {"e", "i"} and len(stem) >= 3 and stem[-1] not in "aeiouwxy" and (
        stem[-2] in "aeiou" and stem[-3] not in "aeiou"
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

"""The concept registry: which concepts an audit asks about, how captions mention them, how to prompt for them.

A registry is one YAML file (schema below). The built-in ones live in ``concepts/``; users pass a path
to their own. Loading validates everything and fails with ``file:line`` and a hint, never silently::

    registry: cai2025            # name (defaults to the file stem); one line, as every name is
    version: "1.0"               # quoted: 1.10 unquoted is the number 1.1 (defaults to "0")
    description: ...
    source: ...                  # optional: where the concepts come from (a paper, a URL)
    groups:                      # required, non-empty
      - name: Animal             # required
        category: common         # required: a word shared by the groups reported together
        label: Animal            # short label for tables (defaults to name)
        description: ...
        sensitive: false
        templates: ["a photo of a {}."]   # optional: group-specific prompt templates, one {} each
        modifier_of: [bed, collar]        # optional: head nouns (see below), for every concept
        not_after: [by]                   # optional: cue phrases (see below), for every concept
    concepts:                    # required, non-empty; every group needs one
      - name: dog                          # required
        group: Animal                      # required: a name under 'groups'
        gloss: a dog of any breed, including puppies   # required: the sense counted
        synonyms: [dog, puppy, canine]     # required; curated: inflections are generated
        negative_contexts: [hot dog]       # phrases that look like a mention but are not
        modifier_of: [kennel]              # optional: more head nouns, for this concept only
        not_after: [from]                  # optional: more cue phrases, for this concept only
        colourways: [forest]               # optional: colour names of a colourway (see below)
        makes: [ferrari]                   # optional: makes that name it with a model (see below)
        together: [[vs], [rugby, nfl]]     # optional: word lists that name it together (see below)
        prompts: [dog]                     # class names zero-shot prompts are built from
                                           # (defaults to [name]; see clipaudit.zeroshot)
        paper_synonyms: [dog, puppy, canine]   # the paper's list, kept as it was: all the
                                               # 'paper' matching profile counts
        version: 1                         # a positive integer (defaults to 1)

``modifier_of`` lists head nouns before which a concept's word only says what the head object is
for, fits or looks like, so the concept is not mentioned: "dog bed", "phone case", "coffee mug",
"leopard print" (LABELLING.md rules 3 and 4). The matcher skips a surface form of the concept
directly followed by a form of one of these heads (the group's and the concept's own), unless the
head or the longer phrase is itself a form of the concept ("tote bag" is a bag, "tea cup" is tea
when tea lists it). The same heads followed by "for" are cues against the concept ("a case for an
iPhone 7"), as are the matcher's phrases that say what a product fits ("fit for").

``not_after`` lists cue phrases after which a concept's word, within three words, is not a
mention: "by" for the authorship of a role ("songs by hip hop artist", "recipe by chef":
LABELLING.md rule 6).

A group's heads and cues apply to all its concepts; a concept's add to them and may not repeat them.

``colourways`` lists words that name a colour concept only where a product's colourway is given
(LABELLING.md rule 7): as a segment of their own after a dash, a slash, a pipe, a colon or a
comma ("Sweatshirt - Forest", "Color: Gold"), or coordinated with another colour of the group
("Black OR Camel", "Black/Gold"). There the word names the colour, and none of its other senses
counts ("- Forest" is green, not a forest).

``makes`` lists brand names whose products are the concept when a model designation follows
("Ferrari 599", "Lexus RX 330": a word with a digit, one of the next two) or a model year comes
before ("1986 Ferrari"); not when the caption names a part the make's model fits, one of the
concept's ``modifier_of`` heads before or after it and with no separator between ("Mercedes W123
Headlight", "Black Rims Wheels BMW E36"), or after a cue against the concept ("Fit for Audi A4").

``together`` lists two to eight word lists that mention the concept together: a caption holding a
word of every list does ("USC vs Stanford ... football": [[vs, versus], [football, nfl, ...]]).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import itertools
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from clipaudit.errors import (
    RegistryError,
    SettingsError,
    did_you_mean,
    keyword_checked,
    one_line,
)
from clipaudit.text import (
    WIDE_BOMS,
    control_character,
    is_prompt_template,
    normalize,
    unseen_character,
)

DEFAULT_REGISTRY = "cai2025"

_TOP_KEYS = {"registry", "version", "description", "source", "groups", "concepts"}
_GROUP_KEYS = {
    "name",
    "category",
    "label",
    "description",
    "sensitive",
    "templates",
    "modifier_of",
    "not_after",
}
_CONCEPT_KEYS = {
    "name",
    "group",
    "gloss",
    "synonyms",
    "negative_contexts",
    "prompts",
    "paper_synonyms",
    "modifier_of",
    "not_after",
    "colourways",
    "makes",
    "together",
    "version",
}
# the lists the curated matcher reads normalised (paper_synonyms are matched as written, and
# prompts go to a model's tokenizer as written)
_MATCHED_KEYS = frozenset(
    {"synonyms", "negative_contexts", "modifier_of", "not_after", "colourways", "makes", "together"}
)
# the strings that name something (not the gloss or a description): one line each
_ONE_LINE = frozenset({"name", "group", "category", "label", "registry", "version"})
# what breaks a name's one line or the column it is shown in
_BREAKS = {"\n": "a line break", "\r": "a carriage return", "\t": "a tab"}
_GROUP_REQUIRED = {"name", "category"}
_CONCEPT_REQUIRED = {"name", "group", "gloss", "synonyms"}
_HINTED = 6  # the concepts of a group named where a concept was looked up by the group's name
TOGETHER_LISTS = 8  # the most word lists a concept's ``together`` may hold
# the paper's 146 concepts take 80 kB and load in 0.1 s; a file 200 times larger is no registry
MAX_REGISTRY_BYTES = 16 << 20
# a registry nests lists and mappings 5 deep (a concept's ``together`` lists); libyaml's composer
# recurses in C, so a file of some 30,000 "[" crashes the interpreter before any check could run
MAX_DEPTH = 16
_BRACKETS = re.compile(r"[\[\]{}]")
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


@dataclass(frozen=True)
class Group:
    """A family of concepts a model is asked to tell apart (the paper's 'concept group')."""

    name: str
    category: str
    label: str
    description: str = ""
    sensitive: bool = False
    templates: tuple[str, ...] = ()
    modifier_of: tuple[str, ...] = ()
    not_after: tuple[str, ...] = ()
    line: int | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Concept:
    """One visual concept, with the words captions use for it and the prompts a model is asked with."""

    name: str
    group: str
    gloss: str
    synonyms: tuple[str, ...]
    negative_contexts: tuple[str, ...] = ()
    prompts: tuple[str, ...] = ()
    paper_synonyms: tuple[str, ...] = ()
    modifier_of: tuple[str, ...] = ()
    not_after: tuple[str, ...] = ()
    colourways: tuple[str, ...] = ()
    makes: tuple[str, ...] = ()
    together: tuple[tuple[str, ...], ...] = ()
    version: int = 1
    line: int | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Registry:
    """A validated set of groups and concepts, read from one YAML file.

    ``sha256`` is what runs record and resume by: the file's, while the registry holds the groups
    and concepts read from it (or some groups of them, :meth:`select`); one changed in code
    (``dataclasses.replace``) or built without a file gets a hash of its groups and concepts.
    """

    name: str
    version: str
    description: str
    groups: tuple[Group, ...]
    concepts: tuple[Concept, ...]
    path: Path | None = None
    sha256: str | None = None
    source: str = ""
    # the groups and concepts read from the file that ``sha256`` hashes
    _parsed: tuple[tuple[Group, ...], tuple[Concept, ...]] | None = field(
        default=None, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        # a run resumed with a registry edited in code would keep the counts of the file's
        # concepts under the file's hash: such a registry is identified by what it holds
        changed = self._parsed is not None and not (
            _is_selection(self.groups, self._parsed[0])
            and _is_selection(self.concepts, self._parsed[1])
        )
        if self.sha256 is None or changed:
            object.__setattr__(self, "sha256", _content_sha256(self.groups, self.concepts))

    @cached_property
    def _concepts_by_name(self) -> dict[str, Concept]:
        return {c.name: c for c in self.concepts}

    @cached_property
    def _groups_by_name(self) -> dict[str, Group]:
        return {g.name: g for g in self.groups}

    def concept(self, name: str) -> Concept:
        """Look a concept up by name (case-insensitive); raises RegistryError with suggestions."""
        _check_name(name, "concept")
        found = self._concepts_by_name.get(name) or self._find_folded(name, self._concepts_by_name)
        if found is None:
            raise RegistryError(
                f"no concept {name!r} in registry {self.name!r}{self.suggest(name)}"
            )
        return found

    def suggest(self, name: str) -> str:
        """Which concepts a name not found may have meant, as " (did you mean ...)" or "": those
        that list it as a synonym (a word captions use, "T-shirt" or "cop", is what an auditor
        types), else those with a word that starts with it ("police" for "police officer"), then
        those spelled alike."""
        key = normalize(name)
        if not key:
            return ""
        group = self._find_group(name)
        if group is not None:  # "Color" or "POV": a group, whose concepts are what it holds
            return f" ({name!r} is a group, not a concept; its concepts are {self._listed(group)})"
        owners = [c.name for c in self.concepts if key in {normalize(s) for s in c.synonyms}]
        if owners:
            names = " or ".join(map(repr, owners))
            which = "it" if len(owners) == 1 else "each"
            return f" (did you mean {names}? {name!r} is a synonym of {which})"
        starting = [c.name for c in self.concepts if f" {key}" in f" {normalize(c.name)}"]
        hint = did_you_mean(name, self._concepts_by_name, ahead=starting)
        if hint:
            return hint
        # a group misspelt ("emoton"), where no concept is spelled alike: the group, said to be
        # one (spelling alone put "Role" beside "police officer" for "police")
        hint = did_you_mean(name, self._groups_by_name)
        for group in (g for g in self.groups if repr(g.name) in hint):
            hint += f"; {group.name!r} is a group, whose concepts are {self._listed(group)}"
        return hint

    def shared_synonyms(self) -> dict[str, tuple[str, ...]]:
        """The synonyms that count for more than one concept (each of another group: within a
        group loading refuses them), as first written, with the concepts' names. Right where
        one word names both ("taxi": car and taxi), a slip elsewhere ("coach": bus and couch)."""
        owners: dict[str, list[str]] = {}
        written: dict[str, str] = {}
        for concept in self.concepts:
            for synonym in concept.synonyms:
                key = normalize(synonym)
                written.setdefault(key, synonym)
                owners.setdefault(key, []).append(concept.name)
        return {written[key]: tuple(names) for key, names in owners.items() if len(names) > 1}

    def _listed(self, group: Group) -> str:
        """A group's first concepts and how many more: "tired, focused, ... and 4 more"."""
        names = [c.name for c in self.concepts if c.group == group.name]
        more = len(names) - _HINTED
        return ", ".join(names[:_HINTED]) + (f" and {more} more" if more > 0 else "")

    def group(self, name: str) -> Group:
        """Look a group up by name or label (ignoring case and punctuation); raises RegistryError
        with suggestions."""
        _check_name(name, "group")
        found = self._find_group(name)
        if found is None:
            raise RegistryError(
                f"no group {name!r} in registry {self.name!r}; groups are "
                f"{', '.join(self._groups_by_name)}{did_you_mean(name, self._groups_by_name)}"
            )
        return found

    def _find_group(self, name: str) -> Group | None:
        """The group named or labelled ``name``, compared normalised as loading compares them
        (so "point of view" finds the label "Point-of-View"); None when there is none."""
        found = self._groups_by_name.get(name) or self._find_folded(name, self._groups_by_name)
        key = normalize(name)  # none for "!!!", which no label of a loaded registry is
        return found or next((g for g in self.groups if key and normalize(g.label) == key), None)

    def concepts_in(self, group: str) -> tuple[Concept, ...]:
        name = self.group(group).name
        return tuple(c for c in self.concepts if c.group == name)

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(g.category for g in self.groups))

    def select(self, groups: Iterable[str] | None = None) -> Registry:
        """A registry restricted to some groups (all when ``groups`` is None; one name is one
        group)."""
        if groups is None:
            return self
        if isinstance(groups, str):  # one group's name, not its letters (as run_zeroshot takes it)
            groups = [groups]
        keep = [self.group(g).name for g in groups]
        return Registry(
            name=self.name,
            version=self.version,
            description=self.description,
            groups=tuple(g for g in self.groups if g.name in keep),
            concepts=tuple(c for c in self.concepts if c.group in keep),
            path=self.path,
            sha256=self.sha256,
            source=self.source,
            _parsed=self._parsed,
        )

    @property
    def selected_groups(self) -> tuple[str, ...] | None:
        """The groups :meth:`select` kept, which the file's hash does not say; None when the
        registry holds every group it was read with."""
        if self._parsed is None or len(self.groups) == len(self._parsed[0]):
            return None
        return tuple(g.name for g in self.groups)

    def provenance(self) -> dict[str, Any]:
        """What an output records about the registry it used."""
        return {
            "name": self.name,
            "version": self.version,
            # absolute: a report made from another folder finds the file (its sensitive groups)
            "path": str(self.path.resolve()) if self.path else None,
            "sha256": self.sha256,
            "n_groups": len(self.groups),
            "n_concepts": len(self.concepts),
            "concept_versions": {c.name: c.version for c in self.concepts},
        }

    def __repr__(self) -> str:
        return (
            f"Registry({self.name!r}, version {self.version}: {len(self.concepts)} concepts in "
            f"{len(self.groups)} groups, categories {', '.join(self.categories)})"
        )

    def _repr_html_(self) -> str:
        from html import escape

        rows = "".join(
            f"<tr><td>{escape(g.name)}</td><td>{escape(g.category)}</td>"
            f"<td>{escape(', '.join(c.name for c in self.concepts_in(g.name)))}</td></tr>"
            for g in self.groups
        )
        return (
            f"<p><b>Registry {escape(self.name)}</b> (version {escape(self.version)}): "
            f"{len(self.concepts)} concepts in {len(self.groups)} groups</p>"
            f"<table><tr><th>group</th><th>category</th><th>concepts</th></tr>{rows}</table>"
        )

    @staticmethod
    def _find_folded(name: str, table: Mapping[str, Any]) -> Any:
        key = normalize(name)
        return next((v for k, v in table.items() if normalize(k) == key), None)


def _is_selection(chosen: tuple[Any, ...], of: tuple[Any, ...]) -> bool:
    """Whether ``chosen`` is ``of`` with some entries left out, in the same order."""
    kept = set(chosen)
    return kept <= set(of) and [item for item in of if item in kept] == list(chosen)


def _content_sha256(groups: tuple[Group, ...], concepts: tuple[Concept, ...]) -> str:
    """A hash of what groups and concepts say (not the lines they were read from)."""
    content = [
        [{k: v for k, v in dataclasses.asdict(item).items() if k != "line"} for item in items]
        for items in (groups, concepts)
    ]
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode("utf-8")).hexdigest()


def _check_name(name: Any, kind: str) -> None:
    """A looked-up name is text: anything else would fail deep in the folding of names."""
    if not isinstance(name, str):
        raise SettingsError(
            f"a {kind} name must be a string, got {type(name).__name__} {name!r:.60}"
        )


# --------------------------------------------------------------------------- lookup


def _builtin_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent
    # installed wheel: clipaudit/_concepts; source checkout / editable install: <repo>/concepts
    return [d for d in (here / "_concepts", here.parent / "concepts") if d.is_dir()]


@keyword_checked
def list_registries() -> list[str]:
    """Names of the built-in registries (``load_registry`` also takes any file path)."""
    names = {p.stem for d in _builtin_dirs() for p in d.glob("*.yaml")}
    return sorted(names)


def resolve_registry_path(name_or_path: str | Path) -> Path:
    """A built-in registry name or a path to a YAML file -> the file's path."""
    candidate = Path(name_or_path)
    builtin = next(
        (p for d in _builtin_dirs() if (p := d / f"{name_or_path}.yaml").is_file()), None
    )
    if candidate.suffix in {".yaml", ".yml"} or candidate.exists():
        if not candidate.is_file():
            # a folder named like a built-in registry (a run's --out) is no registry: without
            # this, one named cai2025 stopped every command that uses the default registry
            if candidate.is_dir() and builtin is not None:
                return builtin
            if candidate.is_dir():
                raise RegistryError(
                    f"registry {str(candidate)!r} is a folder; expected a YAML file or a "
                    "built-in registry name (clipaudit concepts list)"
                )
            if candidate.exists():  # /dev/stdin, /dev/zero, a pipe: nothing to hash, maybe endless
                raise RegistryError(
                    f"registry {str(candidate)!r} is not a regular file (a device, pipe or "
                    "socket); expected a YAML file"
                )
            known = list_registries()
            raise RegistryError(
                f"registry file {str(candidate)!r} does not exist"
                f"{did_you_mean(str(candidate), [], ahead=_named_alike(candidate, known))}; "
                f"pass an existing YAML file or a built-in registry name ({', '.join(known)})"
            )
        return candidate
    if builtin is not None:
        return builtin
    known = list_registries()
    raise RegistryError(
        f"no built-in registry {str(name_or_path)!r}; built-in registries are {', '.join(known) or 'none'}"
        f"{did_you_mean(str(name_or_path), known, ahead=_named_alike(candidate, []))}, or pass "
        "the path of a YAML file"
    )


# entries of a folder read for files named like a missing registry: a folder of millions of
# files (a dataset's) is not read whole for a suggestion
_MAX_LISTED = 10_000


def _named_alike(missing: Path, builtins: Iterable[str]) -> list[str]:
    """The YAML files in ``missing``'s folder and the built-in registries whose stems are spelled
    like its stem ("my.yaml" for "my.yml" or "my", as the user would write it; "cai2025" for
    "cai2025.yml"). Stems, not names: a shared ".yaml" made "my.yaml" alike to "zzzz.yaml"."""
    try:
        entries = list(itertools.islice(missing.parent.iterdir(), _MAX_LISTED))
    except OSError:  # no such folder, or one that cannot be listed: nothing to suggest in it
        entries = []
    files = [
        str(missing.with_name(entry.name))
        for entry in sorted(entries)
        if entry.suffix in {".yaml", ".yml"} and did_you_mean(missing.stem, [entry.stem])
    ]
    return files + [name for name in builtins if did_you_mean(missing.stem, [name])]


@keyword_checked
def load_registry(name_or_path: str | Path | Registry = DEFAULT_REGISTRY) -> Registry:
    """Load and validate a registry by built-in name (see :func:`list_registries`) or file path;
    a :class:`Registry` is returned as it is, so every API call takes any of the three. Raises
    :class:`~clipaudit.errors.RegistryError` for an unknown name or a file that is missing,
    unreadable or invalid (with its file and line), and
    :class:`~clipaudit.errors.SettingsError` for a value of another type."""
    if isinstance(name_or_path, Registry):
        return name_or_path
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise SettingsError(
            "a registry is a built-in name (clipaudit concepts list), the path of a YAML file or "
            f"a Registry (clipaudit.load_registry), got {type(name_or_path).__name__} "
            f"{name_or_path!r:.60}"
        )
    path = resolve_registry_path(name_or_path)
    try:
        size = path.stat().st_size
        if size > MAX_REGISTRY_BYTES:  # checked before reading: it would all be held in memory
            raise RegistryError(
                f"the file is {size / (1 << 20):.1f} MiB; expected a registry of at most "
                f"{MAX_REGISTRY_BYTES >> 20} MiB (the paper's 146 concepts take 80 kB)",
                path=path,
            )
        raw = path.read_bytes()
    except OSError as exc:
        raise RegistryError(f"cannot be read: {one_line(exc)}", path=path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Windows editors' "Unicode" is UTF-16, whose byte-order mark fails at byte 0: say so
        wide = next((f" but {name}" for bom, name in WIDE_BOMS if raw.startswith(bom)), "")
        raise RegistryError(
            f"not UTF-8 text{wide} ({exc.reason} at byte {exc.start}); save it as UTF-8",
            path=path,
            line=raw.count(b"\n", 0, exc.start) + 1,  # where a Latin-1 "é" is, to retype it
        ) from None
    # ASCII saved as UTF-16 or UTF-32 without a byte-order mark: a NUL beside each letter
    if "\x00\x00" in (text[0:4:2], text[1:4:2]):
        raise RegistryError(
            "not UTF-8 text but UTF-16 or UTF-32 without a byte-order mark (NUL bytes between "
            "its characters); save it as UTF-8",
            path=path,
            line=1,
        )
    return parse_registry(text, path=path, sha256=hashlib.sha256(raw).hexdigest())


# --------------------------------------------------------------------------- parsing and validation


class _LineMap(dict):
    """A YAML mapping that remembers the line of itself and of each key (1-based)."""

    line: int = 0
    key_lines: dict[str, int]


class _LineLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml when present: 7x faster
    """SafeLoader (no arbitrary objects) that records line numbers and rejects duplicate keys."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, KeyError, AttributeError):
            # a value YAML reads as a date, number or boolean but cannot build ("2024-13-45",
            # 5,000 digits, "!!bool maybe"): PyYAML's own error escaped as a traceback
            kind = node.tag.rpartition(":")[2]
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"{_shown(node.value) if isinstance(node, yaml.ScalarNode) else 'the value'} "
                f"reads as {_TAG_KINDS.get(kind, repr(kind))} but is not a valid one; to keep it "
                "as text, quote it (and drop any '!!' tag)",
                node.start_mark,
            ) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> _LineMap:
        _expect(node, yaml.MappingNode, "a mapping")
        mapping = _LineMap()
        mapping.line = node.start_mark.line + 1
        mapping.key_lines = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise RegistryError(
                    _merge_key_message(value_node),
                    path=self.name,
                    line=key_node.start_mark.line + 1,
                )
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str):  # a list or mapping as key is no registry field
                raise RegistryError(
                    f"keys must be plain names, got {_kind(key)} as a key",
                    path=self.name,
                    line=key_node.start_mark.line + 1,
                )
            if key in mapping:
                raise RegistryError(
                    f"duplicate key {key!r} (first at line {mapping.key_lines[key]})",
                    path=self.name,
                    line=key_node.start_mark.line + 1,
                )
            mapping[key] = self.construct_object(value_node, deep=deep)
            mapping.key_lines[key] = key_node.start_mark.line + 1
        return mapping


# what a YAML tag names, in a user's words
_TAG_KINDS = {"int": "an integer", "float": "a number", "bool": "a boolean", "timestamp": "a date"}


def _expect(node: yaml.Node, kind: type[yaml.Node], what: str) -> None:
    """A node tagged as a list or mapping ("!!set abc") that is none: PyYAML's own check, which
    the loader's constructors replace."""
    if not isinstance(node, kind):
        raise yaml.constructor.ConstructorError(
            None, None, f"expected {what}, but found {node.id} (tagged {node.tag})", node.start_mark
        )


_NESTING = (
    f"lists and mappings nested more than {MAX_DEPTH} deep; expected at most 5 (a concept's "
    "'together' lists in the 'concepts' list)"
)


def _check_depth(text: str, path: Path | str) -> None:
    """Refuse flow lists and mappings ("[", "{") nested deeper than :data:`MAX_DEPTH` before
    YAML composes them, which recurses once per level (in C with libyaml: tens of thousands of
    "[" kill the interpreter). Brackets are counted over the text, quoted ones too (at worst a
    clear error), before the parser sees them; block nesting is counted by
    :func:`_check_block_depth`."""
    brackets = _NOT_BRACKETS.sub("", text)
    depth = 0
    for index, bracket in enumerate(brackets):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_DEPTH:
            offset = [m.start() for m in _BRACKETS.finditer(text)][index]
            raise RegistryError(_NESTING, path=path, line=text.count("\n", 0, offset) + 1)
    _check_block_depth(text, path)


def _check_block_depth(text: str, path: Path | str) -> None:
    """Refuse block lists and mappings nested deeper than :data:`MAX_DEPTH`: compact nesting
    ("- - - - x") adds a level per two characters of one line, so 30,000 levels fit in 60 kB
    without a bracket or an indented line, and libyaml's composer dies of them (SIGSEGV). Its
    parser keeps a stack of its own, so its events are counted first (a few ms for the paper's
    registry)."""
    depth = 0
    for event in yaml.parse(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise RegistryError(_NESTING, path=path, line=event.start_mark.line + 1)
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1


_TAB_INDENT = re.compile(r"[ \t-]*\t")  # a tab among a line's indentation and list dashes


def _tab_hint(text: str, mark: yaml.Mark | None) -> str:
    """The fix when the refused line indents with a tab: YAML's own words for it ("found
    character that cannot start any token" before a "-") do not say that a tab is the problem."""
    lines = text.splitlines()
    if mark is None or mark.line >= len(lines) or not _TAB_INDENT.match(lines[mark.line]):
        return ""
    return "; the line is indented with a tab, and YAML indents with spaces only: replace the tab"


_CORE_TAG = "tag:yaml.org,2002:"
# PyYAML's context for a list, mapping or quote left open, and what closes it
_OPENED = {
    "while parsing a flow sequence": ("list", "[", "]"),
    "while parsing a flow mapping": ("mapping", "{", "}"),
}
_MISALIGNED = (
    "did not find expected key",
    "did not find expected '-' indicator",
    "expected <block end>",
)


def _yaml_problem(exc: yaml.MarkedYAMLError, text: str) -> tuple[str, int | None]:
    """PyYAML's words for a file it cannot read, made into what was expected, what was got and
    the fix (its own alone, "mapping values are not allowed in this context", say none of the
    three), at the line to fix: where an unclosed quote or a key without ':' began, else where
    YAML stopped."""
    problem = exc.problem or exc.context or ""
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else None
    lines = text.splitlines()

    def written(at: yaml.Mark | None, start: bool = True) -> str:
        """The text of the file from ``at`` (or its whole line) to the end of its line."""
        if at is None or at.line >= len(lines):
            return ""
        return (lines[at.line][at.column :] if start else lines[at.line]).strip()

    opened = exc.context_mark
    tab = _tab_hint(text, mark)
    if tab:  # YAML's words for a tab ("cannot start any token") do not say that it is one
        return f"{problem}{tab}", line
    got = written(mark)
    if problem.startswith("could not determine a constructor for the tag"):
        tag = problem.partition("'")[2].rstrip("'")
        tag = f"!!{tag.removeprefix(_CORE_TAG)}" if tag.startswith(_CORE_TAG) else tag
        return (
            f"expected text, a list or a mapping, got the tag {tag!r}; a tag makes YAML build "
            "another kind of object (a Python one for '!!python/...'), which a registry never "
            "holds: remove the tag",
            line,
        )
    if exc.context in _OPENED and opened is not None:
        kind, opening, closing = _OPENED[exc.context]
        return (
            f"expected ',' or {closing!r}, got {got[:40]!r}: the {kind} opened with {opening!r} "
            f"on line {opened.line + 1} is not closed; close it with {closing!r} (and quote an "
            "item that holds '#', ':' or a quote)",
            line,
        )
    if exc.context == "while scanning a quoted scalar" and opened is not None:
        quote = written(opened)[:1]
        until = "the end of the file" if "end of stream" in problem else f"line {line}"
        return (
            f"the quote opened on this line is not closed: expected a closing {quote!r}, got "
            f"none before {until}; add the closing {quote!r}",
            opened.line + 1,
        )
    if exc.context == "while scanning a simple key" and opened is not None:
        return (
            f"expected 'key: value', got {written(opened, start=False)[:60]!r} without ':'; "
            "write ': ' after the key",
            opened.line + 1,
        )
    if problem == "found character that cannot start any token" and got:
        if lines[mark.line][: mark.column].rstrip().endswith(("[", ",", "{")):
            got = re.split(r"[,\]}]", got)[0].strip()  # an item of a flow list: it alone
        return (
            f"a value may not start with {got[0]!r}, which YAML reserves; quote the value "
            f"({json.dumps(got[:40], ensure_ascii=False)})",
            line,
        )
    if problem == "mapping values are not allowed in this context":
        whole = written(mark, start=False)
        key, _, value = whole.partition(": ")
        if len(whole) - len(got) <= len(key):
            # the line's first ':': a key that YAML read as more of the value above it
            return (
                "expected the keys of an entry lined up, got a key indented deeper than the "
                f"keys above it ({whole[:60]!r}); line it up with the keys above it",
                line,
            )
        return (
            f"expected one ': ' a line, got one inside the value of {key.lstrip('- ')!r}; quote "
            f"the value: {key.lstrip('- ')}: {json.dumps(value.strip(), ensure_ascii=False)}",
            line,
        )
    if problem == "found undefined alias":
        alias = re.match(r"\*[^\s,\[\]{}]*", got)
        name = alias.group()[1:] if alias else ""
        return (
            f"expected an anchor '&{name}' defined above, got the alias '*{name}' with none; "
            "define the anchor, or quote the value if '*' is part of the text",
            line,
        )
    if exc.context in ("while scanning an alias", "while scanning an anchor") and opened:
        sign = written(opened)[:1]
        return (
            f"expected a YAML {exc.context.rpartition(' ')[2]} name (ASCII letters, digits, '-' "
            f"and '_') after {sign!r}, got {written(opened)[:40]!r}; quote the value if {sign!r} "
            "is part of the text",
            opened.line + 1,
        )
    if problem.startswith(_MISALIGNED):
        return (
            "the indentation of this line does not match the entries above it: expected the "
            f"keys of one entry lined up, got {written(mark, start=False)[:60]!r}; indent it as "
            "its neighbours, and start each list item with '- ' (a dash and a space)",
            line,
        )
    if problem == "but found another document":
        return (
            "expected one YAML document, got a second after '---' on this line; a registry is "
            "one document: remove the '---' and keep what follows in the one above",
            line,
        )
    return problem, line


def _merge_key_message(value_node: yaml.Node) -> str:
    """Why a YAML merge key (``<<: *anchor``) is refused: a registry entry writes its keys out,
    which keeps every key at its own line and no merge can blow up (as aliases of aliases can)."""
    kinds = {yaml.MappingNode: "a mapping", yaml.SequenceNode: "a list", yaml.ScalarNode: "a value"}
    got = kinds.get(type(value_node), "a value")
    return (
        "a YAML merge key ('<<') is not supported in a registry; expected each key of the entry "
        f"written out, got '<<' merging {got} (written at line {value_node.start_mark.line + 1}); "
        "write the keys out in full (an alias may still repeat one value: 'synonyms: *words')"
    )


class _LineList(list):
    """A YAML sequence that remembers the line of each item (1-based)."""

    item_lines: list[int]


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> Iterator[_LineList]:
    # as PyYAML's own: yielded first and filled after, so that nesting costs no recursion
    _expect(node, yaml.SequenceNode, "a list")
    items = _LineList()
    items.item_lines = [child.start_mark.line + 1 for child in node.value]
    yield items
    items.extend(loader.construct_sequence(node))


_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _LineLoader.construct_mapping
)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def _shown(value: Any) -> str:
    """A bounded repr of a bad value: a nested or aliased one may be huge (a YAML alias bomb)."""
    import reprlib

    shown = reprlib.Repr()  # attributes, not keywords: Python 3.11 takes none
    shown.maxlevel, shown.maxlist, shown.maxdict, shown.maxstring = 2, 4, 4, 60
    # the loader's list and mapping, shown as lists and mappings are (bounded), not in full
    shown.repr__LineList, shown.repr__LineMap = shown.repr_list, shown.repr_dict
    try:
        text = shown.repr(value)
    except RecursionError:
        return f"a deeply nested {'mapping' if isinstance(value, dict) else 'list'}"
    return text if len(text) <= 120 else f"{text[:117]}..."


def _unquoted(values: list[Any]) -> str:
    """A hint when YAML read some unquoted text as another type: yes, no, on and off as booleans
    (YAML 1.1), 1984 as a number, 2024-01-01 as a date."""
    if any(isinstance(v, (bool, int, float, datetime.date)) for v in values):
        return (
            "; YAML reads unquoted yes, no, on, off, numbers and dates as such, not as text: "
            "quote it"
        )
    if any(v is None for v in values):  # "[snow, &snowy]": an anchor named snowy, of nothing
        return (
            "; an empty item, or one that starts with '&' (a YAML anchor), reads as null: "
            "write it out, quoted"
        )
    return ""


def _kind(value: Any) -> str:
    """What a YAML value is, in a user's words: the loader's own classes (``_LineList``) are no
    user's concern. Booleans before integers, which they are a kind of."""
    kinds = ((bool, "a boolean"), (dict, "a mapping"), (list, "a list"), (str, "a string"),
             (int, "an integer"), (float, "a number"))  # fmt: skip
    if value is None:
        return "null"
    return next(
        (name for kind, name in kinds if isinstance(value, kind)), f"a {type(value).__name__}"
    )


def _described(value: Any) -> str:
    """A bad value as a message shows it: what it is, and a bounded repr of it."""
    return "null" if value is None else f"{_kind(value)} {_shown(value)}"


def _unseen(character: str, reads: str, found: str) -> str:
    """Why a character :func:`normalize` makes a word break or drops is refused (see
    :func:`clipaudit.text.unseen_character`), and the fix."""
    invisible = unicodedata.category(character) == "Cf"
    fix = "remove the invisible character" if invisible else "write it in Latin letters"
    # a soft hyphen or a joiner is dropped inside a word; a zero-width space breaks it
    how = "nothing" if normalize(f"a{character}b") == "ab" else "a word break"
    return (
        f"{unicodedata.name(character, 'character').lower()} (U+{ord(character):04X}) {reads} "
        f"as {how}, so it {found}; {fix}"
    )


class _Checker:
    """Validates the plain data of one registry file, reporting ``file:line`` for every problem."""

    def __init__(self, path: Path | str):
        self.path = path

    def fail(self, message: str, line: int | None) -> None:
        raise RegistryError(message, path=self.path, line=line)

    def mapping(self, value: Any, what: str, line: int | None) -> _LineMap:
        if not isinstance(value, dict):
            self.fail(
                f"{what} must be a mapping of keys to values, got {_described(value)}",
                line,
            )
        return value

    def keys(self, entry: _LineMap, allowed: set[str], required: set[str], what: str) -> None:
        for key in entry:
            if key not in allowed:
                self.fail(
                    f"unknown key {key!r} in {what}{did_you_mean(str(key), allowed)}; "
                    f"allowed keys are {', '.join(sorted(allowed))}",
                    entry.key_lines.get(key, entry.line),
                )
        missing = sorted(required - set(entry))
        if missing:
            self.fail(f"{what} is missing required key(s) {', '.join(missing)}", entry.line)

    def string(self, entry: _LineMap, key: str, what: str, default: str | None = None) -> str:
        value = entry.get(key, default)
        if key == "version" and isinstance(value, float):  # 1.10 reads as 1.1
            self.fail(
                f"{what}: 'version' {value!r} is a number, which drops trailing zeros; quote it "
                '(version: "1.10")',
                entry.key_lines.get(key, entry.line),
            )
        if isinstance(value, int) and not isinstance(value, bool) and key == "version":
            value = str(value)
        required = key in {"name", "group", "category", "gloss", "registry", "version", "label"}
        if not isinstance(value, str) or (not value.strip() and required):
            kind = "a non-empty string" if required else "a string"
            self.fail(
                f"{what}: {key!r} must be {kind}, got {_shown(value)}{_unquoted([value])}",
                entry.key_lines.get(key, entry.line),
            )
        self.printable([value], key, what, entry.key_lines.get(key, entry.line))
        breaks = next((c for c in value.strip() if c in _BREAKS), None)
        if breaks is not None and key in _ONE_LINE:  # a gloss or description may span lines
            self.fail(
                f"{what}: {key!r} {value.strip()!r} holds {_BREAKS[breaks]}; a {key} is "
                "shown on one line (tables, report rows, messages): write it on one line",
                entry.key_lines.get(key, entry.line),
            )
        return value.strip()

    def printable(self, items: Iterable[str], key: str, what: str, line: int | None) -> None:
        """YAML refuses control characters written as they are, but its escapes ("\\e") make
        them: registry text goes to terminals, tables and file names, where an escape sequence
        or a direction override acts instead of showing."""
        for item in items:
            character = control_character(item)
            if character is not None:
                self.fail(
                    f"{what}: {key!r} {item!r} holds the control character {character!r} "
                    f"(U+{ord(character):04X}); remove it",
                    line,
                )

    def foldable(self, entry: _LineMap, key: str, what: str, value: str) -> None:
        """Names are matched to image folders and looked up normalised: one with no letter or
        digit once normalised would match every such folder and clash with every such name."""
        if not normalize(value):
            self.fail(
                f"{what}: {key!r} {value!r} has no letter or digit once normalised (punctuation "
                "and non-Latin scripts are dropped), so image folders and lookups could not tell "
                "it from another such name; write it with Latin letters or digits",
                entry.key_lines.get(key, entry.line),
            )
        # "d\u200bog" shows as "dog" but is found as "d og"; a category so is counted apart
        unseen = unseen_character(value)
        if unseen is not None:
            self.fail(
                f"{what}: {key!r} {value!r} holds the "
                + _unseen(
                    unseen,
                    "that lookups and image folders read",
                    f"is found as {normalize(value)!r}",
                ),
                entry.key_lines.get(key, entry.line),
            )

    def strings(
        self,
        entry: _LineMap,
        key: str,
        what: str,
        *,
        allow_empty: bool = False,
        as_written: bool = False,
    ) -> tuple[str, ...]:
        """A list of non-empty strings, each given once: compared normalised, each needing a
        letter or digit so (:meth:`distinct`), or with ``as_written`` (templates, which the
        tokenizer reads as written: "{}" alone asks with the bare name) compared as written."""
        if key not in entry:
            return ()
        value = entry[key]
        line = entry.key_lines.get(key, entry.line)
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            # "synonyms: bus, coach" is one string: YAML lists are bracketed or dashed
            written = (
                f"; write a list: {key}: [{value.strip()}]"
                if isinstance(value, str) and value.strip()
                else ""
            )
            self.fail(
                f"{what}: {key!r} must be a list of non-empty strings, got {_shown(value)}"
                f"{_unquoted(value if isinstance(value, list) else [])}{written}",
                line,
            )
        if not value and not allow_empty:
            self.fail(
                f"{what}: {key!r} is an empty list; give at least one entry or leave the key out",
                line,
            )
        self.printable(value, key, what, line)
        stripped = tuple(v.strip() for v in value)
        if not as_written:
            self.distinct(value, key, what, line)
        elif len(set(stripped)) < len(stripped):
            twice = next(v for i, v in enumerate(stripped) if v in stripped[:i])
            self.fail(f"{what}: {key!r} lists {twice!r} twice", line)
        return stripped

    def distinct(self, items: Iterable[str], key: str, what: str, line: int) -> None:
        """Each item has a letter or digit once normalised (else it could never match) and is
        given once (in any case or punctuation)."""
        seen: dict[str, str] = {}
        for item in items:
            norm = normalize(item)
            if not norm:
                self.fail(
                    f"{what}: {key!r} lists {item!r}, which has no letter or digit once "
                    "normalised (punctuation and non-Latin scripts are dropped)",
                    line,
                )
            unseen = unseen_character(item) if key in _MATCHED_KEYS else None
            if unseen is not None:
                self.fail(
                    f"{what}: {key!r} lists {item!r}, whose "
                    f"{_unseen(unseen, 'the matcher reads', f'would match {norm!r}')}",
                    line,
                )
            if norm in seen:
                self.fail(f"{what}: {key!r} lists {item!r} twice (as {seen[norm]!r} too)", line)
            seen[norm] = item

    def word_lists(self, entry: _LineMap, key: str, what: str) -> tuple[tuple[str, ...], ...]:
        """A list of 2 to :data:`TOGETHER_LISTS` lists of non-empty strings (``together``)."""
        if key not in entry:
            return ()
        value = entry[key]
        line = entry.key_lines.get(key, entry.line)
        if (
            not isinstance(value, list)
            or not 2 <= len(value) <= TOGETHER_LISTS
            or not all(
                isinstance(words, list)
                and words
                and all(isinstance(w, str) and w.strip() for w in words)
                for words in value
            )
        ):
            self.fail(
                f"{what}: {key!r} must be a list of 2 to {TOGETHER_LISTS} lists of non-empty "
                f"strings, got {_shown(value)}",
                line,
            )
        self.printable((word for words in value for word in words), key, what, line)
        # across the lists too: a word in two of them would satisfy both, saying the concept alone
        self.distinct((word for words in value for word in words), key, what, line)
        return tuple(tuple(w.strip() for w in words) for words in value)


def parse_registry(
    text: str, *, path: Path | str = "<string>", sha256: str | None = None
) -> Registry:
    """Parse and validate registry YAML text; ``path`` is only used in messages and provenance."""
    if sha256 is None:
        sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
    try:
        _check_depth(text, path)
        loader = _LineLoader(text)
        loader.name = str(path)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        message, line = _yaml_problem(exc, text)
        raise RegistryError(f"invalid YAML: {message}", path=path, line=line) from None
    except RecursionError:  # indented nesting deep enough for Python's own recursion limit
        raise RegistryError(_NESTING, path=path) from None
    except yaml.reader.ReaderError as exc:
        # a character YAML does not allow; its position counts bytes in libyaml and characters
        # in PyYAML, but the first one of this character in the text is the one refused
        character = chr(exc.character)
        raise RegistryError(
            f"invalid YAML: expected printable text, got the character {character!r} "
            f"(U+{exc.character:04X}; {exc.reason}); remove it",
            path=path,
            line=text.count("\n", 0, max(text.find(character), 0)) + 1,
        ) from None
    check = _Checker(path)
    if data is None:
        check.fail("the file is empty; expected a mapping with 'groups' and 'concepts'", 1)
    top = check.mapping(data, "the registry file", 1)
    check.keys(top, _TOP_KEYS, {"groups", "concepts"}, "the registry file")

    groups = _parse_groups(check, top)
    concepts = _parse_concepts(check, top, groups)

    used = {c.group for c in concepts}
    for group in groups:
        if group.name not in used:
            check.fail(
                f"group {group.name!r} has no concepts; add concepts to it or remove it", group.line
            )

    return Registry(
        name=check.string(top, "registry", "the registry file", default=Path(str(path)).stem),
        version=check.string(top, "version", "the registry file", default="0"),
        description=check.string(top, "description", "the registry file", default=""),
        source=check.string(top, "source", "the registry file", default=""),
        groups=groups,
        concepts=concepts,
        path=Path(path) if str(path) != "<string>" else None,
        sha256=sha256,
        _parsed=(groups, concepts),
    )


def _label(kind: str, entry: _LineMap) -> str:
    name = entry.get("name")
    return f"{kind} {name!r}" if isinstance(name, str) else f"a {kind}"


def _form(name: str) -> str:
    """A name as image folders are matched to it (``clipaudit.images``): normalised, without
    spaces, so "ice cream" and "icecream" are one name."""
    return normalize(name).replace(" ", "")


def _first(first: str, name: str, line: int | None) -> str:
    """Where a duplicate name was first defined, and as what when spelled otherwise."""
    if first == name:
        return f"first defined at line {line}"
    return (
        f"first defined at line {line} as {first!r}; names are compared ignoring case, accents, "
        "punctuation and spaces"
    )


def _entries(check: _Checker, top: _LineMap, key: str) -> list[tuple[Any, int]]:
    """The items of the list ``top[key]`` with each one's line."""
    value = top[key]
    if not isinstance(value, list) or not value:
        check.fail(f"{key!r} must be a non-empty list, got {_shown(value)}", top.key_lines[key])
    lines = getattr(value, "item_lines", None) or [top.key_lines[key]] * len(value)
    return list(zip(value, lines, strict=True))


def _parse_groups(check: _Checker, top: _LineMap) -> tuple[Group, ...]:
    groups: dict[str, Group] = {}
    groups_by_form: dict[str, Group] = {}  # by _form: "Animal" and "animal" clash
    # by normalised name and label, which lookups take alike; by normalised category
    named: dict[str, Group] = {}
    categories: dict[str, Group] = {}
    for raw, line in _entries(check, top, "groups"):
        entry = check.mapping(raw, "a group", line)
        check.keys(entry, _GROUP_KEYS, _GROUP_REQUIRED, _label("group", entry))
        name = check.string(entry, "name", "a group")
        check.foldable(entry, "name", "a group", name)
        what = f"group {name!r}"
        clash = groups_by_form.get(_form(name))
        if clash is not None:
            check.fail(
                f"duplicate group {name!r} ({_first(clash.name, name, clash.line)})", entry.line
            )
        sensitive = entry.get("sensitive", False)
        if not isinstance(sensitive, bool):
            check.fail(
                f"{what}: 'sensitive' must be true or false, got {sensitive!r}",
                entry.key_lines["sensitive"],
            )
        templates = check.strings(entry, "templates", what, as_written=True)
        for template in templates:
            if not is_prompt_template(template):
                check.fail(
                    f"{what}: template {template!r} must contain '{{}}' exactly once",
                    entry.key_lines["templates"],
                )
        group = groups[name] = groups_by_form[_form(name)] = Group(
            name=name,
            category=check.string(entry, "category", what),
            label=check.string(entry, "label", what, default=name),
            description=check.string(entry, "description", what, default=""),
            sensitive=sensitive,
            templates=templates,
            modifier_of=check.strings(entry, "modifier_of", what),
            not_after=check.strings(entry, "not_after", what),
            line=entry.line,
        )
        check.foldable(entry, "label", what, group.label)
        check.foldable(entry, "category", what, group.category)
        for key, value in (("name", name), ("label", group.label)):
            other = named.setdefault(normalize(value), group)
            if other is not group:  # a lookup by this name or label would find one of the two
                which = "name" if normalize(other.name) == normalize(value) else "label"
                check.fail(
                    f"{what}: {key} {value!r} is also the {which} of group {other.name!r} (line "
                    f"{other.line}); groups are looked up by name or label, so each must name "
                    "one group",
                    entry.key_lines.get(key, entry.line),
                )
        other = categories.setdefault(normalize(group.category), group)
        if other.category != group.category:  # "Common" and "common" would count apart
            check.fail(
                f"{what}: category {group.category!r} is written {other.category!r} in group "
                f"{other.name!r} (line {other.line}); write a category the same way everywhere",
                entry.key_lines["category"],
            )
    return tuple(groups.values())


def _check_group_rules(check: _Checker, entry: _LineMap, concept: Concept, group: Group) -> None:
    """A concept's ``modifier_of`` and ``not_after`` add to its group's: repeating one of the
    group's entries is a mistake."""
    for key in ("modifier_of", "not_after"):
        given = {normalize(item) for item in getattr(group, key)}
        for item in getattr(concept, key):
            if normalize(item) in given:
                check.fail(
                    f"concept {concept.name!r}: {item!r} in its {key!r} is already in group "
                    f"{group.name!r}'s (line {group.line}), which applies to all its concepts; "
                    "remove it here",
                    entry.key_lines[key],
                )


def _check_negative_contexts(check: _Checker, entry: _LineMap, concept: Concept) -> None:
    """A negative context that is one of the concept's own synonyms cancels every mention of
    that word: the concept could never be matched through it."""
    synonyms = {normalize(synonym): synonym for synonym in concept.synonyms}
    for context in concept.negative_contexts:
        synonym = synonyms.get(normalize(context))
        if synonym is not None:
            check.fail(
                f"concept {concept.name!r}: negative context {context!r} is also one of its "
                f"synonyms ({synonym!r}), so no mention of that word would ever count; a "
                "negative context is a longer phrase holding a synonym (hot dog, for dog): "
                "remove it or write the phrase",
                entry.key_lines["negative_contexts"],
            )


def _parse_concepts(
    check: _Checker, top: _LineMap, groups: tuple[Group, ...]
) -> tuple[Concept, ...]:
    groups_by_name = {g.name: g for g in groups}  # a scan per concept was quadratic
    concepts: dict[str, Concept] = {}
    concepts_by_form: dict[str, Concept] = {}  # by :func:`_form` of the name
    # (group, normalised synonym) -> concept that claims it, to catch ambiguous synonyms
    claimed: dict[tuple[str, str], Concept] = {}
    prompted: dict[tuple[str, str], Concept] = {}  # the same for prompts
    for raw, line in _entries(check, top, "concepts"):
        entry = check.mapping(raw, "a concept", line)
        check.keys(entry, _CONCEPT_KEYS, _CONCEPT_REQUIRED, _label("concept", entry))
        name = check.string(entry, "name", "a concept")
        check.foldable(entry, "name", "a concept", name)
        what = f"concept {name!r}"
        clash = concepts_by_form.get(_form(name))
        if clash is not None:
            check.fail(
                f"duplicate concept {name!r} ({_first(clash.name, name, clash.line)})", entry.line
            )
        group = check.string(entry, "group", what)
        if group not in groups_by_name:
            folded = normalize(group)
            labelled = [g for g in groups if normalize(g.label) == folded != normalize(g.name)]
            if labelled:  # lookups take a label ("POV"), but a concept names its group
                check.fail(
                    f"{what}: group {group!r} is the label of group {labelled[0].name!r} (line "
                    f"{labelled[0].line}); a concept names its group by name: write "
                    f"{labelled[0].name!r}",
                    entry.key_lines["group"],
                )
            check.fail(
                f"{what}: unknown group {group!r}{did_you_mean(group, groups_by_name)}; "
                "declare it under 'groups' first",
                entry.key_lines["group"],
            )
        synonyms = check.strings(entry, "synonyms", what)
        if not synonyms:
            check.fail(f"{what} has no synonyms; list the words captions use for it", entry.line)
        version = entry.get("version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            check.fail(
                f"{what}: 'version' must be a positive integer, got {version!r}",
                entry.key_lines["version"],
            )
        concept = Concept(
            name=name,
            group=group,
            gloss=check.string(entry, "gloss", what),
            synonyms=synonyms,
            negative_contexts=check.strings(entry, "negative_contexts", what),
            # in any script (a multilingual model is asked in its languages), compared as
            # written: they go to the tokenizer, not the matcher
            prompts=check.strings(entry, "prompts", what, as_written=True) or (name,),
            paper_synonyms=check.strings(entry, "paper_synonyms", what, allow_empty=True),
            modifier_of=check.strings(entry, "modifier_of", what),
            not_after=check.strings(entry, "not_after", what),
            colourways=check.strings(entry, "colourways", what),
            makes=check.strings(entry, "makes", what),
            together=check.word_lists(entry, "together", what),
            version=version,
            line=entry.line,
        )
        _check_group_rules(check, entry, concept, groups_by_name[group])
        _check_negative_contexts(check, entry, concept)
        for synonym in synonyms:
            key = (group, normalize(synonym))
            if key in claimed:
                other = claimed[key]
                check.fail(
                    f"synonym {synonym!r} of {what} is also a synonym of {other.name!r} (line {other.line}) "
                    f"in group {group!r}; a caption word must point to one concept of a group",
                    entry.key_lines["synonyms"],
                )
            claimed[key] = concept
        for prompt in concept.prompts:
            # as open_clip's tokenizers read it: case and runs of white space aside
            other = prompted.setdefault((group, " ".join(prompt.casefold().split())), concept)
            if other is not concept:  # the zero-shot classifier would get the same text for both
                check.fail(
                    f"prompt {prompt!r} of {what} is also a prompt of {other.name!r} (line "
                    f"{other.line}) in group {group!r}; a zero-shot classifier tells a group's "
                    "concepts apart by their prompts, so each prompt must point to one concept"
                    + ("" if "prompts" in entry else " (prompts default to the concept's name)"),
                    entry.key_lines.get("prompts", entry.line),
                )
        concepts[name] = concepts_by_form[_form(name)] = concept
    return tuple(concepts.values())

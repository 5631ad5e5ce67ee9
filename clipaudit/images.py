"""Labelled images for zero-shot audits: where they come from, and decoding that survives bad files.

Sources (:func:`open_images` picks by what ``source`` is):

- an image folder ``ROOT/<group>/<concept>/*.jpg|png|webp`` (the paper's layout), or
  ``ROOT/<category>/<group>/<concept>/``; folder names match registry names ignoring case, spaces,
  ``-`` and ``_``; hidden entries (``.git``, ``._photo.jpg``) are listed as ignored, not read;
- webdataset tar shards as img2dataset writes them (a folder of ``*.tar``, one ``.tar``, or a brace
  pattern ``shards/{00000..00009}.tar``): each sample's image plus a ``.json`` whose
  ``label_field`` (default ``concept``) names the concept, or a ``.txt`` holding the concept name;
  compressed shards (``.tar.gz``, ``.tgz``...) are refused saying how to decompress them, as an
  image is read in place at its offset in its shard;
- a Hugging Face image dataset: a ``save_to_disk`` folder, or ``hf:NAME`` from the hub, with an image
  column (images, file paths or encoded bytes) and a label column (class names or strings) naming
  concepts; columns of other values are refused before they are read.

Labels that match no registry concept are collected and reported in one :class:`InputError` with the
closest registry names (or the concept a label is a synonym of, and, when no label names a concept,
where the labels were read from and the option that picks others); an image reached twice in one
group (a link, a shard named twice) is classified once; samples and rows without a label (a Hugging Face class label of -1, as a
test split has) are listed as ignored, not read. Concepts are unique across a registry, so a label
alone fixes the group.

Decoding (:func:`decode_image`) turns images upright by their EXIF orientation (as viewers show
them, and as they were labelled), converts what it can to RGB (CMYK, grayscale, 16-bit, palette,
animated: first frame; transparent ones laid on white) and raises :class:`BadImage` for what it
cannot (empty, corrupt, truncated, larger than the decompression-bomb limit);
:class:`DecodedImages` turns those into skipped entries so one bad file never stops a run.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tarfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from clipaudit.errors import InputError, SettingsError, did_you_mean, one_line
from clipaudit.registry import Concept, Registry
from clipaudit.text import normalize

IMAGE_EXTENSIONS = frozenset(
    {"jpg", "jpeg", "jfif", "png", "webp", "gif", "bmp", "tif", "tiff", "avif"}
)
# images Pillow does not read (an iPhone's photos): listed saying so, not as "not an image"
HEIF_EXTENSIONS = frozenset({"heic", "heif"})
HEIF_UNREAD = "which Pillow does not read; convert it to JPEG or PNG"
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # Pillow's own decompression-bomb threshold (~89 Mpx)
# no image within the pixel limit takes more (16-bit RGBA TIFF, uncompressed: 0.7 GiB); a larger
# "image" (a disk image named .jpg, a link to /proc/kcore) is refused before it fills memory
MAX_IMAGE_BYTES = 1 << 30
# bump when decoding changes the pixels a model sees (part of the cache key and of a zero-shot
# run's model units); 2: EXIF orientation applied; 3: transparent images laid on white
DECODE_VERSION = 3
_WDS_KEY = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset: key = path up to the first dot
_MAX_LISTED = 25


class BadImage(Exception):
    """An image that cannot be decoded; the message says why."""


@dataclass(frozen=True)
class ImageRecord:
    """One labelled image and where its bytes are.

    ``path`` is what results show; ``identity`` is a digest of what makes the bytes unique
    (file path, size, mtime and a hash of its first and last blocks; or dataset fingerprint and
    row), the key of the embedding cache.
    Bytes live in ``file`` (``length`` bytes from ``offset``, all of it when -1) or, for Hugging Face
    datasets, in row ``row`` of the dataset.
    """

    path: str
    group: str
    concept: str
    identity: str
    file: str | None = None
    offset: int = 0
    length: int = -1
    row: int = -1


def _read_bounded(file: str | os.PathLike, offset: int, length: int) -> bytes:
    """``length`` bytes of ``file`` from ``offset`` (all when -1), never more than
    :data:`MAX_IMAGE_BYTES`: read one byte past the limit rather than trusting a size, which
    /proc and devices misreport."""
    wanted = MAX_IMAGE_BYTES + 1 if length < 0 else min(length, MAX_IMAGE_BYTES + 1)
    with open(file, "rb") as handle:
        handle.seek(offset)
        data = handle.read(wanted)
    if len(data) > MAX_IMAGE_BYTES:
        raise BadImage(f"too large: more than {MAX_IMAGE_BYTES} bytes, more than any image holds")
    return data


@dataclass
class ImageSet:
    """The labelled images of one source, restricted to the selected groups."""

    source: str
    kind: str
    records: list[ImageRecord]
    ignored: list[dict[str, str]] = field(default_factory=list)
    n_unselected: int = 0
    dataset: Any = None
    image_column: str | None = None

    def read_bytes(self, record: ImageRecord) -> bytes:
        if record.file is None:
            cell = self.dataset[record.row][self.image_column]
            if isinstance(cell, dict):  # an Image column, not decoded: its bytes or its file
                cell = cell.get("bytes") or cell.get("path")
            if isinstance(cell, bytes) and cell:  # encoded image bytes
                return cell
            if not isinstance(cell, str) or not cell:
                # a row without an image: said so, not as a TypeError of Path(None); and never
                # open() of a number, which reads and closes that file descriptor
                raise BadImage(f"no image: row {record.row}'s {self.image_column!r} is empty")
            return _read_bounded(cell, 0, -1)
        return _read_bounded(record.file, record.offset, record.length)

    def counts(self) -> Counter:
        return Counter(r.concept for r in self.records)

    def describe(self) -> dict[str, Any]:
        """What a manifest records about the images."""
        return {
            "source": self.source,
            "kind": self.kind,
            "n_images": len(self.records),
            "n_ignored": len(self.ignored),
            "ignored": self.ignored[:100],
            "n_unselected": self.n_unselected,
            "images_per_concept": dict(self.counts()),
        }


def _fold(name: str) -> str:
    """Case- and separator-insensitive key: ``Wide_Shot``, ``wide-shot``, ``WideShot`` -> ``wideshot``."""
    return normalize(name).replace(" ", "")


class _Names:
    """Maps source names to registry groups, categories and concepts; collects the unknown ones."""

    def __init__(self, registry: Registry, groups: Iterable[str] | None):
        self.registry = registry
        self.groups = {_fold(g.name): g.name for g in registry.groups}
        self.groups.update(
            {_fold(g.label): g.name for g in registry.groups if _fold(g.label) not in self.groups}
        )
        self.categories = {_fold(c): c for c in registry.categories}
        self.concepts = {_fold(c.name): c for c in registry.concepts}
        self.selected = {registry.group(g).name for g in groups} if groups is not None else None
        # each problem once, with how often it was met: a dataset's rows share few labels
        self.problems: Counter[str] = Counter()
        self._unknown: dict[tuple[str, str, str | None], str] = {}  # a label's, worked out once
        self.matched = 0  # names that found their concept
        # the names that are nothing of this registry (in order, once): another built-in
        # registry's, when most are, is the one meant (raise_problems says so)
        self.unmatched: dict[str, None] = {}
        # where a source's labels were read from, and what picks others: said when not one of
        # them names a concept (labels of another kind: class numbers, captions)
        self.hint: str | None = None
        self.concepts_as_groups: list[str] = []  # folders named as concepts where groups go

    @cached_property
    def _synonym_owners(self) -> dict[str, list[Concept]]:
        owners: dict[str, list[Concept]] = {}
        for concept in self.registry.concepts:
            for synonym in dict.fromkeys(normalize(s) for s in concept.synonyms):
                owners.setdefault(synonym, []).append(concept)
        return owners

    def is_selected(self, group: str) -> bool:
        return self.selected is None or group in self.selected

    def group(self, name: str, where: str, *, or_category: bool = False) -> str | None:
        """The registry group ``name`` folds to; None (and a problem, unless it is a category and
        ``or_category``) otherwise."""
        found = self.groups.get(_fold(name))
        if found is not None or (or_category and _fold(name) in self.categories):
            return found
        concept = self.concepts.get(_fold(name))
        if concept is not None:  # ROOT/<concept>/: the group level is missing
            self.concepts_as_groups.append(name)
            self.problems[
                f"{where} {name!r} is a concept, not a group; move it into its group's folder "
                f"({concept.group}/{name}/: the layout is <group>/<concept>/)"
            ] += 1
        else:
            self.unmatched[name] = None
            choices = [g.name for g in self.registry.groups]
            choices += list(self.registry.categories) if or_category else []
            what = "group or category" if or_category else "group"
            self.problems[f"{where} {name!r} is no {what}{did_you_mean(name, choices)}"] += 1
        return None

    def concept(self, name: str, where: str, group: str | None = None) -> Concept | None:
        found = self.concepts.get(_fold(name))
        if found is None:
            self.unmatched[name] = None
            problem = self._unknown.get((where, name, group))
            if problem is None:  # did_you_mean is slow, and a dataset repeats its labels
                pool = self.registry.concepts_in(group) if group else self.registry.concepts
                # a breed or a plural ("beagle", "pup"), as datasets label: the concept whose
                # synonym it is was meant (named, not taken: a synonym may be two concepts')
                owners = [
                    c.name for c in self._synonym_owners.get(normalize(name), ()) if c in pool
                ]
                hint = (
                    f" (did you mean {' or '.join(map(repr, owners))}? {name!r} is a synonym of "
                    f"{'it' if len(owners) == 1 else 'each'})"
                    if owners
                    else did_you_mean(name, [c.name for c in pool])
                )
                problem = f"{where} {name!r} is no concept{hint}"
                self._unknown[(where, name, group)] = problem
            self.problems[problem] += 1
        elif group is not None and found.group != group:
            self.problems[
                f"{where} {name!r}: concept {found.name!r} is in group {found.group!r}, not {group!r}"
            ] += 1
            return None
        else:
            self.matched += 1
        return found

    def raise_problems(self, source: str) -> None:
        if not self.problems:
            return
        group = self.groups.get(_fold(Path(source).name))
        if group is not None and len(self.concepts_as_groups) == len(self.problems):
            # --images ROOT/Color: a group's own folder, whose folders are its concepts
            raise InputError(
                f"{source} is the folder of group {group!r} (its folders "
                f"{', '.join(self.concepts_as_groups)} are its concepts); give the folder above "
                f"it, {str(Path(source).parent)!r}, as the images: the layout is "
                "ROOT/<group>/<concept>/"
            )
        listed = "; ".join(
            problem + (f" ({count} times)" if count > 1 else "")
            for problem, count in list(self.problems.items())[:_MAX_LISTED]
        )
        more = (
            f"; and {len(self.problems) - _MAX_LISTED} more"
            if len(self.problems) > _MAX_LISTED
            else ""
        )
        other = _registry_of(self.unmatched, self.registry)
        if other is not None:  # a whole folder of another registry: the fix first, then the list
            registry, what = other
            raise InputError(
                f"{len(self.problems)} name(s) in {source} match no entry of registry "
                f"{self.registry.name!r}; these are the {what} of the built-in registry "
                f"{registry!r}: pass --registry {registry}. The names: {listed}{more}"
            )
        if self.hint is not None and not self.matched:
            raise InputError(
                f"no label in {source} names a concept of registry {self.registry.name!r}: "
                f"{self.hint}. The {len(self.problems)} labels: {listed}{more}. Choose the labels "
                "with --label-field, or give the registry of these concepts with --registry; "
                "see `clipaudit concepts list`"
            )
        raise InputError(
            f"{len(self.problems)} name(s) in {source} match no registry entry: {listed}{more}. "
            "Names must be registry group/concept names (case, spaces, '-' and '_' do not "
            "matter; see `clipaudit concepts list`)"
            + (
                ": rename or remove those that are none, or give a registry that has them "
                "(--registry FILE, your own YAML; `clipaudit concepts validate FILE`)"
                if self.unmatched
                else ""
            )
        )


def _registry_of(names: Iterable[str], registry: Registry) -> tuple[str, str] | None:
    """The built-in registry other than ``registry`` that most of ``names`` (those
    ``registry`` lacks) are groups, categories or concepts of, and what they are of it
    ("groups", "concepts", "groups and concepts"); None when no registry holds most of them."""
    from clipaudit.registry import list_registries, load_registry

    names = list(names)
    best: tuple[int, str, str] | None = None
    for name in list_registries():
        other = load_registry(name)
        if other.name == registry.name:
            continue
        groups = {_fold(g.name) for g in other.groups} | {_fold(g.label) for g in other.groups}
        groups |= {_fold(c) for c in other.categories}
        concepts = {_fold(c.name) for c in other.concepts}
        in_groups = sum(_fold(n) in groups for n in names)
        in_concepts = sum(_fold(n) in concepts and _fold(n) not in groups for n in names)
        found = in_groups + in_concepts
        if 2 * found > len(names) and (best is None or found > best[0]):
            what = [w for w, n in (("groups", in_groups), ("concepts", in_concepts)) if n]
            best = (found, name, " and ".join(what))
    return best[1:] if best is not None else None


def _identity(*parts: object) -> str:
    # a file name that is not UTF-8 holds its bytes as surrogates (os.fsdecode): hashed as
    # those bytes, two such names are two identities
    text = "\0".join(map(str, parts)).encode("utf-8", "surrogateescape")
    return hashlib.blake2b(text, digest_size=16).hexdigest()


def _shown(path: str | os.PathLike) -> str:
    """``path`` as results show it: a name's bytes that are not UTF-8 (an old archive's
    Latin-1 'é') escaped as ``\\xe9``, as no UTF-8 results file can hold them raw."""
    raw = os.fspath(path).encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "backslashreplace")


_EDGE = 4096


def _file_identity(path: Path, member: str = "") -> str:
    """Path, size, time and a hash of the first and last 4 KiB: a rewritten file gets a new
    identity, so its cached embedding is not reused, unless it was rewritten in its middle only
    with its size and time kept (a copy made to look unchanged, ``cp -p`` or ``rsync -t``)."""
    stat = path.stat()
    with open(path, "rb") as handle:
        head = handle.read(_EDGE)
        handle.seek(max(0, stat.st_size - _EDGE))
        tail = handle.read(_EDGE)
    edges = hashlib.blake2b(head + tail, digest_size=8).hexdigest()
    return _identity(path.resolve(), member, stat.st_size, stat.st_mtime_ns, edges)


def _extension(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


# --------------------------------------------------------------------------- sources


def open_images(
    source: str | os.PathLike,
    registry: Registry,
    groups: Iterable[str] | None = None,
    *,
    label_field: str | None = None,
    image_column: str = "image",
    split: str | None = None,
) -> ImageSet:
    """List the labelled images of ``source`` for the selected ``groups`` (all when None).

    ``label_field`` is the webdataset json key (default ``concept``) or the Hugging Face label
    column (default ``label``). Raises :class:`InputError` for a missing source, unknown names, or
    no images at all in the selected groups.
    """
    names = _Names(registry, groups)
    text = str(source)
    if text.startswith("hf://"):  # a URL of files (captions take those), not a dataset name
        repo = "/".join(text.removeprefix("hf://").removeprefix("datasets/").split("/")[:2])
        raise InputError(
            f"image source {text!r}: hf:// URLs are not read as images; name a Hugging Face hub "
            f"dataset as hf:NAME (hf:{repo})"
        )
    if text.startswith("hf:"):
        images = _hf_images(
            text, text.removeprefix("hf:"), names, label_field or "label", image_column, split
        )
    else:
        check_image_source(text)
        shards = _tar_shards(text)
        path = Path(text)
        if shards:
            _refuse_unused(text, "webdataset shards", image_column=image_column, split=split)
            images = _webdataset_images(text, shards, names, label_field or "concept")
        elif any((path / f).is_file() for f in ("state.json", "dataset_dict.json")):
            images = _hf_images(text, path, names, label_field or "label", image_column, split)
        else:
            _refuse_unused(
                text,
                "a folder of images",
                label_field=label_field,
                image_column=image_column,
                split=split,
            )
            images = _folder_images(path, names)
    names.raise_problems(text)
    images.records = _counted_once(images.records, images.ignored, images.kind)
    if not images.records:
        # why the files were ignored (no label, not an image) is what the user must fix
        example = (
            f", e.g. {images.ignored[0]['path']}: {images.ignored[0]['reason']}"
            if images.ignored
            else ""
        )
        raise InputError(
            f"no images of the selected groups in {text!r} ({len(images.ignored)} files "
            f"ignored{example}; {images.n_unselected} images of other groups); check the layout "
            "and --groups"
        )
    return images


def _counted_once(
    records: list[ImageRecord], ignored: list[dict[str, str]], kind: str
) -> list[ImageRecord]:
    """``records`` with each image once per group: a file linked in twice, or into two concepts
    of one group, and a shard named twice would be classified and scored once per way in. The
    file itself is kept where one of the ways is it (its folder's concept is its label), else
    the first; the others are listed in ``ignored``. An image in two groups is in both."""
    ways: dict[tuple[str, str], list[int]] = {}
    for index, record in enumerate(records):
        ways.setdefault((record.identity, record.group), []).append(index)
    dropped: set[int] = set()
    for indices in ways.values():
        if len(indices) < 2:
            continue
        direct = [i for i in indices if kind == "folder" and not Path(records[i].file).is_symlink()]
        kept = records[(direct or indices)[0]]
        for index in indices:
            if records[index] is not kept:
                dropped.add(index)
                reason = (
                    f"the same image as {kept.path} ({kept.concept}), read once in group "
                    f"{kept.group}"
                )
                ignored.append({"path": records[index].path, "reason": reason})
    return [record for index, record in enumerate(records) if index not in dropped]


# each option, and the sources it is for (--image-split in clipaudit audit for --split)
_OPTIONS = {
    "label_field": ("--label-field", "Hugging Face datasets and webdataset shards"),
    "image_column": ("--image-column", "Hugging Face datasets"),
    "split": ("--split", "Hugging Face datasets; --image-split in clipaudit audit"),
}


def _refuse_unused(source: str, kind: str, **given: str | None) -> None:
    """An option that the source's kind has no use for (a split of a folder of images) is
    refused, not ignored: the user meant something by it, most likely another source."""
    unused = [
        "{} (for {})".format(*_OPTIONS[name])
        for name, value in given.items()
        if value is not None and not (name == "image_column" and value == "image")
    ]
    if unused:
        raise SettingsError(
            f"{' and '.join(unused)} {'does' if len(unused) == 1 else 'do'} not apply to "
            f"{source!r}, {kind}; drop {'it' if len(unused) == 1 else 'them'}, or name the "
            "source meant"
        )


def _concept_folders(
    root: Path, names: _Names, ignored: list[dict[str, str]]
) -> Iterator[tuple[str, Any, Path]]:
    """``(group, concept, folder)`` of each concept folder of an image folder laid out as
    ``<group>/<concept>/`` or ``<category>/<group>/<concept>/``; names that are the registry's
    none (``names`` keeps them for :meth:`_Names.raise_problems`), files outside a concept folder
    go to ``ignored``."""
    entries = _visible(root, ignored)
    for top in (p for p in entries if p.is_dir()):
        group = names.group(top.name, "folder", or_category=True)
        if group is not None:
            group_dirs = [(top, group)]
        elif _fold(top.name) in names.categories:
            found = (
                (sub, names.group(sub.name, f"folder {top.name}/"))
                for sub in _visible(top, ignored)
                if sub.is_dir()
            )
            group_dirs = [(sub, g) for sub, g in found if g is not None]
        else:
            continue
        for group_dir, group in group_dirs:
            inside = _visible(group_dir, ignored)
            for stray in (p for p in inside if p.is_file()):
                ignored.append({"path": _shown(stray), "reason": "not inside a <concept>/ folder"})
            for concept_dir in (p for p in inside if p.is_dir()):
                concept = names.concept(concept_dir.name, f"folder {group_dir.name}/", group)
                if concept is not None:
                    yield group, concept, concept_dir
    for stray in (p for p in entries if p.is_file()):
        ignored.append({"path": _shown(stray), "reason": "not inside a <group>/<concept>/ folder"})


def check_image_names(
    source: str | os.PathLike, registry: Registry, groups: Iterable[str] | None = None
) -> None:
    """Refuse an image folder whose group and concept folders are not the registry's (another
    registry's pictures, ``--registry`` forgotten) from its folders' names alone, as
    :func:`open_images` would after listing every file: the audit checks it before its coverage
    stage counts a corpus under that registry. Shards and datasets hold their labels in their
    files; they are checked when read."""
    text = str(source)
    path = Path(text)
    saved_dataset = any((path / f).is_file() for f in ("state.json", "dataset_dict.json"))
    if text.startswith("hf:") or "://" in text or _tar_shards(text) or saved_dataset:
        return
    names = _Names(registry, groups)
    for _ in _concept_folders(path, names, []):
        pass
    names.raise_problems(text)


def _folder_images(root: Path, names: _Names) -> ImageSet:
    records: list[ImageRecord] = []
    ignored: list[dict[str, str]] = []
    unselected = 0
    for group, concept, concept_dir in _concept_folders(root, names, ignored):
        for file in sorted(concept_dir.rglob("*")):
            *folders, name = file.relative_to(concept_dir).parts
            if any(part.startswith(".") for part in folders):
                continue  # inside a hidden folder, listed itself
            if name.startswith("."):
                ignored.append({"path": _shown(file), "reason": _HIDDEN})
                continue
            if not file.is_file():
                reason = _not_a_file(file)
                if reason:  # listed, not dropped unsaid
                    ignored.append({"path": _shown(file), "reason": reason})
                continue
            if _extension(file.name) in HEIF_EXTENSIONS:
                ignored.append(
                    {"path": _shown(file), "reason": f"a HEIC/HEIF image, {HEIF_UNREAD}"}
                )
            elif _extension(file.name) not in IMAGE_EXTENSIONS:
                ignored.append({"path": _shown(file), "reason": "not an image file extension"})
            elif not names.is_selected(group):
                unselected += 1
            else:
                try:
                    identity = _file_identity(file)
                except OSError as exc:  # another user's file: listed, the rest read
                    reason = f"cannot be read ({exc.strerror or one_line(exc)})"
                    ignored.append({"path": _shown(file), "reason": reason})
                    continue
                records.append(
                    ImageRecord(_shown(file), group, concept.name, identity, file=str(file))
                )
    return ImageSet(str(root), "folder", records, ignored, unselected)


_HIDDEN = "hidden (its name starts with '.'), not read"


def _visible(folder: Path, ignored: list[dict[str, str]]) -> list[Path]:
    """The entries of ``folder``, sorted, but the hidden ones: a clone's ``.git``, Jupyter's
    ``.ipynb_checkpoints``, macOS's ``._photo.jpg`` hold no group, concept or image of the
    layout (as a group's name, one would stop the run); listed in ``ignored``, not read."""
    visible = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            ignored.append({"path": _shown(entry), "reason": _HIDDEN})
        else:
            visible.append(entry)
    return visible


def _not_a_file(path: Path) -> str | None:
    """Why an entry of a concept folder that is no regular file holds no image; None for a
    folder, whose files are listed themselves. A link to a folder is not followed (rglob never
    does: a link to a folder above it would never end), so its images are not read."""
    if path.is_symlink():
        if path.is_dir():
            return "a link to a folder, not followed; link the images or the concept folder"
        return "a symbolic link to no regular file (broken, or a device or pipe)"
    return None if path.is_dir() else "not a regular file (a device, pipe or socket)"


def check_image_source(source: str | Path) -> None:
    """Refuse an image source that :func:`open_images` could not read, before anything is
    listed (the audit checks it before its coverage stage): no such path, a brace pattern with a
    shard missing, a file that is no .tar shard, a hub dataset neither cached nor downloadable.
    A hub dataset's splits and columns, and a URL, are checked when opened."""
    text = str(source)
    if "://" in text or _tar_shards(text):
        return
    if text.startswith("hf:"):
        _check_hub_dataset(text.removeprefix("hf:"))
        return
    path = Path(text)
    if not path.exists():
        raise InputError(
            f"image source {text!r} does not exist; expected an image folder, webdataset .tar "
            "shards, a Hugging Face save_to_disk folder, or hf:NAME"
        )
    if not path.is_dir():
        raise InputError(
            f"image source {text!r} is a file but not a .tar shard; expected a folder or .tar"
        )


# compressed tar shards, and the command that makes each a .tar beside it
_COMPRESSED_TARS = {
    ".tar.gz": "gunzip",
    ".tgz": "gunzip",
    ".tar.bz2": "bunzip2",
    ".tar.xz": "unxz",
    ".tar.zst": "unzstd",
}


def _compressed_suffix(path: Path) -> str | None:
    return next((s for s in _COMPRESSED_TARS if path.name.lower().endswith(s)), None)


def _refuse_compressed(source: str, packed: Sequence[Path], beside: int = 0) -> None:
    """Compressed shards are not read: an image is read in place, at its offset in its shard
    (by decoding workers, in any order), and a compressed stream has offsets only from its start."""
    first = packed[0]
    suffix = _compressed_suffix(first) or ""
    among = f" beside {beside} .tar shard(s)" if beside else ""
    raise InputError(
        f"image source {source!r} has {len(packed)} compressed tar shard(s){among}, e.g. "
        f"{str(first)!r}; clipaudit reads uncompressed .tar shards (each image in place, at its "
        f"offset in the shard): decompress them first: {_COMPRESSED_TARS.get(suffix, 'gunzip')} "
        f"{first.parent}/*{first.name[len(first.name) - len(suffix) :]}, then give the .tar shards"
    )


# a compression's first bytes, its name, the suffix its decompressor takes off, the decompressor
_STREAM_MAGIC = (
    (b"\x1f\x8b", "gzip", ".gz", "gunzip"),
    (b"BZh", "bzip2", ".bz2", "bunzip2"),
    (b"\xfd7zXZ\x00", "xz", ".xz", "unxz"),
    (b"\x28\xb5\x2f\xfd", "zstd", ".zst", "unzstd"),
)


def _compression(shard: Path) -> tuple[str, str, str] | None:
    """``(name, suffix, decompressor)`` of a ``.tar`` that is a compressed stream (a .tar.gz
    renamed .tar); None for a tar (its ustar header says so, whatever its first member's name
    starts with) and for one that cannot be read (said where it is read)."""
    try:
        with open(shard, "rb") as handle:
            head = handle.read(tarfile.BLOCKSIZE)
    except OSError:
        return None
    if head[257:262] == b"ustar":
        return None
    return next((rest for magic, *rest in _STREAM_MAGIC if head.startswith(magic)), None)


def _refuse_renamed(source: str, shards: Sequence[Path]) -> None:
    """Shards named .tar that are compressed streams are refused as compressed shards are (see
    :func:`_refuse_compressed`); a decompressor leaves a name without its suffix alone."""
    packed = [(shard, found) for shard in shards if (found := _compression(shard))]
    if not packed:
        return
    first, (kind, suffix, tool) = packed[0]
    each = " (and so for each)" if len(packed) > 1 else ""
    raise InputError(
        f"image source {source!r} has {len(packed)} compressed tar shard(s) named .tar, e.g. "
        f"{str(first)!r} ({kind}-compressed); clipaudit reads uncompressed .tar shards (each "
        f"image in place, at its offset in the shard): decompress them first: mv {first} "
        f"{first}{suffix} && {tool} {first}{suffix}{each}, then give the .tar shards"
    )


def _tar_shards(source: str) -> list[Path]:
    if "{" in source and (".tar" in source.lower() or ".tgz" in source.lower()):
        from braceexpand import braceexpand

        shards = [Path(s) for s in braceexpand(source)]
        missing = [str(s) for s in shards if not s.is_file()]
        if missing:
            raise InputError(
                f"{len(missing)} shard(s) of {source!r} do not exist, e.g. {missing[0]!r}"
            )
        packed = [s for s in shards if _compressed_suffix(s)]
        if packed:
            _refuse_compressed(source, packed)
        _refuse_renamed(source, shards)
        return shards
    path = Path(source)
    if path.is_file() and path.suffix.lower() == ".tar":
        _refuse_renamed(source, [path])
        return [path]
    if path.is_file() and _compressed_suffix(path):
        _refuse_compressed(source, [path])
    if path.is_dir():  # a hidden one (macOS's "._00000.tar") is listed, not read
        visible = sorted(p for p in path.iterdir() if not p.name.startswith("."))
        shards = [p for p in visible if p.suffix.lower() == ".tar"]
        # one decompressed beside itself (gunzip --keep) is read as its .tar; one not would be
        # left out of the run unsaid, but an archive beside an image folder's groups is a stray
        packed = [
            p
            for p in visible
            if (suffix := _compressed_suffix(p))
            and not p.with_name(p.name[: -len(suffix)] + ".tar").is_file()
        ]
        if packed and (shards or not any(p.is_dir() for p in visible)):
            _refuse_compressed(source, packed, len(shards))
        _refuse_renamed(source, shards)
        return shards
    return []


def _webdataset_images(
    source: str, shards: Sequence[Path], names: _Names, label_field: str
) -> ImageSet:
    """Samples of img2dataset-style shards: an image member plus a json (``label_field``) or txt label."""
    import json

    records: list[ImageRecord] = []
    ignored: list[dict[str, str]] = []
    if Path(source).is_dir():
        ignored += [
            {"path": _shown(p), "reason": _HIDDEN} for p in sorted(Path(source).glob(".*.tar"))
        ]
    unselected = 0
    read_from: Counter[str] = Counter()  # samples whose label was looked up in each
    json_keys: list[str] = []  # of a json without the label key
    for shard in shards:
        try:
            shard_identity = _file_identity(shard)
        except OSError as exc:  # every sample of it is unread: the run would be short unsaid
            raise InputError(
                f"shard {str(shard)!r} cannot be read ({exc.strerror or one_line(exc)}); make it "
                "readable, or move it out of the shards"
            ) from None
        samples: dict[str, dict[str, tarfile.TarInfo]] = {}
        try:
            with tarfile.open(shard, "r:") as tar:
                for member in tar:
                    match = _WDS_KEY.match(member.name)
                    if member.isfile() and match:
                        samples.setdefault(match.group(1), {})[match.group(2).lower()] = member
                with open(shard, "rb") as handle:
                    # tarfile ends quietly at a missing header: a shard cut off between samples
                    # (a download stopped on a block boundary) would lose its later samples unsaid
                    handle.seek(tar.offset)
                    if handle.read(tarfile.BLOCKSIZE) != bytes(tarfile.BLOCKSIZE):
                        raise InputError(
                            f"shard {str(shard)!r} is cut off or damaged after byte {tar.offset} "
                            f"of {shard.stat().st_size} ({len(samples)} samples read), with no "
                            "end-of-archive block; copy or write the shard again"
                        )

                    def read(member: tarfile.TarInfo) -> bytes:
                        handle.seek(member.offset_data)
                        return handle.read(member.size)

                    for key, members in samples.items():
                        where = _shown(f"{shard}/{key}")
                        image_ext = next((e for e in members if e in IMAGE_EXTENSIONS), None)
                        if image_ext is None:
                            ignored.append({"path": where, "reason": "sample has no image"})
                            continue
                        label = None
                        if "json" in members:
                            try:
                                found = json.loads(read(members["json"]))
                                label = found.get(label_field)
                            # RecursionError: nested past the parser's limit, no label either
                            except (ValueError, AttributeError, RecursionError):
                                found = None
                            if label is None and isinstance(found, dict) and not json_keys:
                                json_keys = list(found)
                            read_from["json" if label is not None else "json without"] += 1
                        if label is None and "txt" in members:
                            label = read(members["txt"]).decode("utf-8", "replace").strip()
                        if not isinstance(label, str) or not label:
                            ignored.append(
                                {
                                    "path": where,
                                    "reason": _no_label(read, members, label_field, label),
                                }
                            )
                            continue
                        concept = names.concept(label, "label")
                        if concept is None:
                            continue
                        if not names.is_selected(concept.group):
                            unselected += 1
                            continue
                        member = members[image_ext]
                        records.append(
                            ImageRecord(
                                path=_shown(f"{shard}/{member.name}"),
                                group=concept.group,
                                concept=concept.name,
                                identity=_identity(shard_identity, member.name),
                                file=str(shard),
                                offset=member.offset_data,
                                length=member.size,
                            )
                        )
        except tarfile.TarError as exc:
            # "unexpected end of data": the file ends inside a sample (a download stopped)
            what = "is cut off or damaged" if "end of data" in str(exc) else "is no readable tar"
            raise InputError(
                f"shard {str(shard)!r} {what} ({exc}; an uncompressed tar was expected); copy or "
                "write the shard again, or move it out of the shards"
            ) from None
    if read_from["json"]:
        hint = f"the labels are the samples' json key {label_field!r} (--label-field)"
        hint += ", or their .txt where it is missing" if read_from["json without"] else ""
    elif read_from["json without"]:
        hint = (
            "the labels are the samples' .txt (img2dataset writes captions there), read where "
            f"their json has no key {label_field!r} (--label-field)"
        )
    else:
        hint = (
            f"the labels are the samples' .txt (none has a json for --label-field {label_field!r})"
        )
    keys = f"; the json has keys {', '.join(json_keys[:10])}" if json_keys else ""
    names.hint = hint + keys
    return ImageSet(source, "webdataset", records, ignored, unselected)


def _no_label(
    read: Callable[[tarfile.TarInfo], bytes],
    members: dict[str, tarfile.TarInfo],
    label_field: str,
    label: Any,
) -> str:
    """Why a sample has no concept label, and what would give it one: a number (a json class
    index, webdataset's ``.cls``) names no concept without the list it counts in."""
    need = f"the label must be the concept's name, in the sample's json {label_field!r} or its .txt"
    if isinstance(label, int | float) and not isinstance(label, bool):
        return f"its json {label_field!r} is {label}, a number: {need}"
    reason = f"no concept label (json {label_field!r} or txt)"
    if "cls" in members:
        number = read(members["cls"])[:40].decode("utf-8", "replace").strip()
        return f"{reason}, only class number {number} (.cls): {need}"
    return reason + _json_keys(read, members.get("json"), label_field)


def _json_keys(
    read: Callable[[tarfile.TarInfo], bytes], member: tarfile.TarInfo | None, label_field: str
) -> str:
    """What a sample's json holds instead of ``label_field``, and the option that picks a key."""
    import json

    try:
        found = json.loads(read(member)) if member is not None else None
    except (ValueError, RecursionError):
        return ""
    keys = list(found) if isinstance(found, dict) else []
    if not keys or label_field in keys:  # no keys to offer, or the key holds no name
        return ""
    return f"; its json has keys {', '.join(keys[:10])}: choose one with --label-field"


def _hf_images(
    source: str,
    location: str | Path,
    names: _Names,
    label_column: str,
    image_column: str,
    split: str | None,
) -> ImageSet:
    import datasets

    # datasets and the hub client raise many types (OSError, KeyError, ConnectionError...): all
    # mean this source cannot be opened
    if isinstance(location, Path):
        try:
            loaded = datasets.load_from_disk(str(location))
        except Exception as exc:
            raise InputError(
                f"image source {source!r} is not a readable dataset saved by datasets' "
                f"save_to_disk ({one_line(exc)}); save the dataset again with save_to_disk"
            ) from None
    else:
        _check_hub_dataset(location)
        try:
            # the split is chosen from the hub's list before any is downloaded: without it,
            # every split (ImageNet's train: 140 GB) came down before one was asked for
            splits = datasets.get_dataset_split_names(location)
            _check_split(source, split, splits)
            loaded = datasets.load_dataset(location, split=split or splits[0])
        except InputError:
            raise
        except Exception as exc:
            where = f" (split {split!r})" if split else ""
            raise InputError(
                f"cannot open Hugging Face dataset {location!r}{where}: {one_line(exc)}; check "
                "the name, the split (--split; --image-split in clipaudit audit) and the network"
            ) from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        _check_split(source, split, splits)
        dataset = loaded[split or splits[0]]
    else:
        dataset = loaded
    for column, option in ((image_column, "--image-column"), (label_column, "--label-field")):
        if column not in dataset.column_names:
            raise InputError(
                f"{source!r} has no column {column!r}{did_you_mean(column, dataset.column_names)}; "
                f"columns are {', '.join(dataset.column_names)}; choose with {option}"
            )
    _check_columns(source, dataset.features, image_column, label_column)
    feature = dataset.features[label_column]
    labels = list(dataset.select_columns([label_column])[label_column])
    if isinstance(feature, datasets.ClassLabel):
        # -1 is datasets' "no label" (a test split's rows), which int2str refuses
        labels = [None if label is None or label < 0 else feature.names[label] for label in labels]
    if isinstance(dataset.features[image_column], datasets.Image):
        dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
    # the fingerprint follows the steps that made a dataset, not the pixels it holds: one built
    # again from the same image paths after the images changed keeps it (datasets hashes the
    # paths), and would be served stale embeddings; the arrow files it was written to do change
    dataset_columns = list(dataset.column_names)
    arrow_files = [_file_identity(Path(f["filename"])) for f in dataset.cache_files]
    fingerprint = _identity(dataset._fingerprint, *arrow_files)
    # a row read is every column of it decoded: the image alone is read
    dataset = dataset.select_columns([image_column])
    integers = isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint"))
    names.hint = (
        f"the labels are column {label_column!r} (--label-field)"
        + (
            ", which holds integers without class names (cast it to a ClassLabel of the "
            "names, or choose a column of names)"
            if integers
            else ""
        )
        + f"; columns are {', '.join(dataset_columns)}"
    )
    records: list[ImageRecord] = []
    ignored: list[dict[str, str]] = []
    unselected = 0
    files = _listed_files(dataset, image_column)
    for row, label in enumerate(labels):
        if label is None or label == "":  # an unlabelled row, as a sample without a label
            reason = f"no label in column {label_column!r} (empty, or -1 for a class)"
            ignored.append({"path": f"{source}#{row}", "reason": reason})
            continue
        concept = names.concept(str(label), "label")
        if concept is None:
            continue
        if not names.is_selected(concept.group):
            unselected += 1
            continue
        identity = _identity("hf", fingerprint, row)
        if files[row]:
            # a listed file is known as a folder's is: listed twice, it is read once
            # (_counted_once), and changed in place it is read again, which the dataset's
            # fingerprint (of its paths, not their pixels) would not tell
            with contextlib.suppress(OSError):  # unreadable: read, and said why, with the rest
                identity = _file_identity(Path(files[row]))
        records.append(
            ImageRecord(
                path=f"{source}#{row}",
                group=concept.group,
                concept=concept.name,
                identity=identity,
                row=row,
            )
        )
    return ImageSet(
        source,
        "huggingface",
        records,
        ignored,
        unselected,
        dataset=dataset,
        image_column=image_column,
    )


def _check_hub_dataset(name: str) -> None:
    """Refuse in seconds a hub dataset (``hf:NAME``) that is neither in the datasets cache nor
    downloadable: offline, the hub client retries for half a minute before saying so. A local
    folder (datasets loads it by its path) and a name the hub client refuses itself pass."""
    import datasets
    from datasets.naming import camelcase_to_snakecase
    from huggingface_hub import constants

    from clipaudit.hub import hub_host, hub_refused, valid_repo_id

    if Path(name).exists() or not valid_repo_id(name):
        return
    # where datasets looks for a dataset loaded before when the hub does not answer (or it is
    # offline): CACHE/org___name/<config>/<version>/<hash>
    *owner, dataset = name.split("/")
    cache = Path(datasets.config.HF_DATASETS_CACHE).expanduser()
    folder = cache / "___".join([*owner, camelcase_to_snakecase(dataset)])
    if any(path.is_dir() for path in folder.glob("*/*/*")):
        return
    refused = (
        "HF_DATASETS_OFFLINE is set (unset it to download)"
        if datasets.config.HF_HUB_OFFLINE and not constants.HF_HUB_OFFLINE
        else hub_refused()
    )
    if refused:
        raise InputError(
            f"Hugging Face dataset {name!r} is not in the datasets cache {cache} "
            f"(HF_DATASETS_CACHE or HF_HOME move it) and {refused}; on a machine that reaches the "
            "hub, save it with datasets' save_to_disk and give that folder as --images (images=), "
            f"or run where {hub_host() or 'the hub'} can be reached"
        )


def _listed_files(dataset: Any, column: str) -> list[str | None]:
    """Each row's image file where ``column`` lists one (a path as text, or an Image without
    its bytes, as :meth:`ImageSet.read_bytes` reads it); None where the row holds the bytes.
    Read from the arrow columns, not the rows: a row would copy its image's bytes."""
    import pyarrow as pa
    import pyarrow.compute as pc

    files: list[str | None] = []
    for chunk in dataset.with_format("arrow")[column].chunks:
        if pa.types.is_struct(chunk.type):
            held = pc.fill_null(pc.greater(pc.binary_length(chunk.field("bytes")), 0), False)
            paths = chunk.field("path").to_pylist()
            files += [
                None if bytes_held else path
                for bytes_held, path in zip(held.to_pylist(), paths, strict=True)
            ]
        elif pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type):
            files += chunk.to_pylist()
        else:
            files += [None] * len(chunk)
    return files


def _check_split(source: str, split: str | None, splits: Sequence[str]) -> None:
    """Refuse a split the dataset has not, and no split where it has several."""
    if split is None and len(splits) != 1:
        raise InputError(
            f"{source!r} has splits {', '.join(splits)}; choose one with --split (--image-split "
            "in clipaudit audit)"
        )
    if split is not None and split not in splits:
        raise InputError(
            f"{source!r} has no split {split!r}{did_you_mean(split, splits)}; splits are "
            f"{', '.join(splits)}"
        )


def _check_columns(source: str, features: Any, image_column: str, label_column: str) -> None:
    """Refuse an image column that holds no images, and a label column that holds no names,
    before either is read: a number read as an image's path is a file descriptor (reading
    row 1's closed stdout), and a column of images read as labels is every image decoded."""
    import datasets

    def is_image(feature: Any) -> bool:  # an Image, paths as text, or encoded bytes
        return isinstance(feature, datasets.Image) or (
            isinstance(feature, datasets.Value)
            and feature.dtype in ("string", "large_string", "binary", "large_binary")
        )

    def is_label(feature: Any) -> bool:  # class labels, names, or numbers (said when unknown)
        return isinstance(feature, datasets.ClassLabel) or (
            isinstance(feature, datasets.Value)
            and feature.dtype.startswith(("string", "large_string", "int", "uint"))
        )

    for column, option, fits, wanted, what in (
        (
            image_column,
            "--image-column",
            is_image,
            "images (an Image column, file paths as text, or encoded image bytes)",
            "the image columns are",
        ),
        (
            label_column,
            "--label-field",
            is_label,
            "concept names (text, or class labels)",
            "columns of names:",
        ),
    ):
        if fits(features[column]):
            continue
        others = [n for n, f in features.items() if fits(f)]
        if fits is is_image:  # an Image column surely holds images, text may be anything
            others = [n for n in others if isinstance(features[n], datasets.Image)] or others
        choice = (
            f"{what} {', '.join(others)}: choose one with {option}"
            if others
            else f"no column fits (columns are {', '.join(features)})"
        )
        raise InputError(
            f"{source!r}: column {column!r} ({option}) holds {_held(features[column])}, not "
            f"{wanted}; {choice}"
        )


def _held(feature: Any) -> str:
    """What a dataset column holds, in words."""
    import datasets

    if isinstance(feature, datasets.Image):
        return "images"
    if isinstance(feature, datasets.ClassLabel):
        return "class labels"
    if isinstance(feature, datasets.Value):
        return f"{feature.dtype} values"
    if isinstance(feature, (list, tuple, datasets.List, datasets.LargeList)):
        return "lists"
    if isinstance(feature, dict):
        return "records (a struct)"
    return f"{type(feature).__name__.lower()} values"


# --------------------------------------------------------------------------- decoding


def decode_image(
    data: bytes,
    *,
    draft_size: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    scaled_side: int | None = None,
) -> Image.Image:
    """Decode image bytes to an RGB PIL image, or raise :class:`BadImage` saying why not.

    ``draft_size`` lets JPEGs decode at a reduced scale (Pillow's draft mode) that still covers
    ``draft_size`` pixels on each side; a JPEG over ``max_pixels`` is decoded so to
    ``scaled_side`` without it. Images with more than ``max_pixels`` pixels as decoded are
    refused before decoding (decompression-bomb guard; Pillow itself refuses any over twice its
    own limit, about 179 megapixels, when opening), and so are those that would have more once their
    shorter side is scaled to ``scaled_side`` (what open_clip's "shortest" resize does before its
    centre crop): a 1-pixel-high strip of 100,000, a few hundred bytes as a PNG, would be
    scaled to 5 billion pixels for a 224-pixel model (20 GB), and the run killed for memory.
    """
    if not data:
        raise BadImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings(), _pillow_limit_at_least(max_pixels):
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            # a JPEG decodes at up to 1/8 scale (draft mode): with draft_size always, else when
            # its full size is over the limit, to the model's side: a 108-megapixel phone photo
            # is 1.7 megapixels then, which is what decoding costs and what the limit guards
            full = image.size
            over = image.width * image.height > max_pixels
            target = draft_size or (scaled_side if over else None)
            if target and image.format == "JPEG":
                image.draft("RGB", (target, target))
            pixels = image.width * image.height
            if pixels > max_pixels:
                # the size checked is the drafted one; the file's own is what its viewer shows
                drafted = f" even decoded at reduced scale from {full[0]}x{full[1]}"
                raise BadImage(
                    f"too large: {image.width}x{image.height} = {pixels} pixels exceeds the "
                    f"decompression-bomb limit of {max_pixels}"
                    f"{drafted if image.size != full else ''}{RAISE_LIMIT}"
                )
            if scaled_side:
                short, long = sorted(image.size)
                scaled = scaled_side * -(-scaled_side * long // max(short, 1))  # long side: ceil
                if scaled > max_pixels:
                    raise BadImage(
                        f"too elongated: {image.width}x{image.height} scaled to the model's "
                        f"{scaled_side}-pixel side is {scaled} pixels, over the limit of "
                        f"{max_pixels}{RAISE_LIMIT}"
                    )
            image.load()
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage(_unrecognised(data)) from None
    except Image.DecompressionBombError as exc:
        raise BadImage(f"too large: {exc}{RAISE_LIMIT}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc) or type(exc).__name__
        raise BadImage(
            f"undecodable ({'truncated' if 'truncated' in reason else reason})"
        ) from None
    return to_rgb(upright(image))


# ISO base-media brands of HEIF stills and sequences (what iPhones save, often renamed .jpg)
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}


def _unrecognised(data: bytes) -> str:
    """Why Pillow identified no image in ``data``: a format it does not read, named, or none."""
    if data[4:8] == b"ftyp":
        end = min(int.from_bytes(data[:4], "big"), len(data), 256)  # the ftyp box's end
        brands = {data[8:12]} | {data[i : i + 4] for i in range(16, end - 3, 4)}
        if brands & {b"avif", b"avis"}:  # AVIF lists HEIF's mif1 too: asked first
            return (
                "an AVIF image, which this Pillow does not read; install a Pillow built with "
                "AVIF (PIL.features.check('avif') says) or convert it to JPEG or PNG"
            )
        if brands & _HEIF_BRANDS:
            return f"a HEIC/HEIF image (whatever its name says), {HEIF_UNREAD}"
    return "not a recognised image (corrupt, or not an image file)"


RAISE_LIMIT = " (raise it with --max-pixels (max_pixels= in Python) for images you trust)"


@contextlib.contextmanager
def _pillow_limit_at_least(max_pixels: int) -> Iterator[None]:
    """Pillow refuses, when opening, any image over twice its own ``MAX_IMAGE_PIXELS``: a limit
    raised above it for trusted large images (aerial photos, scans) is ours to apply instead.
    Pillow's setting is process-wide; it is put back as soon as the image is decoded."""
    pillow = Image.MAX_IMAGE_PIXELS
    if pillow is None or max_pixels <= pillow:
        yield
        return
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = pillow


def upright(image: Image.Image) -> Image.Image:
    """``image`` turned as its EXIF orientation says: a phone's photo is stored sideways with a
    tag, and labelled as viewers show it, upright. open_clip's loaders do not read the tag, and
    so differ here on purpose: its web training images are upright in their pixels, and a label
    ("low angle", "portrait") is true of the upright photo, so a sideways one would measure the
    tag, not the concept. An unreadable EXIF block is ignored, as viewers ignore it."""
    try:
        with warnings.catch_warnings():  # "Corrupt EXIF data" from a worker: nothing to act on
            warnings.simplefilter("ignore")
            ImageOps.exif_transpose(image, in_place=True)
    except Exception:  # a malformed block: Pillow raises many types (struct, Syntax, Key...)
        pass
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB version of a decoded image; 16-bit and float grayscale are scaled, not clipped, to 8
    bits; transparent ones are laid on white."""
    if image.mode.startswith("I") or image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        top = values.max(initial=0)
        if image.mode.startswith("I;16"):
            peak = 65535.0  # the bit depth says so, however dark the picture
        elif image.mode == "F" and top <= 1.0:
            peak = 1.0  # floats in [0, 1]
        else:  # 32-bit integers (how some readers give 16-bit data) or floats past 1: by range
            peak = 65535.0 if top > 255 else 255.0
        eight_bit = np.clip(np.rint(values * (255.0 / peak)), 0, 255).astype(np.uint8)
        return Image.fromarray(eight_bit, "L").convert("RGB")
    try:
        if image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info:
            # on white, as a viewer's page shows it, and as img2dataset flattened the LAION and
            # DataComp images OpenCLIP trained on; dropping the alpha (open_clip's convert)
            # shows the colour under a transparent pixel, which encoders keep or zero at will
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return image if image.mode == "RGB" else image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise BadImage(f"cannot convert mode {image.mode} to RGB: {exc}") from None


class DecodedImages:
    """Map-style dataset for ``torch.utils.data.DataLoader``: item ``i`` -> ``(i, tensor, None)`` or
    ``(i, None, reason)`` when the image cannot be read, decoded or preprocessed."""

    def __init__(
        self,
        images: ImageSet,
        indices: Sequence[int],
        transform: Callable[[Image.Image], Any],
        *,
        draft_size: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        scaled_side: int | None = None,
    ):
        self.images = images
        self.indices = list(indices)
        self.transform = transform
        self.draft_size = draft_size
        self.max_pixels = max_pixels
        self.scaled_side = scaled_side  # see decode_image

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[int, Any, str | None]:
        index = self.indices[position]
        record = self.images.records[index]
        try:
            data = self.images.read_bytes(record)
            image = decode_image(
                data,
                draft_size=self.draft_size,
                max_pixels=self.max_pixels,
                scaled_side=self.scaled_side,
            )
            return index, self.transform(image), None
        except BadImage as exc:
            return index, None, str(exc)
        except (
            Exception
        ) as exc:  # one bad file (unreadable, odd size for a transform) never stops a run
            return index, None, f"{type(exc).__name__}: {exc}"


def collate_decoded(
    items: Sequence[tuple[int, Any, str | None]],
) -> tuple[list[int], Any, list[tuple[int, str]]]:
    """Batch the decodable items of :class:`DecodedImages`; return ``(indices, tensor, failures)``."""
    import torch

    good = [(index, tensor) for index, tensor, error in items if error is None]
    failures = [(index, error) for index, _, error in items if error is not None]
    batch = torch.stack([tensor for _, tensor in good]) if good else None
    return [index for index, _ in good], batch, failures

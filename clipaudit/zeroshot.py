"""Zero-shot concept awareness of OpenCLIP models, per concept group (Cai et al., NeurIPS 2025).

For every group of the registry, each image of the group is classified among the group's concepts
that have images in the run (the paper's setting; ``all_concepts`` classifies among every concept of
the group instead, the distractors then count as errors and never as labels). Awareness is the
group's macro-F1 over the concepts with images; per-concept precision/recall/F1 and accuracy come
with it (all from :mod:`clipaudit.metrics`). A group needs images of 2 concepts, or, with
``all_concepts``, images of one and 2 concepts in the registry.

Classifiers: each concept's text embedding is the renormalised mean of the normalised embeddings of
all its prompt x template texts (CLIP's prompt ensembling), built with open_clip's
``build_zero_shot_classifier``. Templates:

- ``none``: the bare concept name (the paper's setting; uses ``concept.name``, never group templates);
- ``simple``: ``"a photo of a {}."``;
- ``ensemble``: open_clip's 80 OpenAI ImageNet templates;
- a text file: one template per line containing ``{}`` (or CLIP_benchmark's ``{c}``).

With ``simple``, ``ensemble`` or a file, class names are the concept's ``prompts`` (all of them, each
text weighing the same), and a group's own ``templates`` from the registry replace the chosen ones for
that group.

Image embeddings are cached on disk (:mod:`clipaudit.embedding_cache`), so changing templates,
prompts or the registry does not encode images again, and a killed run resumes from the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from clipaudit import metrics
from clipaudit.embedding_cache import EmbeddingCache, check_cache_dir, default_cache_dir
from clipaudit.errors import (
    InputError,
    ModelError,
    RunFailedError,
    RunFolderError,
    SettingsError,
    check_arguments,
    did_you_mean,
    keyword_checked,
)
from clipaudit.images import (
    DECODE_VERSION,
    DEFAULT_MAX_PIXELS,
    DecodedImages,
    ImageSet,
    collate_decoded,
    open_images,
)
from clipaudit.models import (
    LoadedModel,
    ModelSpec,
    hub_revision,
    load_model,
    resolve_device,
    resolve_precision,
)
from clipaudit.provenance import (
    file_identity,
    file_record,
    library_versions,
    read_table_csv,
    write_table,
)
from clipaudit.registry import DEFAULT_REGISTRY, Concept, Registry, load_registry
from clipaudit.runs import RunFolder, read_manifest, unit_key
from clipaudit.text import counted, file_stem, is_prompt_template, slug

TEMPLATE_SETS = ("none", "simple", "ensemble")
SIMPLE_TEMPLATE = "a photo of a {}."
TOP_K = 5
LIBRARIES = ("torch", "torchvision", "open_clip_torch", "pillow", "numpy", "scikit-learn", "pandas")


def default_workers() -> int:
    """Decoding worker processes: one per core but one, at most 16."""
    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    )
    return max(1, min(16, cores - 1))


def resolve_templates(templates: str) -> tuple[str, ...]:
    """Prompt templates (``{}`` marks the class name) for ``none``, ``simple``, ``ensemble`` or a file."""
    if templates == "none":
        return ("{}",)
    if templates == "simple":
        return (SIMPLE_TEMPLATE,)
    if templates == "ensemble":
        from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

        return tuple(template("{}") for template in OPENAI_IMAGENET_TEMPLATES)
    path = Path(templates)
    if not path.is_file():
        what = "a folder" if path.is_dir() else "no set's name and no file"
        raise SettingsError(
            f"templates must be one of {', '.join(TEMPLATE_SETS)} or a text file of templates, "
            f"got {templates!r} ({what}{did_you_mean(templates, TEMPLATE_SETS)})"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is no template text
    except UnicodeDecodeError as exc:
        raise SettingsError(
            f"template file {templates!r} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from None
    lines = [line.strip() for line in text.splitlines()]
    found = tuple(line.replace("{c}", "{}") for line in lines if line and not line.startswith("#"))
    bad = [t for t in found if not is_prompt_template(t)]
    if not found or bad:
        raise SettingsError(
            f"template file {templates!r} must hold one template per line, each with '{{}}' once; "
            f"got {len(found)} templates{f', e.g. {bad[0]!r}' if bad else ''}"
        )
    return found


@dataclass(frozen=True)
class ZeroShotSettings:
    """Everything a zero-shot run depends on; validated at construction.

    ``models`` are :class:`ModelSpec`; ``registry`` a built-in name, a YAML path or a Registry.
    Fields in :data:`RESULT_FIELDS` change results: a run folder resumes only with the same values.
    """

    models: tuple[ModelSpec, ...]
    images: str
    registry: Any = DEFAULT_REGISTRY
    groups: tuple[str, ...] | None = None
    templates: str = "none"
    all_concepts: bool = False
    batch_size: int = 256
    workers: int = field(default_factory=default_workers)
    device: str = "auto"
    precision: str = "auto"
    cache_dir: Path | None = field(default_factory=default_cache_dir)
    jpeg_draft: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    label_field: str | None = None
    image_column: str = "image"
    split: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", tuple(self.models))
        if not isinstance(self.images, (str, os.PathLike)):  # str() would make None "None"
            raise SettingsError(
                "images (the labelled images) must be a path (a str or an os.PathLike) or "
                f"hf:NAME, got {type(self.images).__name__} {self.images!r:.60}"
            )
        images = str(self.images)
        if "://" not in images and not images.startswith("hf:"):  # a local folder: one spelling
            images = str(Path(images))  # "img/" and "./img" are "img"
        object.__setattr__(self, "images", images)
        if isinstance(self.templates, os.PathLike):  # a template file: its path as text
            object.__setattr__(self, "templates", os.fspath(self.templates))
        if isinstance(self.groups, Iterable) and not isinstance(self.groups, str):
            object.__setattr__(self, "groups", tuple(self.groups))  # a generator: read once
        _check_types(self)
        if isinstance(self.groups, str):  # one group's name, not its letters
            object.__setattr__(self, "groups", (self.groups,))
        if self.groups is not None:
            object.__setattr__(self, "groups", tuple(self.groups))
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", Path(self.cache_dir))
        if not self.models:
            raise SettingsError("no model given; pass at least one --model")
        object.__setattr__(self, "models", _distinct_labels(tuple(self.models)))
        for name, value, low in (
            ("batch_size (--batch-size)", self.batch_size, 1),
            ("workers (--workers)", self.workers, 0),
            ("max_pixels (--max-pixels)", self.max_pixels, 1),
            ("seed", self.seed, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise SettingsError(f"{name} must be an integer >= {low}, got {value!r}")
        resolve_precision(self.precision, resolve_device(self.device))
        if self.groups is not None and not self.groups:
            raise SettingsError(
                "--groups is empty; name at least one group or leave it out for all"
            )
        resolve_templates(self.templates)
        if self.cache_dir is not None:
            check_cache_dir(self.cache_dir)

    def describe(self) -> dict[str, Any]:
        record = asdict(self)
        record["registry"] = _registry_label(self.registry)
        return json.loads(json.dumps(record, default=str))

    def result_fields(self, registry: Registry) -> dict[str, Any]:
        """What results depend on: not batch size, workers, device or the cache, and not the
        models, which are the run's units (a model added to a run leaves the others' results)."""
        record = {name: getattr(self, name) for name in RESULT_FIELDS}
        record["registry"] = {"name": registry.name, "sha256": registry.sha256}
        if self.groups is not None:  # the groups selected, not how they were spelled or ordered
            record["groups"] = [g.name for g in registry.select(self.groups).groups]
        templates = Path(self.templates)
        if self.templates not in TEMPLATE_SETS and templates.is_file():
            record["templates"] = {
                "file": self.templates,
                "texts": resolve_templates(self.templates),
            }
        return json.loads(json.dumps(record, default=str))


def _check_types(settings: ZeroShotSettings) -> None:
    """Refuse an option of the wrong type before it is used: a "no" for a switch would count as
    on, a list of templates or a number for a path would fail later with a bare TypeError."""
    for name in ("all_concepts", "jpeg_draft"):
        value = getattr(settings, name)
        if not isinstance(value, bool):
            raise SettingsError(f"{name} must be True or False, got {value!r}")
    if not isinstance(settings.templates, str):
        raise SettingsError(
            f"templates must be one of {', '.join(TEMPLATE_SETS)} or the path of a file of "
            f"templates, got {type(settings.templates).__name__} {settings.templates!r}"
        )
    for name, optional in (
        ("image_column", False),
        ("label_field", True),
        ("split", True),
    ):
        value = getattr(settings, name)
        if not isinstance(value, str) and not (optional and value is None):
            raise SettingsError(
                f"{name} must be a string{' or None' if optional else ''}, got "
                f"{type(value).__name__} {value!r}"
            )
    groups = settings.groups  # a tuple by now, unless one name or None
    if groups is not None and not (
        isinstance(groups, str)
        or (isinstance(groups, tuple) and all(isinstance(g, str) for g in groups))
    ):  # tuple() of a number is a bare TypeError, of a list of numbers a group never found
        raise SettingsError(
            "groups must be a group's name, a list of group names or None (every group), got "
            f"{type(groups).__name__} {groups!r:.60}"
        )
    if settings.cache_dir is not None and not isinstance(settings.cache_dir, (str, os.PathLike)):
        raise SettingsError(
            f"cache_dir must be a folder path or None (no cache), got "
            f"{type(settings.cache_dir).__name__} {settings.cache_dir!r}"
        )


def check_out_of_images(out: str | Path, images: str | Path) -> None:
    """Refuse a run folder inside a local image folder: it would be listed as images, and
    refused as a group or concept name, after the run folder was made."""
    source = Path(images)
    if source.is_dir() and Path(out).resolve().is_relative_to(source.resolve()):
        raise SettingsError(
            f"the run folder {str(out)!r} (--out) lies inside the image source {str(images)!r}; "
            "give a run folder outside it"
        )


RESULT_FIELDS = (
    "images",
    "groups",
    "templates",
    "all_concepts",
    "precision",
    "jpeg_draft",
    "max_pixels",
    "label_field",
    "image_column",
    "split",
    "seed",
)


def _registry_label(registry: Any) -> str:
    return registry.name if isinstance(registry, Registry) else str(registry)


def _distinct_labels(specs: tuple[ModelSpec, ...]) -> tuple[ModelSpec, ...]:
    """``specs`` with labels told apart: checkpoints of one file name in other folders
    (``run1/epoch_32.pt``, ``run2/epoch_32.pt``) are labelled with the nearest folder in which
    their paths differ (``tiny@run1/epoch_32``); the same model and weights twice are refused.
    Labels are compared ignoring case: each names a folder of results (``confusion/<model>/``),
    and ``tiny@A`` and ``tiny@a`` would be one folder on macOS's and Windows' file systems."""
    same: dict[str, list[int]] = {}
    for index, spec in enumerate(specs):
        same.setdefault(spec.label.casefold(), []).append(index)
    specs = list(specs)
    for indices in same.values():
        if len(indices) < 2:
            continue
        found = [specs[i] for i in indices]
        where = [
            (s.model, str(Path(s.pretrained).resolve()) if s.is_checkpoint_file else s.pretrained)
            for s in found
        ]
        if len(set(where)) < len(where):
            twice = next(s for s, w in zip(found, where, strict=True) if where.count(w) > 1)
            raise SettingsError(f"the same model is given twice: {twice.label}")
        paths = (
            [Path(w[1]).parts for w in where] if all(s.is_checkpoint_file for s in found) else []
        )
        base = found[0].label.rsplit("@", 1)[0]
        for depth in range(1, min(map(len, paths), default=0) + 1):
            # file names, then their folders upward, told apart ignoring case as well
            names = [parts[-depth] for parts in paths]
            if len({name.casefold() for name in names}) == len(names):
                for i, spec, name in zip(indices, found, names, strict=True):
                    weights = name if depth == 1 else f"{name}/{Path(spec.pretrained).stem}"
                    specs[i] = replace(spec, name=f"{base}@{weights}")  # ep.pt / run1/ep
                break
        else:
            labels = list(dict.fromkeys(s.label for s in found))
            if len(labels) == 1:
                raise SettingsError(
                    f"two models are labelled {labels[0]!r}: their results would share one "
                    "name; give one another name (rename its checkpoint or config file, or "
                    "ModelSpec(name=...))"
                )
            raise SettingsError(
                f"the model labels {' and '.join(map(repr, labels))} differ only in case: their "
                "results (confusion/<model>/) would be one folder on a case-insensitive file "
                "system (macOS, Windows); give one another name (rename its checkpoint or config "
                "file, or ModelSpec(name=...))"
            )
    return tuple(specs)


def check_model_specs(specs: Sequence[ModelSpec]) -> None:
    """Check that each model's config, folder and checkpoint exist and its pretrained tag is
    known, and that a checkpoint file (or an hf-hub: model's cached, or a local-dir: model's own
    weights file) holds a state dict whose tensor names and shapes fit the model, without
    loading any weights (the model is built on torch's meta device; raises
    :class:`~clipaudit.errors.ModelError`)."""
    from clipaudit.models import check_pretrained, resolve_architecture

    for spec in specs:
        check_pretrained(spec, resolve_architecture(spec.model))


def model_specs(models: Any, pretrained: Any = None) -> tuple[ModelSpec, ...]:
    """Models as the API takes them: a name or config path, a ``(model, pretrained)`` pair, a
    :class:`ModelSpec`, or a list of these; ``pretrained`` applies to a single model given by name."""
    if isinstance(models, (str, Path, ModelSpec)) or (
        isinstance(models, tuple) and len(models) == 2 and isinstance(models[0], (str, Path))
    ):
        models = [models]
    if not isinstance(models, Iterable):
        raise SettingsError(
            "models must be a name or config path, a (model, pretrained) pair, a ModelSpec, or a "
            f"list of these; got {models!r}"
        )
    specs, own_weights = [], []  # own_weights: items that name their weights themselves
    for item in models:
        if not isinstance(item, (str, Path)):
            own_weights.append(item)
        if isinstance(item, ModelSpec):
            specs.append(item)
        elif isinstance(item, (str, Path)):
            specs.append(ModelSpec(str(item), None if pretrained is None else str(pretrained)))
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            specs.append(ModelSpec(str(item[0]), None if item[1] is None else str(item[1])))
        else:
            raise SettingsError(
                f"a model must be a name, a (model, pretrained) pair or a ModelSpec; got {item!r}"
            )
    if pretrained is not None and len(specs) > 1:
        raise SettingsError(
            "pretrained= applies to one model; give several as (model, pretrained) pairs"
        )
    if pretrained is not None and own_weights:
        # a pair or a ModelSpec names its own weights: pretrained= would be dropped unsaid
        raise SettingsError(
            f"pretrained= applies to a model given by name; {own_weights[0]!r:.80} names its own "
            "weights: give either the pair (or ModelSpec) or the name with pretrained="
        )
    return tuple(specs)


# --------------------------------------------------------------------------- embeddings


def cache_key(loaded: LoadedModel, jpeg_draft: bool, max_pixels: int | None) -> str:
    """What image embeddings depend on: the model's identity plus how images were decoded, and
    which were refused as too large (a cached image skips the decoder's size check)."""
    identity = {
        **loaded.identity,
        "jpeg_draft": jpeg_draft,
        "max_pixels": max_pixels,
        "decode_version": DECODE_VERSION,
        # an upgrade may change decoding or the model's transforms: embeddings made before it
        # are not reused
        "libraries": library_versions(("open_clip_torch", "torch", "torchvision", "pillow")),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


BAD_EMBEDDING = (
    "the model's embedding is not finite or is zero (NaN or inf: try --precision fp32); it has no "
    "direction to classify"
)


@dataclass
class ImageEmbeddings:
    """Embeddings of an image set (rows of failed images are zero and ``ok`` is False there)."""

    features: np.ndarray
    ok: np.ndarray
    failures: list[dict[str, str]]
    n_encoded: int
    n_cached: int
    encode_s: float


def embed_images(
    loaded: LoadedModel,
    images: ImageSet,
    *,
    cache: EmbeddingCache | None = None,
    batch_size: int = 256,
    workers: int = 0,
    jpeg_draft: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = False,
    flush_every: int = 4096,
    flush_s: float = 60.0,
) -> ImageEmbeddings:
    """Image embeddings (unnormalised, float32) from the cache, encoding the rest batched.

    A ``torch.utils.data.DataLoader`` with ``workers`` processes decodes and preprocesses; the
    model runs in ``inference_mode`` with the model's autocast. New embeddings go to the cache every
    ``flush_every`` images and every ``flush_s`` seconds (a large model on a CPU encodes a few
    images a second), so a killed run loses little. A batch the device has no memory for
    is a :class:`~clipaudit.errors.SettingsError` naming a smaller ``batch_size``.
    """
    from tqdm.auto import tqdm

    records = images.records
    identities = [r.identity for r in records]
    cached_at, cached = cache.get(identities) if cache is not None else ([], None)
    features: np.ndarray | None = None
    ok = np.zeros(len(records), dtype=bool)
    if cached is not None:
        features = np.zeros((len(records), cached.shape[1]), dtype=np.float32)
        features[cached_at] = cached
        ok[cached_at] = True
    todo = np.flatnonzero(~ok).tolist()
    failures: list[dict[str, str]] = []
    pending: list[int] = []
    on_cuda = loaded.device.type == "cuda"
    dataset = DecodedImages(
        images,
        todo,
        loaded.preprocess,
        draft_size=loaded.image_size if jpeg_draft else None,
        max_pixels=max_pixels,
        scaled_side=_scaled_side(loaded),
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers if todo else 0,  # no worker processes when all is cached
        collate_fn=collate_decoded,
        pin_memory=on_cuda,
        prefetch_factor=4 if workers and todo else None,
        worker_init_fn=_ignore_sigint,
    )

    flushed_at = time.monotonic()

    def flush() -> None:
        nonlocal flushed_at
        if cache is not None and pending:
            cache.put([identities[i] for i in pending], features[pending])
        pending.clear()
        flushed_at = time.monotonic()

    start = time.perf_counter()
    bar = tqdm(
        total=len(todo),
        unit="img",
        desc=f"encoding {loaded.label}",
        disable=not progress or not todo,
    )
    with bar, loaded.inference():
        try:
            for indices, batch, batch_failures in loader:
                failures += [
                    {"path": records[i].path, "reason": reason} for i, reason in batch_failures
                ]
                if batch is not None:
                    batch = batch.to(loaded.device, non_blocking=True)
                    if on_cuda:
                        batch = batch.contiguous(memory_format=torch.channels_last)
                    encoded = loaded.model.encode_image(batch).float().cpu().numpy()
                    if features is None:
                        features = np.zeros((len(records), encoded.shape[1]), dtype=np.float32)
                    # NaN or inf (an fp16 overflow) or zeros has no direction: it would be
                    # classified as the group's first concept, unsaid; skipped saying so
                    sound = np.isfinite(encoded).all(axis=1) & np.any(encoded != 0, axis=1)
                    failures += [
                        {"path": records[i].path, "reason": BAD_EMBEDDING}
                        for i, good in zip(indices, sound.tolist(), strict=True)
                        if not good
                    ]
                    indices = [i for i, good in zip(indices, sound.tolist(), strict=True) if good]
                    features[indices] = encoded[sound]
                    ok[indices] = True
                    pending += indices
                bar.update(len(batch_failures) + (0 if batch is None else len(batch)))
                if len(pending) >= flush_every or time.monotonic() - flushed_at >= flush_s:
                    flush()
        except torch.OutOfMemoryError:  # a large model's batch: torch's traceback names no fix
            kept = "; the images encoded so far are cached" if cache is not None else ""
            raise SettingsError(
                f"{loaded.device} ran out of memory encoding images with {loaded.label} in "
                f"batches of {batch_size}; lower --batch-size (e.g. {max(1, batch_size // 4)}) "
                f"and run the same command again{kept}"
            ) from None
        finally:  # a Ctrl-C or a failing batch keeps what was encoded since the last flush
            flush()
    if features is None:  # nothing cached and nothing decodable
        features = np.zeros((len(records), 0), dtype=np.float32)
    return ImageEmbeddings(
        features=features,
        ok=ok,
        failures=failures,
        n_encoded=len(todo) - len(failures),
        n_cached=len(cached_at),
        encode_s=time.perf_counter() - start,
    )


def _scaled_side(loaded: LoadedModel) -> int | None:
    """The side open_clip's preprocessing scales an image's shorter side to (its default
    "shortest" resize, before the centre crop), where a thin strip grows to billions of pixels;
    None for the modes that fit the longer side or squash, and for a model open_clip did not
    describe."""
    preprocess = loaded.info.get("preprocess")
    if not preprocess or preprocess.get("resize_mode", "shortest") != "shortest":
        return None
    return loaded.image_size


def _ignore_sigint(_: int) -> None:
    """Decoding workers leave Ctrl-C to the main process, which stops them without tracebacks."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def class_embeddings(
    loaded: LoadedModel,
    concepts: Sequence[Concept],
    templates: Sequence[str],
    bare_names: bool,
    chunk: int = 1024,
) -> np.ndarray:
    """Normalised text embedding per concept (rows): the renormalised mean of the normalised
    embeddings of all its prompt x template texts (its bare name x templates with ``bare_names``),
    CLIP's prompt ensembling. All concepts' texts go through the text tower together, ``chunk``
    texts per forward pass."""
    texts, owner = [], []
    for row, concept in enumerate(concepts):
        prompts = (concept.name,) if bare_names else concept.prompts
        for prompt in prompts:
            for template in templates:
                texts.append(template.format(prompt))
                owner.append(row)
    encoded = []
    with loaded.inference():
        for start in range(0, len(texts), chunk):
            tokens = loaded.tokenizer(texts[start : start + chunk]).to(loaded.device)
            features = loaded.model.encode_text(tokens).float()
            encoded.append(torch.nn.functional.normalize(features, dim=-1).cpu())
    features = torch.cat(encoded).numpy().astype(np.float64)
    sums = np.zeros((len(concepts), features.shape[1]))
    np.add.at(sums, np.asarray(owner), features)
    means = sums / np.bincount(owner, minlength=len(concepts))[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):  # no direction: NaN, refused by callers
        return (means / np.linalg.norm(means, axis=1, keepdims=True)).astype(np.float32)


# --------------------------------------------------------------------------- evaluation


@dataclass
class ModelResult:
    """One model's awareness: tables for every evaluated group, and what was skipped."""

    label: str
    info: dict[str, Any]
    predictions: pd.DataFrame
    concepts: pd.DataFrame
    groups: pd.DataFrame
    confusions: dict[str, pd.DataFrame]
    failures: list[dict[str, str]]
    skipped_concepts: list[dict[str, Any]]
    skipped_groups: list[dict[str, Any]]
    templates: dict[str, list[str]]
    timings: dict[str, float]
    n_encoded: int
    n_cached: int


def evaluate_model(
    loaded: LoadedModel,
    images: ImageSet,
    registry: Registry,
    *,
    templates: str = "none",
    all_concepts: bool = False,
    cache: EmbeddingCache | None = None,
    batch_size: int = 256,
    workers: int = 0,
    jpeg_draft: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = False,
) -> ModelResult:
    """Zero-shot classify the images of every group of ``registry`` with one loaded model."""
    embedded = embed_images(
        loaded,
        images,
        cache=cache,
        batch_size=batch_size,
        workers=workers,
        jpeg_draft=jpeg_draft,
        max_pixels=max_pixels,
        progress=progress,
    )
    start = time.perf_counter()
    norms = np.linalg.norm(embedded.features, axis=1, keepdims=True)
    features = np.divide(
        embedded.features, norms, out=np.zeros_like(embedded.features), where=norms > 0
    )
    base_templates = resolve_templates(templates)
    records = images.records
    n_attempted = images.counts()
    n_in_group = Counter(r.group for r in records)
    usable = [i for i in range(len(records)) if embedded.ok[i]]
    # decoded, then failed by the model (its embedding not finite): not "undecodable"
    unembedded = {f["path"] for f in embedded.failures if f["reason"] == BAD_EMBEDDING}
    decoded = [r for r in records if r.path in unembedded]
    decoded_groups, decoded_concepts = {r.group for r in decoded}, {r.concept for r in decoded}

    prediction_rows, concept_frames, group_rows = [], [], []
    confusions: dict[str, pd.DataFrame] = {}
    skipped_concepts: list[dict[str, Any]] = []
    skipped_groups: list[dict[str, Any]] = []
    used_templates: dict[str, list[str]] = {}
    planned = []  # (group, rows, present, candidates, templates) of each evaluable group
    for group in registry.groups:
        concepts = registry.concepts_in(group.name)
        rows = [i for i in usable if records[i].group == group.name]
        with_images = {records[i].concept for i in rows}
        present = [c for c in concepts if c.name in with_images]
        # among all the group's concepts, the images of one concept are classified meaningfully
        candidates = list(concepts) if all_concepts else present
        if not present or len(candidates) < 2:
            if not present:
                reason = _none_embedded(n_in_group[group.name], group.name in decoded_groups)
            elif all_concepts:
                reason = f"the group has only the concept {present[0].name!r}; 2 are needed"
            else:  # the others' images may all have failed: "only ... has images" misled
                failed = [
                    f"{c.name!r}: {_none_embedded(n_attempted[c.name], c.name in decoded_concepts)}"
                    for c in concepts
                    if c.name not in with_images and n_attempted[c.name]
                ]
                decodable = f"decodable images ({'; '.join(failed)})" if failed else "images"
                reason = f"only {present[0].name!r} has {decodable}{ONE_CONCEPT}"
            skipped_groups.append({"group": group.name, "reason": reason})
            continue
        for concept in concepts:
            if concept.name not in with_images:
                reason = _none_embedded(n_attempted[concept.name], concept.name in decoded_concepts)
                skipped_concepts.append(
                    {"group": group.name, "concept": concept.name, "reason": reason}
                )
        group_templates = tuple(
            group.templates if group.templates and templates != "none" else base_templates
        )
        used_templates[group.name] = list(group_templates)
        planned.append((group, rows, present, candidates, group_templates))
    # every classifier with the same templates in one batched pass through the text tower
    by_templates: dict[tuple[str, ...], list[Concept]] = {}
    for _, _, _, candidates, group_templates in planned:
        by_templates.setdefault(group_templates, []).extend(candidates)
    weights_of: dict[tuple[tuple[str, ...], str], np.ndarray] = {}
    for group_templates, candidates in by_templates.items():
        computed = class_embeddings(
            loaded, candidates, group_templates, bare_names=templates == "none"
        )
        # NaN compares as no score at all: the concept would never be predicted, unsaid
        aimless = [
            c.name for c, w in zip(candidates, computed, strict=True) if not np.isfinite(w).all()
        ]
        if aimless:
            kept = "; the images' embeddings are cached" if cache is not None else ""
            raise ModelError(
                f"model {loaded.label!r} gives the concept{'s' if len(aimless) > 1 else ''} "
                f"{', '.join(aimless)} a text embedding that is not finite or is zero (NaN or "
                f"inf: try --precision fp32): no image can be classified against it{kept}"
            )
        weights_of.update(
            {(group_templates, c.name): w for c, w in zip(candidates, computed, strict=True)}
        )

    for group, rows, present, candidates, group_templates in planned:
        weights = np.stack([weights_of[(group_templates, c.name)] for c in candidates])
        similarity = features[rows] @ weights.T
        top_k = min(TOP_K, len(candidates))
        order = np.argsort(-similarity, axis=1, kind="stable")[:, :top_k]
        names = np.array([c.name for c in candidates])
        y_true = [records[i].concept for i in rows]
        y_pred = names[order[:, 0]].tolist()
        labels = [c.name for c in present]
        for position, i in enumerate(rows):
            prediction_rows.append(
                {
                    "model": loaded.label,
                    "path": records[i].path,
                    "group": group.name,
                    "concept": y_true[position],
                    "predicted": y_pred[position],
                    "correct": y_true[position] == y_pred[position],
                    "score": float(similarity[position, order[position, 0]]),
                    "top5": names[order[position]].tolist(),
                    "top5_scores": similarity[position, order[position]].astype(float).tolist(),
                }
            )
        scores = metrics.per_class_scores(y_true, y_pred, labels).rename(
            columns={"label": "concept"}
        )
        scores.insert(0, "group", group.name)
        scores.insert(0, "model", loaded.label)
        concept_frames.append(scores)
        group_rows.append(
            {
                "model": loaded.label,
                "group": group.name,
                "category": group.category,
                "macro_f1": metrics.macro_f1(y_true, y_pred, labels),
                "accuracy": metrics.accuracy(y_true, y_pred),
                "n_images": len(rows),
                "n_concepts": len(present),
                "n_candidates": len(candidates),
                "chance": metrics.chance_macro_f1(y_true, labels, len(candidates)),
            }
        )
        confusions[group.name] = metrics.confusion(y_true, y_pred, names.tolist()).loc[labels]

    return ModelResult(
        label=loaded.label,
        info=loaded.info,
        predictions=pd.DataFrame(prediction_rows, columns=PREDICTION_COLUMNS),
        concepts=pd.concat(concept_frames, ignore_index=True)
        if concept_frames
        else _empty(CONCEPT_COLUMNS),
        groups=pd.DataFrame(group_rows, columns=GROUP_COLUMNS),
        confusions=confusions,
        failures=embedded.failures,
        skipped_concepts=skipped_concepts,
        skipped_groups=skipped_groups,
        templates=used_templates,
        timings={
            "encode_s": embedded.encode_s,
            "classify_s": time.perf_counter() - start,
            "images_per_s": embedded.n_encoded / embedded.encode_s if embedded.n_encoded else None,
        },
        n_encoded=embedded.n_encoded,
        n_cached=embedded.n_cached,
    )


PREDICTION_COLUMNS = [
    "model",
    "path",
    "group",
    "concept",
    "predicted",
    "correct",
    "score",
    "top5",
    "top5_scores",
]
CONCEPT_COLUMNS = ["model", "group", "concept", "precision", "recall", "f1", "support"]
# why a group with the images of one concept is skipped (unless all_concepts), and the fix
ONE_CONCEPT = "; 2 concepts are needed"
ONE_CONCEPT_FIX = (
    "--all-concepts (all_concepts=True) classifies the images of one concept among all of its "
    "group's concepts"
)
# why a group or concept the images hold none of is skipped
NO_IMAGES = "no images"


def unscored_groups_line(skipped_groups: Sequence[dict[str, Any]], limit: int = 5) -> str | None:
    """The line that names the groups with images that were not evaluated, the first ``limit``
    with their reasons, and the fix where one had images of one concept alone; None when every
    group skipped had no images (a registry's groups the images hold none of are no sign that
    anything went wrong). `clipaudit zeroshot`, the audit and a run that evaluated no group all
    say it."""
    failed = [g for g in skipped_groups if g["reason"] != NO_IMAGES]
    if not failed:
        return None
    reasons = "; ".join(f"{g['group']}: {g['reason']}" for g in failed[:limit])
    more = " ..." if len(failed) > limit else ""
    fix = f"; {ONE_CONCEPT_FIX}" if any(g["reason"].endswith(ONE_CONCEPT) for g in failed) else ""
    return f"{counted(len(failed), 'group')} with images not evaluated: {reasons}{more}{fix}"


def _none_embedded(n_listed: int, decoded: bool = False) -> str:
    """Why a group or concept has no embedded image: none listed, or every one of them failed
    (a report repeats this reason, where "no images" would send the user to the wrong fix):
    undecodable, or (``decoded``: some decoded) failed, as where the model's embeddings are not
    finite."""
    if not n_listed:
        return NO_IMAGES
    how = "failed" if decoded else "undecodable"
    return f"its one image {how}" if n_listed == 1 else f"all {n_listed} images {how}"


# n_concepts: the concepts with images (scored); n_candidates: those each image is classified
# among (more with all_concepts); chance: the macro-F1 of a uniform guess among them
# (metrics.chance_macro_f1), 1 / n_candidates only where each has images, as many
GROUP_COLUMNS = [
    *("model", "group", "category", "macro_f1", "accuracy", "n_images", "n_concepts"),
    *("n_candidates", "chance"),
]


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(columns=columns)


# --------------------------------------------------------------------------- runs


@dataclass
class ZeroShotRun:
    """A zero-shot run: the run folder, its tables (DataFrames) and its manifest."""

    out: Path
    groups: pd.DataFrame
    concepts: pd.DataFrame
    manifest: dict[str, Any]
    reused: bool = False  # the folder already held this complete run: nothing was recomputed

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(self.groups["model"]))

    def predictions(self) -> pd.DataFrame:
        """One row per image and model: true and predicted concept, score, top-5."""
        return pd.read_parquet(self.out / "predictions.parquet")

    def confusion(self, model: str, group: str) -> pd.DataFrame:
        """The confusion matrix of one model on one group (rows true, columns predicted, counts
        as integers); see :func:`read_confusion_csv`."""
        for what, value in (("model", model), ("group", group)):
            if not isinstance(value, str):
                raise SettingsError(
                    f"a {what} name must be a string, got {type(value).__name__} {value!r:.60}"
                )
        path = _named_file(_named_file(self.out / "confusion", model), group, ".csv")
        if not path.is_file():
            if model not in self.models:
                raise InputError(
                    f"no model {model!r} in {self.out}; models are {', '.join(self.models)}"
                    f"{did_you_mean(model, self.models)}"
                )
            # the model is right: name the groups it has matrices for, not the models
            groups = list(dict.fromkeys(self.groups.loc[self.groups["model"] == model, "group"]))
            raise InputError(
                f"no confusion matrix for model {model!r} and group {group!r} in {self.out}; "
                f"its groups are {', '.join(groups)}{did_you_mean(group, groups)}"
            )
        return read_confusion_csv(path)

    def macro_f1_table(self) -> pd.DataFrame:
        """Groups x models macro-F1 (the side-by-side view of several models)."""
        table = self.groups.pivot_table(
            index="group", columns="model", values="macro_f1", sort=False
        )
        return table[[m for m in self.models if m in table.columns]]

    def __repr__(self) -> str:
        n_images = self.manifest.get("n_images")
        images = counted(n_images, "image") if isinstance(n_images, int) else "? images"
        return (
            f"ZeroShotRun({str(self.out)!r}: {counted(len(self.models), 'model')} "
            f"{', '.join(self.models)}; {counted(self.groups['group'].nunique(), 'group')}, "
            f"{images})"
        )

    def _repr_html_(self) -> str:
        from html import escape

        table = self.macro_f1_table().to_html(float_format=lambda v: f"{v:.3f}")
        return f"<p><b>{escape(repr(self))}</b> macro-F1 per group:</p>{table}"


def _named_file(folder: Path, name: str, suffix: str = "") -> Path:
    """``folder``'s file (or folder) for ``name`` (:func:`~clipaudit.text.file_stem`), or the
    one a run written before file stems named by the plain slug."""
    path = folder / f"{file_stem(name)}{suffix}"
    legacy = folder / f"{slug(name)}{suffix}"
    return legacy if not path.exists() and legacy.exists() else path


def load_zeroshot_run(path: str | Path, manifest: dict[str, Any]) -> ZeroShotRun:
    """A complete zero-shot run folder read back (:func:`clipaudit.runs.load_run`)."""
    path = Path(path)
    tables = {name: read_table_csv(path / f"{name}.csv") for name in _LOADED_COLUMNS}
    for name, columns in _LOADED_COLUMNS.items():
        # a file overwritten or cut short: said here, not met later as a KeyError
        missing = [column for column in columns if column not in tables[name].columns]
        if missing:
            raise ValueError(f"its {name} table has no column {', '.join(missing)}")
    # a model listed without a row would be left out of a report unsaid, and a table of no row
    # at all read as a run of no model; earlier clipaudits also completed a run whose one model
    # had every image fail
    listed = [m.get("label") for m in manifest.get("models") or [] if isinstance(m, dict)]
    scored = set(tables["groups"]["model"])
    unscored = [label for label in listed if label not in scored]
    if unscored:
        raise ValueError(
            f"its groups table has no row of model {unscored[0]!r}, which its manifest lists"
        )
    groups = _with_candidates(
        tables["groups"], bool((manifest.get("settings") or {}).get("all_concepts"))
    )
    return ZeroShotRun(path, groups, tables["concepts"], manifest)


# the columns the readers of a loaded run index (the report, macro_f1_table, models)
_LOADED_COLUMNS = {
    "groups": ("model", "group", "category", "macro_f1", "accuracy", "n_images", "n_concepts"),
    "concepts": ("model", "group", "concept", "precision", "recall", "f1", "support"),
}


def _with_candidates(groups: pd.DataFrame, all_concepts: bool) -> pd.DataFrame:
    """``groups`` with ``n_candidates`` and ``chance`` filled where a model's results are from
    before the columns: they classified among the scored concepts, unless among all of a
    group's (a number they did not record: missing); their chance is the one they showed,
    1 / n_candidates (their images' counts per concept are not in the table)."""
    for column in ("n_candidates", "chance"):
        if column not in groups.columns:
            groups = groups.assign(**{column: float("nan")})
    if not all_concepts:
        groups["n_candidates"] = groups["n_candidates"].fillna(groups["n_concepts"])
    groups["chance"] = groups["chance"].fillna(1 / groups["n_candidates"])
    return groups


def _check_options(options: dict[str, Any]) -> None:
    """Refuse an option of :func:`run_zeroshot` that it does not take, naming the closest ones
    (Python would say only "unexpected keyword argument")."""
    import inspect

    known = [f.name for f in fields(ZeroShotSettings) if f.name not in ("models", "images")]
    known += [
        name
        for name, parameter in inspect.signature(run_zeroshot).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    for name in options:
        if name not in known:
            raise SettingsError(
                f"unknown zeroshot option {name!r}{did_you_mean(name, known)}; "
                f"options are {', '.join(known)}"
            )


def _as_the_run_spells(out: Path, images: str) -> str:
    """``images`` as the run in ``out`` spells it where both name one local folder or file
    (``good``, ``./good``, ``in/../good``, its absolute path, a link to it): the run resumes
    rather than being refused as other settings, and a model added to it lists the images as the
    others did (its predictions' paths, its skipped images; :func:`_spelled_as`). Where the run
    recorded ``inputs.images.resolved``, that is the folder: a relative spelling made from
    another working directory matches; a run written before is resolved from here. Else
    ``images`` (an ``hf:`` or URL source, which is no local path, among them), compared as the
    run folder does."""
    with contextlib.suppress(RunFolderError):  # no run there, or a damaged one: said later
        manifest = read_manifest(out)
        settings, inputs = manifest.get("settings"), manifest.get("inputs")
        recorded = settings.get("images") if isinstance(settings, dict) else None
        listed = inputs.get("images") if isinstance(inputs, dict) else None
        resolved = listed.get("resolved") if isinstance(listed, dict) else None
        where = resolved if isinstance(resolved, str) else recorded
        if (
            isinstance(recorded, str)
            and isinstance(where, str)
            and Path(where).exists()
            and Path(images).exists()  # a spelling that reaches no folder is said so later
            and Path(where).resolve() == Path(images).resolve()
        ):
            return recorded
    return images


def _resolved(images: str) -> dict[str, str]:
    """A local image source's absolute path, which :func:`_as_the_run_spells` compares with a
    later call's from any working directory; nothing for an ``hf:`` or URL source."""
    return {"resolved": str(Path(images).resolve())} if Path(images).exists() else {}


def _spelled_as(images: ImageSet, spelling: str) -> ImageSet:
    """``images`` (opened as ``images.source`` spells them, which reaches them from here) with
    their paths and source spelled as ``spelling``, the run's spelling of the same folder."""
    if spelling == images.source:
        return images

    # a path is the source, then "#" and a dataset's row or "/" and a file or shard member,
    # respelled as text: pathlib would shorten a member "./000.jpg", and a row is no file
    def lead(source: str) -> str:
        if images.kind == "huggingface":
            return f"{source}#"
        return "" if source == "." else f"{source.rstrip('/')}/"  # "." and "a" join as "a"

    given, wanted = lead(images.source), lead(spelling)

    def respelled(path: str) -> str:
        return wanted + path.removeprefix(given) if path.startswith(given) else path

    records = [replace(r, path=respelled(r.path)) for r in images.records]
    ignored = [{**item, "path": respelled(item["path"])} for item in images.ignored]
    return replace(images, source=spelling, records=records, ignored=ignored)


@keyword_checked
def run_zeroshot(
    models: Any,
    images: str | Path,
    out: str | Path | None = None,
    *,
    pretrained: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    **options: Any,
) -> ZeroShotRun:
    """Zero-shot awareness of ``models`` on the labelled ``images``, written to the run folder
    ``out`` (a new temporary folder when None) and returned.

    ``models``: a name (``"ViT-B-32"``, with ``pretrained=``), a ``(model, pretrained)`` pair, a
    :class:`ModelSpec`, or a list of them. ``options`` are :class:`ZeroShotSettings` fields
    (``registry``, ``groups``, ``templates``, ``device``...). Each model is a unit of the run:
    a killed or failed run resumes with the models it had finished; a folder of other settings is
    refused unless ``overwrite``. A run in which no group could be evaluated fails
    (:class:`~clipaudit.errors.RunFailedError`)."""
    import tempfile

    _check_options(options)
    # a number for out is os.fspath's bare TypeError, and a "no" for a switch would count as on
    check_arguments(
        {"out (the run folder, or None)": out} if out is not None else {},
        {"overwrite": overwrite, "progress": progress},
        print,
    )
    settings = ZeroShotSettings(models=model_specs(models, pretrained), images=images, **options)
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="clipaudit-zeroshot-"))
    # opened as given, which reaches the images from here; recorded as the run spells them
    given = settings.images
    settings = replace(settings, images=_as_the_run_spells(out, given))
    check_out_of_images(out, given)
    registry = load_registry(settings.registry)
    selected = registry.select(settings.groups)
    # every model's weights, before the first model spends hours: a typo in the last one's tag
    check_model_specs(settings.models)
    run_settings = settings.result_fields(registry)
    with RunFolder(
        out, "zeroshot", run_settings, overwrite=overwrite, libraries=LIBRARIES
    ) as folder:
        started = time.perf_counter()
        opened = open_images(
            given,
            registry,
            settings.groups,
            label_field=settings.label_field,
            image_column=settings.image_column,
            split=settings.split,
        )
        image_set = _spelled_as(opened, settings.images)
        listed_s = time.perf_counter() - started
        # "auto" is bf16 on one machine and fp32 on another: a run resumed elsewhere redoes
        # the models done at the other precision rather than set them beside these
        precision = resolve_precision(settings.precision, resolve_device(settings.device))
        units = [(spec, _model_identity(spec, image_set, precision)) for spec in settings.models]
        keys = [unit_key(spec.label, identity) for spec, identity in units]
        records = [
            _load_model_unit(folder, key, identity)
            for key, (_, identity) in zip(keys, units, strict=True)
        ]
        resumed = [record is not None for record in records]  # finished by an earlier session
        previous_models = [m.get("label") for m in (folder.previous or {}).get("models", [])]
        same_models = previous_models == [spec.label for spec in settings.models]
        if folder.was_complete and all(records) and same_models:
            # a table damaged since (cut short, edited) is written again from the models' units
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
                return replace(load_zeroshot_run(out, folder.previous), reused=True)
        folder.update(
            options=settings.describe(),
            inputs={
                "images": {**image_set.describe(), **_resolved(given)},
                "registry": selected.provenance(),
            },
        )
        for index, ((spec, identity), key) in enumerate(zip(units, keys, strict=True)):
            if records[index] is None:
                result = _evaluate_spec(spec, image_set, selected, settings, progress)
                if identity.get("hub") != result.info.get("hub"):
                    # the hub moved on between asking it and downloading: the results are
                    # kept as what was loaded, which a later run finds the hub (or cache) at
                    identity = {**identity, "hub": result.info.get("hub")}
                    key = keys[index] = unit_key(spec.label, identity)
                records[index] = _save_model_unit(folder, key, identity, result)
        # left out of this call (how a failing model is dropped): its results go, said so, also
        # where the run that made them was stopped part-way (its manifest lists no models)
        labels = {spec.label for spec in settings.models}
        finished = [_unit_label(folder, key) for key in folder.finished_units() if key not in keys]
        dropped = [
            label
            for label in dict.fromkeys([*previous_models, *finished])
            if isinstance(label, str) and label not in labels
        ]
        return _finish(folder, keys, records, resumed, image_set, settings, listed_s, dropped)


def _model_identity(spec: ModelSpec, images: ImageSet, precision: str) -> dict[str, Any]:
    """What one model's results depend on besides the run's settings: its weights and config
    files (by size, time and edges) or the hub commit they come from, the images (identities
    and labels), how they decode, and the ``precision`` it computes at (resolved: the settings
    hold "auto")."""
    files = {}
    for role, value in (("config", spec.model), ("checkpoint", spec.pretrained)):
        if value and Path(value).is_file():
            files[role] = file_identity(file_record(value))
    if spec.model.startswith("local-dir:"):  # a folder's config and weights
        folder = Path(spec.model.removeprefix("local-dir:"))
        for path in sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else ():
            files[f"local-dir/{path.name}"] = file_identity(file_record(path))
    digest = hashlib.blake2b(digest_size=16)
    for record in images.records:
        digest.update(f"{record.identity}\0{record.concept}\n".encode())
    # the decoding too: results made before a decoding change (EXIF orientation) are redone
    identity = {
        "model": spec.label,
        "files": files,
        "images": digest.hexdigest(),
        "decode_version": DECODE_VERSION,
        "precision": precision,
    }
    hub = hub_revision(spec)  # weights updated on the hub are another model's
    return identity if hub is None else {**identity, "hub": hub}


def _evaluate_spec(
    spec: ModelSpec,
    images: ImageSet,
    registry: Registry,
    settings: ZeroShotSettings,
    progress: bool,
) -> ModelResult:
    load_start = time.perf_counter()
    loaded = load_model(spec, settings.device, settings.precision, settings.seed)
    load_s = time.perf_counter() - load_start
    cache = None
    if settings.cache_dir is not None:
        key = cache_key(loaded, settings.jpeg_draft, settings.max_pixels)
        cache = EmbeddingCache(
            settings.cache_dir, key, {"model": loaded.info, "jpeg_draft": settings.jpeg_draft}
        )
    result = evaluate_model(
        loaded,
        images,
        registry,
        templates=settings.templates,
        all_concepts=settings.all_concepts,
        cache=cache,
        batch_size=settings.batch_size,
        workers=settings.workers,
        jpeg_draft=settings.jpeg_draft,
        max_pixels=settings.max_pixels,
        progress=progress,
    )
    result.timings["load_s"] = load_s
    result.info["cache"] = cache.describe() if cache is not None else None
    del loaded
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def _load_model_unit(
    folder: RunFolder, key: str, identity: dict[str, Any]
) -> dict[str, Any] | None:
    """A finished model's record, or None (the model is evaluated again) when it is not finished
    with ``identity`` or one of its tables is gone or unreadable (deleted, copied in part):
    merging would crash on it at every rerun."""
    import pyarrow.parquet as pq

    record = folder.load_unit(key, identity)
    if record is None:
        return None
    unit = folder.units / key
    tables = [unit / f"{name}.parquet" for name in ("predictions", "concepts", "groups")]
    tables += [
        _named_file(unit / "confusion", group, ".parquet")
        for group in record.get("confusion_groups", [])
    ]
    try:
        for table in tables:
            pq.read_metadata(table)  # the footer: a file cut short has none
    except (OSError, ValueError):  # pyarrow's ArrowInvalid is a ValueError
        return None
    return record


def _unit_label(folder: RunFolder, key: str) -> Any:
    """The model a unit's record names; None where the record cannot be read (the unit goes
    all the same, unnamed)."""
    with contextlib.suppress(OSError, ValueError, RecursionError, AttributeError):
        return json.loads(folder.unit_path(key).read_text(encoding="utf-8")).get("label")
    return None


def _save_model_unit(
    folder: RunFolder, key: str, identity: dict[str, Any], result: ModelResult
) -> dict[str, Any]:
    """Write one model's tables under ``units/<key>/`` and its record; returns the record."""
    unit = folder.units / key
    write_table(result.predictions, unit / "predictions", ("parquet",))
    write_table(result.concepts, unit / "concepts", ("parquet",))
    write_table(result.groups, unit / "groups", ("parquet",))
    for group, frame in result.confusions.items():
        write_table(confusion_table(frame), unit / "confusion" / file_stem(group), ("parquet",))
    record = {
        "label": result.label,
        "info": {
            **result.info,
            "timings": result.timings,
            "n_encoded": result.n_encoded,
            "n_cached": result.n_cached,
            "n_skipped_images": len(result.failures),
        },
        "confusion_groups": list(result.confusions),
        "failures": result.failures,
        "skipped_concepts": result.skipped_concepts,
        "skipped_groups": result.skipped_groups,
        "templates": result.templates,
    }
    folder.save_unit(key, identity, record)
    return {"identity": identity, **record}


def _finish(
    folder: RunFolder,
    keys: list[str],
    records: list[dict[str, Any]],
    resumed: list[bool],
    images: ImageSet,
    settings: ZeroShotSettings,
    listed_s: float,
    dropped: list[str],
) -> ZeroShotRun:
    """Merge the models' units into the run's outputs, fail a run with nothing evaluated;
    ``dropped``: the models of the run found that this call left out, whose units are pruned
    only once the run is about to complete."""
    units = [folder.units / key for key in keys]
    groups = _with_candidates(
        pd.concat([pd.read_parquet(u / "groups.parquet") for u in units], ignore_index=True),
        settings.all_concepts,
    )
    if groups.empty:
        failures = _unique(f for r in records for f in r["failures"])
        if failures and len(failures) == len(images.records):
            first = failures[0]
            raise RunFailedError(
                # failed, not "failed to decode": a model whose embeddings are not finite fails
                # every image it decoded
                f"no group could be evaluated (all {len(failures)} images failed, "
                f"e.g. {first['path']}: {first['reason']})"
            )
        needed = "images and 2 concepts" if settings.all_concepts else "images of 2 concepts"
        line = unscored_groups_line(_unique(g for r in records for g in r["skipped_groups"]))
        raise RunFailedError(
            f"no group could be evaluated (no group has {needed})" + (f"; {line}" if line else "")
        )
    # a model whose every image failed (NaN embeddings, weights broken) has no results to show
    # beside the others': the run is not complete without them
    empty = [r for r in records if not r["confusion_groups"]]
    if empty:
        first = empty[0]["failures"][0] if empty[0]["failures"] else None
        example = f", e.g. {first['path']}: {first['reason']}" if first else ""
        raise RunFailedError(
            f"model {', '.join(r['label'] for r in empty)} evaluated no group "
            f"({len(empty[0]['failures'])} of {len(images.records)} images failed{example}); "
            "fix it or leave it out and run again: the other models' results are kept"
        )
    concepts = pd.concat(
        [pd.read_parquet(u / "concepts.parquet") for u in units], ignore_index=True
    )
    predictions = pd.concat(
        [pd.read_parquet(u / "predictions.parquet") for u in units], ignore_index=True
    )
    from clipaudit.report import figures as draw

    out = folder.path
    shutil.rmtree(out / "confusion", ignore_errors=True)
    written = write_table(concepts, out / "concepts", ("csv",))
    written += write_table(groups, out / "groups", ("csv",))
    written += write_table(predictions, out / "predictions", ("parquet",))
    drawn = []  # what each figure shows: a report of this run copies it instead of drawing it
    for unit, record in zip(units, records, strict=True):
        label = record["label"]
        scores = groups[groups["model"] == label].set_index("group")["macro_f1"]
        for group in record["confusion_groups"]:
            matrix = confusion_from_table(
                pd.read_parquet(_named_file(unit / "confusion", group, ".parquet"))
            )
            target = out / "confusion" / file_stem(label) / file_stem(group)
            written += write_table(confusion_table(matrix), target, ("csv",))
            title = draw.confusion_title(label, group, scores[group])
            files = draw.write_confusion(matrix, title, target.parent, target.name)
            written += files.values()
            shown = draw.confusion_record(matrix, title, files, out)
            drawn.append({"model": label, "group": group, **shown})
    # not before: a call that fails keeps the left-out models' results, which the next call that
    # gives them again resumes instead of computing them again
    folder.prune_units(keys)
    first = records[0]["info"]
    manifest = folder.complete(
        models=[_counted_now(r["info"], done) for r, done in zip(records, resumed, strict=True)],
        dropped_models=dropped,
        device=first["device"],
        precision=first["precision"],
        templates={"setting": settings.templates, "by_group": records[0]["templates"]},
        n_images=len(images.records),
        skipped_images=_unique(f for r in records for f in r["failures"]),
        skipped_concepts=_unique(c for r in records for c in r["skipped_concepts"]),
        skipped_groups=_unique(g for r in records for g in r["skipped_groups"]),
        timings={"list_images_s": listed_s},
        outputs=[str(p.relative_to(out)) for p in written],
        confusion_figures=drawn,
    )
    return ZeroShotRun(out, groups, concepts, manifest)


def _counted_now(info: dict[str, Any], resumed: bool) -> dict[str, Any]:
    """A model's manifest entry, its counts this session's: ``n_encoded`` and ``n_cached`` the
    images it encoded and read from the cache, ``n_resumed`` those whose results an earlier
    session made (a resumed model's unit; its timings are that session's)."""
    if not resumed:
        return {**info, "n_resumed": 0}
    return {
        **info,
        "n_encoded": 0,
        "n_cached": 0,
        "n_resumed": info["n_encoded"] + info["n_cached"],
    }


def counts_this_call(info: dict[str, Any], reused: bool) -> tuple[int, int, int]:
    """A model's images encoded, read from the cache and taken from an earlier session's results
    by the call that returned a run, from its manifest entry; a run found complete (``reused``)
    keeps the manifest of the session that made it, and took every result from it."""
    counts = (info["n_encoded"], info["n_cached"], info.get("n_resumed", 0))
    return (0, 0, sum(counts)) if reused else counts


def _unique(items: Any) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for item in items:
        seen.setdefault(json.dumps(item, sort_keys=True), item)
    return list(seen.values())


# --------------------------------------------------------------------------- confusion files

# A confusion matrix's file is a table: its first column holds the true labels, each other column
# the counts of one predicted label, named by it. The first column's name is empty, which no concept
# name can be (the registry refuses an empty one), so that no concept ("true", "model", ...) clashes
# with it; runs written before named it "true", and the readers below find the labels by position,
# never by name, so that both read alike.


def confusion_table(matrix: pd.DataFrame) -> pd.DataFrame:
    """A confusion matrix (rows true, columns predicted) as the table its files hold."""
    table = pd.DataFrame(matrix.to_numpy(), columns=[str(c) for c in matrix.columns])
    table.insert(0, "", [str(i) for i in matrix.index])
    return table


def confusion_from_table(table: pd.DataFrame) -> pd.DataFrame:
    """The confusion matrix of a table as :func:`confusion_table` makes it, or as older runs wrote
    it (the label column named "true"): rows true, columns predicted, counts as integers."""
    return pd.DataFrame(
        table.iloc[:, 1:].to_numpy(dtype=np.int64),
        index=pd.Index(table.iloc[:, 0].astype(str).tolist(), name="true"),
        columns=pd.Index([str(c) for c in table.columns[1:]], name="predicted"),
    )


def read_confusion_csv(path: str | os.PathLike) -> pd.DataFrame:
    """A confusion matrix's CSV file as :func:`confusion_from_table` reads it. Every cell is read
    as text first, so that no label changes: not a header pandas would rename (an empty or a
    repeated one), nor a concept named as a name column ("model", "predicted"), whose counts
    :func:`~clipaudit.provenance.read_table_csv` would read as text, nor one named as a missing
    value ("NA", "null")."""
    cells = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
    try:
        return confusion_from_table(cells.iloc[1:].set_axis(cells.iloc[0].tolist(), axis=1))
    except ValueError as exc:  # a count that is no integer: the file was damaged
        raise InputError(
            f"{path} is no confusion matrix (labels, then one integer count per predicted "
            f"label): {exc}"
        ) from None

"""Settings of the miniature world and of the tiny CLIP trained on it, validated at construction.

Four frozen dataclasses:

- :class:`Misalignment`: how captions treat one concept group: how often they mention it at all
  (``selection``; 1 - selection is the paper's selection bias) and how often a mentioned value is
  replaced by a wrong one of the same group (``perturbation``, the paper's perturbation bias);
- :class:`CausalLink`: a parent group whose value shifts a child group's distribution (the paper's
  dependent semantics), e.g. Background -> Color;
- :class:`WorldSettings`: the misalignment of every group, the causal links, image size, how many
  training pairs and held-out images, and the seed;
- :class:`TrainSettings`: the tiny open_clip model and its optimisation.

Every problem raises :class:`~clipaudit.errors.SettingsError` naming what was expected and what was
got, before any pixel is rendered or any step is trained.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from clipaudit.errors import CheckedFields, SettingsError, did_you_mean

WORLD_REGISTRY = "miniworld"
# The groups of concepts/miniworld.yaml, in its order (the renderer draws each of them).
WORLD_GROUPS = ("Shape", "Color", "Background", "Texture", "Size", "Position", "Post-processing")
DEVICES = ("auto", "cpu", "cuda")


def _number(value: Any, what: str, low: float, high: float) -> float:
    """``value`` as a float in ``[low, high]``; booleans and non-numbers are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise SettingsError(f"{what} must be a number in [{low}, {high}], got {value!r}")
    if not low <= value <= high:
        raise SettingsError(f"{what} must lie in [{low}, {high}], got {value!r}")
    return float(value)


def _integer(value: Any, what: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(f"{what} must be an integer >= {low}, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise SettingsError(f"{what} must be an integer {bounds}, got {value!r}")
    return value


def _group_name(name: Any, what: str) -> str:
    if name not in WORLD_GROUPS:
        raise SettingsError(
            f"{what}: expected one of the world's groups {', '.join(WORLD_GROUPS)}, got {name!r}"
            f"{did_you_mean(str(name), WORLD_GROUPS)}"
        )
    return name


@dataclass(frozen=True)
class Misalignment(CheckedFields):
    """How the captions of the world treat one concept group.

    ``selection``: the probability that a caption mentions the group's value at all.
    ``perturbation``: the probability that a mentioned value is replaced by another value of the
    same group, drawn uniformly among the wrong ones. With K values, ``perturbation = (K-1)/K``
    makes the written value independent of the picture.
    """

    selection: float
    perturbation: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "selection", _number(self.selection, "selection rate", 0, 1))
        object.__setattr__(
            self, "perturbation", _number(self.perturbation, "perturbation rate", 0, 1)
        )


@dataclass(frozen=True)
class CausalLink(CheckedFields):
    """``parent -> child``: with probability ``strength`` the child takes the value its parent's
    value points to (the parent's i-th value points to the child's ``i mod K_child``-th), otherwise a
    uniform one. Zero-shot held-out images set the labelled group's value by intervention."""

    parent: str
    child: str
    strength: float

    def __post_init__(self) -> None:
        _group_name(self.parent, "causal link parent")
        _group_name(self.child, "causal link child")
        if self.parent == self.child:
            raise SettingsError(
                f"a causal link needs two different groups, got {self.parent!r} -> {self.child!r}"
            )
        object.__setattr__(self, "strength", _number(self.strength, "causal link strength", 0, 1))


# The default world: a spread of groups always, sometimes, rarely and never captioned, and
# Background perturbed while its twin Color is not (both are always mentioned).
DEFAULT_MISALIGNMENT: dict[str, Misalignment] = {
    "Shape": Misalignment(1.0),
    "Color": Misalignment(1.0),
    "Background": Misalignment(1.0, perturbation=0.5),
    "Texture": Misalignment(0.3),
    "Size": Misalignment(0.02),
    "Position": Misalignment(0.0),
    "Post-processing": Misalignment(0.05),
}


@dataclass(frozen=True)
class WorldSettings(CheckedFields):
    """What the miniature world holds and how its captions are misaligned.

    ``misalignment`` maps every group of :data:`WORLD_GROUPS` to a :class:`Misalignment` (a bare
    number is read as a selection rate without perturbation). ``n_eval_per_group`` held-out
    images are rendered for each group, balanced over its values.
    """

    misalignment: Mapping[str, Misalignment] = field(
        default_factory=lambda: dict(DEFAULT_MISALIGNMENT)
    )
    causal_links: tuple[CausalLink, ...] = ()
    image_size: int = 32
    n_train: int = 16_000
    n_eval_per_group: int = 240
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.misalignment, Mapping):
            raise SettingsError(
                "misalignment must map group names to Misalignment(selection, perturbation), "
                f"got {type(self.misalignment).__name__}"
            )
        rates: dict[str, Misalignment] = {}
        for group, value in self.misalignment.items():
            _group_name(group, "misalignment")
            if isinstance(value, Misalignment):
                rates[group] = value
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                rates[group] = Misalignment(value)
            else:
                raise SettingsError(
                    f"misalignment of {group!r} must be a Misalignment or a selection rate, "
                    f"got {value!r}"
                )
        missing = [g for g in WORLD_GROUPS if g not in rates]
        if missing:
            raise SettingsError(
                f"misalignment must give every group of the world; missing {', '.join(missing)}"
            )
        object.__setattr__(self, "misalignment", {g: rates[g] for g in WORLD_GROUPS})
        links = tuple(self.causal_links)
        for link in links:
            if not isinstance(link, CausalLink):
                raise SettingsError(f"causal links must be CausalLink objects, got {link!r}")
        children = [link.child for link in links]
        repeated = sorted({c for c in children if children.count(c) > 1})
        if repeated:
            raise SettingsError(
                f"a group may have one causal parent; {', '.join(repeated)} has several"
            )
        _check_acyclic(links)
        object.__setattr__(self, "causal_links", links)
        _integer(self.image_size, "image size", 32, 256)
        if self.image_size % 16:
            raise SettingsError(
                f"image size must be a multiple of 16 (pixelation works in blocks of size/16), "
                f"got {self.image_size}"
            )
        _integer(self.n_train, "n_train (training pairs)", 1)
        _integer(self.n_eval_per_group, "n_eval_per_group (held-out images per group)", 6)
        _integer(self.seed, "seed", 0)

    def with_misalignment(
        self, group: str, *, what: str = "with_misalignment", **rates: float
    ) -> WorldSettings:
        """A copy with ``group``'s ``selection`` and/or ``perturbation`` changed (for sweeps);
        ``what`` names the setting in an error (e.g. the option it came from)."""
        _group_name(group, what)
        try:
            changed = dataclasses.replace(self.misalignment[group], **rates)
        except SettingsError as exc:  # a rate out of range: said with the setting it came from
            raise SettingsError(f"{what}: {exc}") from None
        return dataclasses.replace(self, misalignment={**self.misalignment, group: changed})

    def describe(self) -> dict[str, Any]:
        """JSON-ready form (what ``world.json`` records)."""
        return {
            "misalignment": {
                g: {"selection": m.selection, "perturbation": m.perturbation}
                for g, m in self.misalignment.items()
            },
            "causal_links": [dataclasses.asdict(link) for link in self.causal_links],
            "image_size": self.image_size,
            "n_train": self.n_train,
            "n_eval_per_group": self.n_eval_per_group,
            "seed": self.seed,
        }


def _check_acyclic(links: tuple[CausalLink, ...]) -> None:
    parent_of = {link.child: link.parent for link in links}
    for start in parent_of:
        seen = [start]
        node = start
        while node in parent_of:
            node = parent_of[node]
            if node in seen:
                # seen runs child -> parent -> ...; written parent -> child, closing the loop
                loop = list(reversed(seen[seen.index(node) :]))
                cycle = " -> ".join([*loop, loop[0]])
                raise SettingsError(f"causal links must not form a cycle, got {cycle}")
            seen.append(node)


@dataclass(frozen=True)
class TrainSettings(CheckedFields):
    """The tiny open_clip CLIP and how it is trained (AdamW, linear warm-up then cosine decay).

    The model is a ViT image tower (``width``, ``layers``, ``patch_size``, None: a quarter of the
    image side, so 16 patches whatever the size; heads of 32 dims) and a
    causal text transformer (``text_width``, ``text_layers``) over open_clip's tokenizer with a
    short ``context_length`` (None: as long as the longest caption), both projected to
    ``embed_dim``. ``threads`` None times a step on one thread and on every core the process may
    run on, and trains with the faster (a busy machine makes several threads much slower); the
    trained weights are reproducible bit for bit with a fixed ``threads``. A checkpoint is written
    every ``checkpoint_every`` steps.
    """

    steps: int = 2500
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_steps: int = 100
    embed_dim: int = 64
    width: int = 64
    layers: int = 2
    patch_size: int | None = None
    text_width: int = 32
    text_layers: int = 1
    context_length: int | None = None
    device: str = "auto"
    threads: int | None = None
    checkpoint_every: int = 250
    seed: int = 0

    def __post_init__(self) -> None:
        _integer(self.steps, "steps", 1)
        _integer(self.batch_size, "batch size", 2)
        _number(self.lr, "learning rate", 1e-8, 1.0)
        _number(self.weight_decay, "weight decay", 0.0, 10.0)
        _integer(self.warmup_steps, "warm-up steps", 0)
        for name in ("embed_dim", "width", "text_width"):
            value = _integer(getattr(self, name), name, 32)
            if value % 32:
                raise SettingsError(f"{name} must be a multiple of 32 (heads of 32), got {value}")
        _integer(self.layers, "layers", 1)
        _integer(self.text_layers, "text layers", 1)
        if self.patch_size is not None:
            _integer(self.patch_size, "patch size", 2)
        if self.context_length is not None:
            _integer(self.context_length, "context length", 4, 77)
        if self.device not in DEVICES:
            raise SettingsError(
                f"device must be one of {', '.join(DEVICES)}, got {self.device!r}"
                f"{did_you_mean(str(self.device), DEVICES)}"
            )
        if self.threads is not None:
            _integer(self.threads, "threads", 1)
        _integer(self.checkpoint_every, "checkpoint_every", 1)
        # torch.manual_seed takes 64 bits: a larger seed would fail only after the rendering
        _integer(self.seed, "seed", 0, 2**64 - 1)

    def model_config(self, image_size: int, context_length: int) -> dict[str, Any]:
        """The open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``) for renders of
        ``image_size`` pixels and captions of ``context_length`` tokens (the resolved
        :attr:`context_length`); ``--model path/to/<name>.json`` loads it."""
        patch = self.patch_size or image_size // 4
        if image_size % patch:
            raise SettingsError(
                f"patch size must divide the image size; got patch {patch} for "
                f"{image_size}x{image_size} renders"
            )
        return {
            "embed_dim": self.embed_dim,
            "vision_cfg": {
                "image_size": image_size,
                "layers": self.layers,
                "width": self.width,
                "patch_size": patch,
                "head_width": 32,
            },
            "text_cfg": {
                "context_length": context_length,
                "vocab_size": 49408,  # open_clip's SimpleTokenizer, which get_tokenizer returns
                "width": self.text_width,
                "heads": self.text_width // 32,
                "layers": self.text_layers,
            },
        }

    def describe(self) -> dict[str, Any]:
        """JSON-ready form (a training's identity is built from it, a demo's settings hold it)."""
        return dataclasses.asdict(self)

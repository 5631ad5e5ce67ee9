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
got, before any pixel is rendered or any step is trained. :func:`parse_misalignment` and
:func:`parse_rates` read the CLI's ``--set`` and ``--rates`` into them.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
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


def _integer(value: Any, what: str, low: int, high: int | None = None, *, option: str = "") -> int:
    """``value`` as an integer in its bounds; ``option``, the CLI flag that sets it, is named in
    the error with its Python argument (a user of either reads which to change)."""
    bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        raise SettingsError(f"{what} must be an integer {bounds}, got {value!r}{_fix(option)}")
    return value


def _fix(option: str) -> str:
    """``--n-train`` -> "; change --n-train (n_train= in Python)"; "" without an option."""
    if not option:
        return ""
    return f"; change {option} ({option.removeprefix('--').replace('-', '_')}= in Python)"


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
        size = self.image_size
        if (
            isinstance(size, bool)
            or not isinstance(size, int)
            or size % 16
            or not 32 <= size <= 256
        ):
            # one message for both rules: a size fixed for one would fail the other next
            raise SettingsError(
                "image size must be a multiple of 16 in [32, 256] such as 32, 48 or 64 "
                f"(pixelation works in blocks of size/16), got {size!r}{_fix('--image-size')}"
            )
        _integer(self.n_train, "n_train (training pairs)", 1, option="--n-train")
        _integer(
            self.n_eval_per_group,
            "n_eval_per_group (held-out images per group)",
            6,
            option="--n-eval-per-group",
        )
        _integer(self.seed, "seed", 0, option="--seed")

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
        _integer(self.steps, "steps", 1, option="--steps")
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
                f"{did_you_mean(str(self.device), DEVICES)}{_fix('--device')}"
            )
        if self.threads is not None:
            _integer(self.threads, "threads", 1, option="--threads")
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


# the rates a --set may name: Misalignment's fields
RATE_KINDS = tuple(f.name for f in dataclasses.fields(Misalignment))
SET_SYNTAX = "GROUP=RATE or GROUP.selection=RATE or GROUP.perturbation=RATE, e.g. Texture=0.5"


def parse_misalignment(items: Sequence[str], world: WorldSettings) -> WorldSettings:
    """``--set Texture=0.5`` (a selection rate) or ``--set Background.perturbation=0.3`` applied
    to ``world``; one rate set twice to two values is refused (the last would win without a
    word)."""
    given: dict[tuple[str, str], tuple[float, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        group, _, which = key.strip().partition(".")
        which = which or "selection"
        if not sep or which not in RATE_KINDS:
            hint = did_you_mean(which, RATE_KINDS) if sep else ""
            raise SettingsError(f"--set: expected {SET_SYNTAX}; got {item!r}{hint}")
        if not group:
            raise SettingsError(f"--set {item!r}: the group is missing; expected {SET_SYNTAX}")
        try:
            rate = float(value)
        except ValueError:
            raise SettingsError(
                f"--set {item!r}: the rate must be a number in [0, 1], got {value.strip()!r}"
            ) from None
        world = world.with_misalignment(group, what=f"--set {item!r}", **{which: rate})
        earlier = given.setdefault((group, which), (rate, item))
        if earlier[0] != rate:
            raise SettingsError(
                f"--set {earlier[1]!r} and --set {item!r} both set {group}'s {which} rate; give one"
            )
    return world


def parse_rates(text: str) -> tuple[float, ...]:
    """``--rates 0,0.05,0.2``: comma-separated rates in [0, 1], increasing (the dose-response
    curve joins them in the order given)."""
    parts = [part.strip() for part in text.split(",")]
    if parts[-1] == "":  # "0,1," as "0,1"; an empty part before the end is a lost rate
        parts.pop()
    example = "such as 0,0.05,0.2"
    if not parts:
        raise SettingsError(
            f"--rates: expected comma-separated rates in [0, 1] {example}; got none"
        )
    rates = []
    for number, part in enumerate(parts, 1):
        why = f"rate {number} is empty" if not part else f"{part!r} is not a number"
        try:
            rates.append(float(part))
        except ValueError:
            raise SettingsError(
                f"--rates: expected numbers {example}; got {text!r} ({why})"
            ) from None
    outside = [part for part, rate in zip(parts, rates, strict=True) if not 0 <= rate <= 1]
    if outside:
        raise SettingsError(
            f"--rates: expected rates in [0, 1]; got {text!r} ({', '.join(outside)} outside)"
        )
    for before, after in itertools.pairwise(rates):
        if after == before:
            raise SettingsError(
                f"--rates: expected distinct rates; got {text!r} ({after:g} is given twice)"
            )
        if after < before:
            raise SettingsError(
                f"--rates: expected rates in increasing order {example}; got {text!r} "
                f"({after:g} after {before:g}): sort them"
            )
    return tuple(rates)

"""A sweep for ``clipaudit demo --sweep GROUP``: one world model per rate of one group.

Every model sees the same pictures in the same order from the same initial weights; only the
captions of the swept group change. The pictures and the held-out set are rendered once into
``out/world/``, or taken from a world already rendered with the same settings (``pictures``: the
demo's own, so that they are not rendered twice); each rate gets its captions and its model in
``out/selection-<rate>/`` (or ``perturbation-<rate>``), so a killed sweep resumes where it stopped
(finished rates and their captions are kept, the interrupted one resumes from its checkpoint).
The models share one architecture (the context holds the longest caption of any rate) and are
named by their rate (``miniworld-clip-selection-0.05``), so a zero-shot run can take them all side
by side.

The rates' captions are coupled: caption ``i`` draws the same uniform numbers at every rate, so a
caption that mentions the group at rate 0.2 also mentions it at rate 0.5.

The models are trained one after the other. Training them as one batched model
(``torch.func.stack_module_state`` with ``vmap`` over ``functional_call`` of open_clip's CLIP)
does not pay on a CPU: vmap has no batching rule for the CPU attention kernel and falls back to
a loop, and the step is bound by arithmetic, not by per-operation overhead.
``benchmarks/world_sweep_batching.py`` measures both.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from clipaudit.errors import InputError, SettingsError
from clipaudit.world.settings import TrainSettings, WorldSettings, _group_name, _number
from clipaudit.world.training import (
    DEFAULT_NAME,
    TrainedModel,
    fitting_context,
    load_captions,
    train_world_model,
)
from clipaudit.world.world import RenderedWorld, open_world, recaption_world, render_world

RATE_KINDS = ("selection", "perturbation")
# (rate, step done, steps in all, loss of that step)
SweepProgress = Callable[[float, int, int, float], None]


@dataclass(frozen=True)
class SweepPoint:
    """One rate of a sweep: its captioned world and the model trained on it."""

    rate: float
    world: RenderedWorld
    model: TrainedModel


@dataclass(frozen=True)
class Sweep:
    """A finished sweep: the swept group and kind of rate, the shared pictures, one point per rate."""

    group: str
    kind: str
    pictures: RenderedWorld
    points: tuple[SweepPoint, ...]


def sweep_rate_values(rates: Sequence[float], kind: str) -> list[float]:
    """``rates`` checked: at least one, each in [0, 1], distinct in the 6 significant digits
    that name their folders; -0.0 is 0.0."""
    if not rates:
        raise SettingsError("a sweep needs at least one rate, got none")
    values = [_number(rate, f"sweep {kind} rate", 0, 1) + 0.0 for rate in rates]
    if len({f"{rate:g}" for rate in values}) != len(values):
        raise SettingsError(
            f"sweep rates must differ from each other in 6 significant digits, got {list(rates)}"
        )
    return values


def sweep_rates(
    settings: WorldSettings,
    group: str,
    rates: Sequence[float],
    out_dir: str | Path,
    train: TrainSettings,
    *,
    kind: str = "selection",
    name: str = DEFAULT_NAME,
    progress: SweepProgress | None = None,
    pictures: RenderedWorld | None = None,
) -> Sweep:
    """Train one model per ``rates`` value of ``group``'s ``kind`` rate, all else as in
    ``settings``; returns per-rate worlds and checkpoints (see the module docstring).
    ``pictures``: a world rendered with ``settings`` whose pictures every rate shares, instead of
    rendering them into ``out_dir/world``."""
    _group_name(group, "sweep group")
    if kind not in RATE_KINDS:
        raise SettingsError(f"sweep kind must be one of {', '.join(RATE_KINDS)}, got {kind!r}")
    values = sweep_rate_values(rates, kind)

    out = Path(out_dir)
    fix = "give pictures rendered with the sweep's world settings"
    if pictures is None:
        fix = "choose another folder for this sweep"
        pictures_dir = out / "world"
        if (pictures_dir / "world.json").is_file():
            pictures = open_world(pictures_dir)
        else:
            pictures = render_world(settings, pictures_dir)
    if pictures.info["settings"] != settings.describe():
        raise SettingsError(f"{str(pictures.path)!r} holds pictures of other world settings; {fix}")

    worlds = []
    for rate in values:
        changed = settings.with_misalignment(group, **{kind: rate})
        worlds.append(_recaptioned(pictures, changed, out / f"{kind}-{rate:g}"))
    if train.context_length is None:
        longest = max(fitting_context(load_captions(world)) for world in worlds)
        train = dataclasses.replace(train, context_length=longest)
    points = []
    for rate, world in zip(values, worlds, strict=True):
        report = None if progress is None else _reporter(progress, rate)
        model_name = f"{name}-{kind}-{rate:g}"
        model = train_world_model(world, world.path, train, name=model_name, progress=report)
        points.append(SweepPoint(rate, world, model))
    return Sweep(group, kind, pictures, tuple(points))


def _recaptioned(pictures: RenderedWorld, settings: WorldSettings, folder: Path) -> RenderedWorld:
    """The captions of ``settings`` for ``pictures`` in ``folder``: those an earlier sweep wrote
    there, else written now (rewritten, they would be new files to every stage that reads them,
    and a resumed sweep would count their coverage again)."""
    with contextlib.suppress(InputError, KeyError, TypeError):  # none there, or hand-edited
        earlier = open_world(folder)
        if (
            earlier.info["settings"] == settings.describe()
            and earlier.info.get("registry") == pictures.info.get("registry")
            and earlier.images_path == pictures.images_path
            and earlier.eval_path == pictures.eval_path
            and earlier.captions_path.is_file()
        ):
            return earlier
    return recaption_world(pictures, settings, folder)


def _reporter(progress: SweepProgress, rate: float) -> Callable[[int, int, float], None]:
    def report(step: int, steps: int, loss: float) -> None:
        progress(rate, step, steps, loss)

    return report

"""The miniature world: rendered pictures, captions with chosen misalignment, a tiny CLIP trained on
them, and the audit of what it learned: Cai et al. (NeurIPS 2025)'s finding, made in minutes on a
2-core CPU.

A world (:class:`WorldSettings`) renders one object per picture with a shape, colour, pattern,
size, place, backdrop and edit (the groups of ``concepts/miniworld.yaml``); its captions mention
each group with a chosen selection rate and replace mentioned values by wrong ones with a chosen
perturbation rate. A tiny open_clip CLIP trained on the pairs (:class:`TrainSettings`) then learns
the groups its captions carry, which the demo (:mod:`clipaudit.demo`) shows through the audit's own
coverage, zero-shot and report stages.

Modules: ``settings`` (validated settings), ``scenes`` (what each picture holds), ``render``
(pixels), ``captions`` (text), ``world`` (the world's folder, and the world as a run folder),
``training`` (the model), ``sweep`` (one model per rate). Importing this package loads neither
torch nor open_clip; training imports them when called.
"""

from __future__ import annotations

from clipaudit.world.settings import (
    DEFAULT_MISALIGNMENT,
    WORLD_GROUPS,
    WORLD_REGISTRY,
    CausalLink,
    Misalignment,
    TrainSettings,
    WorldSettings,
)
from clipaudit.world.sweep import Sweep, SweepPoint, sweep_rates
from clipaudit.world.training import TrainedModel, train_world_model
from clipaudit.world.world import (
    RenderedWorld,
    WorldRun,
    open_world,
    recaption_world,
    render_world,
    render_world_run,
    world_registry,
)

__all__ = [
    "DEFAULT_MISALIGNMENT",
    "WORLD_GROUPS",
    "WORLD_REGISTRY",
    "CausalLink",
    "Misalignment",
    "RenderedWorld",
    "Sweep",
    "SweepPoint",
    "TrainSettings",
    "TrainedModel",
    "WorldRun",
    "WorldSettings",
    "open_world",
    "recaption_world",
    "render_world",
    "render_world_run",
    "sweep_rates",
    "train_world_model",
    "world_registry",
]

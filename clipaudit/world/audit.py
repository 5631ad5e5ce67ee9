"""The standard audit of a world model, in memory: caption coverage beside zero-shot awareness.

This runs clipaudit's own pieces on a rendered world and a trained model, without writing a run
folder (the CLI's demo writes its run through the run-folder layer): the curated lexical matcher
over the training captions gives each group's measured coverage, and
:func:`clipaudit.zeroshot.evaluate_model` on the held-out pictures (read by
:func:`clipaudit.images.open_images`, the model loaded by :func:`clipaudit.models.load_model`)
gives each group's macro-F1. :func:`world_audit` puts them in one table with the chosen and
realised rates and chance; :func:`spearman` is the rank correlation the paper's claim rests on.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clipaudit.registry import Registry
from clipaudit.world.world import RenderedWorld, world_registry

if TYPE_CHECKING:
    import pandas as pd

AUDIT_COLUMNS = [
    "group",
    "category",
    "n_values",
    "chance",
    "chosen_selection",
    "chosen_perturbation",
    "true_mention_rate",
    "coverage",
    "macro_f1",
]


def measured_coverage(world: RenderedWorld, registry: Registry) -> dict[str, float]:
    """Share of the world's training captions that mention each group, by the curated matcher."""
    import pandas as pd

    from clipaudit.lexical import build_matcher

    captions = pd.read_parquet(world.captions_path, columns=["caption"])["caption"].tolist()
    matcher = build_matcher(registry)
    group_of = np.array([c.group for c in registry.concepts], dtype=object)
    rows, concepts = matcher.match_pairs(captions)
    coverage = {}
    for group in (g.name for g in registry.groups):
        hit = group_of[concepts] == group
        coverage[group] = len(np.unique(rows[hit])) / len(captions)
    return coverage


def zeroshot_scores(
    world: RenderedWorld,
    config: str | Path,
    checkpoint: str | Path,
    *,
    templates: str = "none",
    device: str = "cpu",
) -> pd.DataFrame:
    """clipaudit's zero-shot table (one row per group: macro_f1, accuracy, ...) of a trained world
    model on the world's held-out pictures."""
    from clipaudit.images import open_images
    from clipaudit.models import ModelSpec, load_model
    from clipaudit.zeroshot import evaluate_model

    registry = world_registry()
    loaded = load_model(ModelSpec(str(config), str(checkpoint)), device=device)
    images = open_images(world.eval_path, registry)
    return evaluate_model(loaded, images, registry, templates=templates).groups


def world_audit(
    world: RenderedWorld,
    config: str | Path,
    checkpoint: str | Path,
    *,
    templates: str = "none",
    device: str = "cpu",
) -> pd.DataFrame:
    """Per group: category, chance macro-F1 (1/K), chosen rates, true-mention rate, measured
    coverage of the training captions, and zero-shot macro-F1 of the model."""
    import pandas as pd

    registry = world_registry()
    coverage = measured_coverage(world, registry)
    scores = zeroshot_scores(world, config, checkpoint, templates=templates, device=device)
    f1 = dict(zip(scores["group"], scores["macro_f1"], strict=True))
    rows = []
    for group in registry.groups:
        rates = world.info["rates"][group.name]
        k = len(registry.concepts_in(group.name))
        rows.append(
            {
                "group": group.name,
                "category": group.category,
                "n_values": k,
                "chance": 1 / k,
                "chosen_selection": rates["chosen_selection"],
                "chosen_perturbation": rates["chosen_perturbation"],
                "true_mention_rate": rates["true_mention_rate"],
                "coverage": coverage[group.name],
                "macro_f1": f1[group.name],
            }
        )
    return pd.DataFrame(rows, columns=AUDIT_COLUMNS)


def spearman(x: np.ndarray | list[float], y: np.ndarray | list[float]) -> float:
    """Spearman rank correlation (ties take their mean rank), as scipy.stats.spearmanr."""
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)

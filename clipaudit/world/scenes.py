"""What each picture of the world holds: one value per concept group, drawn with the causal links.

A scene is a row of concept indices, one per group of :data:`~clipaudit.world.settings.WORLD_GROUPS`
(index ``i`` is the group's ``i``-th concept in the registry's order). Groups without a causal
parent are uniform; a child follows its parent with the link's strength. Held-out images fix one
group's value (an intervention: the link into that group is cut, links out of it still act).
"""

from __future__ import annotations

import numpy as np

from clipaudit.errors import RegistryError
from clipaudit.registry import Registry
from clipaudit.world.settings import WORLD_GROUPS, WorldSettings


def group_values(registry: Registry) -> dict[str, tuple[str, ...]]:
    """Concept names of every world group, in registry order; refuses a registry without them."""
    names = {g.name for g in registry.groups}
    missing = [g for g in WORLD_GROUPS if g not in names]
    if missing:
        raise RegistryError(
            f"registry {registry.name!r} lacks the world's group(s) {', '.join(missing)}; "
            "the world renders the groups of concepts/miniworld.yaml"
        )
    return {g: tuple(c.name for c in registry.concepts_in(g)) for g in WORLD_GROUPS}


def _order(settings: WorldSettings) -> list[str]:
    """Groups with every parent before its children."""
    parent_of = {link.child: link.parent for link in settings.causal_links}
    order: list[str] = []

    def visit(group: str) -> None:
        if group in order:
            return
        if group in parent_of:
            visit(parent_of[group])
        order.append(group)

    for group in WORLD_GROUPS:
        visit(group)
    return order


def sample_scenes(
    settings: WorldSettings,
    values: dict[str, tuple[str, ...]],
    n: int,
    rng: np.random.Generator,
    fixed: tuple[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """``n`` scenes as ``{group: int array of concept indices}``.

    ``fixed = (group, indices)`` sets that group's values (held-out images labelled by it).
    Every group draws from ``rng`` in the same order whatever is fixed, so the other groups of a
    seeded set do not depend on which group is fixed.
    """
    links = {link.child: link for link in settings.causal_links}
    scenes: dict[str, np.ndarray] = {}
    for group in _order(settings):
        k = len(values[group])
        uniform = rng.integers(0, k, n)
        follow = rng.random(n)
        if fixed is not None and fixed[0] == group:
            scenes[group] = np.asarray(fixed[1], dtype=np.int64)
        elif group in links:
            link = links[group]
            pointed = scenes[link.parent] % k
            scenes[group] = np.where(follow < link.strength, pointed, uniform)
        else:
            scenes[group] = uniform
    return {g: scenes[g] for g in WORLD_GROUPS}

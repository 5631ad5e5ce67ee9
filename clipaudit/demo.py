"""The embedded demo: an audit of a miniature world whose caption misalignment is chosen, not found.

A seeded caption world describes scenes that all have an animal, a colour, a place, weather, a texture,
an emotion and a camera viewpoint; each caption mentions each of those groups with a chosen probability
(the misalignment: textures, emotions and viewpoints are rarely said, as on LAION). The demo then runs
the real tools on it and compares what they measure with what was chosen: ``coverage count`` over
the world's captions must measure exactly the planted coverage of each group and find exactly the
planted mentions. Later stages of the audit (a tiny OpenCLIP trained on a rendered world, its
zero-shot awareness, the theory check) build on this world.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipaudit.errors import SettingsError
from clipaudit.provenance import base_manifest, write_json
from clipaudit.registry import Registry, load_registry

# Chosen misalignment: the probability that a caption mentions each group's attribute of its scene.
DEFAULT_MENTION_RATES: dict[str, float] = {
    "Animal": 0.95,
    "Color": 0.60,
    "Scene": 0.45,
    "Weather": 0.20,
    "Texture": 0.05,
    "Emotion": 0.03,
    "Viewpoint": 0.02,
}

# How each group's concept name is said in a caption ({} is the concept's name).
_PHRASES: dict[str, str] = {
    "Viewpoint": "{} photo of",
    "Scene": "in a {}",
    "Weather": "in the {}",
}
_WEATHER_PHRASES = {
    "overcast": "on an overcast day",
    "rainbow": "under a rainbow",
    "moonlight": "in the moonlight",
}


@dataclass(frozen=True)
class DemoSettings:
    """Size, seed and chosen misalignment of the demo world."""

    n_captions: int = 20_000
    seed: int = 0
    mention_rates: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MENTION_RATES))
    workers: int = 2

    def __post_init__(self) -> None:
        if not isinstance(self.n_captions, int) or self.n_captions < 100:
            raise SettingsError(f"n_captions must be an integer >= 100, got {self.n_captions!r}")
        for group, rate in self.mention_rates.items():
            if not 0.0 <= rate <= 1.0:
                raise SettingsError(f"mention rate of {group!r} must lie in [0, 1], got {rate!r}")


def world_captions(registry: Registry, settings: DemoSettings) -> tuple[list[str], list[list[str]]]:
    """Seeded captions of the miniature world and, for each, the concepts it was written to mention."""
    rng = random.Random(settings.seed)
    groups = {g: [c.name for c in registry.concepts_in(g)] for g in settings.mention_rates}
    captions, planted = [], []
    for _ in range(settings.n_captions):
        scene = {g: rng.choice(names) for g, names in groups.items()}
        said = {g: rng.random() < rate for g, rate in settings.mention_rates.items()}
        # the subject is always there; it is named only when the Animal group is mentioned
        subject = scene["Animal"] if said.get("Animal", True) else "animal"
        adjectives = [scene[g] for g in ("Emotion", "Texture", "Color") if said.get(g)]
        words = ["a"]
        if said.get("Viewpoint"):
            words = ["a", _PHRASES["Viewpoint"].format(scene["Viewpoint"]), "a"]
        words += [*adjectives, subject]
        if said.get("Scene"):
            words.append(_PHRASES["Scene"].format(scene["Scene"]))
        if said.get("Weather"):
            weather = scene["Weather"]
            words.append(_WEATHER_PHRASES.get(weather, _PHRASES["Weather"].format(weather)))
        captions.append(" ".join(words).capitalize() + ".")
        planted.append(
            [
                scene[g]
                for g in settings.mention_rates
                if said.get(g) and not (g == "Animal" and subject == "animal")
            ]
        )
    return captions, planted


def run_demo(
    out_dir: str | Path,
    settings: DemoSettings | None = None,
    *,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Make the caption world, audit it, and write ``summary.json`` into ``out_dir``; returns the summary."""
    import pandas as pd

    from clipaudit.coverage import CoverageSettings, count_coverage
    from clipaudit.metrics import multilabel_scores

    settings = settings or DemoSettings()
    out_dir = Path(out_dir)
    registry = load_registry().select(list(settings.mention_rates))
    clock = time.perf_counter()

    echo(
        f"1/2 caption coverage of a world of {settings.n_captions:,} captions with chosen mention rates"
    )
    captions, planted = world_captions(registry, settings)
    corpus = out_dir / "world" / "captions.parquet"
    corpus.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": range(len(captions)), "caption": captions}).to_parquet(corpus, index=False)
    coverage = count_coverage(
        [corpus],
        registry,
        out_dir / "coverage",
        CoverageSettings(workers=settings.workers, per_caption=True, progress=False),
    )
    found = pd.read_parquet(out_dir / "coverage" / "matches.parquet")["concepts"].map(list).tolist()
    matching = multilabel_scores(planted, found, [c.name for c in registry.concepts])
    groups = coverage.groups.set_index("group")
    group_of = {c.name: c.group for c in registry.concepts}
    coverage_rows = [
        {
            "group": group,
            "chosen_rate": rate,
            # what the world actually wrote (a binomial draw around the chosen rate) ...
            "planted_rate": sum(any(group_of[c] == group for c in p) for p in planted)
            / len(planted),
            # ... and what clipaudit measured from the captions alone
            "measured_rate": float(groups.loc[group, "rate"]),
        }
        for group, rate in settings.mention_rates.items()
    ]
    summary: dict[str, Any] = {
        **base_manifest("demo"),
        "settings": {
            "n_captions": settings.n_captions,
            "seed": settings.seed,
            "mention_rates": settings.mention_rates,
        },
        "registry": registry.provenance(),
        "coverage": coverage_rows,
        "planted_mentions_found": matching,
    }
    write_json(out_dir / "summary.json", summary)
    summary["seconds"] = round(time.perf_counter() - clock, 1)
    write_json(out_dir / "summary.json", summary)
    return summary

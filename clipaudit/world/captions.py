"""Captions of the world's pictures, misaligned as chosen, with a record of what each one says.

For every picture and group, the caption mentions the group's value with the group's selection
rate; a mentioned value is replaced by a uniformly drawn wrong value of the same group with the
group's perturbation rate. What is written comes from the registry's synonyms (the concept's own
name more often than its other words, as captions name things by their common word), in templates
that vary word order, articles, plurals and phrasing, so that counting mentions takes a real
matcher: "a grainy image of a red circle on a forest background", "Mid-sized checkerboard plus
signs on ocean, unedited.", "scarlet objects with a dotted pattern at the lower part on a pavement
background".

:func:`write_captions` returns the captions and, per group, the index of the value each caption
says (-1 where it is silent); comparing it with the scene gives the true and perturbed mentions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clipaudit.registry import Registry
from clipaudit.world.settings import WORLD_GROUPS, WorldSettings

NAME_SHARE = 0.6  # how often a mention uses the concept's own name rather than another synonym
_NOUNS_WITHOUT_SHAPE = ("shape", "object", "figure", "thing")
_PHOTO_NOUNS = ("photo", "picture", "image")


@dataclass(frozen=True)
class Captions:
    """Captions and what they say: ``said[group][i]`` is the index of the value caption ``i``
    writes for ``group`` (-1: not mentioned); ``perturbed[group][i]`` whether it is a wrong one."""

    texts: list[str]
    said: dict[str, np.ndarray]
    perturbed: dict[str, np.ndarray]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _plural(noun: str) -> str:
    """Plural of the last word of ``noun`` (the world's shape words are regular)."""
    if noun.endswith(("s", "x", "sh", "ch")):
        return noun + "es"
    return noun + "s"


def _said_values(
    scenes: dict[str, np.ndarray],
    sizes: dict[str, int],
    settings: WorldSettings,
    rng: np.random.Generator,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Which value every caption writes per group (-1: silent), and which writes are wrong."""
    said, perturbed = {}, {}
    for group in WORLD_GROUPS:
        truth = scenes[group]
        n, k = len(truth), sizes[group]
        rates = settings.misalignment[group]
        mention = rng.random(n) < rates.selection
        wrong = mention & (rng.random(n) < rates.perturbation)
        # a uniform wrong value: shift the true index by 1..k-1 (every world group has k >= 3)
        shifted = (truth + rng.integers(1, k, n)) % k
        said[group] = np.where(mention, np.where(wrong, shifted, truth), -1)
        perturbed[group] = wrong
    return said, perturbed


def write_captions(
    scenes: dict[str, np.ndarray],
    registry: Registry,
    settings: WorldSettings,
    rng: np.random.Generator,
) -> Captions:
    """Seeded captions of ``scenes`` under ``settings.misalignment`` (see the module docstring)."""
    synonyms = {
        g: [(c.name, *[s for s in c.synonyms if s != c.name]) for c in registry.concepts_in(g)]
        for g in WORLD_GROUPS
    }
    sizes = {g: len(v) for g, v in synonyms.items()}
    said, perturbed = _said_values(scenes, sizes, settings, rng)
    n = len(scenes[WORLD_GROUPS[0]])
    word_draws = rng.random((n, len(WORLD_GROUPS), 2))
    form_draws = rng.random((n, 10))
    texts = []
    for i in range(n):
        words = {}
        for j, group in enumerate(WORLD_GROUPS):
            value = said[group][i]
            if value >= 0:
                options = synonyms[group][value]
                if word_draws[i, j, 0] < NAME_SHARE or len(options) == 1:
                    words[group] = options[0]
                else:
                    words[group] = options[1 + int(word_draws[i, j, 1] * (len(options) - 1))]
        texts.append(_compose(words, form_draws[i]))
    return Captions(texts=texts, said=said, perturbed=perturbed)


def _compose(words: dict[str, str], draw: np.ndarray) -> str:
    """One caption from the words it says per group, its wording chosen by the uniforms ``draw``:
    0 plural, 1 the noun when the shape is not said, 2 colour before or after the noun, 3 where
    the pattern goes, 4 article, 5 backdrop phrase, 6 order of backdrop and place, 7 photo noun,
    8 where the edit goes, 9 sentence case."""
    plural = draw[0] < 0.2
    noun = words.get("Shape") or _NOUNS_WITHOUT_SHAPE[int(draw[1] * len(_NOUNS_WITHOUT_SHAPE))]
    if plural:
        noun = _plural(noun)
    adjectives = [words["Size"]] if "Size" in words else []
    after: list[str] = []
    if "Color" in words:
        if draw[2] < 0.25:
            after.append(f"in {words['Color']}")
        else:
            adjectives.append(words["Color"])
    if "Texture" in words:
        if draw[3] < 0.3:
            texture = words["Texture"]
            after.append(f"with {_article(texture)} {texture} pattern")
        elif draw[3] < 0.45:
            adjectives.insert(0, words["Texture"])
        else:
            adjectives.append(words["Texture"])
    phrase = " ".join([*adjectives, noun])
    if not plural:
        phrase = f"{_article(phrase)} {phrase}" if draw[4] < 0.8 else f"the {phrase}"

    trailing = []
    if "Background" in words:
        background = words["Background"]
        trailing.append(
            f"on {_article(background)} {background} background"
            if draw[5] < 0.6
            else f"on {background}"
        )
    if "Position" in words:
        trailing.append(f"at the {words['Position']}")
    if draw[6] < 0.5:
        trailing.reverse()
    caption = " ".join([phrase, *after, *trailing])

    photo = _PHOTO_NOUNS[int(draw[7] * len(_PHOTO_NOUNS))]
    if "Post-processing" in words:
        edit = words["Post-processing"]
        if draw[8] < 0.5:
            caption = f"{_article(edit)} {edit} {photo} of {caption}"
        else:
            caption = f"{caption}, {edit}"
    elif draw[8] < 0.25:
        caption = f"{_article(photo)} {photo} of {caption}"
    if draw[9] < 0.3:
        caption = caption[0].upper() + caption[1:] + "."
    return caption

"""Render a miniature world into a folder: training pairs, held-out pictures, and what was chosen.

:func:`render_world` writes, into the folder it is given:

- ``train_images.npy``: the training pictures, ``(n_train, S, S, 3)`` uint8 (``np.load`` with
  ``allow_pickle=False``; row ``i`` is caption ``id`` ``i``);
- ``captions.parquet``: ``id``, ``caption``, the true value of every group (a column per group,
  named like the group), ``planted`` (the concepts the caption says truly) and ``perturbed`` (the
  wrong concepts it says in place of the truth);
- ``eval/<group>/<concept>/<n>.png``: a fresh held-out set per group, balanced over the group's
  values and labelled by them, the other groups drawn as in training (the layout
  ``clipaudit zeroshot --images`` reads);
- ``world.json``: the settings and seed, the chosen and realised selection and perturbation rates
  of every group, file list and timings; written last, so its presence marks a complete world.

:func:`recaption_world` writes only new captions and ``world.json`` for other misalignment rates,
pointing to the pictures of an existing world (a sweep renders its pictures once).

The same settings give the same bytes: each part draws from its own seeded stream.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clipaudit.errors import InputError, RunFolderError, SettingsError
from clipaudit.provenance import atomic_write_bytes, base_manifest, write_json
from clipaudit.registry import Registry, load_registry
from clipaudit.world.captions import Captions, write_captions
from clipaudit.world.render import check_registry, render
from clipaudit.world.scenes import group_values, sample_scenes
from clipaudit.world.settings import (
    WORLD_GROUPS,
    WORLD_REGISTRY,
    CausalLink,
    Misalignment,
    WorldSettings,
)

if TYPE_CHECKING:
    import pandas as pd

# independent random streams of one seed
_SCENES, _PIXELS, _CAPTIONS, _EVAL = 0, 1, 2, 100
LIBRARIES = ("numpy", "pandas", "pyarrow", "pillow")
IMAGES_FILE = "train_images.npy"
CAPTIONS_FILE = "captions.parquet"
EVAL_DIR = "eval"
WORLD_FILE = "world.json"


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream]))


@dataclass(frozen=True)
class RenderedWorld:
    """Where a rendered world lies and what it records (``world.json`` as a dict)."""

    path: Path
    info: dict[str, Any]

    @property
    def images_path(self) -> Path:
        return (self.path / self.info["files"]["train_images"]).resolve()

    @property
    def captions_path(self) -> Path:
        return self.path / self.info["files"]["captions"]

    @property
    def eval_path(self) -> Path:
        return (self.path / self.info["files"]["eval"]).resolve()

    @property
    def settings(self) -> WorldSettings:
        return settings_from_json(self.info["settings"])


def settings_from_json(data: dict[str, Any]) -> WorldSettings:
    """The :class:`WorldSettings` that :meth:`WorldSettings.describe` wrote."""
    return WorldSettings(
        misalignment={g: Misalignment(**m) for g, m in data["misalignment"].items()},
        causal_links=tuple(CausalLink(**link) for link in data["causal_links"]),
        image_size=data["image_size"],
        n_train=data["n_train"],
        n_eval_per_group=data["n_eval_per_group"],
        seed=data["seed"],
    )


def world_registry() -> Registry:
    """The world's registry (``concepts/miniworld.yaml``), checked against the renderer."""
    registry = load_registry(WORLD_REGISTRY)
    check_registry(group_values(registry))
    return registry


def render_world(settings: WorldSettings, out_dir: str | Path) -> RenderedWorld:
    """Render the world of ``settings`` into ``out_dir`` (see the module docstring)."""
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    held_out = out / EVAL_DIR
    if held_out.exists() and any(p.name not in WORLD_GROUPS for p in held_out.iterdir()):
        raise RunFolderError(
            f"{str(held_out)!r} holds more than a world's held-out pictures (folders named after "
            "the world's groups), so it is left alone. Choose another folder"
        )
    (out / WORLD_FILE).unlink(missing_ok=True)  # the folder holds no complete world until the end
    registry = world_registry()
    values = group_values(registry)
    timings: dict[str, float] = {}

    scenes = sample_scenes(settings, values, settings.n_train, _rng(settings.seed, _SCENES))
    pixels = render(scenes, values, settings.image_size, _rng(settings.seed, _PIXELS))
    buffer = io.BytesIO()
    np.save(buffer, pixels, allow_pickle=False)
    atomic_write_bytes(out / IMAGES_FILE, buffer.getvalue())
    timings["render_train_s"] = time.perf_counter() - started

    mark = time.perf_counter()
    n_eval = _write_eval(settings, values, out)
    timings["render_eval_s"] = time.perf_counter() - mark

    mark = time.perf_counter()
    rates = _write_captions(settings, registry, values, scenes, out)
    timings["captions_s"] = time.perf_counter() - mark
    timings["total_s"] = time.perf_counter() - started
    info = _world_info(settings, registry, rates, IMAGES_FILE, EVAL_DIR, n_eval, timings)
    write_json(out / WORLD_FILE, info)
    return RenderedWorld(out, info)


def recaption_world(
    world: RenderedWorld, settings: WorldSettings, out_dir: str | Path
) -> RenderedWorld:
    """Captions of ``world``'s pictures under ``settings``' misalignment, written to ``out_dir``
    with a ``world.json`` that points to ``world``'s pictures and held-out set. Everything but the
    misalignment must equal ``world``'s settings (the pictures depend on nothing else)."""
    base = world.settings
    differs = [
        name
        for name in ("causal_links", "image_size", "n_train", "n_eval_per_group", "seed")
        if getattr(base, name) != getattr(settings, name)
    ]
    if differs:
        raise SettingsError(
            f"recaptioning keeps the pictures, so only the misalignment may change; "
            f"{', '.join(differs)} differ from the world in {str(world.path)!r}"
        )
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / WORLD_FILE).unlink(missing_ok=True)
    registry = world_registry()
    values = group_values(registry)
    scenes = sample_scenes(settings, values, settings.n_train, _rng(settings.seed, _SCENES))
    rates = _write_captions(settings, registry, values, scenes, out)
    timings = {"captions_s": time.perf_counter() - started}
    info = _world_info(
        settings,
        registry,
        rates,
        _relative(world.images_path, out),
        _relative(world.eval_path, out),
        world.info["n_eval_images"],
        timings,
    )
    write_json(out / WORLD_FILE, info)
    return RenderedWorld(out, info)


def open_world(path: str | Path) -> RenderedWorld:
    """A world that :func:`render_world` or :func:`recaption_world` completed in ``path``."""
    folder = Path(path)
    marker = folder / WORLD_FILE
    if not marker.is_file():
        raise InputError(
            f"{str(folder)!r} holds no rendered world (no {WORLD_FILE}); render one with "
            "clipaudit.world.render_world"
        )
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{str(marker)!r} is not valid JSON: {exc}") from None
    except RecursionError:  # nested past the parser's limit: hostile or damaged, no world record
        raise InputError(f"{str(marker)!r} is nested too deeply to be a world record") from None
    if not isinstance(info, dict) or info.get("kind") != "world":
        raise InputError(f"{str(marker)!r} is not a world record (its kind is not 'world')")
    _check_rates(info, marker)
    _check_record(info, marker)
    return RenderedWorld(folder, info)


_DAMAGED = "The world is damaged: run the command that rendered it again"
# the rates of a group that the report and the command line show
_SHOWN_RATES = ("chosen_selection", "chosen_perturbation", "selection", "true_mention_rate")


def _check_rates(info: dict[str, Any], marker: Path) -> None:
    """A hand-edited world.json is refused here, not met as a KeyError in a report's table."""
    rates, groups = info.get("rates"), info.get("groups")
    if not (
        isinstance(rates, dict)
        and isinstance(groups, dict)
        and all(isinstance(r, dict) and g in groups for g, r in rates.items())
    ):
        raise InputError(
            f"{str(marker)!r}: expected 'rates' and 'groups' mapping each group to its rates and "
            f"category; got rates {rates!r:.60}. {_DAMAGED}"
        )
    for group, record in rates.items():
        for key in _SHOWN_RATES:
            value = record.get(key)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0 <= value <= 1
            ):
                raise InputError(
                    f"{str(marker)!r}: {group}'s {key} must be a share in [0, 1]; got {value!r}. "
                    f"{_DAMAGED}"
                )


_FILE_KEYS = ("train_images", "captions", "eval")


def _check_record(info: dict[str, Any], marker: Path) -> None:
    """The rest of what readers of a world take from world.json: where its files are, its
    settings and its counts (a hand edit was met as a KeyError in the demo, or as a world
    reused whatever its record said)."""
    files = info.get("files")
    if not (isinstance(files, dict) and all(isinstance(files.get(k), str) for k in _FILE_KEYS)):
        raise InputError(
            f"{str(marker)!r}: expected 'files' naming its {', '.join(_FILE_KEYS)}; got files "
            f"{files!r:.80}. {_DAMAGED}"
        )
    try:
        settings_from_json(info["settings"])
    except (KeyError, TypeError, AttributeError, SettingsError) as exc:
        raise InputError(
            f"{str(marker)!r}: its settings cannot be read ({type(exc).__name__}: {exc}). {_DAMAGED}"
        ) from None
    for key in ("n_train", "n_eval_images", "seed", "image_size"):
        value = info.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InputError(f"{str(marker)!r}: {key} must be a count; got {value!r}. {_DAMAGED}")


def own_files() -> dict[str, str]:
    """The ``files`` of a world rendered into its folder (a recaptioned one points elsewhere)."""
    return {"train_images": IMAGES_FILE, "captions": CAPTIONS_FILE, "eval": EVAL_DIR}


def _check_own(world: RenderedWorld, settings: dict[str, Any]) -> None:
    """A world run's world.json must describe the world its run folder was made for, with the
    files rendered there: an edited seed would otherwise caption other scenes than its pictures'
    (a sweep recaptions from the record), and edited paths read another world's files."""
    marker = world.path / WORLD_FILE
    if world.info["files"] != own_files():
        raise InputError(
            f"{str(marker)!r} names files other than its own ({world.info['files']!r:.120}). "
            f"{_DAMAGED}"
        )
    if world.info["settings"] != json.loads(json.dumps(settings)):
        raise InputError(
            f"{str(marker)!r} describes another world than its run folder's settings. {_DAMAGED}"
        )


def _relative(target: Path, start: Path) -> str:
    return os.path.relpath(target, start.resolve())


def _write_eval(settings: WorldSettings, values: dict[str, tuple[str, ...]], out: Path) -> int:
    """Held-out pictures per group into ``out/eval`` (built aside, then swapped in for an earlier
    world's)."""
    from PIL import Image

    final = out / EVAL_DIR
    partial = out / f".{EVAL_DIR}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    count = 0
    for number, group in enumerate(WORLD_GROUPS):
        k = len(values[group])
        labels = np.arange(settings.n_eval_per_group) % k
        rng = _rng(settings.seed, _EVAL + number)
        scenes = sample_scenes(settings, values, len(labels), rng, fixed=(group, labels))
        pixels = render(scenes, values, settings.image_size, rng)
        for index, concept in enumerate(values[group]):
            folder = partial / group / concept
            folder.mkdir(parents=True)
            for n, row in enumerate(np.flatnonzero(labels == index)):
                Image.fromarray(pixels[row]).save(folder / f"{n:04d}.png", compress_level=1)
                count += 1
    if final.exists():
        shutil.rmtree(final)
    partial.rename(final)
    return count


def _write_captions(
    settings: WorldSettings,
    registry: Registry,
    values: dict[str, tuple[str, ...]],
    scenes: dict[str, np.ndarray],
    out: Path,
) -> dict[str, dict[str, Any]]:
    """``captions.parquet`` of the scenes; returns chosen and realised rates per group."""
    captions = write_captions(scenes, registry, settings, _rng(settings.seed, _CAPTIONS))
    frame = captions_frame(captions, scenes, values)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    atomic_write_bytes(out / CAPTIONS_FILE, buffer.getvalue())
    return realised_rates(captions, settings)


def captions_frame(
    captions: Captions, scenes: dict[str, np.ndarray], values: dict[str, tuple[str, ...]]
) -> pd.DataFrame:
    """One row per training pair: id, caption, true value per group, planted and perturbed."""
    import pandas as pd

    n = len(captions.texts)
    names = {g: np.asarray(values[g], dtype=object) for g in WORLD_GROUPS}
    planted: list[list[str]] = [[] for _ in range(n)]
    perturbed: list[list[str]] = [[] for _ in range(n)]
    for group in WORLD_GROUPS:
        said = captions.said[group]
        for i in np.flatnonzero((said >= 0) & ~captions.perturbed[group]):
            planted[i].append(names[group][said[i]])
        for i in np.flatnonzero(captions.perturbed[group]):
            perturbed[i].append(names[group][said[i]])
    columns: dict[str, Any] = {"id": np.arange(n), "caption": captions.texts}
    columns.update({g: names[g][scenes[g]] for g in WORLD_GROUPS})
    columns.update(planted=planted, perturbed=perturbed)
    return pd.DataFrame(columns)


def realised_rates(captions: Captions, settings: WorldSettings) -> dict[str, dict[str, Any]]:
    """Per group: the chosen rates, and what the drawn captions realised.

    ``selection``: share of captions that mention the group; ``perturbation``: share of those
    mentions that are wrong (None without mentions); ``true_mention_rate``: share of captions
    that say the group's true value (the coverage the model can learn from).
    """
    rates = {}
    n = len(captions.texts)
    for group in WORLD_GROUPS:
        mentioned = captions.said[group] >= 0
        wrong = captions.perturbed[group]
        n_mentioned, n_wrong = int(mentioned.sum()), int(wrong.sum())
        chosen = settings.misalignment[group]
        rates[group] = {
            "chosen_selection": chosen.selection,
            "chosen_perturbation": chosen.perturbation,
            "selection": n_mentioned / n,
            "perturbation": n_wrong / n_mentioned if n_mentioned else None,
            "true_mention_rate": (n_mentioned - n_wrong) / n,
            "n_mentioned": n_mentioned,
            "n_perturbed": n_wrong,
        }
    return rates


def _world_info(
    settings: WorldSettings,
    registry: Registry,
    rates: dict[str, dict[str, Any]],
    images: str,
    eval_dir: str,
    n_eval: int,
    timings: dict[str, float],
) -> dict[str, Any]:
    info = base_manifest("world", LIBRARIES)
    info.update(
        settings=settings.describe(),
        seed=settings.seed,
        registry=registry.provenance(),
        groups={g.name: g.category for g in registry.groups},
        rates=rates,
        n_train=settings.n_train,
        n_eval_images=n_eval,
        image_size=settings.image_size,
        files={"train_images": images, "captions": CAPTIONS_FILE, "eval": eval_dir},
        timings=timings,
    )
    return info


@dataclass(frozen=True)
class WorldRun:
    """A world rendered as a run folder (``clipaudit world render``): the world and its rates."""

    out: Path
    world: RenderedWorld
    manifest: dict[str, Any]
    reused: bool = False  # the folder already held this complete world: nothing was rendered

    @property
    def rates(self) -> pd.DataFrame:
        """Per group: category, chosen and realised selection and perturbation, true mentions."""
        import pandas as pd

        groups = self.world.info["groups"]
        return pd.DataFrame(
            [{"group": g, "category": groups[g], **r} for g, r in self.world.info["rates"].items()]
        )

    def __repr__(self) -> str:
        return (
            f"WorldRun({str(self.out)!r}: {self.world.info['n_train']:,} pairs, "
            f"{self.world.info['n_eval_images']:,} held-out pictures, seed {self.world.info['seed']})"
        )

    def _repr_html_(self) -> str:
        from html import escape

        table = self.rates.to_html(index=False, float_format=lambda v: f"{v:.3f}")
        return f"<p><b>{escape(repr(self))}</b></p>{table}"


def render_world_run(
    settings: WorldSettings, out: str | Path, *, overwrite: bool = False
) -> WorldRun:
    """:func:`render_world` as a run folder (clipaudit.runs): a folder holding this very world is
    returned as it is, one holding another world is refused unless ``overwrite``."""
    from clipaudit.runs import RunFolder

    with RunFolder(out, "world", settings.describe(), overwrite=overwrite) as folder:
        # a picture file or held-out folder deleted since is rendered again, not reported there
        whole = all(
            (folder.path / name).is_file() for name in (WORLD_FILE, IMAGES_FILE, CAPTIONS_FILE)
        ) and all((folder.path / EVAL_DIR / group).is_dir() for group in WORLD_GROUPS)
        if folder.was_complete and whole:
            with contextlib.suppress(InputError):  # a damaged world.json: rendered again
                world = open_world(folder.path)
                _check_own(world, settings.describe())
                return WorldRun(folder.path, world, folder.previous, True)
        world = render_world(settings, folder.path)
        info = world.info
        manifest = folder.complete(
            registry=info["registry"],
            rates=info["rates"],
            files=info["files"],
            n_train=info["n_train"],
            n_eval_images=info["n_eval_images"],
            timings=info["timings"],
        )
        return WorldRun(folder.path, world, manifest)


def load_world_run(path: str | Path, manifest: dict[str, Any]) -> WorldRun:
    """A complete world run folder read back (:func:`clipaudit.runs.load_run`)."""
    world = open_world(path)
    _check_own(world, manifest.get("settings"))
    return WorldRun(Path(path), world, manifest)

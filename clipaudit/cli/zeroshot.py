"""``clipaudit zeroshot``: zero-shot concept awareness of OpenCLIP models, per concept group."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from clipaudit.cli._common import (
    AllConceptsOption,
    MaxPixelsOption,
    OverwriteOption,
    RegistryOption,
    plain_console,
)
from clipaudit.text import counted

if TYPE_CHECKING:
    import pandas as pd

    from clipaudit.models import ModelSpec

console = plain_console()


def parse_groups(groups: str | None) -> tuple[str, ...] | None:
    """``--groups`` "Animal, Color" as group names; None (all groups) when not given."""
    return None if groups is None else tuple(g.strip() for g in groups.split(",") if g.strip())


def model_specs(model: list[str], pretrained: list[str]) -> tuple[ModelSpec, ...]:
    """``--model`` and ``--pretrained`` paired in order (every model's weights random or by
    name when no ``--pretrained`` is given)."""
    from clipaudit.errors import SettingsError
    from clipaudit.models import ModelSpec

    if pretrained and len(pretrained) != len(model):
        raise SettingsError(
            f"got {len(model)} --model but {len(pretrained)} --pretrained; give one --pretrained "
            "per --model (use 'none' for random weights) or none at all"
        )
    return tuple(
        ModelSpec(m, p) for m, p in zip(model, pretrained or [None] * len(model), strict=True)
    )


def pixel_limit(max_pixels: int | None) -> dict[str, int]:
    """``--max-pixels`` as a zero-shot option: given, or the settings' default (Pillow's)."""
    return {} if max_pixels is None else {"max_pixels": max_pixels}


def refuse_two_caches(no_cache: bool, cache_dir: Path | None) -> None:
    """``--no-cache`` with ``--cache-dir``: one of them would be ignored."""
    if no_cache and cache_dir is not None:
        from clipaudit.errors import SettingsError

        raise SettingsError(
            f"--no-cache and --cache-dir {str(cache_dir)!r} ask for no cache and a cache; give one"
        )


def zeroshot(
    model: list[str] = typer.Option(
        ...,
        "--model",
        "-m",
        help="open_clip model name, hf-hub:org/repo, local-dir:PATH, or a model-config JSON; repeat for several.",
    ),
    pretrained: list[str] = typer.Option(
        [],
        "--pretrained",
        "-p",
        help="Pretrained tag or local checkpoint (.safetensors, .pt, .pth or .bin), one per "
        "--model in order; 'none' or leaving it out = seeded random weights, but hf-hub: and "
        "local-dir: models always load their own (pair them with 'none').",
    ),
    images: str = typer.Option(
        ...,
        "--images",
        "-i",
        help="Image folder ROOT/<group>/<concept>/, uncompressed webdataset .tar shards (a "
        "folder of them, one, or a brace pattern), a Hugging Face save_to_disk folder, or hf:NAME.",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Run folder; rerun with the same folder to resume a stopped run."
    ),
    registry: str = RegistryOption,
    groups: str | None = typer.Option(
        None, "--groups", "-g", help="Comma-separated groups (default: all)."
    ),
    templates: str = typer.Option(
        "none",
        "--templates",
        "-t",
        help="none (bare concept name, the paper's setting), simple, ensemble, or a file of templates.",
    ),
    all_concepts: bool = AllConceptsOption,
    batch_size: int = typer.Option(256, "--batch-size", help="Images per model batch."),
    workers: int | None = typer.Option(
        None,
        "--workers",
        help="Decoding worker processes, 0 to decode in this one (default: cores - 1, 1 to 16).",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="auto (bf16 on GPUs that compute in it, fp16 on older ones, fp32 on CPU), fp32, "
        "bf16 or fp16.",
    ),
    cache_dir: Path | None = typer.Option(
        None,
        "--cache-dir",
        help="Embedding cache folder (default: $CLIPAUDIT_CACHE, else clipaudit/embeddings in "
        "$XDG_CACHE_HOME or ~/.cache).",
    ),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="Neither read nor write the embedding cache."
    ),
    jpeg_draft: bool = typer.Option(
        False, "--jpeg-draft", help="Decode JPEGs at reduced size (faster; pixels differ slightly)."
    ),
    max_pixels: int | None = MaxPixelsOption,
    label_field: str | None = typer.Option(
        None,
        "--label-field",
        help="Label key: webdataset json key (default concept) or HF column (default label).",
    ),
    image_column: str = typer.Option("image", "--image-column", help="Hugging Face image column."),
    split: str | None = typer.Option(None, "--split", help="Hugging Face dataset split."),
    overwrite: bool = OverwriteOption,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Classify each group's images among its concepts and score awareness (macro-F1) per group."""
    from clipaudit.embedding_cache import default_cache_dir
    from clipaudit.zeroshot import default_workers, run_zeroshot

    refuse_two_caches(no_cache, cache_dir)
    run = run_zeroshot(
        model_specs(model, pretrained),
        images,
        out,
        registry=registry,
        groups=parse_groups(groups),
        templates=templates,
        all_concepts=all_concepts,
        batch_size=batch_size,
        workers=default_workers() if workers is None else workers,
        device=device,
        precision=precision,
        cache_dir=None if no_cache else (cache_dir or default_cache_dir()),
        jpeg_draft=jpeg_draft,
        **pixel_limit(max_pixels),
        label_field=label_field,
        image_column=image_column,
        split=split,
        overwrite=overwrite,
        progress=not quiet,
    )
    _print_run(run)


def _print_run(run) -> None:
    import pandas as pd

    from clipaudit.text import inert_line
    from clipaudit.zeroshot import counts_this_call

    manifest = run.manifest
    # each model's own count: an image whose embedding failed for one model is skipped for it alone
    n_images = run.groups.pivot(index="group", columns="model", values="n_images")
    totals = n_images.sum()
    # the images classified, not those listed: undecodable ones and those of skipped groups are not
    evaluated = f"{_span(totals)} {'image' if totals.max() == 1 else 'images'} evaluated"
    if totals.nunique() > 1:
        evaluated += " per model"
    if manifest["skipped_images"]:
        evaluated += f", {len(manifest['skipped_images'])} skipped"
    # the console makes printed lines inert, not a table's cells: labels come from file names
    table = Table(
        title=inert_line(
            f"macro-F1 per group ({evaluated}, templates {manifest['templates']['setting']})"
        )
    )
    table.add_column("group")
    table.add_column("images", justify="right")
    scores = run.macro_f1_table()
    for model in scores.columns:  # labels of one architecture differ at their ends: fold, never cut
        table.add_column(inert_line(model), justify="right", overflow="fold")
    for group, row in scores.iterrows():
        counts = n_images.loc[group, scores.columns]
        differ = counts.nunique() > 1  # then each score says over how many images it is
        cells = (
            "-"  # the group was skipped for this model (too few of its images embedded)
            if pd.isna(value)
            else f"{value:.3f} ({int(counts[model])})"
            if differ
            else f"{value:.3f}"
            for model, value in row.items()
        )
        table.add_row(inert_line(group), _span(counts), *cells)
    if (n_images.nunique(axis=1) > 1).any():
        table.caption = "(n): the images a model classified, where models differ (skipped images)"
    console.print(table)
    for info in manifest["models"]:
        n_encoded, n_cached, n_resumed = counts_this_call(info, run.reused)
        rate = (
            f"{info['timings']['images_per_s']:.0f} images/s" if n_encoded else "no images encoded"
        )
        earlier = f", {n_resumed} from an earlier session's results" if n_resumed else ""
        console.print(
            f"{info['label']}: {n_encoded} encoded ({rate}), {n_cached} from cache{earlier}, "
            f"{info['device']} {info['precision']}"
        )
        if info.get("random_weights_seed") is not None:  # --pretrained forgotten, or a baseline
            console.print(
                f"{info['label']} has random weights (--pretrained none or not given): its "
                "scores are a chance baseline, not a trained model's",
                style="yellow",
            )
    dropped = manifest.get("dropped_models") or []  # runs before it have none
    if dropped and not run.reused:
        console.print(
            f"{counted(len(dropped), 'model')} dropped from the run (not given this time), "
            f"{'its' if len(dropped) == 1 else 'their'} results deleted: {', '.join(dropped)}",
            style="yellow",
        )
    skipped = manifest["skipped_images"]
    if skipped:
        shown = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:5])
        console.print(
            f"{counted(len(skipped), 'image')} skipped: {shown}{' ...' if len(skipped) > 5 else ''}",
            style="yellow",
        )
    listed = (manifest.get("inputs") or {}).get("images") or {}
    if listed.get("n_ignored"):  # files never classified: unlabelled samples, strays, non-images
        first = listed["ignored"][0]
        console.print(
            f"{counted(listed['n_ignored'], 'file')} ignored (see manifest.json), e.g. {first['path']}: "
            f"{first['reason']}",
            style="yellow",
        )
    _print_skipped(manifest)
    if run.reused:
        console.print("the run was already complete: nothing to do")
    console.print(f"results in {run.out}")


def _print_skipped(manifest: dict) -> None:
    """The groups and concepts not scored: those the images have but could not be evaluated
    named with the reason (and the fix), apart from those the images hold none of, which are
    counted (named where --groups selected them): a registry's groups without images are no
    sign that anything went wrong, and listed as "skipped" they hid the ones that were."""
    from clipaudit.zeroshot import NO_IMAGES, unscored_groups_line

    groups = manifest["skipped_groups"]
    unscored = unscored_groups_line(groups)
    if unscored:
        console.print(unscored, style="yellow")
    imageless = [g["group"] for g in groups if g["reason"] == NO_IMAGES]
    if imageless:
        selected = (manifest.get("settings") or {}).get("groups") is not None
        console.print(
            f"{counted(len(imageless), 'group')} "
            f"{'of those selected' if selected else 'of the registry'} "
            f"{'has' if len(imageless) == 1 else 'have'} no images (see manifest.json)"
            + (f": {', '.join(imageless)}" if selected else ""),
            style="yellow" if selected else None,
        )
    concepts = manifest["skipped_concepts"]
    failed = [c for c in concepts if c["reason"] != NO_IMAGES]
    if failed:
        console.print(
            f"{counted(len(failed), 'concept')} not scored: "
            + "; ".join(f"{c['group']}/{c['concept']}: {c['reason']}" for c in failed[:5])
            + (" ..." if len(failed) > 5 else ""),
            style="yellow",
        )
    imageless = [c["concept"] for c in concepts if c["reason"] == NO_IMAGES]
    if imageless:
        console.print(
            f"{counted(len(imageless), 'concept')} of the evaluated groups "
            f"{'has' if len(imageless) == 1 else 'have'} no images (see manifest.json): "
            f"{', '.join(imageless[:12])}{' ...' if len(imageless) > 12 else ''}"
        )


def _span(counts: pd.Series) -> str:
    """A count shared by all models, or the least and most of theirs."""
    low, high = int(counts.min()), int(counts.max())
    return str(low) if low == high else f"{low}-{high}"


def register(app: typer.Typer) -> None:
    app.command("zeroshot")(zeroshot)

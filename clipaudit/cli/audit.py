"""``clipaudit audit``: coverage, zero-shot awareness of one or several models, and the joined
report, in one resumable run folder."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from clipaudit.cli._common import (
    AllConceptsOption,
    MaxPixelsOption,
    OverwriteOption,
    RegistryOption,
    plain_console,
)

console = plain_console()


def register(app: typer.Typer) -> None:
    app.command("audit")(audit)


def audit(
    captions: list[str] = typer.Option(
        ...,
        "--captions",
        "-c",
        help="Caption source (as coverage count takes them); repeat for several.",
    ),
    images: str = typer.Option(
        ..., "--images", "-i", help="Labelled images (as zeroshot takes them)."
    ),
    model: list[str] = typer.Option(
        ...,
        "--model",
        "-m",
        help="open_clip model (as zeroshot takes them: a name, hf-hub:org/repo, local-dir:PATH or "
        "a model-config JSON); repeat for several.",
    ),
    pretrained: list[str] = typer.Option(
        [],
        "--pretrained",
        "-p",
        help="Pretrained tag or checkpoint, one per --model in order ('none': random weights).",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Run folder; rerun with the same folder to resume."
    ),
    registry: str = RegistryOption,
    column: str | None = typer.Option(
        None, "--column", help="Caption column (default: caption, TEXT or text, whichever exists)."
    ),
    id_column: str | None = typer.Option(
        None, "--id-column", help="Id column (default: id, key or SAMPLE_ID, else row numbers)."
    ),
    caption_split: str = typer.Option(
        "train", "--caption-split", help="Split of a Hugging Face caption dataset."
    ),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="Count and list unreadable caption shards instead of stopping."
    ),
    profile: str = typer.Option("curated", "--profile", help="Matching profile for coverage."),
    workers: int | None = typer.Option(
        None,
        "--workers",
        "-w",
        help="Worker processes for coverage (default: every CPU core, as in coverage count).",
    ),
    decode_workers: int | None = typer.Option(
        None,
        "--decode-workers",
        min=0,
        help="Image decoding worker processes for zero-shot (zeroshot's --workers), 0 to decode "
        "in the main process (default: cores - 1, 1 to 16, as in zeroshot).",
    ),
    groups: str | None = typer.Option(
        None, "--groups", "-g", help="Comma-separated groups for zero-shot (default: all)."
    ),
    label_field: str | None = typer.Option(
        None,
        "--label-field",
        help="Label key: webdataset json key (default concept) or HF column (default label).",
    ),
    image_column: str = typer.Option("image", "--image-column", help="Hugging Face image column."),
    image_split: str | None = typer.Option(
        None, "--image-split", help="Split of a Hugging Face image dataset."
    ),
    templates: str = typer.Option(
        "none", "--templates", "-t", help="Zero-shot templates: none, simple, ensemble or a file."
    ),
    all_concepts: bool = AllConceptsOption,
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    batch_size: int = typer.Option(256, "--batch-size", help="Images per model batch."),
    max_pixels: int | None = MaxPixelsOption,
    cache_dir: Path | None = typer.Option(
        None,
        "--cache-dir",
        help="Embedding cache folder (default: $CLIPAUDIT_CACHE, else clipaudit/embeddings in "
        "$XDG_CACHE_HOME or ~/.cache).",
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not use the embedding cache."),
    title: str | None = typer.Option(None, "--title", help="Title of the report."),
    overwrite: bool = OverwriteOption,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Count caption coverage, measure each model's zero-shot awareness, and join them in a report."""
    from clipaudit.audit import run_audit
    from clipaudit.cli.zeroshot import model_specs, parse_groups, pixel_limit, refuse_two_caches
    from clipaudit.coverage import CaptionSources, CoverageSettings

    refuse_two_caches(no_cache, cache_dir)
    specs = list(model_specs(model, pretrained))
    zeroshot = {
        "groups": parse_groups(groups),
        "label_field": label_field,
        "image_column": image_column,
        "split": image_split,
        "templates": templates,
        "device": device,
        "batch_size": batch_size,
        **pixel_limit(max_pixels),
        # not given: the zero-shot settings' default, as in clipaudit zeroshot
        **({} if decode_workers is None else {"workers": decode_workers}),
        # given only when on: audits made before the option recorded none, and resume alike
        **({"all_concepts": True} if all_concepts else {}),
    }
    if no_cache or cache_dir is not None:  # else the settings' default folder
        zeroshot["cache_dir"] = None if no_cache else cache_dir
    result = run_audit(
        CaptionSources(captions),
        images,
        specs,
        out,
        registry=registry,
        coverage=CoverageSettings(
            column=column,
            id_column=id_column,
            hf_split=caption_split,
            skip_bad=skip_bad,
            profile=profile,
            workers=workers if workers is not None else os.cpu_count() or 1,
        ),
        zeroshot=zeroshot,
        report={"title": title} if title else None,
        overwrite=overwrite,
        progress=not quiet,
        echo=console.print,
    )
    typer.echo(result.report.headline())
    typer.echo(f"report: {result.html_path}")

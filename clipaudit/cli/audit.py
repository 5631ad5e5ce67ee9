"""``clipaudit audit``: coverage, zero-shot awareness of one or several models, and the joined
report, in one resumable run folder."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from clipaudit.cli._common import (
    AllConceptsOption,
    MaxPixelsOption,
    RegistryOption,
    for_stage,
    plain_console,
)

console = plain_console()


def register(app: typer.Typer) -> None:
    app.command("audit")(audit)


def audit(
    out: Path = typer.Option(
        ..., "--out", "-o", help="Run folder; rerun the same command to resume it."
    ),
    registry: str = RegistryOption,
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Take changed settings for the audit in --out instead of refusing: the stages whose "
        "settings changed are done again, the others kept.",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    captions: list[str] = typer.Option(
        ...,
        "--captions",
        "-c",
        help="[coverage] Caption source (as coverage count takes them); repeat for several.",
    ),
    column: str | None = typer.Option(
        None,
        "--column",
        help="[coverage] Caption column (default: caption, TEXT or text, whichever exists).",
    ),
    id_column: str | None = typer.Option(
        None,
        "--id-column",
        help="[coverage] Id column (default: id, key or SAMPLE_ID, else row numbers).",
    ),
    caption_split: str = typer.Option(
        "train", "--caption-split", help="[coverage] Split of a Hugging Face caption dataset."
    ),
    skip_bad: bool = typer.Option(
        False,
        "--skip-bad",
        help="[coverage] Count and list unreadable caption shards instead of stopping.",
    ),
    profile: str = typer.Option("curated", "--profile", help="[coverage] Matching profile."),
    workers: int | None = typer.Option(
        None,
        "--workers",
        "-w",
        help="[coverage] Worker processes counting captions (default: every CPU core, as in "
        "coverage count).",
    ),
    images: str = typer.Option(
        ..., "--images", "-i", help="[zero-shot] Labelled images (as zeroshot takes them)."
    ),
    model: list[str] = typer.Option(
        ...,
        "--model",
        "-m",
        help="[zero-shot] open_clip model (as zeroshot takes them: a name, hf-hub:org/repo, "
        "local-dir:PATH or a model-config JSON); repeat for several.",
    ),
    pretrained: list[str] = typer.Option(
        [],
        "--pretrained",
        "-p",
        help="[zero-shot] Pretrained tag or checkpoint, one per --model in order ('none', or "
        "none given: random weights, a chance baseline).",
    ),
    decode_workers: int | None = typer.Option(
        None,
        "--decode-workers",
        min=0,
        help="[zero-shot] Image decoding worker processes (zeroshot's --workers), 0 to decode "
        "in the main process (default: cores - 1, 1 to 16, as in zeroshot).",
    ),
    groups: str | None = typer.Option(
        None, "--groups", "-g", help="[zero-shot] Comma-separated groups (default: all)."
    ),
    label_field: str | None = typer.Option(
        None,
        "--label-field",
        help="[zero-shot] Label key: webdataset json key (default concept) or HF column "
        "(default label).",
    ),
    image_column: str = typer.Option(
        "image", "--image-column", help="[zero-shot] Hugging Face image column."
    ),
    image_split: str | None = typer.Option(
        None, "--image-split", help="[zero-shot] Split of a Hugging Face image dataset."
    ),
    templates: str = typer.Option(
        "none",
        "--templates",
        "-t",
        help="[zero-shot] Prompt templates: none, simple, ensemble or a file.",
    ),
    all_concepts: bool = for_stage(AllConceptsOption, "zero-shot"),
    device: str = typer.Option(
        "auto", "--device", help="[zero-shot] auto, cpu, cuda, cuda:N or mps."
    ),
    batch_size: int = typer.Option(256, "--batch-size", help="[zero-shot] Images per model batch."),
    max_pixels: int | None = for_stage(MaxPixelsOption, "zero-shot"),
    cache_dir: Path | None = typer.Option(
        None,
        "--cache-dir",
        help="[zero-shot] Embedding cache folder (default: $CLIPAUDIT_CACHE, else "
        "clipaudit/embeddings in $XDG_CACHE_HOME or ~/.cache).",
    ),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="[zero-shot] Do not use the embedding cache."
    ),
    title: str | None = typer.Option(None, "--title", help="[report] Title of the report."),
) -> None:
    """Count caption coverage, measure each model's zero-shot awareness, and join them in a report.

    Three stages, each a run folder of its own: OUT/coverage (how often the captions mention
    each concept), OUT/zeroshot (each model's macro-F1 per concept group on the labelled images)
    and OUT/report (report.html, report.md, report.json and tables). [coverage], [zero-shot] and
    [report] mark the stage an option is for; the others are for all three. A killed audit
    resumes stage by stage when the same command runs again.
    """
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
        # a line each, unwrapped: logs of long audits are read and searched line by line
        echo=lambda line: console.print(line, soft_wrap=True),
    )
    typer.echo(result.report.headline())
    typer.echo(f"report: {result.html_path}")

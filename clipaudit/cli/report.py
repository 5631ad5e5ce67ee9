"""``clipaudit report``: caption coverage against zero-shot awareness, joined in one report."""

from __future__ import annotations

from pathlib import Path

import typer

from clipaudit.cli._common import OverwriteOption


def report(
    runs: list[Path] = typer.Argument(
        ...,
        help="Run folders: coverage runs (corpora), zero-shot runs (models), theory runs, "
        "and at most one world run (its chosen caption rates are shown beside the coverage).",
        show_default=False,
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Report folder (report.html, .md, .json)."),
    title: str | None = typer.Option(None, "--title", help="Title of the report."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap intervals."),
    n_bootstrap: int = typer.Option(
        2000,
        "--n-bootstrap",
        help="Bootstrap resamples per interval (0: no intervals, else at least 10).",
    ),
    overwrite: bool = OverwriteOption,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Join caption coverage with zero-shot awareness: per concept and group, correlations with
    bootstrap intervals, the log-linear fit and its outliers, figures, in HTML, Markdown and JSON."""
    from clipaudit.report import build_report

    result = build_report(
        runs,
        out,
        title=title,
        seed=seed,
        n_bootstrap=n_bootstrap,
        overwrite=overwrite,
        progress=not quiet,
    )
    typer.echo(result.headline())
    typer.echo(f"report: {result.html_path}")


def register(app: typer.Typer) -> None:
    app.command("report")(report)

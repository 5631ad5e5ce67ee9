"""``clipaudit report``: caption coverage against zero-shot awareness, joined in one report."""

from __future__ import annotations

from pathlib import Path

import typer

from clipaudit.cli._common import OverwriteOption


def report(
    runs: list[Path] = typer.Argument(
        ...,
        help="Run folders: coverage runs (corpora), zero-shot runs (models), theory runs.",
        show_default=False,
        metavar="RUN",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Report folder (report.html, .md, .json)."),
    title: str | None = typer.Option(None, "--title", help="Title of the report."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap intervals."),
    n_bootstrap: int = typer.Option(
        2000, "--n-bootstrap", help="Bootstrap resamples per interval (0: no intervals)."
    ),
    overwrite: bool = OverwriteOption,
) -> None:
    """Join caption coverage with zero-shot awareness: per concept and group, correlations with
    bootstrap intervals, the log-linear fit and its outliers, figures, in HTML, Markdown and JSON."""
    from clipaudit.report import build_report

    result = build_report(
        runs, out, title=title, seed=seed, n_bootstrap=n_bootstrap, overwrite=overwrite
    )
    summary = result.summary
    typer.echo(
        f"{len(summary['corpora'])} corpus(es) x {len(summary['models'])} model(s), "
        f"{len(summary['pairs'])} pair(s) joined"
        + (" (unchanged inputs: the report was already up to date)" if result.reused else "")
    )
    for pair in summary["pairs"]:
        stats = pair["concepts"]
        rho, tau, fit = stats["spearman"], stats["kendall"], stats["fit"]

        def shown(statistic: dict, value: str = "value") -> str:
            if statistic[value] is None:
                return f"n/a ({statistic.get('reason') or 'not computed'})"
            low, high = statistic.get("ci_low"), statistic.get("ci_high")
            interval = f" [{low:.2f}, {high:.2f}]" if low is not None and high is not None else ""
            return f"{statistic[value]:.2f}{interval}"

        name = pair["corpus"] if pair["kind"] == "theory" else f"{pair['corpus']} x {pair['model']}"
        typer.echo(
            f"  {name}: {stats['n']} concepts, Spearman {shown(rho)}, Kendall {shown(tau)}, "
            f"slope {shown(fit, 'slope')} F1 per 10x coverage"
        )
        for key, label in (
            ("rarely_captioned_yet_known", "rarely captioned yet known"),
            ("often_captioned_yet_unknown", "often captioned yet unknown"),
        ):
            if pair[key]:
                typer.echo(f"    {label}: {', '.join(o['name'] for o in pair[key])}")
    if summary["mismatches"]:
        counts = ", ".join(
            f"{n} {k.replace('_', ' ')}" for k, n in summary["mismatch_counts"].items()
        )
        typer.echo(f"mismatches (listed in the report): {counts}")
    typer.echo(f"report: {result.html_path}")


def register(app: typer.Typer) -> None:
    app.command("report")(report)

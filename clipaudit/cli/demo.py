"""``clipaudit demo``: the embedded audit of a miniature world with chosen caption misalignment."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    out: Path = typer.Option(
        Path("runs/demo"), "--out", "-o", help="Run folder for the demo's outputs."
    ),
    n_captions: int = typer.Option(20_000, help="Captions in the miniature world."),
    seed: int = typer.Option(0, help="Seed of the world."),
    workers: int = typer.Option(2, help="Worker processes for caption counting."),
) -> None:
    """Audit a miniature caption world whose misalignment is chosen, then compare with what was chosen."""
    from clipaudit.demo import DemoSettings, run_demo

    summary = run_demo(
        out, DemoSettings(n_captions=n_captions, seed=seed, workers=workers), echo=console.print
    )

    table = Table(title="caption coverage: chosen misalignment vs what clipaudit measured")
    for column in ("group", "chosen rate", "planted rate", "measured coverage"):
        table.add_column(column, justify="left" if column == "group" else "right")
    for row in summary["coverage"]:
        table.add_row(
            row["group"],
            f"{row['chosen_rate']:.3f}",
            f"{row['planted_rate']:.4f}",
            f"{row['measured_rate']:.4f}",
        )
    console.print(table)
    found = summary["planted_mentions_found"]
    console.print(
        f"planted mentions found by the curated matcher: precision {found['precision']:.3f}, "
        f"recall {found['recall']:.3f} ({found['tp']} found, {found['fp']} extra, {found['fn']} missed)"
    )
    console.print(f"outputs in {out}/ (summary.json, coverage/), {summary['seconds']} s")

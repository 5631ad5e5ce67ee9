"""``clipaudit world``: the miniature world of the demo, rendered on its own."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from clipaudit.cli._common import OverwriteOption, command_group, plain_console

app = command_group("Render the miniature world: pictures, captions with chosen misalignment.")
console = plain_console()


@app.command("render")
def render(
    out: Path = typer.Option(..., "--out", "-o", help="Run folder of the world."),
    seed: int = typer.Option(0, "--seed", help="Seed of the pictures and captions."),
    set_rates: list[str] = typer.Option(
        [],
        "--set",
        help="A group's caption misalignment, repeatable: Texture=0.5, Background.perturbation=0.3.",
    ),
    overwrite: bool = OverwriteOption,
) -> None:
    """Write the world's training pictures and captions, held-out pictures per group, and the
    chosen and realised caption rates (world.json), in the layouts the readers take."""
    from clipaudit.demo import parse_misalignment
    from clipaudit.world.settings import WorldSettings
    from clipaudit.world.world import render_world_run

    run = render_world_run(
        parse_misalignment(set_rates, WorldSettings(seed=seed)), out, overwrite=overwrite
    )
    table = Table(title=repr(run))
    for column in ("group", "category", "mention rate", "realised", "wrong", "true mentions"):
        table.add_column(column, justify="left" if column in ("group", "category") else "right")
    for row in run.rates.itertuples():
        table.add_row(
            row.group,
            row.category,
            f"{row.chosen_selection:.0%}",
            f"{row.selection:.1%}",
            f"{row.chosen_perturbation:.0%}",
            f"{row.true_mention_rate:.1%}",
        )
    console.print(table)
    typer.echo(f"captions: {run.world.captions_path}")
    typer.echo(f"held-out pictures: {run.world.eval_path}")

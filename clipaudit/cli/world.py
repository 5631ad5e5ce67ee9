"""``clipaudit world``: the miniature world of the demo, rendered on its own."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from clipaudit.cli._common import OverwriteOption, command_group, plain_console

app = command_group("Render the miniature world: pictures, captions with chosen misalignment.")
console = plain_console()

# written out, not built from clipaudit.world's settings: importing them loads numpy into every
# command's start (tests/test_demo.py holds this text to DEFAULT_MISALIGNMENT)
GROUPS_HELP = (
    "Groups (default mention rate): Shape 1, Color 1, Background 1 (50% wrong), Texture 0.3, "
    "Size 0.02, Position 0, Post-processing 0.05."
)
GROUP_NAMES = "Shape, Color, Background, Texture, Size, Position or Post-processing"


@app.command("render")
def render(
    out: Path = typer.Option(..., "--out", "-o", help="Run folder of the world."),
    seed: int = typer.Option(0, "--seed", help="Seed of the pictures and captions."),
    set_rates: list[str] = typer.Option(
        [],
        "--set",
        help="A group's caption misalignment, repeatable: Texture=0.5 (how often captions "
        "mention it), Background.perturbation=0.3 (how often a mention is wrong). " + GROUPS_HELP,
    ),
    # None: the world's own default (WorldSettings), written out only in the help
    n_train: int | None = typer.Option(
        None, "--n-train", help="Training pairs (default 16,000: the demo's world)."
    ),
    image_size: int | None = typer.Option(
        None, "--image-size", help="Side of the square pictures, a multiple of 16 (default 32)."
    ),
    n_eval_per_group: int | None = typer.Option(
        None,
        "--n-eval-per-group",
        help="Held-out pictures per group, balanced over its values (default 240).",
    ),
    overwrite: bool = OverwriteOption,
    # taken as every stage takes it, so a script can quiet each alike; rendering (seconds)
    # draws no progress bar, so there is none to take off
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress bars (rendering draws none)."
    ),
) -> None:
    """Write the world's training pictures and captions, held-out pictures per group, and the
    chosen and realised caption rates (world.json), in the layouts the readers take."""
    import pandas as pd

    from clipaudit.world.settings import WorldSettings, parse_misalignment
    from clipaudit.world.world import render_world_run

    sizes = {"n_train": n_train, "image_size": image_size, "n_eval_per_group": n_eval_per_group}
    world = WorldSettings(seed=seed, **{k: v for k, v in sizes.items() if v is not None})
    run = render_world_run(parse_misalignment(set_rates, world), out, overwrite=overwrite)
    console.print(repr(run))  # a line, not the table's title, which wraps a long path inside it
    table = Table(title="caption rates per group")
    for column in ("group", "category", "mention rate", "realised", "wrong", "true mentions"):
        words = column in ("group", "category")
        # names whole, even in 80 columns (else "Post-proces…"): the number headers wrap instead
        table.add_column(column, justify="left" if words else "right", no_wrap=words)
    for row in run.rates.itertuples():
        table.add_row(
            row.group,
            row.category,
            chosen_rate(row.chosen_selection),
            f"{row.selection:.1%}",
            chosen_rate(row.chosen_perturbation),
            f"{row.true_mention_rate:.1%}",
        )
    console.print(table)
    # "wrong" is the chosen rate, only drawn near the realised one: said for each group it applies
    # to, below the table (a column more would not fit in 80)
    for row in run.rates.itertuples():
        if row.chosen_perturbation > 0 and not pd.isna(row.perturbation):
            console.print(
                f"{row.group}: {row.perturbation:.1%} of its mentions are wrong "
                f"(chosen {chosen_rate(row.chosen_perturbation)})"
            )
    # both under --out as typed (the world's eval_path is absolute: a recaptioned world's lies
    # in another folder)
    files = run.world.info["files"]
    typer.echo(f"captions: {run.world.path / files['captions']}")
    typer.echo(f"held-out pictures: {run.world.path / files['eval']}")
    if run.reused:
        typer.echo(f"the world in {out} was already complete: nothing was rendered")


def chosen_rate(value: float) -> str:
    """A chosen rate as a percentage with its digits: 0.005 is "0.5%", never "0%" (the printed
    rate of a group that is never mentioned)."""
    return f"{100 * value:.3g}%"

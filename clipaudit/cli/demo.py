"""``clipaudit demo``: the paper's finding in a miniature world, from pictures to report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from clipaudit.cli._common import OverwriteOption, plain_console
from clipaudit.cli.world import GROUP_NAMES, GROUPS_HELP

console = plain_console()


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    out: Path = typer.Option(
        Path("runs/demo"), "--out", "-o", help="Run folder; rerun with it to resume."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the world (pictures and captions)."),
    steps: int | None = typer.Option(
        None,
        "--steps",
        help="Training steps (default 2,500: 2-5 minutes on 2 cores, slower when they are busy).",
    ),
    set_rates: list[str] = typer.Option(
        [],
        "--set",
        help="A group's caption misalignment, repeatable: Texture=0.5 (how often captions "
        "mention it), Background.perturbation=0.3 (how often a mention is wrong). " + GROUPS_HELP,
    ),
    sweep: str | None = typer.Option(
        None,
        "--sweep",
        help=f"Also train one model per rate of this group (a dose-response curve): {GROUP_NAMES}.",
    ),
    sweep_kind: str | None = typer.Option(
        None,
        "--sweep-kind",
        help="selection (the default) or perturbation: the rate --sweep varies.",
    ),
    rates: str | None = typer.Option(
        None,
        "--rates",
        help="The rates of --sweep, comma-separated and increasing (default 0,0.05,0.2,0.5,1).",
    ),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda."),
    threads: int | None = typer.Option(
        None,
        "--threads",
        help="CPU threads of the training (default: chosen by timing, so the weights can differ "
        "between runs; a fixed count repeats them bit for bit).",
    ),
    overwrite: bool = OverwriteOption,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Render a world whose captions say some things often and others rarely, train a tiny OpenCLIP
    on it, and audit what it learned; prints where report.html is."""
    import dataclasses

    from clipaudit.demo import DemoSettings, run_demo
    from clipaudit.errors import SettingsError
    from clipaudit.world.settings import (
        TrainSettings,
        WorldSettings,
        parse_misalignment,
        parse_rates,
    )

    if sweep is None and (sweep_kind is not None or rates is not None):
        raise SettingsError(
            "--sweep-kind and --rates shape a sweep: add --sweep GROUP (e.g. Texture)"
        )
    world = parse_misalignment(set_rates, WorldSettings(seed=seed))
    train = TrainSettings(device=device, threads=threads)
    if steps is not None:
        train = dataclasses.replace(train, steps=steps)
    sweep_options = {
        **({"sweep_kind": sweep_kind} if sweep_kind is not None else {}),
        **({"sweep_rates": parse_rates(rates)} if rates is not None else {}),
    }
    settings = DemoSettings(world=world, train=train, sweep=sweep, **sweep_options)
    result = run_demo(
        out,
        settings,
        overwrite=overwrite,
        progress=not quiet,
        echo=lambda line: console.print(line, soft_wrap=True),
    )
    _print(result)


def _print(result) -> None:
    from clipaudit.cli.world import chosen_rate

    manifest = result.manifest
    table = Table(title="what the captions said, what clipaudit measured, what the model learned")
    columns = (
        "group",
        "mention rate",
        "wrong",
        "true mentions",
        "group coverage",
        "macro-F1 (chance)",
    )
    for column in columns:
        # a group's name whole, even in 80 columns (else "Post-process…"): headers wrap instead
        table.add_column(
            column, justify="left" if column == "group" else "right", no_wrap=column == "group"
        )
    for row in manifest["groups"]:
        f1 = "-" if row["macro_f1"] is None else f"{row['macro_f1']:.2f} ({row['chance']:.2f})"
        table.add_row(
            row["group"],
            chosen_rate(row["chosen_selection"]),
            chosen_rate(row["chosen_perturbation"]),
            f"{row['true_mention_rate']:.1%}",
            f"{row['coverage']:.1%}",
            f1,
        )
    console.print(table)
    # the report's coverage per group is another number: a reader comparing the two is told
    console.print(
        "group coverage: the share of captions that name any of the group's values, right or "
        "wrong (groups.csv's coverage); the report's coverage of a group is the mean over its "
        "concepts."
    )
    rho = manifest.get("spearman_true_mentions_awareness")
    if rho is not None:
        # the report shows another across-groups figure: say what each ranks
        report_rho = manifest.get("spearman_coverage_awareness")
        said = (
            f"Spearman across groups, true mentions against macro-F1: {rho:.2f} (1 would be the "
            "same order: the more often captions truly say a group, the better the model knows it)"
        )
        if report_rho is not None:
            said += (
                f"; the report's {report_rho:.2f} across groups ranks measured coverage, which "
                "counts wrong mentions too"
            )
        console.print(f"{said}.")
    sweep = manifest.get("sweep") or []
    if sweep:
        swept = manifest["settings"]["sweep"]
        console.print(f"dose response of {swept['group']}, one model per {swept['kind']} rate:")
    for row in sweep:
        console.print(
            f"  rate {row['rate']:g}: group coverage {row['coverage']:.1%}, "
            f"macro-F1 {row['macro_f1']:.2f} (chance {row['chance']:.2f})"
        )
    typer.echo(f"figure: {result.out / 'demo.png'}")
    typer.echo(f"table: {result.out / 'groups.csv'}")
    if sweep:
        typer.echo(f"dose response: {result.out / 'sweep' / 'dose_response.png'}")
    typer.echo(f"report: {result.out / 'report.html'}")

"""``clipaudit theory run|check``: the synthetic latent-variable experiment of Cai et al. (2025)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from clipaudit.cli._common import OverwriteOption, command_group, plain_console
from clipaudit.text import counted

app = command_group(
    "Check the misalignment theory on synthetic latents, with the audit's own metrics."
)
console = plain_console()

PROFILE_HELP = (
    "Training profile: quick (a 2-core CPU) or paper (the published setting, for a GPU: add "
    "--device cuda)."
)

# YAML 1.1, which PyYAML reads, takes a float only with a dot and a signed exponent ("1.0e-3"): it
# reads "1e-3" or "1.5e3" as text, which a number setting would then refuse as no number
_EXPONENT_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _exponent_number(value: Any) -> Any:
    if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
        return float(value)
    return value


def _overrides(
    steps: int | None,
    batch_size: int | None,
    learning_rate: float | None,
    device: str | None,
    settings: list[str],
) -> dict[str, Any]:
    """Training settings that replace the profile's: the common ones, then each ``--set KEY=VALUE``
    (the value read as a YAML scalar or list, so ``hidden_widths=[64,64]`` is a list)."""
    import yaml

    from clipaudit.errors import SettingsError

    overrides = {
        "steps": steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "device": device,
    }
    options = {key: value for key, value in overrides.items() if value is not None}
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"--set expects KEY=VALUE, e.g. temperature=0.5; got {setting!r}")
        try:
            loaded = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
            raise SettingsError(
                f"--set {setting!r}: the value is no YAML scalar or list ({problem}); e.g. "
                "hidden_widths=[64,64]"
            ) from None
        # None means "not given" to training_profile, so an empty or null value would be dropped
        # without a word and the profile's value trained instead
        if loaded is None:
            hint = (
                "; for a fixed temperature give temperature=VALUE alone"
                if key.strip() == "final_temperature"
                else ""
            )
            raise SettingsError(
                f"--set {setting!r}: no value; give one, e.g. temperature=0.5{hint}"
            )
        loaded = (
            [_exponent_number(v) for v in loaded]
            if isinstance(loaded, list)
            else _exponent_number(loaded)
        )
        key = key.strip()
        # `--steps 100 --set steps=200` trained 200 steps without a word
        if key in options and options[key] != loaded:
            option = "--" + key.replace("_", "-")
            raise SettingsError(
                f"{key} given twice, as {option} {options[key]} and --set {key}={value.strip()}; "
                "give one"
            )
        overrides[key] = loaded
    return overrides


def _split(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The training settings and the probe's (``--set n_fit=2000``) of :func:`_overrides`."""
    from clipaudit.theory.config import split_settings

    return split_settings({key: value for key, value in overrides.items() if value is not None})


def _device_said(profile: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides``, refused for the paper's profile without a device: the device is the CPU
    unless given, and there the published setting is days of training for what looked like a
    GPU run."""
    from clipaudit.errors import SettingsError
    from clipaudit.theory.config import PROFILES

    if profile == "paper" and overrides.get("device") is None:
        paper = PROFILES["paper"]
        raise SettingsError(
            f"--profile paper is the published setting for a GPU ({paper.steps:,} steps of "
            f"batch {paper.batch_size} per configuration), and no --device was given (the CPU "
            "unless given): give --device cuda, or --device cpu to train it on the CPU anyway"
        )
    return overrides


SET_HELP = (
    "Any other training setting, KEY=VALUE, repeatable: temperature=0.5 (fixed; add "
    "final_temperature=3 to move it from 0.5 to 3 over training), mixing=conditioned, "
    "negatives=same-modality, whiten_outputs=false, lr_schedule=constant, hidden_widths=[64,64], "
    "weight_decay=0.1, group_size=8; or a size of the probe: n_fit=2000 (default 20000; 2e3 "
    "reads as 2000), n_val, n_test, kernel_components, n_prototypes."
)


# options shared by `run` and `check`
PerturbationCovariance = Annotated[
    str,
    typer.Option(
        help="Sigma_a, the covariance of the perturbation: semantics (Sigma_s, the paper's code), "
        "identity, or wishart (its own draw)."
    ),
]
Profile = Annotated[str, typer.Option(help=PROFILE_HELP)]
Steps = Annotated[int | None, typer.Option(help="Training steps (default: the profile's).")]
BatchSize = Annotated[int | None, typer.Option(help="Batch size (default: the profile's).")]
LearningRate = Annotated[
    float | None, typer.Option(help="Adam learning rate (default: the profile's).")
]
NBins = Annotated[int, typer.Option(help="Quantile bins per semantic for the awareness metric.")]
Threshold = Annotated[float, typer.Option(help="Nonlinear R² that counts as identified.")]
Margin = Annotated[float, typer.Option(help="Allowed R² above the theory's ceiling for the rest.")]
Device = Annotated[str | None, typer.Option(help="cpu or cuda[:N] (default: cpu, either profile).")]
Settings = Annotated[list[str], typer.Option("--set", help=SET_HELP)]
Threads = Annotated[int | None, typer.Option(help="CPU threads for torch (default: torch's).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


# a configuration outside the theorem's assumptions (another encoding size) has no prediction and
# no verdict: None in the summaries
VERDICT = {True: "agrees", False: "DISAGREES", None: "outside the theorem's assumptions"}
PREDICTED = {True: "identified", False: "-", None: "n/a"}


def _agrees(value: bool | None) -> str | Text:
    if value is None:
        return "n/a"
    return "yes" if value else Text("NO", style="red")


def _print(summaries: list[dict[str, Any]], verbose: bool) -> None:
    for summary in summaries:
        if verbose or summary["agrees"] is not True:
            table = Table(
                title=f"{summary['config']}: {VERDICT[summary['agrees']]}",
                caption=summary["description"],
            )
            for column in (
                "variable",
                "predicted",
                "ceiling",
                "x linear",
                "x nonlin",
                "t linear",
                "t nonlin",
                "agrees",
            ):
                # two-word headers on two lines: the table then fits 80 columns uncut
                table.add_column(
                    column.replace(" ", "\n"), justify="left" if column == "variable" else "right"
                )
            for v in summary["variables"]:
                table.add_row(
                    v["variable"],
                    PREDICTED[v["predicted_identified"]],
                    f"{v['ceiling']:.2f}",
                    f"{v['x_linear']:.2f}",
                    f"{v['x_nonlinear']:.2f}",
                    f"{v['t_linear']:.2f}",
                    f"{v['t_nonlinear']:.2f}",
                    _agrees(v["agrees"]),
                )
            console.print(table)
    verdicts = Table(title="verdict per configuration")
    # a configuration's name is never cut; the identified semantics wrap at their commas
    verdicts.add_column("configuration", no_wrap=True)
    # the lowest nonlinear R² (the one judged) of a semantic predicted identified, either encoder
    for column in ("predicted identified", "lowest nonlinear R²\nof those", "agrees"):
        verdicts.add_column(column)
    for summary in summaries:
        identified = [
            min(v["x_nonlinear"], v["t_nonlinear"])
            for v in summary["variables"]
            if v["predicted_identified"]
        ]
        predicted = summary["predicted_identified"]
        verdicts.add_row(
            summary["config"],
            "n/a (outside the theorem)" if predicted is None else ", ".join(predicted),
            f"{min(identified):.3f}" if identified else "-",
            _agrees(summary["agrees"]),
        )
    console.print(verdicts)


@app.command()
def run(
    out: Path = typer.Option(..., "--out", "-o", help="Run folder to write (resumes its own run)."),
    selected: str = typer.Option(
        "all", help="I_theta: semantics the text carries, 1-based (1-5, 1,3,7), or all."
    ),
    perturbed: str = typer.Option(
        "none", help="I_beta, inside --selected: semantics the text alters."
    ),
    n_semantics: int = typer.Option(10, help="n_s: number of shared semantics."),
    n_modality: int = typer.Option(5, help="n_m: size of each of m_x and m_t."),
    change_prob: float = typer.Option(
        0.75, help="Probability that a perturbable semantic changes."
    ),
    causal_dependence: bool = typer.Option(False, help="Dependent latents: Wishart covariances."),
    perturbation_covariance: PerturbationCovariance = "semantics",
    encoding_size: int | None = typer.Option(
        None,
        help="Representation size (default |I_theta \\ I_beta|, the size the theorem assumes; "
        "another size is probed but not judged).",
    ),
    seed: int = typer.Option(0, help="Seed of the latents, mixings, initialisation and data."),
    profile: Profile = "quick",
    steps: Steps = None,
    batch_size: BatchSize = None,
    learning_rate: LearningRate = None,
    n_bins: NBins = 5,
    identified_threshold: Threshold = 0.8,
    margin: Margin = 0.15,
    device: Device = None,
    settings: Settings = [],  # noqa: B006  (typer reads the default; it is never mutated)
    threads: Threads = None,
    overwrite: bool = OverwriteOption,
    quiet: Quiet = False,
) -> None:
    """Train and probe one configuration; print its R² table and whether it agrees with the theory
    (exit 1 when it disagrees, as `check` does)."""
    from clipaudit.theory import Scenario, run_scenario, summarise

    scenario = Scenario(
        n_semantics=n_semantics,
        n_modality=n_modality,
        selected=None if selected.strip().lower() == "all" else selected,
        perturbed=perturbed,
        change_prob=change_prob,
        causal_dependence=causal_dependence,
        encoding_size=encoding_size,
        seed=seed,
        perturbation_covariance=perturbation_covariance,
    )
    overrides = _overrides(steps, batch_size, learning_rate, device, settings)
    training, evaluation = _split(_device_said(profile, overrides))
    result = run_scenario(
        out,
        scenario,
        profile=profile,
        training_overrides=training,
        evaluation_overrides=evaluation,
        n_bins=n_bins,
        identified_threshold=identified_threshold,
        margin=margin,
        threads=threads,
        progress=not quiet,
        overwrite=overwrite,
    )
    _print(summarise(result), verbose=True)
    console.print(
        f"outputs in {out}/ (r2.csv, check.md, coverage/, zeroshot/, figures/, manifest.json)"
    )
    # the folder keeps every configuration trained into it (a check reuses them), but its
    # tables are this one's: said, so that a reader does not look for the earlier ones there
    others = sorted(p.stem for p in (out / "results").glob("*.json") if p.stem != scenario.name)
    if others:
        console.print(
            f"the tables are this configuration's; {counted(len(others), 'other')} trained into "
            f"this folder earlier ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}) "
            "stay in results/ and are reused when run again"
        )
    # a script's `theory run ... && next` must not go on as if the theory held (an encoding
    # size outside the theorem is not judged: no verdict, exit 0)
    if result.failed:
        raise typer.Exit(1)


@app.command()
def check(
    out: Path = typer.Option(
        Path("runs/theory-check"), "--out", "-o", help="Run folder (resumable)."
    ),
    profile: Profile = "quick",
    seeds: str = typer.Option(
        "2",
        help="A count of seeds (2: seeds 0 and 1) or explicit seeds (2,3 or 2-5; '7,' with its comma for seed 7 alone).",
    ),
    latents: str = typer.Option("independent,dependent", help="Latent modes to sweep."),
    kinds: str = typer.Option(
        "selection,perturbation", help="Sweeps: selection and/or perturbation prefixes."
    ),
    perturbation_covariance: PerturbationCovariance = "semantics",
    steps: Steps = None,
    batch_size: BatchSize = None,
    learning_rate: LearningRate = None,
    n_bins: NBins = 5,
    identified_threshold: Threshold = 0.8,
    margin: Margin = 0.15,
    device: Device = None,
    settings: Settings = [],  # noqa: B006  (typer reads the default; it is never mutated)
    threads: Threads = None,
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="A table for every configuration, not only failures."
    ),
    overwrite: bool = OverwriteOption,
    quiet: Quiet = False,
) -> None:
    """Run the paper's sweep and check every configuration against the theory (exit 1 on any disagreement)."""
    from clipaudit.theory import run_check, summarise
    from clipaudit.theory.config import parse_seeds

    overrides = _overrides(steps, batch_size, learning_rate, device, settings)
    training, evaluation = _split(_device_said(profile, overrides))
    result = run_check(
        out,
        seeds=parse_seeds(seeds),
        latents=_names(latents),
        kinds=_names(kinds),
        profile=profile,
        n_bins=n_bins,
        identified_threshold=identified_threshold,
        margin=margin,
        threads=threads,
        progress=not quiet,
        training_overrides=training,
        evaluation_overrides=evaluation,
        perturbation_covariance=perturbation_covariance,
        overwrite=overwrite,
    )
    _print(summarise(result), verbose=verbose)
    _print_margins(result.manifest["margins"])
    failed = result.failed
    console.print(
        f"{len(result.verdicts) - len(failed)}/{len(result.verdicts)} configurations agree with the "
        f"theory; {result.timings['total_seconds']:.0f} s; tables in {out}/check.md"
    )
    if failed:
        raise typer.Exit(1)


def _print_margins(rows: list[dict[str, Any]]) -> None:
    table = Table(title="agreement and margins per seed")
    for column in (
        "seed",
        "latents",
        "agree",
        "lowest nonlinear R²\npredicted identified",
        "largest nonlinear R²\nover ceiling",
    ):
        table.add_column(column, justify="left" if column == "latents" else "right")
    for row in rows:
        lowest, excess = row["lowest_identified_r2"], row["largest_excess_over_ceiling"]
        table.add_row(
            str(row["seed"]),
            row["latents"],
            f"{row['n_agree']}/{row['n_configurations']}",
            "-" if lowest is None else f"{lowest:.3f}",
            "-" if excess is None else f"{excess:+.3f}",
        )
    console.print(table)


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]

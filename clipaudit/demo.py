"""The embedded default: the paper's finding happening in a miniature world, in a few minutes.

:func:`run_demo` renders a world of pictures whose captions mention each concept group with a
chosen rate and alter it with another (:mod:`clipaudit.world`), trains a tiny OpenCLIP on the pairs,
and audits it through the very stages a LAION audit uses (:mod:`clipaudit.audit`): coverage of the
training captions, zero-shot awareness on held-out renders, and the report, which shows the world's
chosen rates beside what clipaudit measured. With ``sweep``, one more model per rate of one group
gives that group's awareness against its coverage: a dose-response curve. The run folder::

    RUN/world/      the rendered world (a world run: pictures, captions, chosen and realised rates)
    RUN/model/      the trained model: <name>.json (open_clip config) and <name>.safetensors
    RUN/coverage/   RUN/zeroshot/   RUN/report/     the audit's stages
    RUN/demo.png    per group, the share of captions that say its true value against
                    awareness (the README's figure)
    RUN/groups.csv  per group: chosen rates, true mention rate, coverage (the share of captions
                    naming any of its values), macro-F1, chance
    RUN/report.html the report's page, naming its files (figures/, tables/) in RUN/report/
    RUN/sweep/      with a sweep: per rate its captions (of RUN/world's pictures), model and
                    coverage; one zero-shot run of all rates; dose_response.csv and .png

Run again, a demo redoes only what is missing: a complete one is returned as it is, its manifest
(times and timings) untouched; the stages an earlier run made are printed and recorded as reused.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipaudit.errors import SettingsError, check_arguments, did_you_mean, keyword_checked
from clipaudit.world.settings import WORLD_GROUPS, WORLD_REGISTRY, TrainSettings, WorldSettings
from clipaudit.world.sweep import RATE_KINDS, sweep_rate_values
from clipaudit.world.training import batch_too_large
from clipaudit.world.world import RenderedWorld

N_STAGES = 5
DEFAULT_SWEEP_RATES = (0.0, 0.05, 0.2, 0.5, 1.0)
# training settings that do not change what is learned: a demo resumes across them
_NOT_RESULTS = ("device", "threads", "checkpoint_every")


@dataclass(frozen=True)
class DemoSettings:
    """The world, the model, and an optional sweep of one group's rate."""

    world: WorldSettings = field(default_factory=WorldSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    sweep: str | None = None  # a group of the world: one model per rate of it
    sweep_kind: str = "selection"  # or "perturbation"
    sweep_rates: tuple[float, ...] = DEFAULT_SWEEP_RATES

    def __post_init__(self) -> None:
        for name, kind in (("world", WorldSettings), ("train", TrainSettings)):
            value = getattr(self, name)
            if not isinstance(value, kind):  # a dict of fields would fail later, bare
                raise SettingsError(
                    f"{name} must be {kind.__name__}(...), got {type(value).__name__} {value!r:.60}"
                )
        if isinstance(self.sweep_rates, (str, bytes)) or not isinstance(
            self.sweep_rates, Iterable
        ):  # "0,1" would be read as its characters, 0.5 fail bare
            raise SettingsError(
                f"sweep rates must be a sequence of numbers in [0, 1] such as (0, 0.2, 1), got "
                f"{self.sweep_rates!r:.60}"
            )
        if self.sweep is not None and self.sweep not in WORLD_GROUPS:
            raise SettingsError(
                f"--sweep: expected one of the world's groups {', '.join(WORLD_GROUPS)}, got "
                f"{self.sweep!r}{did_you_mean(str(self.sweep), WORLD_GROUPS)}"
            )
        if self.sweep_kind not in RATE_KINDS:
            raise SettingsError(
                f"sweep kind must be selection or perturbation, got {self.sweep_kind!r}"
                f"{did_you_mean(str(self.sweep_kind), RATE_KINDS)}"
            )
        if self.train.batch_size > self.world.n_train:  # else found after the world's rendering
            raise SettingsError(batch_too_large(self.train.batch_size, self.world.n_train))
        object.__setattr__(self, "sweep_rates", tuple(self.sweep_rates))
        if self.sweep is not None:  # checked before the main demo, not after it
            sweep_rate_values(self.sweep_rates, self.sweep_kind)

    def describe(self) -> dict[str, Any]:
        """What the demo's results depend on (a resumed demo must have the same)."""
        train = {k: v for k, v in self.train.describe().items() if k not in _NOT_RESULTS}
        record: dict[str, Any] = {"world": self.world.describe(), "train": train}
        if self.sweep is not None:
            record["sweep"] = {
                "group": self.sweep,
                "kind": self.sweep_kind,
                "rates": list(self.sweep_rates),
            }
        return record


@keyword_checked
def run_demo(
    out: str | Path = "runs/demo",
    settings: DemoSettings | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> Any:
    """Render the world, train the model, audit it (and sweep, if asked); returns the
    :class:`~clipaudit.audit.AuditRun` with ``.world``. Resumable stage by stage; a folder of
    another demo is refused unless ``overwrite``."""
    from clipaudit.audit import run_audit_stages
    from clipaudit.coverage import CoverageSettings
    from clipaudit.models import ModelSpec
    from clipaudit.provenance import atomic_write_text
    from clipaudit.runs import RunFolder
    from clipaudit.world.training import resolve_train_device, train_world_model
    from clipaudit.world.world import render_world_run

    check_arguments(
        {"out (the run folder)": out}, {"overwrite": overwrite, "progress": progress}, echo
    )
    if settings is not None and not isinstance(settings, DemoSettings):
        raise SettingsError(
            f"settings must be DemoSettings(...) or None, got {type(settings).__name__} "
            f"{settings!r:.60}"
        )
    settings = settings or DemoSettings()
    resolve_train_device(settings.train.device)  # a device that is not there: before rendering
    out = Path(out)
    with RunFolder(out, "demo", settings.describe(), overwrite=overwrite) as folder:
        fresh = folder.restarted is not None
        seconds: dict[str, float] = {}
        # the stages taken as an earlier session left them -> the seconds their records give
        reused: dict[str, float | None] = {}

        # no verb in the stage lines: whether a stage is done or taken from an earlier session
        # is known only once it returns, and said then
        clock = time.perf_counter()
        echo(f"1/{N_STAGES} world: {settings.world.n_train:,} captioned pictures")
        world = render_world_run(settings.world, out / "world", overwrite=fresh)
        seconds["world_s"] = time.perf_counter() - clock
        if world.reused:
            reused["world"] = _recorded_seconds(world.manifest, "session_seconds")
            echo("    reused: rendered by an earlier run")

        clock = time.perf_counter()
        echo(f"2/{N_STAGES} model: a tiny OpenCLIP, {settings.train.steps:,} training steps")
        with _StepBar("training", progress) as bar:
            model = train_world_model(world.world, out / "model", settings.train, progress=bar)
        seconds["train_s"] = time.perf_counter() - clock
        if model.reused:
            reused["model"] = _recorded_seconds(model.record, "total_s")
            echo("    reused: trained by an earlier run")
        elif model.record.get("resumed_from_step"):
            echo(f"    resumed from the checkpoint at step {model.record['resumed_from_step']:,}")

        if _recorded_elsewhere(out, world.world.eval_path):
            # the demo was moved or copied: its zero-shot stage names the old folder's pictures,
            # and would refuse this one's; the stages are the demo's own (seconds), so redone
            folder.overwrite = True
        audit = run_audit_stages(
            folder,
            world.world.captions_path,
            world.world.eval_path,
            ModelSpec(str(model.config), str(model.checkpoint)),
            WORLD_REGISTRY,
            CoverageSettings(per_caption=False, progress=False),
            {"cache_dir": None, "workers": 0, "device": settings.train.device},
            {"title": "The miniature world: caption coverage against awareness"},
            progress,
            echo,
            extra_runs=[world],
            first_stage=3,
            n_stages=N_STAGES,
        )
        audit.world = world
        seconds.update(audit.manifest["timings"])
        audited = [
            stage for stage in ("coverage", "zeroshot", "report") if getattr(audit, stage).reused
        ]
        for stage in audited:
            reused[stage] = _recorded_seconds(getattr(audit, stage).manifest, "session_seconds")
        if audited:
            echo(f"    reused from an earlier run: {', '.join(audited)}")
        sweep = None
        if settings.sweep is not None:
            echo(f"sweep: one model per {settings.sweep_kind} rate of {settings.sweep}")
            clock = time.perf_counter()
            sweep, sweep_reused = run_sweep(settings, out / "sweep", progress, world.world)
            seconds["sweep_s"] = time.perf_counter() - clock
            if sweep_reused:
                reused["sweep"] = None
                echo("    reused: trained and measured by an earlier run")

        outputs = demo_outputs(settings)
        if (
            folder.was_complete
            and set(reused) == set(_STAGE_SECONDS) - ({"sweep"} if sweep is None else set())
            and all((out / name).is_file() for name in outputs)
        ):
            # this very demo, whole: its manifest keeps the figures of the run that made it
            previous = folder.previous or {}
            echo(
                f"the demo in {out} was already complete: nothing was redone (its results are "
                f"those of the run started {previous.get('started', '?')})"
            )
            audit.manifest = previous
            return audit

        table = group_table(world, audit)
        write_group_outputs(table, out)
        # the page a newcomer opens, at the top of the demo's folder (self-contained, its
        # figures inline; the files it names are in report/, and named so)
        atomic_write_text(out / "report.html", audit.report.to_html(folder=out))
        fields = dict(audit.manifest)
        fields["timings"] = _stage_timings(seconds, reused, folder.previous)
        fields["reused"] = list(reused)
        fields["outputs"] = outputs
        fields["groups"] = table.to_dict("records")
        fields["spearman_true_mentions_awareness"] = spearman(table)
        # the report's own figure, which a reader meets beside the printed one
        fields["spearman_coverage_awareness"] = report_group_spearman(audit.report.summary)
        if sweep is not None:
            fields["sweep"] = sweep.to_dict("records")
        audit.manifest = folder.complete(**fields)
        return audit


# a stage's seconds in the demo's manifest
_STAGE_SECONDS = {
    "world": "world_s",
    "model": "train_s",
    "coverage": "coverage_s",
    "zeroshot": "zeroshot_s",
    "report": "report_s",
    "sweep": "sweep_s",
}


def _stage_timings(
    seconds: dict[str, float], reused: dict[str, float | None], previous: dict[str, Any] | None
) -> dict[str, float]:
    """Seconds per stage: this session's for the stages it ran; for a stage an earlier session
    made, that session's figure (the earlier demo's, else the stage's own record), not the
    moment it took to find it done."""
    earlier = (previous or {}).get("timings")
    earlier = earlier if isinstance(earlier, dict) else {}
    timings = {key: round(value, 3) for key, value in seconds.items()}
    for stage, own in reused.items():
        key = _STAGE_SECONDS[stage]
        recorded = _seconds(earlier.get(key))
        if recorded is None:
            recorded = own
        if recorded is not None:
            timings[key] = recorded
    return timings


def _recorded_seconds(record: Any, key: str) -> float | None:
    """``record["timings"][key]`` when it is a number of seconds (records are read from disk)."""
    timings = record.get("timings") if isinstance(record, dict) else None
    return _seconds(timings.get(key) if isinstance(timings, dict) else None)


def _seconds(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def demo_outputs(settings: DemoSettings) -> list[str]:
    """The files a complete demo holds at its top, its stages' manifests and its sweep's
    outputs (a deleted one, or a stage's folder, is made again)."""
    outputs = ["groups.csv", "demo.png", "report.html"]
    outputs += [f"{stage}/manifest.json" for stage in ("world", "coverage", "zeroshot", "report")]
    outputs.append("model/training.json")
    if settings.sweep is not None:
        outputs += ["sweep/dose_response.csv", "sweep/dose_response.png"]
    return outputs


def _recorded_elsewhere(out: Path, eval_path: Path) -> bool:
    """Whether the zero-shot run in ``out/zeroshot`` (the demo's stage, or its sweep's) recorded
    held-out pictures other than ``eval_path``, the demo's own."""
    import json

    try:
        manifest = json.loads((out / "zeroshot" / "manifest.json").read_text(encoding="utf-8"))
        recorded = manifest["settings"]["images"]
    except (OSError, ValueError, RecursionError, KeyError, TypeError):  # none, or not readable
        return False
    return isinstance(recorded, str) and Path(recorded) != eval_path


class _StepBar:
    """A progress bar fed by the trainer's ``(step, steps, loss)`` reports."""

    def __init__(self, description: str, enabled: bool):
        self.description = description
        self.enabled = enabled
        self.bar: Any = None

    def __enter__(self) -> _StepBar:
        return self

    def __call__(self, step: int, steps: int, loss: float, **postfix: str) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=steps, desc=self.description, unit="step")
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix(**postfix, loss=f"{loss:.3f}", refresh=False)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------- what the demo shows


def group_table(world: Any, audit: Any) -> Any:
    """Per group of the world: category, chosen selection and perturbation, the share of captions
    that say the group's true value, the group's coverage clipaudit measured (captions naming any
    of its values, right or wrong; not the report's, the mean over its concepts), macro-F1 and
    chance."""
    import pandas as pd

    rates = world.rates.set_index("group")
    coverage = audit.coverage.groups.set_index("group")
    awareness = audit.zeroshot.groups.set_index("group")
    rows = []
    for group in WORLD_GROUPS:
        scored = group in awareness.index
        rows.append(
            {
                "group": group,
                "category": rates.loc[group, "category"],
                "chosen_selection": rates.loc[group, "chosen_selection"],
                "chosen_perturbation": rates.loc[group, "chosen_perturbation"],
                "true_mention_rate": rates.loc[group, "true_mention_rate"],
                "coverage": float(coverage.loc[group, "rate"]),
                "macro_f1": float(awareness.loc[group, "macro_f1"]) if scored else None,
                "chance": float(awareness.loc[group, "chance"]) if scored else None,
            }
        )
    return pd.DataFrame(rows)


def spearman(table: Any, x: str = "true_mention_rate", y: str = "macro_f1") -> float | None:
    """Rank correlation across groups between how often captions truly say a group and how well
    the model knows it (None with fewer than three groups or a constant column)."""
    from scipy.stats import spearmanr

    known = table.dropna(subset=[x, y])
    if len(known) < 3 or known[x].nunique() < 2 or known[y].nunique() < 2:
        return None
    return float(spearmanr(known[x], known[y]).statistic)


def report_group_spearman(summary: dict[str, Any]) -> float | None:
    """The report's Spearman across groups (primary coverage method): each group's mean concept
    coverage, a wrong mention counted too, against its macro-F1 (None where it gives none)."""
    for row in summary.get("correlations", []):
        if row.get("level") == "group" and row.get("primary"):
            return row["spearman"]["value"]
    return None


def write_group_outputs(table: Any, out: Path) -> None:
    """``groups.csv`` and ``demo.png`` (true mentions against awareness per group) into
    ``out``."""
    from clipaudit.provenance import atomic_write_bytes, write_table

    write_table(table, out / "groups", ("csv",))
    atomic_write_bytes(out / "demo.png", demo_figure(table))


def demo_figure(table: Any) -> bytes:
    """Each group's true mention rate against its macro-F1, chance marked: the paper's finding in
    one picture. A perturbed group is drawn hollow, with its wrong share."""
    import io

    import pandas as pd
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.2, 4.4), dpi=130)
    axes = figure.add_subplot()
    axes.set_xscale("symlog", linthresh=0.02)
    blue, vermillion, grey = "#0072B2", "#D55E00", "#777777"
    for number, row in enumerate(table.sort_values("true_mention_rate").itertuples()):
        if pd.isna(row.macro_f1):  # a group without test images
            continue
        perturbed = row.chosen_perturbation > 0
        x, y = row.true_mention_rate, row.macro_f1
        axes.plot([x * 0.8 - 0.002, x * 1.25 + 0.002], [row.chance] * 2, color=grey, lw=1.5)
        axes.plot([x, x], [row.chance, y], color=grey, lw=0.8, ls=":")  # the lift above chance
        axes.scatter(
            [x],
            [y],
            s=70,
            zorder=3,
            facecolors="white" if perturbed else blue,
            edgecolors=vermillion if perturbed else blue,
            linewidths=2,
        )
        label = f"{row.group}" + (f" ({row.chosen_perturbation:.0%} wrong)" if perturbed else "")
        # groups at one rate sit on one vertical: alternate their labels left and right
        side = -1 if number % 2 else 1
        axes.annotate(
            label,
            (x, y),
            xytext=(8 * side, 6),
            textcoords="offset points",
            fontsize=9,
            ha="left" if side > 0 else "right",
        )
    axes.set_xlim(-0.005, 1.6)
    axes.set_ylim(0, 1.1)
    axes.set_xticks([0, 0.02, 0.05, 0.1, 0.3, 1.0], labels=["0", "2%", "5%", "10%", "30%", "100%"])
    axes.set_xlabel("share of captions that say the group's true value")
    axes.set_ylabel("zero-shot macro-F1 (grey: chance)")
    axes.set_title("What captions rarely say, the model does not learn", fontsize=11)
    axes.grid(alpha=0.25)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


# --------------------------------------------------------------------------- the dose-response sweep


def run_sweep(
    settings: DemoSettings, out: Path, progress: bool, pictures: RenderedWorld | None = None
) -> tuple[Any, bool]:
    """One model per rate of the swept group (clipaudit.world.sweep) on ``pictures`` (the
    demo's world; None: rendered into ``out/world``), each rate's coverage counted and all
    models' awareness measured in one zero-shot run; writes ``dose_response.csv`` and
    ``dose_response.png``; returns the table and whether an earlier run had made all of it."""
    import pandas as pd

    from clipaudit.coverage import count_coverage
    from clipaudit.models import ModelSpec
    from clipaudit.provenance import atomic_write_bytes, write_table
    from clipaudit.world.sweep import sweep_rates
    from clipaudit.zeroshot import run_zeroshot

    group, kind = settings.sweep, settings.sweep_kind
    # one bar over every rate's steps (each model's steps restart at 1), naming the rate
    values = sweep_rate_values(settings.sweep_rates, kind)

    def report(rate: float, step: int, steps: int, loss: float) -> None:
        done = values.index(rate) * steps + step
        bar(done, steps * len(values), loss, rate=f"{rate:g}")

    with _StepBar("sweep training", progress) as bar:
        sweep = sweep_rates(
            settings.world,
            group,
            settings.sweep_rates,
            out,
            settings.train,
            kind=kind,
            progress=report,
            pictures=pictures,
        )
    specs = [ModelSpec(str(p.model.config), str(p.model.checkpoint)) for p in sweep.points]
    aware = run_zeroshot(
        specs,
        sweep.pictures.eval_path,
        out / "zeroshot",
        registry=WORLD_REGISTRY,
        groups=(group,),
        cache_dir=None,
        workers=0,
        device=settings.train.device,
        progress=False,
        # a moved or copied demo: the old folder's pictures recorded there, as in run_demo
        overwrite=_recorded_elsewhere(out, sweep.pictures.eval_path),
    )
    scores = aware.groups.set_index("model")
    rows = []
    reused = aware.reused and all(point.model.reused for point in sweep.points)
    for point, spec in zip(sweep.points, specs, strict=True):
        covered = count_coverage(
            [point.world.captions_path],
            WORLD_REGISTRY,
            out / f"coverage-{kind}-{point.rate:g}",
            progress=False,
        )
        reused = reused and covered.reused
        rates = point.world.info["rates"][group]
        rows.append(
            {
                "rate": point.rate,
                "kind": kind,
                "model": spec.label,
                "true_mention_rate": rates["true_mention_rate"],
                "coverage": float(covered.groups.set_index("group").loc[group, "rate"]),
                "macro_f1": float(scores.loc[spec.label, "macro_f1"]),
                "chance": float(scores.loc[spec.label, "chance"]),
            }
        )
    # by rate, however given: the curve joins its points in the table's order
    table = pd.DataFrame(rows).sort_values("rate", kind="stable", ignore_index=True)
    written = all((out / name).is_file() for name in ("dose_response.csv", "dose_response.png"))
    if not (reused and written):
        write_table(table, out / "dose_response", ("csv",))
        atomic_write_bytes(out / "dose_response.png", dose_response_figure(table, group, kind))
    return table, reused


def dose_response_figure(table: Any, group: str, kind: str) -> bytes:
    """The swept group's awareness against the rate its captions were given."""
    import io

    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.8), dpi=130)
    axes = figure.add_subplot()
    axes.plot(table["rate"], table["macro_f1"], "o-", color="#0072B2", lw=2, label="macro-F1")
    axes.axhline(table["chance"].iloc[0], color="#777777", ls="--", lw=1.2, label="chance")
    axes.set_xlabel(f"{kind} rate of {group} in the captions")
    axes.set_ylabel(f"zero-shot macro-F1 of {group}")
    axes.set_ylim(0, 1.05)
    axes.grid(alpha=0.25)
    axes.legend(loc="lower right", fontsize=9)
    axes.set_title(f"{group}: awareness against how often captions carry it", fontsize=11)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()

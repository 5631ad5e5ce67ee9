"""Run scenarios (train in batched groups, probe, audit) and check them against the theory.

A run folder holds, besides ``manifest.json``:

- ``r2.{parquet,csv}``: ``config, encoder, variable, r2_linear, r2_nonlinear, ceiling,
  predicted_identified, agrees, role`` (``predicted_identified`` and ``agrees`` empty for a
  scenario outside the theorem's assumptions,
  :attr:`~clipaudit.theory.config.Scenario.within_theorem`: probed, not judged);
- ``coverage/{concepts,groups,categories}.{parquet,csv}``: the coverage run schema, with a leading
  ``model`` column naming the scenario;
- ``zeroshot/{concepts,groups}.csv`` and ``zeroshot/confusion/<config>/<group>.csv``: the
  zero-shot run schema, ``model`` = scenario;
- ``training_loss.csv`` (``config, step, loss``) and ``figures/*.png``;
- ``results/<config>.json`` per finished scenario and ``checkpoints/`` while a group trains: a
  killed run started again with the same settings resumes where it stopped (a result cut short or
  edited by hand, told by the digest of its measurements, is computed again).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipaudit.errors import RunFolderError, SettingsError, keyword_checked
from clipaudit.provenance import atomic_write_text, read_table_csv, write_json, write_table
from clipaudit.runs import RunFolder, differences, fingerprint
from clipaudit.text import counted, slug
from clipaudit.theory.config import (
    LATENT_MODES,
    SWEEP_KINDS,
    EvaluationSettings,
    Scenario,
    TrainingSettings,
    default_sweep,
    format_index_list,
    resolve_group_size,
    training_bytes,
    training_profile,
)
from clipaudit.theory.evaluation import (
    ProbeSplit,
    audit_tables,
    population_ceilings,
    probe_r2,
    probe_targets,
    role,
)
from clipaudit.theory.generative import sample_latents, torch_generator, view_latents
from clipaudit.theory.training import BatchedSimulation

LIBRARIES = ("torch", "numpy", "scipy", "scikit-learn", "pandas", "matplotlib")
R2_COLUMNS = [
    "config",
    "encoder",
    "variable",
    "r2_linear",
    "r2_nonlinear",
    "ceiling",
    "predicted_identified",
    "agrees",
    "role",
]


@dataclass
class SweepResult:
    """Everything a run produced; ``r2`` is the DataFrame also written as ``r2.csv``."""

    out: Path
    scenarios: list[Scenario]
    r2: Any
    awareness: Any
    coverage: Any
    timings: dict[str, Any]
    manifest: dict[str, Any] = field(repr=False)

    @property
    def verdicts(self) -> dict[str, bool]:
        """Scenario name -> whether every probed variable agrees with the theory, for the
        scenarios the theorem applies to (:attr:`outside` are not judged)."""
        agrees = self.r2.groupby("config", sort=False)["agrees"].all()
        return {s.name: bool(agrees[s.name]) for s in self.scenarios if s.within_theorem}

    @property
    def failed(self) -> list[str]:
        """Scenarios the theorem applies to that disagree with it."""
        return [name for name, ok in self.verdicts.items() if not ok]

    @property
    def outside(self) -> list[str]:
        """Scenarios outside the theorem's assumptions (another encoding size): not judged."""
        return [s.name for s in self.scenarios if not s.within_theorem]

    def __repr__(self) -> str:  # short: the tables are a call away (r2, awareness, coverage)
        outside = f", {len(self.outside)} outside the theorem's assumptions" if self.outside else ""
        return (
            f"SweepResult({str(self.out)!r}: {len(self.scenarios)} scenario(s), "
            f"{len(self.verdicts) - len(self.failed)} agreeing with the theory{outside})"
        )

    def _repr_html_(self) -> str:
        from html import escape

        import pandas as pd

        verdicts = pd.DataFrame(
            {
                "scenario": [s.name for s in self.scenarios],
                "agrees with the theory": [
                    self.verdicts.get(s.name, "not judged: outside its assumptions")
                    for s in self.scenarios
                ],
            }
        )
        return f"<p><b>{escape(repr(self))}</b></p>{verdicts.to_html(index=False)}"


def load_theory_run(path: str | Path, manifest: dict[str, Any]) -> SweepResult:
    """A complete theory run folder read back (:func:`clipaudit.runs.load_run`)."""
    import pandas as pd

    path = Path(path)
    fields = {f.name for f in dataclasses.fields(Scenario)}
    records = manifest["scenarios"]
    # a hand-edited manifest: said as a damaged folder, not met as a TypeError
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ValueError(f"its manifest's scenarios are not a list of records: {records!r:.80}")
    try:
        scenarios = [Scenario(**{k: v for k, v in r.items() if k in fields}) for r in records]
    except SettingsError as exc:
        raise ValueError(f"its manifest holds a scenario that cannot be: {exc}") from None
    return SweepResult(
        out=path,
        scenarios=scenarios,
        r2=pd.read_parquet(path / "r2.parquet"),
        awareness=read_table_csv(path / "zeroshot" / "groups.csv"),
        coverage=pd.read_parquet(path / "coverage" / "groups.parquet"),
        timings=manifest.get("timings", {}),
        manifest=manifest,
    )


def _settings_record(training: TrainingSettings, evaluation: EvaluationSettings) -> dict[str, Any]:
    return {"training": dataclasses.asdict(training), "evaluation": dataclasses.asdict(evaluation)}


# the check's thresholds only judge the measured R^2: a finished run is re-judged, not retrained
_JUDGEMENT = ("identified_threshold", "margin")


# how often a group is checkpointed changes no number it computes (checkpoints fall on the data's
# chunk boundaries), so a run resumes or is reused under another frequency
_NOT_IN_THE_NUMBERS = ("training.checkpoint_every",)


# settings added since runs were first written, whose default is not what older runs did: the
# probe was an exact kernel ridge before Nystroem features
_BEFORE_THEY_EXISTED = {"evaluation": {"kernel_components": "exact"}}


def _differences(previous: Mapping[str, Any], settings: Mapping[str, Any]) -> list[str]:
    """What changed in the training and evaluation settings, the check's thresholds aside.
    A setting added after a run was written held its default value in that run (or, for those in
    :data:`_BEFORE_THEY_EXISTED`, what the code did before it existed)."""
    now = json.loads(json.dumps(settings, default=str))
    defaults = json.loads(
        json.dumps(_settings_record(TrainingSettings(), EvaluationSettings()), default=str)
    )
    before = {
        part: {**defaults[part], **_BEFORE_THEY_EXISTED.get(part, {}), **previous.get(part, {})}
        for part in now
    }
    return differences(
        before,
        now,
        ignore=[*(f"evaluation.{key}" for key in _JUDGEMENT), *_NOT_IN_THE_NUMBERS],
    )


def _with_legacy_settings(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored scenario record with the settings added since filled in as they were then: before
    ``perturbation_covariance`` existed, dependent latents drew Sigma_a on their own and
    independent latents used the identity (which is Sigma_s)."""
    legacy = "wishart" if stored.get("causal_dependence") else "semantics"
    return {"perturbation_covariance": legacy, **stored}


# what a scenario's result holds besides its scenario record; its digest covers these, and the
# scenario record is compared on its own (:func:`_stale_results`: older ones lack newer settings)
_TABLES = (  # the run's tables, each a list of rows in every result
    "r2",
    "coverage_concepts",
    "coverage_groups",
    "coverage_categories",
    "awareness_concepts",
    "awareness_groups",
)
_RESULT_FIELDS = (
    *_TABLES,
    "confusion",
    "loss",
    "mixing_conditions",
    "eval_seconds",
    "train_seconds_share",
)


def _result_digest(record: Mapping[str, Any]) -> str:
    return fingerprint({key: record[key] for key in _RESULT_FIELDS})


def _intact(record: Any) -> bool:
    """Whether a stored result is one this code wrote, unedited: every field there, and the
    digest of its measurements matching (results written before digests have none)."""
    if not isinstance(record, dict) or not isinstance(record.get("scenario"), dict):
        return False
    if any(key not in record for key in _RESULT_FIELDS):
        return False
    return record.get("digest") in (None, _result_digest(record))


def _stale_results(results_dir: Path, scenarios: Sequence[Scenario]) -> list[str]:
    """Stored results of a scenario with the same name but another data-generating process.
    Damaged ones are removed, to be computed again."""
    stale = []
    for scenario in scenarios:
        path = results_dir / f"{scenario.name}.json"
        if not path.exists():
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, RecursionError):
            record = None
        if not _intact(record):
            # written atomically, so only a hand edit or a damaged disk cuts one short or changes
            # a number: the scenario is trained and probed again, as one that never finished (an
            # edited R^2 would otherwise be judged as measured)
            path.unlink()
            continue
        now = json.loads(json.dumps(scenario.to_dict()))
        stored = _with_legacy_settings(record["scenario"])
        # with nothing perturbed, neither Sigma_a nor the change probability reaches the data
        # (s~ = s exactly), and the name leaves both out
        ignored = set() if scenario.perturbed else {"perturbation_covariance", "change_prob"}
        changed = [
            f"{key}: {stored.get(key)!r} -> {value!r}"
            for key, value in now.items()
            if key not in ignored and stored.get(key) != value
        ]
        if changed:
            stale.append(f"{scenario.name} ({', '.join(changed)})")
    return stale


def prediction(scenario: Scenario, variable: str) -> bool | None:
    """Whether the theorem predicts ``variable`` identified: exactly the invariant semantics are;
    None (no prediction) for a scenario outside its assumptions."""
    if not scenario.within_theorem:
        return None
    return variable in {f"s{i}" for i in scenario.invariant}


def judge(
    predicted_identified: bool | None,
    r2_nonlinear: float,
    ceiling: float,
    evaluation: EvaluationSettings,
) -> bool | None:
    """The theory's verdict on one variable: identified means nonlinear R^2 of at least the
    threshold; not identified means no more than the population ceiling plus the margin; no
    verdict (None) without a prediction."""
    if predicted_identified is None:
        return None
    if predicted_identified:
        return r2_nonlinear >= evaluation.identified_threshold
    return r2_nonlinear <= ceiling + evaluation.margin


def _variable_role(scenario: Scenario, variable: str) -> str:
    if variable.startswith("s~"):
        return "perturbed-text"
    if variable in ("m_x", "m_t"):
        return "image-specific" if variable == "m_x" else "text-specific"
    return role(scenario, int(variable[1:]))


def evaluate_scenario(
    simulation: BatchedSimulation, index: int, evaluation: EvaluationSettings
) -> dict[str, Any]:
    """Probe and audit scenario ``index`` of a trained group on fresh samples (its own
    ``evaluation`` random stream): R^2 rows with the theory's verdict, and the audit tables."""
    scenario, model = simulation.scenarios[index], simulation.models[index]
    generator = torch_generator(scenario.seed, "evaluation", simulation.training.device)
    n_fit, n_val, n_test = evaluation.n_fit, evaluation.n_val, evaluation.n_test
    latents = sample_latents(model, n_fit + n_val + n_test, generator)
    image_rep, text_rep = (
        r.cpu().numpy()
        for r in simulation.encode(
            index, *simulation.views(index, *view_latents(scenario, latents))
        )
    )
    targets = probe_targets(scenario, latents)
    parts = {
        "fit": slice(0, n_fit),
        "val": slice(n_fit, n_fit + n_val),
        "test": slice(n_fit + n_val, None),
    }
    ceilings = population_ceilings(model)
    rows = []
    for encoder, rep in (("x", image_rep), ("t", text_rep)):
        split = ProbeSplit(
            **{k: (rep[p], {n: v[p] for n, v in targets.items()}) for k, p in parts.items()}
        )
        for variable, (r2_linear, r2_nonlinear) in probe_r2(split, evaluation).items():
            predicted = prediction(scenario, variable)
            ceiling = ceilings[variable]
            rows.append(
                {
                    "config": scenario.name,
                    "encoder": encoder,
                    "variable": variable,
                    "r2_linear": r2_linear,
                    "r2_nonlinear": r2_nonlinear,
                    "ceiling": ceiling,
                    "predicted_identified": predicted,
                    "agrees": judge(predicted, r2_nonlinear, ceiling, evaluation),
                    "role": _variable_role(scenario, variable),
                }
            )
    prompts = sample_latents(model, evaluation.n_prototypes, generator, perturb=False)
    _, prompt_rep = simulation.encode(
        index, *simulation.views(index, *view_latents(scenario, prompts))
    )
    audit = audit_tables(
        scenario.name,
        model,
        latents,
        image_rep[parts["test"]],
        latents.s[parts["test"]].cpu().numpy(),
        prompt_rep.cpu().numpy(),
        prompts.s.cpu().numpy(),
        evaluation.n_bins,
    )
    return {"r2": rows, **audit}


def _groups(scenarios: list[Scenario], training: TrainingSettings) -> list[list[Scenario]]:
    """The scenarios in training groups of ``training.group_size`` (``"auto"``: by model size
    and device, :func:`resolve_group_size`)."""
    n_inputs = max(s.n_semantics + s.n_modality for s in scenarios)
    n_outputs = max(s.representation_size for s in scenarios)
    size = resolve_group_size(training, len(scenarios), n_inputs, n_outputs)
    return [scenarios[k : k + size] for k in range(0, len(scenarios), size)]


def _check_memory(scenarios: list[Scenario], training: TrainingSettings) -> None:
    """Refuse widths, a batch or a group that cannot fit the device's memory: they would fail
    with the allocator's traceback once the folder is made, or swap for hours."""
    needs = [
        (sum(training_bytes(training, s) for s in group), len(group))
        for group in _groups(scenarios, training)
    ]
    needed, size = max(needs)
    if training.device.startswith("cuda"):
        total = torch.cuda.get_device_properties(torch.device(training.device)).total_memory
    elif hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    else:  # no way to tell here (Windows): the allocator says it
        return
    if needed > total:
        raise SettingsError(
            f"training {size} configuration(s) at once needs more than "
            f"{needed / 2**30:,.1f} GiB (hidden_widths {list(training.hidden_widths)}, batch_size "
            f"{training.batch_size}), and {training.device} has {total / 2**30:,.1f} GiB; lower "
            "hidden_widths (--set hidden_widths=[...]), batch_size (--batch-size) or group_size "
            "(--set group_size=N); training_overrides= in Python"
        )


@keyword_checked
def run_sweep(
    scenarios: Sequence[Scenario],
    training: TrainingSettings,
    evaluation: EvaluationSettings,
    out: str | Path,
    threads: int | None = None,
    progress: bool = True,
    check: bool = False,
    overwrite: bool = False,
) -> SweepResult:
    """Train every scenario (in batched groups of ``training.group_size``, 0 = all at once),
    evaluate each, write the run folder and return the results. Resumes a run folder of the
    same settings (re-judging finished scenarios under new thresholds); refuses
    (:class:`RunFolderError`) one of different settings unless ``overwrite``. ``check`` marks
    the paper's sweep, judged as a whole."""
    if isinstance(scenarios, Scenario):
        raise SettingsError("scenarios must be a list of Scenario(...); for one, use run_scenario")
    scenarios = list(scenarios)
    if not scenarios:
        raise SettingsError("no scenarios to run; give at least one")
    # met otherwise as an AttributeError deep in training, after the folder is made
    for what, value, kind, hint in (
        *(("a scenario", s, Scenario, "Scenario(selected='1-5')") for s in scenarios),
        ("training", training, TrainingSettings, "training_profile('quick')"),
        ("evaluation", evaluation, EvaluationSettings, "EvaluationSettings()"),
    ):
        if not isinstance(value, kind):
            raise SettingsError(
                f"{what} must be a {kind.__name__}, e.g. {hint}; got {type(value).__name__} "
                f"{value!r:.60}"
            )
    # each name counted once: names.count per name was quadratic in the number of scenarios
    repeated = sorted(n for n, count in Counter(s.name for s in scenarios).items() if count > 1)
    if repeated:
        raise SettingsError(f"scenario {repeated[0]!r} appears more than once in the sweep")
    outside = [s for s in scenarios if not s.within_theorem]
    if check and outside:
        raise SettingsError(
            f"the check judges the theorem, which assumes encoders of the invariant block's size "
            f"|I_theta \\ I_beta|; {outside[0].name}: encoding size "
            f"{outside[0].representation_size}, and the theorem assumes "
            f"{len(outside[0].invariant)} ({len(outside)} such scenario(s)); leave encoding_size "
            "unset, or run them without check=True (probed, reported as outside the theorem)"
        )
    # the probe's sizes against the representations' (the settings alone do not know them)
    evaluation.check_representations(scenarios)
    from clipaudit.models import resolve_device

    resolve_device(training.device)  # a GPU that is not there: before any folder is made
    if threads is not None and (
        not isinstance(threads, int) or isinstance(threads, bool) or threads < 1
    ):
        raise SettingsError(
            f"threads must be an integer >= 1; got {threads!r}: give --threads 1 or more "
            "(threads= in Python), or leave it out for torch's own count"
        )
    _check_memory(scenarios, training)
    callers_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run_sweep(
            scenarios, training, evaluation, Path(out), threads, progress, check, overwrite
        )
    finally:
        torch.set_num_threads(callers_threads)  # the caller's, as it was


def _run_sweep(
    scenarios: list[Scenario],
    training: TrainingSettings,
    evaluation: EvaluationSettings,
    out: Path,
    threads: int | None,
    progress: bool,
    check: bool,
    overwrite: bool,
) -> SweepResult:
    settings = _settings_record(training, evaluation)
    _adopt_legacy_folder(out)
    with RunFolder(
        out,
        "theory",
        settings,
        overwrite=overwrite,
        libraries=LIBRARIES,
        compare=_differences,
        units_dir="results",
    ) as folder:
        stale = _stale_results(folder.units, scenarios)
        if stale:
            raise RunFolderError(
                f"{out} holds results of {len(stale)} scenario(s) generated differently, e.g. "
                f"{stale[0]}; pass --overwrite (overwrite=True in Python) to replace them, or "
                "choose another --out (out= in Python)"
            )
        timings = _train_and_evaluate(folder, scenarios, training, evaluation, progress)
        return _assemble(folder, scenarios, training, evaluation, threads, check, timings)


def _adopt_legacy_folder(out: Path) -> None:
    """A run folder written before the run-folder contract kept its settings in settings.json
    and wrote manifest.json only at the end; give an unfinished one a manifest to resume by."""
    legacy = out / "settings.json"
    if legacy.is_file() and not (out / "manifest.json").is_file():
        settings = json.loads(legacy.read_text(encoding="utf-8"))
        write_json(
            out / "manifest.json", {"kind": "theory", "status": "running", "settings": settings}
        )


def _train_and_evaluate(
    folder: RunFolder,
    scenarios: list[Scenario],
    training: TrainingSettings,
    evaluation: EvaluationSettings,
    progress: bool,
) -> dict[str, Any]:
    """Train the groups with unfinished scenarios and evaluate those; returns the timings."""
    from tqdm.auto import tqdm

    out, results_dir = folder.path, folder.units
    groups = _groups(scenarios, training)
    # groups trained by an earlier call keep the times they cost then (a re-judge trains nothing)
    earlier = (folder.previous or {}).get("timings", {})
    earlier_groups = {
        tuple(g["scenarios"]): g
        for g in [*earlier.get("earlier_groups", []), *earlier.get("groups", [])]
    }
    timings: dict[str, Any] = {"groups": [], "earlier_groups": []}
    started = time.perf_counter()
    for number, group in enumerate(groups, 1):
        missing = [i for i, s in enumerate(group) if not (results_dir / f"{s.name}.json").exists()]
        if not missing:
            names = tuple(s.name for s in group)
            if names in earlier_groups:
                timings["earlier_groups"].append(earlier_groups[names])
            continue
        group_started = time.perf_counter()
        simulation = BatchedSimulation(group, training)
        # keyed by the scenarios' whole records, so a changed data-generating process starts
        # afresh. A checkpoint named by the former sha256 hash is not found: that group trains
        # again from its seeds (the same numbers), and checkpoints/ goes at the end
        checkpoint = out / "checkpoints" / f"group-{fingerprint([s.to_dict() for s in group])}.pt"
        resumed_at = simulation.step if simulation.load(checkpoint) else 0
        bar = tqdm(
            total=training.steps,
            initial=simulation.step,
            disable=not progress,
            unit="step",
            desc=f"training group {number}/{len(groups)} ({counted(len(group), 'scenario')})",
            leave=False,
        )

        def advance(step: int, losses: list[float], bar=bar) -> None:
            bar.update(step - bar.n)
            bar.set_postfix(mean_loss=f"{np.mean(losses):.3f}")

        simulation.train(checkpoint=checkpoint, on_steps=advance)
        bar.close()
        trained = time.perf_counter()
        for index in tqdm(missing, disable=not progress, desc="evaluating", leave=False):
            scenario = group[index]
            eval_started = time.perf_counter()
            record = evaluate_scenario(simulation, index, evaluation)
            record["scenario"] = scenario.to_dict()
            record["loss"] = [[step, values[index]] for step, values in simulation.loss_log]
            record["mixing_conditions"] = {
                "g_x": simulation.mixings[index].x_conditions,
                "g_t": simulation.mixings[index].t_conditions,
            }
            record["eval_seconds"] = time.perf_counter() - eval_started
            record["train_seconds_share"] = (trained - group_started) / len(group)
            record["digest"] = _result_digest(record)
            write_json(results_dir / f"{scenario.name}.json", record)
        checkpoint.unlink(missing_ok=True)
        timings["groups"].append(
            {
                "scenarios": [s.name for s in group],
                "resumed_at_step": resumed_at,
                "train_seconds": trained - group_started,
                "eval_seconds": time.perf_counter() - trained,
            }
        )
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    timings["total_seconds"] = time.perf_counter() - started
    return timings


def _assemble(
    folder: RunFolder,
    scenarios: list[Scenario],
    training: TrainingSettings,
    evaluation: EvaluationSettings,
    threads: int | None,
    check: bool,
    timings: dict[str, Any],
) -> SweepResult:
    """Write the tables, figures and manifest from the per-scenario results."""
    import pandas as pd

    from clipaudit.models import describe_device, resolve_device

    out = folder.path
    from clipaudit.theory.figures import plot_coverage_awareness, plot_r2_heatmaps

    records = {
        s.name: json.loads((out / "results" / f"{s.name}.json").read_text()) for s in scenarios
    }
    tables = {
        key: pd.DataFrame([row for r in records.values() for row in r[key]]) for key in _TABLES
    }
    r2 = tables["r2"][R2_COLUMNS].copy()
    # from the scenarios, not the stored rows: results written before the theorem's assumptions
    # were checked carry a prediction for scenarios it does not cover
    by_name = {s.name: s for s in scenarios}
    predicted = [prediction(by_name[row.config], row.variable) for row in r2.itertuples()]
    r2["predicted_identified"] = pd.array(predicted, dtype="boolean")
    r2["agrees"] = pd.array(
        [
            judge(flag, row.r2_nonlinear, row.ceiling, evaluation)
            for flag, row in zip(predicted, r2.itertuples(), strict=True)
        ],
        dtype="boolean",
    )
    written = write_table(r2, out / "r2")
    for key, name in (
        ("coverage_concepts", "concepts"),
        ("coverage_groups", "groups"),
        ("coverage_categories", "categories"),
    ):
        written += write_table(tables[key], out / "coverage" / name)
    for key, name in (("awareness_concepts", "concepts"), ("awareness_groups", "groups")):
        written += write_table(tables[key], out / "zeroshot" / name, formats=("csv",))
    for config, record in records.items():
        confusion = pd.DataFrame(record["confusion"])
        for group, matrix in confusion.groupby("group", sort=False):
            labels = [c for c in matrix.columns if c.startswith(f"{group}_bin")]
            # one frame holds every group's columns, so counts come back as floats with NaNs
            frame = matrix.set_index("true")[labels].astype(int)
            written += write_table(
                frame.reset_index(),
                out / "zeroshot" / "confusion" / slug(config) / group,
                formats=("csv",),
            )
    loss = pd.DataFrame(
        [
            {"config": c, "step": step, "loss": value}
            for c, r in records.items()
            for step, value in r["loss"]
        ]
    )
    written += write_table(loss, out / "training_loss", formats=("csv",))
    written += [
        *plot_r2_heatmaps(r2, scenarios, out / "figures"),
        plot_coverage_awareness(
            tables["coverage_groups"], tables["awareness_groups"], out / "figures"
        ),
    ]

    per_config = {
        c: {"train_seconds_share": r["train_seconds_share"], "eval_seconds": r["eval_seconds"]}
        for c, r in records.items()
    }
    timings["per_config_seconds"] = per_config
    timings["max_seconds_per_config"] = max(
        v["train_seconds_share"] + v["eval_seconds"] for v in per_config.values()
    )
    manifest = dict(
        {
            "mode": "check" if check else "run",
            "scenarios": [records[s.name]["scenario"] for s in scenarios],
            "seeds": sorted({s.seed for s in scenarios}),
            "threads": torch.get_num_threads(),
            "device": training.device,
            "device_info": describe_device(resolve_device(training.device)),
            "mixing_conditions": {c: r["mixing_conditions"] for c, r in records.items()},
            "final_loss": {
                c: (r["loss"][-1][1] if r["loss"] else None) for c, r in records.items()
            },
            "verdicts": {
                s.name: bool(r2.loc[r2["config"] == s.name, "agrees"].all())
                for s in scenarios
                if s.within_theorem
            },
            "outside_theorem": [s.name for s in scenarios if not s.within_theorem],
            "timings": timings,
            "outputs": sorted(str(p.relative_to(out)) for p in written),
        }
    )
    result = SweepResult(
        out=out,
        scenarios=scenarios,
        r2=r2,
        awareness=tables["awareness_groups"],
        coverage=tables["coverage_groups"],
        timings=timings,
        manifest=manifest,
    )
    margin_rows = margins(result)
    manifest["margins"] = margin_rows
    provenance = {
        **{key: folder.manifest.get(key) for key in ("clipaudit_version", "git_hash", "started")},
        "seeds": manifest["seeds"],
        "device": manifest["device"],
    }
    atomic_write_text(
        out / "check.md",
        check_markdown(summarise(result), folder.settings, margin_rows, provenance),
    )
    manifest["outputs"].append("check.md")
    result.manifest = folder.complete(**manifest)
    return result


def _evaluation(
    n_bins: int,
    identified_threshold: float,
    margin: float,
    overrides: Mapping[str, Any] | None = None,
) -> EvaluationSettings:
    """The evaluation settings of a run: the check's bins and thresholds, and ``overrides`` of the
    probe's sizes (``{"n_fit": 2000}``; the three given as arguments may not be among them)."""
    overrides = dict(overrides or {})
    for key in ("n_bins", "identified_threshold", "margin"):
        if key in overrides:
            raise SettingsError(
                f"evaluation_overrides holds {key!r}, which has its own argument: give {key}= "
                "(on the command line its own option)"
            )
    return EvaluationSettings(
        n_bins=n_bins, identified_threshold=identified_threshold, margin=margin, **overrides
    )


@keyword_checked
def run_scenario(
    out: str | Path,
    scenario: Scenario,
    profile: str = "quick",
    training_overrides: dict[str, Any] | None = None,
    n_bins: int = 5,
    identified_threshold: float = 0.8,
    margin: float = 0.15,
    threads: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
    evaluation_overrides: dict[str, Any] | None = None,
) -> SweepResult:
    """One configuration trained under ``profile`` (some settings replaced by
    ``training_overrides``, e.g. ``{"steps": 1000}``; the probe's sizes by
    ``evaluation_overrides``, e.g. ``{"n_fit": 2000}``) and checked against the theory."""
    return run_sweep(
        [scenario],
        training_profile(profile, **(training_overrides or {})),
        _evaluation(n_bins, identified_threshold, margin, evaluation_overrides),
        out,
        threads=threads,
        progress=progress,
        overwrite=overwrite,
    )


@keyword_checked
def run_check(
    out: str | Path,
    profile: str = "quick",
    seeds: int | Sequence[int] = 2,
    latents: Sequence[str] = LATENT_MODES,
    kinds: Sequence[str] = SWEEP_KINDS,
    n_bins: int = 5,
    identified_threshold: float = 0.8,
    margin: float = 0.15,
    threads: int | None = None,
    progress: bool = True,
    training_overrides: dict[str, Any] | None = None,
    perturbation_covariance: str = "semantics",
    overwrite: bool = False,
    evaluation_overrides: dict[str, Any] | None = None,
) -> SweepResult:
    """The paper's sweep (:func:`default_sweep`) trained under ``profile`` (some settings replaced
    by ``training_overrides``, the probe's sizes by ``evaluation_overrides``) and checked."""
    scenarios = default_sweep(
        seeds=seeds, latents=latents, kinds=kinds, perturbation_covariance=perturbation_covariance
    )
    return run_sweep(
        scenarios,
        training_profile(profile, **(training_overrides or {})),
        _evaluation(n_bins, identified_threshold, margin, evaluation_overrides),
        out,
        threads=threads,
        progress=progress,
        check=True,
        overwrite=overwrite,
    )


def describe(scenario: Scenario) -> str:
    """One line: latents, I_theta, I_beta, the predicted identified set (or why there is none)."""
    latents = "dependent" if scenario.causal_dependence else "independent"
    setting = (
        f"{latents} latents, I_theta={{{format_index_list(scenario.selected)}}}, "
        f"I_beta={{{format_index_list(scenario.perturbed) if scenario.perturbed else ''}}}, "
        f"encoding size {scenario.representation_size}"
    )
    if not scenario.within_theorem:
        return (
            f"{setting}: outside the theorem's assumptions (it assumes "
            f"{len(scenario.invariant)}, |I_theta \\ I_beta|), so it predicts nothing; R^2 "
            "reported, not judged"
        )
    return f"{setting}: predicted identified {{{', '.join(f's{i}' for i in scenario.invariant)}}}"


def _flag(value: Any) -> bool | None:
    """A cell of the nullable ``predicted_identified`` or ``agrees`` column as a plain value."""
    import pandas as pd

    return None if pd.isna(value) else bool(value)


def summarise(result: SweepResult) -> list[dict[str, Any]]:
    """The check as plain data: per configuration its description, predicted identified set,
    verdict and one row per variable with both encoders' R^2 (what the CLI and check.md render)."""
    summaries = []
    for scenario in result.scenarios:
        rows = result.r2[result.r2["config"] == scenario.name]
        variables = []
        for variable, pair in rows.groupby("variable", sort=False):
            by_encoder = {r["encoder"]: r for r in pair.to_dict("records")}
            x, t = by_encoder["x"], by_encoder["t"]
            variables.append(
                {
                    "variable": variable,
                    "role": x["role"],
                    "ceiling": x["ceiling"],
                    "predicted_identified": _flag(x["predicted_identified"]),
                    "x_linear": x["r2_linear"],
                    "x_nonlinear": x["r2_nonlinear"],
                    "t_linear": t["r2_linear"],
                    "t_nonlinear": t["r2_nonlinear"],
                    "agrees": (
                        _flag(x["agrees"]) and _flag(t["agrees"])
                        if scenario.within_theorem
                        else None
                    ),
                }
            )
        within = scenario.within_theorem
        summaries.append(
            {
                "config": scenario.name,
                "description": describe(scenario),
                # None: outside the theorem's assumptions, nothing predicted or judged
                "predicted_identified": [f"s{i}" for i in scenario.invariant] if within else None,
                "agrees": all(v["agrees"] for v in variables) if within else None,
                "variables": variables,
            }
        )
    return summaries


def margins(result: SweepResult) -> list[dict[str, Any]]:
    """Agreement and margins per seed and latent mode: how many configurations agree, the lowest
    nonlinear R^2 of a semantic predicted identified (against the threshold), and the largest
    excess of a variable predicted not identified over its ceiling (against the margin)."""
    r2 = result.r2
    rows = []
    judged = [s for s in result.scenarios if s.within_theorem]
    for (seed, dependent), scenarios in _by_seed_and_mode(judged).items():
        names = [s.name for s in scenarios]
        part = r2[r2["config"].isin(names)]
        identified = part[part["predicted_identified"]]
        others = part[~part["predicted_identified"]]
        agrees = part.groupby("config", sort=False)["agrees"].all()
        rows.append(
            {
                "seed": seed,
                "latents": "dependent" if dependent else "independent",
                "n_configurations": len(names),
                "n_agree": int(agrees.sum()),
                "lowest_identified_r2": float(identified["r2_nonlinear"].min())
                if len(identified)
                else None,
                "largest_excess_over_ceiling": float(
                    (others["r2_nonlinear"] - others["ceiling"]).max()
                )
                if len(others)
                else None,
            }
        )
    return rows


def _by_seed_and_mode(scenarios: Sequence[Scenario]) -> dict[tuple[int, bool], list[Scenario]]:
    grouped: dict[tuple[int, bool], list[Scenario]] = {}
    for scenario in scenarios:
        grouped.setdefault((scenario.seed, scenario.causal_dependence), []).append(scenario)
    return dict(sorted(grouped.items()))


def margins_markdown(rows: Sequence[dict[str, Any]]) -> list[str]:
    """:func:`margins` as a Markdown table."""

    def number(value: float | None, sign: str = "") -> str:
        return "-" if value is None else f"{value:{sign}.3f}"

    lines = [
        "| seed | latents | agree | lowest nonlinear R^2 predicted identified "
        "| largest nonlinear R^2 over ceiling |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['seed']} | {row['latents']} | {row['n_agree']}/{row['n_configurations']} "
            f"| {number(row['lowest_identified_r2'])} "
            f"| {number(row['largest_excess_over_ceiling'], '+')} |"
        )
    return lines


# what check.md's variables and columns are, said once above its tables
LEGEND = (
    "- s_i: the i-th shared semantic, in the image always, in the text when selected (I_theta); "
    "roles: invariant (selected, never perturbed: I_theta \\ I_beta), perturbed (in I_beta), "
    "unselected (the text omits it)",
    "- s~i: the value of s_i that the text carries, perturbed in some texts (one row per "
    "perturbed semantic)",
    "- m_x, m_t: the image-specific and text-specific latents (R^2 averaged over their "
    "coordinates)",
    "- x: the image encoder's representation, t: the text encoder's; linear and nonlinear "
    "(kernel ridge) R^2 of predicting the variable from it, on fresh samples",
    "- predicted: identified where the theorem says so (exactly the invariant semantics)",
    "- agrees: both encoders' nonlinear R^2 meet the rule above",
)


def check_markdown(
    summaries: Sequence[dict[str, Any]],
    settings: dict[str, Any],
    margin_rows: Sequence[dict[str, Any]] = (),
    provenance: Mapping[str, Any] | None = None,
) -> str:
    """Render :func:`summarise` as Markdown: a verdict line, then one table per configuration,
    then where the numbers came from (``provenance``: ``seeds``, ``device``,
    ``clipaudit_version``, ``git_hash``, ``started``), so that the page read alone says it."""
    failed = [s["config"] for s in summaries if s["agrees"] is False]
    outside = [s["config"] for s in summaries if s["agrees"] is None]
    judged = len(summaries) - len(outside)
    verdict_line = (
        f"{judged - len(failed)} of {judged} configurations agree with the theory"
        + (f"; disagree: {', '.join(failed)}" if failed else "")
        if judged
        else "No configuration judged"
    )
    if outside:
        verdict_line += (
            f"; {len(outside)} outside the theorem's assumptions (an encoding size other than "
            f"|I_theta \\ I_beta|), not judged: {', '.join(outside)}"
        )
    lines = [
        "# Theory check",
        "",
        verdict_line + ".",
        "",
        "Identified when nonlinear R^2 >= {identified_threshold}; not identified when nonlinear "
        "R^2 <= ceiling + {margin} (ceiling: population R^2 from the invariant block).".format(
            **settings["evaluation"]
        ),
        "",
        *LEGEND,
    ]
    if margin_rows:
        lines += ["", "## Agreement and margins per seed", "", *margins_markdown(margin_rows)]
    verdict = {
        True: "agrees",
        False: "DISAGREES",
        None: "outside the theorem's assumptions, not judged",
    }
    for summary in summaries:
        lines += [
            "",
            f"## {summary['config']}: {verdict[summary['agrees']]}",
            "",
            summary["description"],
            "",
            "| variable | role | predicted | ceiling | x linear | x nonlinear | t linear | t nonlinear "
            "| agrees |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for v in summary["variables"]:
            predicted = {True: "identified", False: "-", None: "n/a"}[v["predicted_identified"]]
            agrees = {True: "yes", False: "NO", None: "n/a"}[v["agrees"]]
            lines.append(
                f"| {v['variable']} | {v['role']} | {predicted} "
                f"| {v['ceiling']:.3f} | {v['x_linear']:.3f} | {v['x_nonlinear']:.3f} "
                f"| {v['t_linear']:.3f} | {v['t_nonlinear']:.3f} | {agrees} |"
            )
    if provenance is not None:
        training = settings["training"]
        lines += [
            "",
            "## Provenance",
            "",
            f"- training: profile {training['profile']}, {training['steps']} steps, batch "
            f"{training['batch_size']}, learning rate {training['learning_rate']}, on "
            f"{provenance['device']} (every setting in manifest.json)",
            "- probe: fit on {n_fit} samples, chosen on {n_val}, R^2 on {n_test}; kernel ridge on "
            "{kernel_components} Nystroem features".format(**settings["evaluation"]),
            f"- seeds {', '.join(str(seed) for seed in provenance['seeds'])}",
            f"- clipaudit {provenance['clipaudit_version']} (git {provenance['git_hash']}), "
            f"this session started {provenance['started']}",
        ]
    return "\n".join(lines) + "\n"

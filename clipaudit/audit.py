"""The audit in one call: caption coverage of a corpus, zero-shot awareness of one or several
models, and the report that joins them, in one resumable run folder::

    RUN/coverage/    a coverage run (clipaudit.coverage)
    RUN/zeroshot/    a zero-shot run, one unit per model (clipaudit.zeroshot)
    RUN/report/      the joined report: report.html, report.md, report.json, tables, figures
    RUN/manifest.json

Each stage is a run folder of its own, so a killed audit resumes stage by stage and unit by unit;
the audit's manifest holds the settings of all three, so a folder of another audit is refused
as a whole (unless ``overwrite``). The embedded demo (:mod:`clipaudit.demo`) is this audit on a
rendered miniature world, with the world's run beside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from clipaudit.coverage import (
    NO_LONGER_COMPARED,
    CoverageResult,
    CoverageSettings,
    check_captions,
    count_coverage,
)
from clipaudit.errors import (
    SettingsError,
    check_arguments,
    did_you_mean,
    keyword_checked,
)
from clipaudit.registry import DEFAULT_REGISTRY, Registry, load_registry
from clipaudit.runs import MANIFEST, RunFolder, differences, load_run
from clipaudit.text import counted

STAGES = ("coverage", "zeroshot", "report")


@dataclass
class AuditRun:
    """A finished audit: its coverage run, zero-shot run and report (each with DataFrames)."""

    out: Path
    coverage: CoverageResult
    zeroshot: Any  # clipaudit.zeroshot.ZeroShotRun
    report: Any  # clipaudit.report.Report
    manifest: dict[str, Any]
    world: Any = field(default=None)  # the demo's world run, when the audit is the demo's

    @property
    def html_path(self) -> Path:
        return self.report.out / "report.html"

    def __repr__(self) -> str:
        kind = self.manifest.get("kind", "audit")
        return (
            f"AuditRun({kind}, {str(self.out)!r}: {self.coverage.n_captions_read:,} captions, "
            f"models {', '.join(self.zeroshot.models)}; report {str(self.html_path)!r})"
        )

    def _repr_html_(self) -> str:
        return self.report._repr_html_()


def load_audit_run(path: str | Path, manifest: dict[str, Any]) -> AuditRun:
    """A complete audit (or demo) run folder read back (:func:`clipaudit.runs.load_run`)."""
    path = Path(path)
    world = load_run(path / "world") if (path / "world" / "manifest.json").is_file() else None
    return AuditRun(
        out=path,
        coverage=load_run(path / "coverage"),
        zeroshot=load_run(path / "zeroshot"),
        report=load_run(path / "report"),
        manifest=manifest,
        world=world,
    )


def _stage_option(name: str) -> str:
    """Where an option run_audit lacks goes, when it is (or is spelled like) a stage's own: the
    stages take theirs as dicts (``coverage={"column": "text"}``)."""
    import dataclasses
    import difflib
    import inspect

    from clipaudit.report import build_report
    from clipaudit.zeroshot import ZeroShotSettings

    stages = {
        "coverage": [f.name for f in dataclasses.fields(CoverageSettings)],
        "zeroshot": [f.name for f in dataclasses.fields(ZeroShotSettings)],
        "report": list(inspect.signature(build_report).parameters)[2:],
    }
    for stage, names in stages.items():
        close = [name] if name in names else difflib.get_close_matches(name, names, n=1)
        if close:
            return f"; {stage} options go in {stage}= as a dict: {stage}={{{close[0]!r}: ...}}"
    return ""


@keyword_checked(elsewhere=_stage_option)
def run_audit(
    captions: Any,
    images: str | Path,
    models: Any,
    out: str | Path | None = None,
    *,
    registry: str | Path | Registry = DEFAULT_REGISTRY,
    coverage: CoverageSettings | dict[str, Any] | None = None,
    zeroshot: dict[str, Any] | None = None,
    report: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> AuditRun:
    """Audit ``models`` (as :func:`clipaudit.run_zeroshot` takes them) against the captions of
    ``captions`` (as :func:`clipaudit.count_coverage` takes them) on the labelled ``images``,
    into the run folder ``out`` (a new temporary folder when None, so that a call made again
    audits again from the start: give ``out`` to resume an audit, or to find it done).

    ``coverage`` are the coverage settings (or a dict of their fields), ``zeroshot`` and
    ``report`` keyword options of :func:`clipaudit.run_zeroshot` and
    :func:`clipaudit.report.build_report` (``{"groups": [...], "device": "cpu"}``,
    ``{"title": ..., "n_bootstrap": ...}``), except what the audit gives every stage itself:
    ``registry``, ``overwrite`` and ``progress`` are run_audit's own, the weights go with the
    models (``(model, pretrained)`` pairs, not ``pretrained=``), and the stages' folders are
    ``out/coverage``, ``out/zeroshot`` and ``out/report``. The caption sources are checked first,
    as the coverage stage checks them (:func:`clipaudit.coverage.check_captions`: a missing file,
    a folder without captions, a wrong ``column``, a damaged parquet footer or captions of the
    wrong type raise the stage's :class:`~clipaudit.errors.InputError`), then the options that
    would stop a later stage (unknown names, missing model files or images, report options out
    of range raise :class:`~clipaudit.errors.SettingsError` or the input's error): all before
    any folder is made, so a refused audit leaves none behind.
    ``overwrite`` takes changed settings: the stages whose own settings changed are done again,
    the others kept (a prompt change does not recount the captions). Returns the
    :class:`AuditRun`; ``echo`` receives a line per stage and what it counted, scored and reused.
    """
    import tempfile

    from clipaudit.zeroshot import check_out_of_images

    given_out = {"out (the run folder, or None)": out} if out is not None else {}
    check_arguments(
        {"images (the labelled images)": images, **given_out},
        {"overwrite": overwrite, "progress": progress},
        echo,
    )
    for name, options in (("zeroshot", zeroshot), ("report", report)):
        if options is not None and not isinstance(options, dict):
            raise SettingsError(
                f"{name} must be a dict of {name} options or None, got "
                f"{type(options).__name__} {options!r:.60}"
            )
    coverage = CoverageSettings.of(coverage, "coverage")
    if isinstance(captions, Iterator):  # read twice: by the check, then by the coverage stage
        captions = list(captions)
    # what would stop a stage, refused before any folder is made for a call that never starts
    # (a failed audit left behind, or a temporary folder with out=None): the caption sources as
    # the coverage stage looks at them (parquet footers, not their rows), then the later stages'
    check_captions(
        captions,
        coverage,
        out=Path(out) / "coverage" if out is not None else None,
        given_as="--captions, or captions= in Python",
    )
    check_stage_options(images, models, registry, zeroshot, report)
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="clipaudit-audit-"))
    check_out_of_images(out, images)
    with RunFolder(
        out,
        "audit",
        _audit_settings(registry, coverage, zeroshot),
        overwrite=overwrite,
        compare=_compare(overwrite, echo),
    ) as folder:
        result = run_audit_stages(
            folder, captions, images, models, registry, coverage, zeroshot, report, progress, echo
        )
        if folder.was_complete and all(getattr(result, stage).reused for stage in STAGES):
            # this very audit, whole: its manifest keeps the provenance of the session that made
            # it (code, versions, seconds), not that of finding it done
            result.manifest = folder.previous or {}
        else:
            result.manifest = folder.complete(**result.manifest)
        return result


def _compare(
    overwrite: bool, echo: Callable[[str], None]
) -> Callable[[dict[str, Any], dict[str, Any]], list[str]]:
    """How an audit folder's stored settings are compared with a call's. With ``overwrite`` the
    audit is never emptied as a whole: each stage, given overwrite, replaces its own run only if
    its own settings changed, so that a prompt change does not recount hours of captions."""
    # audits made before the report left their settings record it: it decides nothing; nor do
    # the coverage settings a coverage run no longer compares
    compare = partial(differences, ignore=("report", *NO_LONGER_COMPARED))
    if not overwrite:
        return compare

    def stage_by_stage(stored: dict[str, Any], settings: dict[str, Any]) -> list[str]:
        changed = compare(stored, settings)
        if changed:
            echo(
                f"--overwrite: {'; '.join(changed)}; the stages whose settings changed are done "
                "again, the others kept"
            )
        return []

    return stage_by_stage


def _audit_settings(
    registry: str | Path | Registry,
    coverage: CoverageSettings | None,
    zeroshot: dict[str, Any] | None,
) -> dict[str, Any]:
    """What an audit's results depend on, stage by stage (the models are the zero-shot stage's
    units: a model added to an audit leaves the others' results)."""
    from clipaudit.zeroshot import RESULT_FIELDS, ZeroShotSettings

    loaded = load_registry(registry)
    options = {k: v for k, v in (zeroshot or {}).items() if k in RESULT_FIELDS}
    if options.get("groups") is not None:  # the groups selected, not how they were typed
        options["groups"] = [group.name for group in loaded.select(options["groups"]).groups]
    return {
        "registry": {"name": loaded.name, "sha256": loaded.sha256},
        "coverage": (coverage or CoverageSettings()).result_fields(),
        "zeroshot": {
            name: options.get(name, getattr(ZeroShotSettings, name, None))
            for name in RESULT_FIELDS
            if name != "images"
        },
        # not the report's options: it is drawn again on every run, a title is no other audit
    }


# what the stages take from the caller itself, never from their option dicts: where each goes
_STAGE_ARGUMENTS = {
    "models": "give the models as models= of run_audit",
    "images": "give the images as images= of run_audit",
    "registry": "give it as registry= of run_audit (all three stages use it)",
    "out": "the audit writes its stages to OUT/coverage, OUT/zeroshot and OUT/report",
    "overwrite": "give it as overwrite= of run_audit",
    "progress": "give it as progress= of run_audit",
    "runs": "the report joins the audit's own runs; join others with clipaudit.build_report",
    # run_zeroshot's, not a ZeroShotSettings field: an audit's models carry their weights
    "pretrained": "give the models as models=(model, pretrained) pairs or ModelSpecs",
}


def _echo_counted(covered: CoverageResult, echo: Callable[[str], None]) -> None:
    """What the coverage stage read, and whether this call counted it or found it counted."""
    manifest = covered.manifest
    read = (
        f"    {counted(manifest['n_captions_read'], 'caption')} read from "
        f"{counted(manifest['n_shards'], 'shard')}; "
    )
    if covered.reused:
        echo(read + "already counted: reused")
    else:
        timings = manifest["timings"]
        resumed, kept = timings.get("shards_resumed"), timings.get("shards_kept_unused")
        echo(
            read
            + f"this session: {counted(timings['shards_this_session'], 'shard')} counted"
            + (f", {resumed} reused from an earlier session" if resumed else "")
            # captions another --captions named: in no result here, kept for when named again
            + (f", {kept} of inputs no longer given kept out of the counts" if kept else "")
        )
    if manifest["skipped_shards"]:
        echo(
            f"    {counted(len(manifest['skipped_shards']), 'caption shard')} unreadable and "
            f"skipped (--skip-bad): listed in {covered.out_dir / MANIFEST}"
        )


def _echo_scored(aware: Any, models: Any, echo: Callable[[str], None]) -> None:
    """Each model's macro-F1 over its groups and this call's work for it; a model of random
    weights is said to be a chance baseline, and why it has them: the ``--pretrained none`` of
    ``models`` (a baseline asked for), or no --pretrained (forgotten)."""
    from clipaudit.zeroshot import counts_this_call, model_specs

    pretrained = {spec.label: spec.pretrained for spec in model_specs(models)}
    for info in aware.manifest["models"]:
        label = info["label"]
        groups = aware.groups[aware.groups["model"] == label]
        scores = groups["macro_f1"].dropna()
        n_encoded, n_cached, n_resumed = counts_this_call(info, aware.reused)
        scored = (
            f"macro-F1 {scores.min():.2f}-{scores.max():.2f} over {counted(len(scores), 'group')}"
            if len(scores)
            else "no group scored"  # each skipped for it (too few of its images embedded)
        )
        echo(
            f"    {label}: {scored} ({counted(int(groups['n_images'].sum()), 'image')}); "
            f"this session: {n_encoded:,} encoded, {n_cached:,} from cache, {n_resumed:,} from "
            "an earlier session"
        )
        if info.get("random_weights_seed") is not None:
            given = pretrained.get(label)
            why = f"--pretrained {given} given" if given else "no --pretrained"
            echo(
                f"    {label} has random weights ({why}): its scores are a chance baseline, not "
                "a trained model's"
            )


def _echo_left_out(aware: Any, where: Path, echo: Callable[[str], None]) -> None:
    """What the zero-shot stage left out, as `clipaudit zeroshot` says it: the images it skipped
    (undecodable, unreadable) and the files it ignored (strays, unlabelled samples), over which
    no score is; the groups with images it did not score, with the reasons; and the models this
    call dropped from it (not given again: their results deleted)."""
    from clipaudit.zeroshot import unscored_groups_line

    manifest = aware.manifest
    skipped = manifest.get("skipped_images") or []
    listed = (manifest.get("inputs") or {}).get("images") or {}
    ignored = listed.get("n_ignored") or 0
    parts = [counted(len(skipped), "image") + " skipped"] if skipped else []
    parts += [counted(ignored, "file") + " ignored"] if ignored else []
    # the first one named with its reason: what to fix is often plain from it
    first = skipped[0] if skipped else (listed.get("ignored") or [None])[0]
    example = f" (e.g. {first['path']}: {first['reason']})" if first else ""
    if parts:
        echo(f"    {' and '.join(parts)}: listed in {where}{example}")
    unscored = unscored_groups_line(manifest.get("skipped_groups") or [])
    if unscored:
        echo(f"    {unscored}")
    dropped = manifest.get("dropped_models") or []  # runs before it have none
    if dropped and not aware.reused:  # a reused run's were dropped by an earlier call
        echo(
            f"    {counted(len(dropped), 'model')} dropped from the zero-shot run (not given this "
            f"time), {'its' if len(dropped) == 1 else 'their'} results deleted: "
            + ", ".join(dropped)
        )


def check_stage_options(
    images: str | Path,
    models: Any,
    registry: str | Path | Registry,
    zeroshot: dict[str, Any] | None,
    report: dict[str, Any] | None,
) -> None:
    """Refuse, before any stage starts, what would stop a later one: unknown or reserved option
    names, zero-shot settings that do not validate, model files or images that do not exist,
    report options out of range."""
    import dataclasses
    import inspect

    from clipaudit.images import check_image_names, check_image_source
    from clipaudit.report.core import build_report, check_report_options
    from clipaudit.zeroshot import ZeroShotSettings, check_model_specs, model_specs

    accepted = {
        "zeroshot": {f.name for f in dataclasses.fields(ZeroShotSettings)} - set(_STAGE_ARGUMENTS),
        "report": {
            name
            for name, parameter in inspect.signature(build_report).parameters.items()
            if parameter.kind is inspect.Parameter.KEYWORD_ONLY
        }
        - set(_STAGE_ARGUMENTS),
    }
    for stage, options in (("zeroshot", zeroshot or {}), ("report", report or {})):
        for name in options:
            if name in _STAGE_ARGUMENTS:
                raise SettingsError(
                    f"unknown {stage} option {name!r}: it is the audit's own; "
                    f"{_STAGE_ARGUMENTS[name]}"
                )
            if name not in accepted[stage]:
                raise SettingsError(
                    f"unknown {stage} option {name!r}{did_you_mean(name, accepted[stage])}; "
                    f"{stage} options are {', '.join(sorted(accepted[stage]))}"
                )
    settings = ZeroShotSettings(
        models=model_specs(models), images=str(images), registry=registry, **(zeroshot or {})
    )
    check_model_specs(settings.models)
    load_registry(registry).select(settings.groups)  # a mistyped --groups: not after the coverage
    check_image_source(settings.images)
    check_image_names(settings.images, load_registry(registry), settings.groups)
    check_report_options(**(report or {}))


def run_audit_stages(
    folder: RunFolder,
    captions: Any,
    images: str | Path,
    models: Any,
    registry: str | Path | Registry,
    coverage: CoverageSettings | None,
    zeroshot: dict[str, Any] | None,
    report: dict[str, Any] | None,
    progress: bool,
    echo: Callable[[str], None],
    *,
    extra_runs: Sequence[Any] = (),
    first_stage: int = 1,
    n_stages: int = 3,
) -> AuditRun:
    """The three stages into ``folder`` (an open audit or demo run folder), each resumable;
    ``extra_runs`` go to the report too (the demo's world, whose caption rates it shows). The
    result's manifest holds the fields for the caller to complete the folder with. The caller
    checks the stages' options first (:func:`check_stage_options`, before hours of counting)."""
    from clipaudit.report import build_report
    from clipaudit.zeroshot import run_zeroshot

    out, timings = folder.path, {}
    # --overwrite reaches the stages (a stage's own settings, e.g. its images, may have changed);
    # an emptied audit keeps nothing below
    overwrite = folder.overwrite or folder.restarted is not None

    clock = time.perf_counter()
    echo(f"{first_stage}/{n_stages} caption coverage")
    settings = (coverage or CoverageSettings()).replace(progress=progress)
    covered = count_coverage(captions, registry, out / "coverage", settings, overwrite=overwrite)
    timings["coverage_s"] = round(time.perf_counter() - clock, 3)
    _echo_counted(covered, echo)

    clock = time.perf_counter()
    echo(f"{first_stage + 1}/{n_stages} zero-shot awareness")
    aware = run_zeroshot(
        models,
        images,
        out / "zeroshot",
        registry=registry,
        overwrite=overwrite,
        progress=progress,
        **(zeroshot or {}),
    )
    timings["zeroshot_s"] = round(time.perf_counter() - clock, 3)
    _echo_scored(aware, models, echo)
    _echo_left_out(aware, out / "zeroshot" / MANIFEST, echo)

    clock = time.perf_counter()
    echo(f"{first_stage + 2}/{n_stages} report")
    joined = build_report(
        [covered, aware, *extra_runs],
        out / "report",
        overwrite=True,
        progress=progress,
        **(report or {}),
    )
    timings["report_s"] = round(time.perf_counter() - clock, 3)
    echo(
        f"    open report/report.html in a browser; its tables are in report/tables/, each "
        f"image's prediction in zeroshot/predictions.parquet (in {out})"
    )

    fields = {
        # a stage deleted by hand leaves no complete audit: read back, it is named with the fix,
        # and the same command makes it again (RunFolder.was_complete)
        "outputs": [f"{stage}/{MANIFEST}" for stage in STAGES],
        "models": aware.models,
        "registry": load_registry(registry).provenance(),
        "timings": timings,
    }
    return AuditRun(out, covered, aware, joined, fields)

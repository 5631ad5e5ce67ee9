"""What a report reads: run folders or loaded runs, turned into corpora (coverage) and models
(awareness), with the registry's order and sensitive groups.

- a coverage run (:class:`~clipaudit.coverage.CoverageResult`) is one corpus, labelled by its
  folder name;
- a zero-shot run (:class:`~clipaudit.zeroshot.ZeroShotRun`) holds one or several models;
- a theory run (:class:`~clipaudit.theory.sweep.SweepResult`) holds, per scenario, a corpus and a
  model of the same name that are joined with each other only;
- a rendered world's run (:class:`~clipaudit.world.world.WorldRun`) gives the caption rates it
  chose per group, shown beside the coverage (one world at most).

Labels are unique: a repeated one is prefixed by its run folder's name, then numbered.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipaudit.errors import InputError, RunFolderError, one_line
from clipaudit.provenance import read_table_csv

# coverage methods: name -> (count column, rate column), as coverage count writes them
METHODS = {
    "lexical": ("count", "rate"),
    "semantic": ("semantic_count", "semantic_rate"),
    "union": ("union_count", "union_rate"),
    "checked": ("checked_count", "checked_rate"),
}
PRIMARY_METHOD_RULE = (
    "the coverage run's manifest 'method' when its columns are present, else union when "
    "present, else lexical"
)
# the paper's categories first (common first), then the theory's roles
KNOWN_CATEGORIES = (
    "common",
    "under-captioned",
    "nuisance",
    "sensitive",
    "invariant",
    "perturbed",
    "unselected",
)
KINDS = ("coverage", "zeroshot", "theory", "world")
HOLDERS = ("demo", "audit")  # kinds whose loaded result holds .coverage and .zeroshot runs


@dataclass
class Corpus:
    """One corpus's coverage: a table of concepts with counts and rates per method."""

    label: str
    source: int  # index of its input
    concepts: Any  # DataFrame: concept, group, category, count, rate, [semantic_*, union_*]
    groups: Any  # DataFrame: group, category, count, rate ... (the run's own group table)
    n_captions: float | None
    methods: list[str]
    primary: str
    registry: dict[str, Any]
    examples: dict[str, list[str]] = field(default_factory=dict)
    pair_key: Any = None  # joined only with models of the same key (theory scenarios)
    # what the counts were computed with (profile, method, encoder, calibration, sources)
    provenance: dict[str, Any] = field(default_factory=dict)
    # concept -> why its profile cannot count it (the run's manifest): its lexical count is none
    not_counted: dict[str, str] = field(default_factory=dict)


@dataclass
class Model:
    """One model's awareness: per-concept and per-group scores, and what it skipped."""

    label: str
    source: int
    concepts: Any  # DataFrame: group, concept, precision, recall, f1, support
    groups: Any  # DataFrame: group, category, macro_f1, accuracy, n_images, n_concepts
    registry: dict[str, Any]
    skipped_concepts: list[dict[str, Any]]
    skipped_groups: list[dict[str, Any]]
    confusion: Callable[[str], Any]  # group -> DataFrame (rows true, columns predicted) or None
    pair_key: Any = None
    # what the scores were computed with (weights, prompts, candidates, images)
    provenance: dict[str, Any] = field(default_factory=dict)
    # the confusion figures its run drew, as it recorded them (figures.confusion_record), and
    # the folder their paths are relative to: the report copies those of the matrices it shows
    drawn_confusions: list[Any] = field(default_factory=list)
    folder: Path | None = None


@dataclass
class Inputs:
    records: list[dict[str, Any]]  # what the manifest records about each input
    corpora: list[Corpus]
    models: list[Model]
    group_order: list[str]
    category_order: list[str]
    category_of: dict[str, str]
    sensitive: set[str]
    registry: dict[str, Any]
    notes: list[str]
    # a rendered world's chosen and realised caption rates per group (clipaudit.world), if given
    truth: dict[str, dict[str, Any]] | None = None

    def pairs(self) -> list[tuple[Corpus, Model]]:
        return [(c, m) for c in self.corpora for m in self.models if c.pair_key == m.pair_key]


def manifest_sha256(manifest: dict[str, Any]) -> str:
    """A hash of a run's manifest (canonical JSON): it changes whenever the run is redone."""
    text = json.dumps(manifest, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def tables_sha256(run: Any, kind: str) -> str | None:
    """A hash of the tables a report reads from a loaded run's memory (a coverage run's concepts,
    groups and examples, a zero-shot run's groups and concepts): a run changed in memory
    (``dataclasses.replace(coverage, arrow_tables=...)``, filtered rows) keeps its manifest, so
    the manifest's hash alone would return the report of the tables as they were. None for the
    kinds whose tables the report reads from their folder."""
    if kind == "coverage":
        parts = [run.concepts, run.groups, run.examples]
    elif kind == "zeroshot":
        parts = [run.groups, run.concepts]
    else:
        return None
    digest = hashlib.sha256()
    for part in parts:
        text = (
            part.to_csv(index=False)
            if hasattr(part, "to_csv")
            else json.dumps(part, sort_keys=True, default=str)
        )
        digest.update(text.encode("utf-8") + b"\0")
    return digest.hexdigest()


def _kind_of(run: Any) -> str:
    from clipaudit.coverage import CoverageResult

    if isinstance(run, CoverageResult):
        return "coverage"
    module = type(run).__module__
    if type(run).__name__ == "ZeroShotRun" and module == "clipaudit.zeroshot":
        return "zeroshot"
    if type(run).__name__ == "SweepResult" and module == "clipaudit.theory.sweep":
        return "theory"
    if type(run).__name__ == "WorldRun" and module == "clipaudit.world.world":
        return "world"
    return ""


def _folder(run: Any) -> Path:
    for name in ("out_dir", "out"):
        value = getattr(run, name, None)
        if value is not None:
            return Path(value)
    raise InputError(f"a {type(run).__name__} without a run folder")


def _load(item: Any) -> list[Any]:
    """Runs given as paths (loaded through load_run) or objects; an audit-like object holding
    a coverage and a zero-shot run gives both."""
    from clipaudit.runs import a_run, load_run, read_manifest, run_kind

    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        kind = run_kind(read_manifest(path))
        kind = kind if isinstance(kind, str) else None
        if kind in KINDS:
            return [load_run(path)]
        if kind in HOLDERS:  # a run holding a coverage and a zero-shot run
            try:
                holder = load_run(path)
            except ImportError:
                raise InputError(
                    f"{path} holds {a_run(kind)}, which this clipaudit cannot read; give its "
                    "coverage and zero-shot run folders instead"
                ) from None
            return _load(holder)
        raise InputError(
            f"{path} holds {a_run(kind) if kind else 'an unknown run'}; a report reads coverage, zeroshot, "
            "theory and world runs (or a demo/audit run holding them)"
        )
    if _kind_of(item):
        from clipaudit.runs import a_run, not_complete

        manifest = getattr(item, "manifest", None) or {}
        if manifest.get("status", "complete") != "complete":
            raise RunFolderError(
                not_complete(f"{_folder(item)} holds {a_run(_kind_of(item))}", manifest)
            )
        return [item]
    parts = [getattr(item, name, None) for name in ("coverage", "zeroshot", "theory", "world")]
    parts = [p for p in parts if p is not None and _kind_of(p)]
    if parts:
        return parts
    raise InputError(
        f"cannot report on {_a(type(item).__name__)}; expected a run folder path or a loaded "
        "CoverageResult, ZeroShotRun or SweepResult (clipaudit.load_run)"
    )


def _a(name: str) -> str:
    """``"an int"``, ``"a dict"``: a type's name with its article."""
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def collect(runs: Any) -> Inputs:
    """The corpora and models of ``runs``; raises :class:`InputError` when there is nothing to
    join (no coverage side or no awareness side)."""
    # a mapping or a table iterates its keys or column names, which would be read as run
    # folders ("concept does not exist"): say what was given instead
    if isinstance(runs, Mapping) or hasattr(runs, "columns"):
        raise InputError(
            f"cannot report on {_a(type(runs).__name__)}; expected a run folder path, a loaded run "
            "(CoverageResult, ZeroShotRun, SweepResult: clipaudit.load_run) or a list of them; "
            "for a dict of runs, pass its values: build_report(list(runs.values()))"
        )
    # one run (a path, a loaded run, an audit or demo holding runs) or a list of them
    if isinstance(runs, (str, os.PathLike)) or _kind_of(runs) or not isinstance(runs, Iterable):
        runs = [runs]
    items = list(runs)
    if not items:
        raise InputError(
            "no runs given; expected a coverage run and a zero-shot run (or a theory run)"
        )
    loaded = [run for item in items for run in _load(item)]
    notes: list[str] = []
    seen: dict[Path, int] = {}
    unique = []
    for run in loaded:
        folder = _folder(run).resolve()
        if folder in seen:
            notes.append(f"{folder} was given more than once; it is read once")
            continue
        seen[folder] = len(unique)
        unique.append(run)
    notes += [note for run in unique if (note := _version_note(run)) is not None]
    records, corpora, models = [], [], []
    truth = None
    for index, run in enumerate(unique):
        kind = _kind_of(run)
        manifest = run.manifest
        records.append(
            {
                "path": str(_folder(run)),
                "kind": kind,
                "manifest_sha256": manifest_sha256(manifest),
                "tables_sha256": tables_sha256(run, kind),
                "created": manifest.get("created"),
            }
        )
        if kind == "coverage":
            corpora.append(_corpus(run, index))
        elif kind == "zeroshot":
            models += _models(run, index)
        elif kind == "world":
            worlds = [r["path"] for r in records if r["kind"] == "world"]
            if len(worlds) > 1:  # the page has one column of chosen rates: whose would it be?
                raise InputError(
                    f"two world runs given ({worlds[0]}, {worlds[1]}); a report shows one "
                    "world's chosen caption rates: give only the world whose captions the "
                    "coverage run counted (or a report per world)"
                )
            truth = {group: dict(rates) for group, rates in run.world.info["rates"].items()}
        else:
            theory_corpora, theory_models = _theory(run, index)
            corpora += theory_corpora
            models += theory_models
    kinds = [r["kind"] for r in records]
    if not corpora:
        raise InputError(
            f"no coverage run given (got {', '.join(kinds)}); a report joins caption coverage with "
            "zero-shot awareness: add a coverage run (clipaudit coverage count) or a theory run"
        )
    if not models:
        raise InputError(
            f"no zero-shot run given (got {', '.join(kinds)}); a report joins caption coverage "
            "with zero-shot awareness: add a zero-shot run (clipaudit zeroshot) or a theory run"
        )
    _unique_labels(corpora, records)
    _unique_labels(models, records)
    for corpus in corpora:
        if corpus.not_counted:
            notes.append(_not_counted_note(corpus))
        if corpus.primary != "lexical" and corpus.provenance.get("calibrated") is False:
            notes.append(
                f"corpus {corpus.label}: its {corpus.primary} coverage was counted with the "
                "uncalibrated default thresholds (no --calibration), so its counts are a rough "
                "guide; count again with a calibration (clipaudit coverage calibrate)"
            )
    for index, (record, run) in enumerate(zip(records, unique, strict=True)):
        record["label"] = _folder(run).name
        record["corpora"] = [c.label for c in corpora if c.source == index]
        record["models"] = [m.label for m in models if m.source == index]
    order = _order(corpora, models)
    registry, sensitive, registry_notes = _sensitive_groups(corpora, models, order[2])
    return Inputs(
        records=records,
        corpora=corpora,
        models=models,
        group_order=order[0],
        category_order=order[1],
        category_of=order[2],
        sensitive=sensitive,
        registry=registry,
        notes=notes + registry_notes,
        truth=truth,
    )


def _version_note(run: Any) -> str | None:
    """What the page says of a run another clipaudit wrote (None for this version's): its
    matching rules and metrics may differ. (A run of a newer run contract was refused by
    :func:`clipaudit.runs.load_run`.)"""
    from clipaudit import __version__
    from clipaudit.runs import a_run

    version = run.manifest.get("clipaudit_version")
    if not isinstance(version, str) or version == __version__:
        return None
    return (
        f"{_folder(run)} holds {a_run(_kind_of(run))} written by clipaudit {version}, this report "
        f"by clipaudit {__version__}: matching rules and metrics may differ between versions; run "
        "it again with this version to compare like with like"
    )


def _unique_labels(items: Sequence[Any], records: list[dict[str, Any]]) -> None:
    """Labels told apart: runs of one label get the name of the nearest folder above them in
    which their paths differ ("audit-laion/coverage", "audit-coco/coverage" label their
    corpora "audit-laion/few", "audit-coco/few"), then a number where that is not enough."""
    same_label: dict[str, list[Any]] = {}
    for item in items:
        same_label.setdefault(item.label, []).append(item)
    for label, same in same_label.items():
        paths = [Path(records[item.source]["path"]).resolve().parts for item in same]
        for depth in range(1, min(map(len, paths)) + 1) if len(same) > 1 else ():
            names = [parts[-depth] for parts in paths]
            if len(set(names)) > 1:
                for item, name in zip(same, names, strict=True):
                    item.label = f"{name}/{label}"
                break
    taken: dict[str, int] = {}
    for item in items:
        if item.label in taken:
            taken[item.label] += 1
            item.label = f"{item.label} #{taken[item.label]}"
        else:
            taken[item.label] = 1


def _methods(frame: Any, manifest: dict[str, Any]) -> tuple[list[str], str]:
    present = [name for name, (_, rate) in METHODS.items() if rate in frame.columns]
    if not present:
        raise InputError(
            f"the coverage table has no rate column (columns: {', '.join(map(str, frame.columns))}); "
            f"expected one of {', '.join(rate for _, rate in METHODS.values())}"
        )
    wanted = manifest.get("method")
    if wanted in present:
        return present, wanted
    return present, "union" if "union" in present else (
        "lexical" if "lexical" in present else present[0]
    )


def _n_captions(frame: Any, manifest_n: Any, methods: list[str]) -> float | None:
    """The rates' denominator: the manifest's, else inferred from count / rate."""
    if isinstance(manifest_n, (int, float)) and manifest_n > 0:
        return float(manifest_n)
    for method in methods:
        count, rate = METHODS[method]
        if count in frame.columns:
            usable = frame[(frame[rate] > 0) & (frame[count] > 0)]
            if len(usable):
                return float((usable[count] / usable[rate]).median().round())
    return None


def _with_counts(frame: Any, n: float | None, methods: list[str]) -> Any:
    """Counts for every method (from rate x n when a table has only rates)."""
    frame = frame.copy()
    for method in methods:
        count, rate = METHODS[method]
        if count not in frame.columns and n is not None:
            frame[count] = (frame[rate] * n).round()
    return frame


def _part(record: Any, *keys: str) -> Any:
    """``record[k1][k2]...``, None where a level is missing or, in a hand-edited manifest, no
    mapping."""
    for key in keys:
        record = record.get(key) if isinstance(record, dict) else None
    return record


def _damaged(folder: Any, problem: str) -> RunFolderError:
    return RunFolderError(
        f"{folder} holds a complete run whose {problem}; the folder is damaged: run the command "
        "that wrote it again with --overwrite"
    )


def _check_scores(frame: Any, columns: Sequence[str], table: str, folder: Any) -> None:
    """Shares (F1, rates) must be numbers in [0, 1], missing only where they may be (not an F1,
    which zero-shot runs score 0 when undefined): a table edited or cut short would otherwise
    fail deep in the statistics, or its rows be dropped as if never scored."""
    import pandas as pd

    for column in columns:
        if column not in frame.columns:
            continue
        values = pd.to_numeric(frame[column], errors="coerce")
        text = frame[column][values.isna() & frame[column].notna()]
        if len(text):
            raise _damaged(
                folder, f"{table} table holds {text.iloc[0]!r} in column {column}, not a number"
            )
        if column in ("f1", "macro_f1") and values.isna().any():
            row = frame[values.isna()].iloc[0]
            raise _damaged(
                folder,
                f"{table} table has no {column} for {row.get('concept', row.get('group'))!r}",
            )
        outside = values[values.notna() & ~values.between(0, 1)]
        if len(outside):
            raise _damaged(
                folder,
                f"{table} table holds {outside.iloc[0]} in column {column}; expected a share "
                "in [0, 1]",
            )


def _corpus(run: Any, index: int) -> Corpus:
    frame = run.concepts
    _check_scores(frame, [rate for _, rate in METHODS.values()], "concepts", _folder(run))
    methods, primary = _methods(frame, run.manifest)
    if run.manifest.get("n_captions_read") == 0:
        raise InputError(
            f"{_folder(run)}: the coverage run read no caption (every row null, not text or "
            "unreadable), so no coverage can be set against awareness; count a corpus that has "
            "captions"
        )
    n = _n_captions(frame, run.manifest.get("n_captions_read"), methods)
    examples = {}
    for concept, entry in ((run.examples or {}).get("concepts") or {}).items():
        examples[concept] = [str(e.get("caption", "")) for e in entry.get("examples", [])]
    folder = _folder(run).name
    not_counted = _not_counted(run.manifest)
    return Corpus(
        # an audit's coverage stage is named for what it read, not for the stage folder
        label=run.manifest.get("corpus", folder) if folder == "coverage" else folder,
        source=index,
        concepts=_without_counts(_with_counts(frame, n, methods), not_counted),
        groups=run.groups,
        n_captions=n,
        methods=methods,
        primary=primary,
        registry=_registry_record(
            _part(run.manifest, "registry") or _part(run.manifest, "settings", "registry")
        ),
        examples=examples,
        provenance=_coverage_provenance(run.manifest, n),
        not_counted=not_counted,
    )


def _not_counted(manifest: dict[str, Any]) -> dict[str, str]:
    """The manifest's concepts its profile cannot count, each with why (none recorded before)."""
    found = _part(manifest, "concepts_not_counted")
    if not isinstance(found, dict):
        return {}
    return {str(name): str(why) for name, why in found.items()}


def _without_counts(frame: Any, not_counted: dict[str, str]) -> Any:
    """``frame`` with no lexical count or rate (NaN) for the concepts not counted: their 0 is
    the profile's, not the captions', so it is no point of the statistics and no concept never
    captioned. Other methods' columns stand (a semantic count reads no synonyms)."""
    if not not_counted:
        return frame
    unknown = frame["concept"].astype(str).isin(not_counted)
    for column in METHODS["lexical"]:
        if column in frame.columns:
            frame[column] = frame[column].where(~unknown)
    return frame


_NOTE_SHOWN = 10  # the concepts a note names before "and N more"


def _not_counted_note(corpus: Corpus) -> str:
    items = list(corpus.not_counted.items())
    named = ", ".join(f"{name} ({why})" for name, why in items[:_NOTE_SHOWN])
    more = len(items) - _NOTE_SHOWN
    one = len(items) == 1
    return (
        f"corpus {corpus.label}: not counted by the {corpus.provenance.get('profile')} profile: "
        f"{named}{f' and {more} more' if more > 0 else ''}; {'its' if one else 'their'} 0 is "
        f"the profile's, not a measurement, so {'its' if one else 'their'} lexical coverage is "
        f"shown as – and left out of the concept statistics and findings"
    )


def _plain_value(value: Any) -> Any:
    """A manifest value as the summary may hold it: text, a number or a flag; None for anything
    else (a hand-edited manifest's list or mapping where a name was expected)."""
    return value if isinstance(value, (str, int, float, bool)) else None


def _coverage_provenance(manifest: dict[str, Any], n: float | None) -> dict[str, Any]:
    """What a corpus's counts depend on beyond the registry: how many captions were read, the
    matching profile, the method, the semantic encoder, whether its thresholds were calibrated
    (an uncalibrated run counts with defaults) and on what, and the caption sources."""
    sources = _part(manifest, "inputs")
    fitted_on = _part(manifest, "semantic", "calibration", "fitted_on")
    return {
        "n_captions_read": int(n) if n is not None and float(n).is_integer() else n,
        "profile": _plain_value(
            _part(manifest, "profile") or _part(manifest, "settings", "coverage", "profile")
        ),
        "method": _plain_value(_part(manifest, "method")) or "lexical",
        "encoder": _plain_value(_part(manifest, "semantic", "encoder", "spec")),
        "calibrated": _plain_value(_part(manifest, "semantic", "calibration", "calibrated")),
        # the labelled files the thresholds were fitted on: counts of those captions are optimistic
        "calibrated_on": [
            str(entry["path"])
            for entry in (fitted_on if isinstance(fitted_on, list) else [])
            if isinstance(entry, dict) and _plain_value(entry.get("path")) is not None
        ],
        "sources": [
            str(source["spec"])
            for source in (sources if isinstance(sources, list) else [])
            if isinstance(source, dict) and _plain_value(source.get("spec")) is not None
        ],
    }


# what each of run_zeroshot's template settings means (clipaudit.zeroshot.TEMPLATE_SETS), in words
# for a reader: said here, not imported, as that module loads torch; tests hold the two together
_TEMPLATE_WORDS = {
    "none": "bare concept names, no prompt templates",
    "simple": 'one prompt template, "a photo of a {}."',
    "ensemble": "open_clip's 80 OpenAI ImageNet prompt templates, averaged",
}


def prompts_in_words(setting: Any) -> str | None:
    """A zero-shot run's template setting as a reader understands it (None when not recorded):
    a set's meaning, or the file the templates were read from."""
    if not isinstance(setting, str) or not setting:
        return None
    return _TEMPLATE_WORDS.get(setting, f"the prompt templates in {setting}")


def _model_provenance(manifest: dict[str, Any], label: str) -> dict[str, Any]:
    """What a model's scores depend on beyond the registry: its architecture and weights (tag or
    checkpoint, with the checkpoint's or the loaded weights' sha256), the prompt templates,
    whether images were classified among all of a group's concepts, and the images."""
    records = _part(manifest, "models")
    record = next(
        (
            r
            for r in (records if isinstance(records, list) else [])
            if isinstance(r, dict) and r.get("label") == label
        ),
        {},
    )
    images = _part(manifest, "settings", "images") or _part(manifest, "inputs", "images", "source")
    templates = _plain_value(
        _part(manifest, "templates", "setting") or _part(manifest, "settings", "templates")
    )
    return {
        "architecture": _plain_value(record.get("architecture")),
        "pretrained": _plain_value(record.get("pretrained")),
        "random_weights_seed": _plain_value(record.get("random_weights_seed")),
        "weights_sha256": _plain_value(
            record.get("checkpoint_sha256") or record.get("weights_sha256")
        ),
        "templates": templates,
        "prompts": prompts_in_words(templates),
        "all_concepts": _plain_value(_part(manifest, "settings", "all_concepts")),
        "images": _plain_value(images),
        "n_images": _plain_value(_part(manifest, "n_images")),
    }


def _registry_record(record: Any) -> dict[str, Any]:
    record = record if isinstance(record, dict) else {}
    return {key: record.get(key) for key in ("name", "sha256", "path")}


def _models(run: Any, index: int) -> list[Model]:
    manifest = run.manifest
    registry = _part(manifest, "inputs", "registry") or _part(manifest, "settings", "registry")
    skipped = {key: _skipped(manifest, key, _folder(run)) for key in SKIPPED}
    _check_scores(run.concepts, ("precision", "recall", "f1"), "concepts", _folder(run))
    _check_scores(run.groups, ("macro_f1", "accuracy"), "groups", _folder(run))
    drawn = manifest.get("confusion_figures")
    drawn = drawn if isinstance(drawn, list) else []  # an older run's, or edited: drawn anew
    models = []
    for label in run.models:

        def confusion(group: str, label: str = label) -> Any:
            try:
                return run.confusion(label, group)
            except InputError:
                return None

        models.append(
            Model(
                label=label,
                source=index,
                concepts=run.concepts[run.concepts["model"] == label].drop(columns="model"),
                groups=run.groups[run.groups["model"] == label].drop(columns="model"),
                registry=_registry_record(registry),
                skipped_concepts=skipped["skipped_concepts"],
                skipped_groups=skipped["skipped_groups"],
                confusion=confusion,
                provenance=_model_provenance(manifest, label),
                drawn_confusions=[
                    d for d in drawn if isinstance(d, dict) and d.get("model") == label
                ],
                folder=_folder(run),
            )
        )
    return models


# what a zero-shot manifest lists as skipped, and the keys each entry of it needs
SKIPPED = {"skipped_concepts": ("group", "concept"), "skipped_groups": ("group",)}


def _skipped(manifest: dict[str, Any], key: str, folder: Path) -> list[dict[str, Any]]:
    entries = manifest.get(key) or []
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and all(k in e for k in SKIPPED[key]) for e in entries
    ):
        raise _damaged(
            folder,
            f"manifest's {key} is no list of records with {' and '.join(SKIPPED[key])} "
            f"({entries!r:.80})",
        )
    return entries


def _theory_tables(out: Path) -> dict[str, Any]:
    """A theory run's audit tables (each with the scenario in ``model``), which the run's
    loader does not read: a damaged one is said as such, not met as pyarrow's error."""
    import pandas as pd

    files = {
        "coverage": ("coverage/concepts.parquet", pd.read_parquet),
        "coverage_groups": ("coverage/groups.parquet", pd.read_parquet),
        "awareness": ("zeroshot/concepts.csv", read_table_csv),
        "awareness_groups": ("zeroshot/groups.csv", read_table_csv),
    }
    tables = {}
    for key, (name, read) in files.items():
        try:
            tables[key] = read(out / name)
        except (OSError, ValueError) as exc:  # pyarrow's errors are ValueErrors too
            raise _damaged(out, f"{name} cannot be read ({one_line(exc)})") from None
        if "model" not in tables[key].columns:
            raise _damaged(out, f"{name} has no column model (the scenario)")
    _check_scores(tables["coverage"], [rate for _, rate in METHODS.values()], "coverage", out)
    _check_scores(tables["awareness"], ("precision", "recall", "f1"), "zero-shot", out)
    _check_scores(tables["awareness_groups"], ("macro_f1", "accuracy"), "zero-shot groups", out)
    return tables


def _theory(run: Any, index: int) -> tuple[list[Corpus], list[Model]]:
    from clipaudit.text import slug

    out = Path(run.out)
    tables = _theory_tables(out)
    coverage, coverage_groups = tables["coverage"], tables["coverage_groups"]
    awareness, awareness_groups = tables["awareness"], tables["awareness_groups"]
    sizes = [_part(run.manifest, "settings", "evaluation", k) for k in ("n_fit", "n_val", "n_test")]
    total = sum(n for n in sizes if isinstance(n, int) and not isinstance(n, bool) and n > 0)
    registry = {"name": "theory (synthetic latents)", "sha256": None, "path": None}
    corpora, models = [], []
    for scenario in dict.fromkeys(coverage["model"]):
        frame = coverage[coverage["model"] == scenario].drop(columns="model")
        methods, primary = _methods(frame, {})
        n = _n_captions(frame, None, methods) or total or None
        key = (index, scenario)
        corpora.append(
            Corpus(
                label=str(scenario),
                source=index,
                concepts=_with_counts(frame, n, methods),
                groups=coverage_groups[coverage_groups["model"] == scenario].drop(columns="model"),
                n_captions=n,
                methods=methods,
                primary=primary,
                registry=registry,
                pair_key=key,
            )
        )

        def confusion(group: str, scenario: str = str(scenario)) -> Any:
            path = out / "zeroshot" / "confusion" / slug(scenario) / f"{slug(group)}.csv"
            return read_table_csv(path).set_index("true") if path.is_file() else None

        models.append(
            Model(
                label=str(scenario),
                source=index,
                concepts=awareness[awareness["model"] == scenario].drop(columns="model"),
                groups=awareness_groups[awareness_groups["model"] == scenario].drop(
                    columns="model"
                ),
                registry=registry,
                skipped_concepts=[],
                skipped_groups=[],
                confusion=confusion,
                pair_key=key,
            )
        )
    return corpora, models


def _order(
    corpora: list[Corpus], models: list[Model]
) -> tuple[list[str], list[str], dict[str, str]]:
    """Groups as the paper sorts them: categories in the paper's order (common first, others as
    they first appear), groups in registry order within each (the tables' row order)."""
    category_of: dict[str, str] = {}
    appearance: list[str] = []
    every_category: list[str] = []
    frames = (
        [c.concepts for c in corpora] + [c.groups for c in corpora] + [m.groups for m in models]
    )
    for frame in frames:
        if "category" not in frame.columns:
            continue
        for group, category in zip(frame["group"], frame["category"], strict=True):
            every_category.append(str(category))
            if group not in category_of:
                category_of[str(group)] = str(category)
                appearance.append(str(group))
    for model in models:
        for group in model.concepts["group"]:
            if group not in category_of:
                category_of[str(group)] = "unknown"
                appearance.append(str(group))
                every_category.append("unknown")
    seen = list(dict.fromkeys(every_category))
    categories = sorted(
        seen,
        key=lambda c: (
            KNOWN_CATEGORIES.index(c) if c in KNOWN_CATEGORIES else len(KNOWN_CATEGORIES),
            seen.index(c),
        ),
    )
    groups = sorted(
        appearance, key=lambda g: (categories.index(category_of[g]), appearance.index(g))
    )
    return groups, categories, category_of


def _sensitive_groups(
    corpora: list[Corpus], models: list[Model], category_of: dict[str, str]
) -> tuple[dict[str, Any], set[str], list[str]]:
    """The registry the runs used (the first run's; see :func:`_registry_flags`) and the
    sensitive groups: those of every registry the runs used, and the groups of category
    'sensitive', so that no run's sensitive group goes unmarked."""
    notes: list[str] = []
    records: dict[str, dict[str, Any]] = {}
    for record in [*(c.registry for c in corpora), *(m.registry for m in models)]:
        if record.get("sha256"):
            records.setdefault(str(record["sha256"]), record)
    flags = {g for g, c in category_of.items() if c == "sensitive"}
    if not records:
        return {"name": None, "sha256": None, "source": "none"}, flags, notes
    resolved = [_registry_flags(record, notes) for record in records.values()]
    return resolved[0][0], flags.union(*(found for _, found in resolved)), notes


def _registry_flags(record: dict[str, Any], notes: list[str]) -> tuple[dict[str, Any], set[str]]:
    """A run's registry (its file, else the built-in of that name, when its sha256 matches,
    else either as it is now, with a note) and its sensitive groups (none, with a note, when
    neither is found)."""
    from clipaudit.errors import RegistryError
    from clipaudit.registry import list_registries, load_registry

    candidates = []
    if record.get("path") and Path(record["path"]).is_file():
        candidates.append(("file", record["path"]))
    if record.get("name") in list_registries():
        candidates.append(("built-in", record["name"]))
    loaded = []
    for source, where in candidates:
        try:
            loaded.append((source, load_registry(where)))
        except RegistryError:
            continue
    for source, registry in loaded:
        if registry.sha256 == record["sha256"]:
            flags = {g.name for g in registry.groups if g.sensitive}
            return {"name": registry.name, "sha256": registry.sha256, "source": source}, flags
    if loaded:
        source, registry = loaded[0]
        notes.append(
            f"the registry {record.get('name')!r} the runs used (sha256 {str(record['sha256'])[:12]}) "
            f"was not found unchanged; sensitive groups are taken from the {source} registry "
            f"{registry.name!r} (sha256 {str(registry.sha256)[:12]})"
        )
        flags = {g.name for g in registry.groups if g.sensitive}
        return {"name": registry.name, "sha256": registry.sha256, "source": source}, flags
    notes.append(
        f"the registry {record.get('name')!r} the runs used was not found; the groups of "
        "category 'sensitive' are treated as sensitive"
    )
    return {"name": record.get("name"), "sha256": record["sha256"], "source": "none"}, set()

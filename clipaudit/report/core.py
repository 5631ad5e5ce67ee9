"""``build_report``: the audit, joined, written as a run folder of kind ``report``.

A report folder holds::

    report.html       one self-contained page (figures inline, no script, no request)
    report.md         the same numbers as Markdown (figures linked)
    report.json       the summary: every number the page shows, keyed plainly
    tables/*.csv|parquet   concepts, groups, categories, coverage, awareness, coverage_groups,
                      awareness_groups, correlations, outliers, mismatches
    figures/*.png|svg coverage per group, macro-F1 per group, models side by side, coverage
                      against F1 per pair, confusion matrices per model and group
    manifest.json     settings (seed, n_bootstrap, title), inputs (path, kind, manifest hash),
                      outputs, versions

Its settings are the options; its inputs are recorded but not compared: a report is a pure
function of its inputs, so the same call on the same folder renders it again when an input run
changed (and returns the folder as it is when none did).
"""

from __future__ import annotations

import base64
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from numbers import Integral
from pathlib import Path
from typing import Any

from clipaudit.errors import (
    InputError,
    RunFolderError,
    SettingsError,
    check_arguments,
    did_you_mean,
    keyword_checked,
)
from clipaudit.report.stats import MIN_RESAMPLES
from clipaudit.text import counted

KIND = "report"
LIBRARIES = ("pandas", "numpy", "scipy", "matplotlib", "jinja2", "pyarrow")
TABLES = (
    "concepts",
    "groups",
    "categories",
    "coverage",
    "awareness",
    "coverage_groups",
    "awareness_groups",
    "correlations",
    "outliers",
    "mismatches",
)
OUTPUT_FILES = ("report.html", "report.md", "report.json")
# the fix when a report folder's file cannot be read
_AGAIN = (
    "build the report again into that folder "
    "(build_report(runs, out); clipaudit report RUN... --out DIR)"
)
# per kind: the block's title, the header of its names column, and what one of its rows names
# (a block lists each once, however many corpus x model pairs it is a mismatch of)
MISMATCH_TITLES = {
    "registry": ("Registries differ", "registries", ("pair of registries", "pairs of registries")),
    "group_without_images": ("Groups with coverage but no images", "concepts", ("group", "groups")),
    "concept_without_images": (
        "Concepts with coverage but no images",
        "concepts",
        ("concept", "concepts"),
    ),
    "group_without_coverage": (
        "Groups scored but missing from the coverage run",
        "concepts",
        ("group", "groups"),
    ),
    "concept_without_coverage": (
        "Concepts scored but missing from the coverage run",
        "concepts",
        ("concept", "concepts"),
    ),
    "unpaired": ("Runs with nothing to join", "run", ("run", "runs")),
}


class Tables(dict):
    """A report's tables by name: an unknown name says which there are (a KeyError still)."""

    def __missing__(self, key: Any) -> Any:
        raise KeyError(
            f"no table {key!r} in the report; its tables are {', '.join(self)}"
            f"{did_you_mean(str(key), self)}"
        )


@dataclass(repr=False)
class Report:
    """A rendered report: ``summary`` (plain JSON-able data), ``tables`` (DataFrames),
    ``figures`` (name -> PNG path), the run folder ``out`` and its ``manifest``; ``to_html()``,
    ``to_markdown()`` and ``to_json()`` give the rendered files' text.

    ``tables[name]``, also written as ``tables/NAME.csv`` and ``.parquet``; rows in the
    registry's group and concept order; a rate is a share of captions, F1 and macro-F1 are in
    [0, 1]; ``sensitive`` marks the registry's sensitive groups; ``method`` is the coverage method
    the statistics use, and ``primary`` whether a row is of it; ``level`` is ``concept`` or
    ``group``; the fit is F1 against ``log10_coverage`` per pair, and a row far from it is an
    outlier, its direction one of "rarely captioned yet known", "often captioned yet unknown",
    "above the fit", "below the fit":

    - ``coverage``: per corpus and concept: ``corpus``, ``category``, ``group``, ``sensitive``,
      ``concept``, ``n_captions`` (captions read), ``count`` and ``rate`` (lexical), and per other
      method counted ``semantic_count``, ``semantic_rate``, ``union_count``, ``union_rate``,
      ``checked_count``, ``checked_rate``; then ``method``, ``coverage_count`` and ``coverage``
      (its count and rate), ``log10_coverage`` (``log10((count + 0.5) / n_captions)``)
    - ``awareness``: per model and scored concept: ``model``, ``category``, ``group``,
      ``sensitive``, ``concept``, ``precision``, ``recall``, ``f1``, ``support`` (its images)
    - ``concepts``: the two joined per corpus x model pair, one row per concept on both sides:
      ``corpus``, ``model``, ``category``, ``group``, ``sensitive``, ``concept``,
      ``n_captions``, ``count``, ``rate`` (and the other methods' columns, as in ``coverage``),
      ``method``, ``coverage_count``, ``coverage``, ``log10_coverage``, ``precision``,
      ``recall``, ``f1``, ``support``, ``fitted_f1``, ``residual``, ``studentized_residual``,
      ``outlier`` (empty, or its direction)
    - ``groups``: per pair and group, over the joined concepts: ``corpus``, ``model``,
      ``category``, ``group``, ``sensitive``, ``n_concepts``, ``coverage_mean``,
      ``coverage_median``, ``coverage_min``, ``coverage_max``, ``log10_coverage`` (of the mean
      count), ``group_rate`` (captions mentioning any of its concepts), ``macro_f1``,
      ``accuracy``, ``n_images``, ``chance`` (the macro-F1 of a uniform guess among the
      concepts classified), ``f1_median``,
      ``f1_min``, ``f1_max``, ``fitted_f1``, ``residual``, ``studentized_residual``, ``outlier``
    - ``categories``: per pair and category: ``corpus``, ``model``, ``category``,
      ``sensitive``, ``n_groups``, ``n_concepts``, ``coverage_mean``, ``coverage_median``,
      ``coverage_min``, ``coverage_max`` (over concepts), ``macro_f1_mean``,
      ``macro_f1_median``, ``macro_f1_min``, ``macro_f1_max`` (over groups)
    - ``coverage_groups``: per corpus and group, over all its concepts: ``corpus``,
      ``category``, ``group``, ``sensitive``, ``n_concepts``, ``n_never_captioned``,
      ``coverage_mean``, ``coverage_median``, ``coverage_min``, ``coverage_max``, ``group_rate``
    - ``awareness_groups``: per model and group: ``model``, ``category``, ``group``,
      ``sensitive``, ``macro_f1``, ``accuracy``, ``n_images``, ``n_concepts``, ``chance``
    - ``correlations``: per pair, method and level: ``corpus``, ``model``, ``method``,
      ``primary``, ``level``, ``n``; Spearman ``spearman``, ``spearman_p_value``,
      ``spearman_ci_low``, ``spearman_ci_high`` (bootstrap), ``spearman_n_valid`` (resamples
      used), ``spearman_reason`` (why a value is missing), ``spearman_estimate`` (the value of
      one too few points to be a finding, where any is); the same for Kendall ``kendall``,
      ``kendall_p_value``, ``kendall_ci_low``, ``kendall_ci_high``, ``kendall_n_valid``,
      ``kendall_reason``, ``kendall_estimate``; the fit ``slope`` (F1 per 10x coverage), ``intercept``,
      ``slope_ci_low``, ``slope_ci_high``, ``r_squared``, ``fit_p_value``, ``slope_stderr``,
      ``fit_reason``; ``outliers_reason``, ``n_rarely_captioned_yet_known``,
      ``n_often_captioned_yet_unknown``, ``n_other_outliers``
    - ``outliers``: one row per outlier: ``corpus``, ``model``, ``method``, ``primary``,
      ``level``, ``name`` (concept or group), ``group``, ``category``, ``sensitive``,
      ``coverage``, ``count``, ``log10_coverage``, ``f1``, ``fitted_f1``, ``residual``,
      ``studentized_residual``, ``direction``
    - ``mismatches``: what did not join: ``kind`` (``registry``, ``group_without_images``,
      ``concept_without_images``, ``group_without_coverage``, ``concept_without_coverage``,
      ``unpaired``), ``corpus``, ``model``, ``group``, ``concept``, ``n_concepts``, ``count``,
      ``reason``, ``message``
    """

    out: Path
    summary: dict[str, Any]
    tables: dict[str, Any]
    figures: dict[str, Path]
    manifest: dict[str, Any] = field(default_factory=dict)
    reused: bool = False  # the folder already held this report of these inputs

    def __post_init__(self) -> None:
        self.tables = Tables(self.tables)

    @property
    def html_path(self) -> Path:
        return self.out / "report.html"

    def to_html(self, folder: str | Path | None = None) -> str:
        """The page (report.html): one self-contained HTML document. With ``folder``, the page
        to save in that folder instead (the demo's copy at its top): the same, but the files it
        names (figures, tables, report.json and .md) are named as seen from ``folder``."""
        if folder is None:
            return self._rendered("report.html")
        import os

        from clipaudit.report.render import render_html

        # resolved both: a folder reached through a link is still the report's parent
        seen_from = Path(os.path.relpath(self.out.resolve(), Path(folder).resolve())).as_posix()
        images = {}
        for key, png in self.figures.items():
            try:
                images[key] = _data_uri(png.read_bytes())
            except OSError as exc:
                raise RunFolderError(
                    f"cannot read {png} ({exc.strerror or exc}), a figure of the page; {_AGAIN}"
                ) from None
        return render_html(self.summary, images, "" if seen_from == "." else f"{seen_from}/")

    def to_markdown(self) -> str:
        """The report as Markdown (report.md; its figures are links into ``figures/``)."""
        return self._rendered("report.md")

    def to_json(self) -> str:
        """The summary as JSON (report.json): every number the page shows."""
        return self._rendered("report.json")

    def _rendered(self, name: str) -> str:
        try:
            return (self.out / name).read_text(encoding="utf-8")
        except OSError as exc:
            raise RunFolderError(
                f"cannot read {self.out / name} ({exc.strerror or exc}); {_AGAIN}"
            ) from None

    def __repr__(self) -> str:
        pairs = self.summary.get("pairs", [])
        head = ""
        if pairs:
            first = pairs[0]["concepts"]
            rho = first["spearman"]["value"]
            head = (
                f"; {pairs[0]['corpus']} x {pairs[0]['model']}: Spearman "
                f"{'n/a' if rho is None else f'{rho:.2f}'} over {first['n']} concepts"
            )
        return (
            f"Report({str(self.out)!r}: "
            f"{counted(len(self.summary.get('corpora', [])), 'corpus', 'corpora')} x "
            f"{counted(len(self.summary.get('models', [])), 'model')}, "
            f"{counted(len(pairs), 'pair')}{head}; "
            f"{counted(len(self.summary.get('mismatches', [])), 'mismatch', 'mismatches')})"
        )

    def _repr_html_(self) -> str:
        from clipaudit.report.render import render_repr_html

        return render_repr_html(self.summary, str(self.html_path))

    def headline(self) -> str:
        """The report's findings in a few lines of text (what the command line prints)."""
        summary = self.summary
        lines = [
            f"{counted(len(summary['corpora']), 'corpus', 'corpora')} x "
            f"{counted(len(summary['models']), 'model')}, {counted(len(summary['pairs']), 'pair')} "
            "joined"
            + (" (unchanged inputs: the report was already up to date)" if self.reused else "")
        ]
        for pair in summary["pairs"]:
            stats = pair["concepts"]
            name = (
                pair["corpus"]
                if pair["kind"] == "theory"
                else f"{pair['corpus']} x {pair['model']}"
            )
            lines.append(
                f"  {name}: {stats['n']} concepts, Spearman {_with_interval(stats['spearman'])}, "
                f"Kendall {_with_interval(stats['kendall'])}, "
                f"slope {_with_interval(stats['fit'], 'slope')} "
                "F1 per 10x coverage"
            )
            for key in ("rarely_captioned_yet_known", "often_captioned_yet_unknown"):
                if pair[key]:
                    names = ", ".join(o["name"] for o in pair[key])
                    lines.append(f"    {key.replace('_', ' ')}: {names}")
            if pair.get("group_outliers"):  # absent from a report.json of an older version
                far = ", ".join(f"{o['name']} ({o['direction']})" for o in pair["group_outliers"])
                lines.append(f"    groups far from the fit: {far}")
        if summary["mismatches"]:
            # distinct names, as the page counts them: two models miss one concept's images once
            blocks = summary.get("mismatch_summary")  # absent from a report.json of an older one
            counts = ", ".join(
                f"{b['n_listed']} {_mismatch_kind(b['kind'], b['n_listed'])}"
                + (f" ({b['count']} over the corpus x model pairs)" if b["count"] != b["n_listed"] else "")
                for b in blocks
            ) if blocks else ", ".join(
                f"{n} {_mismatch_kind(k, n)}" for k, n in summary["mismatch_counts"].items()
            )  # fmt: skip
            lines.append(f"mismatches (listed in the report): {counts}")
        lines += [f"note: {note}" for note in summary["notes"]]  # what the page warns of on top
        return "\n".join(lines)


def _mismatch_kind(kind: str, n: int) -> str:
    """A mismatch kind said after its count: "1 group without images", "20 groups without
    images", "2 registries"."""
    head, _, rest = kind.replace("_", " ").partition(" ")
    if n != 1:
        head = {"registry": "registries", "unpaired": "unpaired"}.get(head, f"{head}s")
    return f"{head} {rest}".strip()


def _with_interval(statistic: dict[str, Any], value: str = "value") -> str:
    """A statistic with its interval, or n/a and why."""
    if statistic[value] is None:
        return f"n/a ({statistic.get('reason') or 'not computed'})"
    low, high = statistic.get("ci_low"), statistic.get("ci_high")
    interval = f" [{low:.2f}, {high:.2f}]" if low is not None and high is not None else ""
    return f"{statistic[value]:.2f}{interval}"


def load_report_run(path: str | Path, manifest: dict[str, Any]) -> Report:
    """A complete report folder read back (:func:`clipaudit.runs.load_run`)."""
    import json

    import pandas as pd

    path = Path(path)
    summary = json.loads((path / "report.json").read_text(encoding="utf-8"))
    tables = {}
    for name in TABLES:
        table = path / "tables" / f"{name}.parquet"
        if table.is_file():
            tables[name] = pd.read_parquet(table)
    figures = {entry["key"]: path / entry["png"] for entry in summary.get("figures", [])}
    return Report(path, summary, tables, figures, manifest)


def check_report_options(title: Any = None, seed: Any = 0, n_bootstrap: Any = 2000) -> None:
    """Raise :class:`~clipaudit.errors.SettingsError` for options :func:`build_report` refuses."""
    if title is not None and (not isinstance(title, str) or not title.strip()):
        raise SettingsError(f"title must be a non-empty string or None; got {title!r}")
    for name, value in (("seed", seed), ("n_bootstrap", n_bootstrap)):
        # NumPy integers register as Integral (a seed read from an array is one); True is an
        # int to Python but no count (NumPy's bool is not Integral)
        if not isinstance(value, Integral) or isinstance(value, bool) or value < 0:
            raise SettingsError(f"{name} must be an integer >= 0; got {value!r}")
    if 0 < n_bootstrap < MIN_RESAMPLES:
        raise SettingsError(
            f"n_bootstrap must be 0 (no intervals) or at least {MIN_RESAMPLES}; got {n_bootstrap}"
        )


@keyword_checked
def build_report(
    runs: Any,
    out: str | Path | None = None,
    *,
    title: str | None = None,
    seed: int = 0,
    n_bootstrap: int = 2000,
    overwrite: bool = False,
    progress: bool = False,
) -> Report:
    """Join caption coverage with zero-shot awareness and render the report into ``out`` (a new
    temporary folder when None).

    ``runs``: one run or a list of them (``build_report([coverage, zeroshot], out)``), each a
    run folder path (read with :func:`clipaudit.runs.load_run`) or a loaded run
    (``CoverageResult``, ``ZeroShotRun``, ``SweepResult``, a world's ``WorldRun``; an audit's or
    the demo's result, or its folder, gives its coverage and zero-shot runs), at least one
    coverage side and one awareness side (a theory run is both). ``seed`` and ``n_bootstrap``
    drive the bootstrap intervals. A folder holding a report of other settings is refused unless
    ``overwrite``; called again on the same inputs, the report in ``out`` is returned as it is
    (``reused``). ``progress`` shows a bar while the figures are drawn (hundreds for a theory
    sweep). The tables are listed, column by column, in :class:`Report`'s docstring.
    Raises :class:`~clipaudit.errors.SettingsError` for options out of range (or a run given as
    ``out``), :class:`~clipaudit.errors.InputError` when there is nothing to join and
    :class:`~clipaudit.errors.RunFolderError` for an incomplete or foreign run.
    """
    from clipaudit import __version__
    from clipaudit.report import inputs as inputs_module
    from clipaudit.report.analysis import analyse
    from clipaudit.runs import RunFolder

    check_report_options(title, seed, n_bootstrap)
    seed, n_bootstrap = int(seed), int(n_bootstrap)  # plain ints: the manifest is JSON
    _refuse_a_run_as_out(out)  # build_report(coverage, zeroshot): the runs go in one list
    # a number for out is os.fspath's bare TypeError, and a "no" for progress would count as on
    check_arguments(
        {"out (the report folder, or None)": out} if out is not None else {},
        {"overwrite": overwrite, "progress": progress},
        print,
    )
    collected = inputs_module.collect(runs)
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="clipaudit-report-"))
    _refuse_out_among_inputs(out, collected.records)
    settings = {"title": title, "seed": seed, "n_bootstrap": n_bootstrap, "report_schema": 1}
    with RunFolder(out, KIND, settings, overwrite=overwrite, libraries=LIBRARIES) as folder:
        previous = folder.previous or {}
        same_code = all(
            previous.get(key) == folder.manifest.get(key)
            for key in ("clipaudit_version", "git_hash")
        )
        outputs_kept = all((out / name).is_file() for name in previous.get("outputs", []))
        if (
            folder.was_complete
            and same_code
            and outputs_kept
            and previous.get("inputs") == collected.records
        ):
            try:
                return _reused(out)
            except RunFolderError:  # an output damaged since: drawn again, as a deleted one is
                pass
        folder.update(inputs=collected.records)
        for stale in ("figures", "tables"):
            shutil.rmtree(out / stale, ignore_errors=True)
        tables, summary = analyse(collected, seed=seed, n_bootstrap=n_bootstrap)
        summary["title"] = title or _default_title(collected)
        summary["generated_by"] = {"clipaudit": __version__}
        summary["mismatch_summary"] = _mismatch_summary(summary["mismatches"])
        joined = any(pair["n_concepts"] for pair in summary["pairs"])
        if not joined:  # said at the top of the page, which otherwise looks like an empty audit
            summary["notes"] = [
                "This report failed: no concept has both coverage and awareness in any pair of "
                "a corpus and a model; the mismatches below say what did not join.",
                *summary["notes"],
            ]
        figures, images = _draw(collected, tables, summary, out / "figures", progress)
        written = _write_tables(tables, out / "tables")
        _render(summary, images, out)
        if not joined:
            # the page stays, listing the mismatches; the run is marked failed
            raise InputError(
                "nothing to report: no concept has both coverage and awareness in any pair "
                f"({', '.join(pair['corpus'] + ' / ' + pair['model'] for pair in summary['pairs'])}"
                f"); {out / 'report.html'} lists what did not join"
            )
        manifest = folder.complete(
            title=summary["title"],
            corpora=[c["label"] for c in summary["corpora"]],
            models=[m["label"] for m in summary["models"]],
            n_pairs=len(summary["pairs"]),
            n_mismatches=len(summary["mismatches"]),
            outputs=[
                *OUTPUT_FILES,
                *(str(p.relative_to(out)) for p in written),
                *(e[fmt] for e in summary["figures"] for fmt in ("png", "svg")),
            ],
        )
    return Report(out, summary, tables, figures, manifest)


ONE_LIST = "pass the runs as one list and out a new folder: build_report([coverage, zeroshot], out)"


def _refuse_a_run_as_out(out: Any) -> None:
    """Refuse a run given as ``out`` (``build_report(coverage, zeroshot)``, the second run taken
    for the report folder) saying that the runs go in one list: a :class:`SettingsError` for a
    loaded run, a :class:`RunFolderError` (what the folder would raise) for a run folder's path."""
    import os

    from clipaudit.errors import ClipAuditError
    from clipaudit.report.inputs import HOLDERS, KINDS, _kind_of

    if out is None:
        return
    if not isinstance(out, (str, os.PathLike)):
        parts = (getattr(out, name, None) for name in ("coverage", "zeroshot", "theory", "world"))
        if _kind_of(out) or any(_kind_of(part) for part in parts if part is not None):
            raise SettingsError(
                f"out (the report folder, or None) must be a path, got {type(out).__name__} "
                f"(a run) {str(getattr(out, 'out_dir', None) or getattr(out, 'out', ''))!r:.80}; "
                + ONE_LIST
            )
        return  # check_arguments says what else it is
    from clipaudit.runs import MANIFEST, a_run, read_manifest, run_kind

    if not (Path(out) / MANIFEST).is_file():
        return
    try:
        kind = run_kind(read_manifest(out))
    except ClipAuditError:  # a damaged manifest: the run folder says what is wrong with it
        return
    if isinstance(kind, str) and (kind in KINDS or kind in HOLDERS):
        raise RunFolderError(
            f"{out} holds {a_run(kind)}, not a report run; a report needs a folder of its own: "
            "name every run to join as an input and a new folder as out (in Python "
            "build_report([coverage, zeroshot], out); clipaudit report RUN... --out DIR)"
        )


def _refuse_out_among_inputs(out: Path, records: Sequence[dict[str, Any]]) -> None:
    """Refuse ``out`` inside an input run (redoing that run with --overwrite deletes the report)
    or holding one (--overwrite, or a report of other settings, empties ``out``, the input run
    with it)."""
    here = out.resolve()
    for record in records:
        folder = Path(record["path"]).resolve()
        if folder in here.parents:
            where = f"is inside the {record['kind']} run {record['path']}"
        elif here in folder.parents:
            where = f"holds the {record['kind']} run {record['path']}"
        else:
            continue
        raise RunFolderError(
            f"out {out} {where}, one of the inputs; give --out (out= in Python) a folder outside "
            "every input run, such as one beside it"
        )


def _reused(out: Path) -> Report:
    """The complete report in ``out`` read back; :class:`RunFolderError` when its files cannot
    be read (a truncated report.json or table)."""
    from clipaudit.runs import load_run

    report = load_run(out)
    report.reused = True
    return report


def _default_title(collected: Any) -> str:
    corpora = [c.label for c in collected.corpora if c.pair_key is None]
    if not corpora:
        return "Coverage against awareness: theory scenarios"
    if len(corpora) > 2:
        return f"Coverage against awareness: {len(corpora)} corpora"
    return f"Coverage against awareness: {' and '.join(corpora)}"


def _mismatch_summary(mismatches: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mismatches grouped for reading: per kind, per (corpus, model, group, reason), the names."""
    blocks = []
    for kind, (title, header, (one, many)) in MISMATCH_TITLES.items():
        entries = [m for m in mismatches if m["kind"] == kind]
        if not entries:
            continue
        rows: dict[tuple, dict[str, Any]] = {}
        listed: set[tuple] = set()
        for m in entries:
            key = (m.get("corpus"), m.get("model"), m.get("group"), m.get("reason"))
            if kind == "registry":
                name = (
                    f"coverage {m['coverage_registry']['name']} "
                    f"({str(m['coverage_registry']['sha256'])[:12]}), zero-shot "
                    f"{m['awareness_registry']['name']} ({str(m['awareness_registry']['sha256'])[:12]})"
                )
                key = (*key[:3], m["message"])
            elif kind in ("group_without_images", "group_without_coverage"):
                name = f"all {m['n_concepts']}"
            elif kind == "unpaired":
                name = m.get("corpus") or m.get("model")
            else:
                name = m["concept"]
            row = rows.setdefault(
                key,
                {
                    "corpus": m.get("corpus"),
                    "model": m.get("model"),
                    "group": m.get("group"),
                    "reason": m.get("reason") or m.get("message"),
                    "names": [],
                },
            )
            row["names"].append(name)
            listed.add((m.get("group"), name))
        blocks.append(
            {
                "kind": kind,
                "title": title,
                "names_header": header,
                "count": len(entries),  # one per corpus x model pair
                "n_listed": len(listed),
                "unit": one if len(listed) == 1 else many,
                "rows": _merge_rows(list(rows.values())),
            }
        )
    return blocks


def _merge_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows that differ only by model (or only by corpus) as one row naming them all."""
    for side, other in (("model", "corpus"), ("corpus", "model")):
        merged: dict[tuple, dict[str, Any]] = {}
        for row in rows:
            key = (row[other], row["group"], row["reason"], tuple(row["names"]))
            if key in merged and row[side] is not None and merged[key][side] is not None:
                merged[key][side] = f"{merged[key][side]}, {row[side]}"
            else:
                merged.setdefault(key, dict(row))
        rows = list(merged.values())
    return rows


def _write_tables(tables: dict[str, Any], folder: Path) -> list[Path]:
    from clipaudit.provenance import write_table

    written = []
    for name in TABLES:
        frame = tables[name]
        written += write_table(frame, folder / name)
    return written


def _render(summary: dict[str, Any], images: dict[str, str], out: Path) -> None:
    from clipaudit.provenance import atomic_write_text
    from clipaudit.report.render import render_html, render_json, render_markdown

    atomic_write_text(out / "report.json", render_json(summary))
    atomic_write_text(out / "report.md", render_markdown(summary))
    atomic_write_text(out / "report.html", render_html(summary, images))


# --------------------------------------------------------------------------- figures


@dataclass
class _Planned:
    """A figure to draw: its key (a name unique in the report), kind, how to draw it, and the
    fields its summary entry carries (caption, alt text, corpus, model, group)."""

    key: str
    kind: str
    build: Callable[[], Any]
    fields: dict[str, Any]
    # the figure's files as an input run already drew them (format -> bytes), or None
    drawn: Callable[[], dict[str, bytes] | None] | None = None


def _unique_keys(planned: list[_Planned]) -> None:
    seen: dict[str, int] = {}
    for item in planned:
        if item.key in seen:
            seen[item.key] += 1
            item.key = f"{item.key} #{seen[item.key]}"
        seen.setdefault(item.key, 1)


def _plan(collected: Any, tables: dict[str, Any], summary: dict[str, Any]) -> list[_Planned]:
    from clipaudit.report import figures as draw

    groups = collected.group_order
    sensitive = collected.sensitive
    categories = collected.category_order
    models = [m.label for m in collected.models]
    corpora = [{"label": c.label, "n_captions": c.n_captions} for c in collected.corpora]
    planned = [
        _Planned(
            "coverage_by_group",
            "coverage_by_group",
            partial(
                draw.coverage_by_group,
                tables["coverage"],
                corpora,
                groups,
                collected.category_of,
                sensitive,
                categories,
            ),
            {
                "caption": "Caption coverage per group: each dot is a concept (share of captions "
                "mentioning it, log scale; hollow: never captioned, placed at 0.5 / n, n the "
                "captions read), the bar "
                "the group's median. Groups in the paper's order, common first; sensitive groups "
                "shaded.",
                "alt": "Strip plot of caption coverage per concept, one row per group",
            },
        ),
        _Planned(
            "macro_f1_by_group",
            "macro_f1_by_group",
            partial(
                draw.macro_f1_by_group,
                tables["awareness_groups"],
                models,
                groups,
                collected.category_of,
                sensitive,
            ),
            {
                "caption": "Zero-shot macro-F1 per group and model; the dashed tick is chance "
                "(the macro-F1 of a uniform guess among the concepts classified). Sensitive "
                "groups are shaded: awareness there is a risk, not a skill.",
                "alt": "Bar chart of macro-F1 per group for each model",
            },
        ),
    ]
    if len(models) > 1:
        planned.append(
            _Planned(
                "models_side_by_side",
                "models_side_by_side",
                partial(
                    draw.models_side_by_side, tables["awareness_groups"], models, groups, sensitive
                ),
                {
                    "caption": "Macro-F1 per group, models side by side (cividis colour scale).",
                    "alt": "Heat map of macro-F1, groups by models",
                },
            )
        )
    n_captions = {c.label: c.n_captions for c in collected.corpora}
    for pair in summary["pairs"]:
        corpus, model = pair["corpus"], pair["model"]
        name = corpus if pair["kind"] == "theory" else f"{corpus} × {model}"
        statistic = pair["concepts"]
        rho, tau, fit = statistic["spearman"], statistic["kendall"], statistic["fit"]
        title = (
            f"{name}\nSpearman ρ {_shown(rho['value'])}, Kendall τ {_shown(tau['value'])}, "
            f"slope {_shown(fit['slope'], '+.2f')} F1 per 10× coverage (n = {statistic['n']})"
        )
        part = tables["concepts"]
        part = part[(part["corpus"] == corpus) & (part["model"] == model)]
        outliers = (
            pair["rarely_captioned_yet_known"]
            + pair["often_captioned_yet_unknown"]
            + pair["other_outliers"]
        )
        planned.append(
            _Planned(
                f"coverage_vs_f1 {name}",
                "coverage_vs_f1",
                partial(
                    draw.coverage_against_f1,
                    part,
                    fit,
                    outliers,
                    categories,
                    n_captions[corpus],
                    title,
                ),
                {
                    "corpus": corpus,
                    "model": model,
                    "caption": f"{name}: each concept's zero-shot F1 against its caption coverage "
                    "(log scale; 'none' marks concepts no caption mentions), the log-linear fit, "
                    "and the outliers ringed and labelled.",
                    "alt": f"Scatter plot of F1 against caption coverage for {name}",
                },
            )
        )
    scores = tables["awareness_groups"].set_index(["model", "group"])["macro_f1"]
    for model in collected.models:
        for group in groups:
            frame = model.confusion(group)
            if frame is None or frame.empty:
                continue
            title = draw.confusion_title(model.label, group, scores.get((model.label, group)))
            recorded = (
                partial(draw.recorded_confusion, model.drawn_confusions, model.folder, frame, title)
                if model.drawn_confusions and model.folder is not None
                else None
            )
            planned.append(
                _Planned(
                    f"confusion {model.label} / {group}",
                    "confusion",
                    partial(draw.confusion, frame, title),
                    {
                        "model": model.label,
                        "group": group,
                        "caption": f"{model.label}, {group}: confusion matrix.",
                        "alt": f"Confusion matrix of {model.label} on {group}",
                    },
                    recorded,
                )
            )
    _unique_keys(planned)
    return planned


def _shown(value: Any, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def _draw(
    collected: Any, tables: dict[str, Any], summary: dict[str, Any], folder: Path, progress: bool
) -> tuple[dict[str, Path], dict[str, str]]:
    """Draw every figure, write it as PNG and SVG, and record it in ``summary["figures"]``.
    Returns key -> PNG path and key -> PNG data URI (for the page)."""
    import matplotlib
    from tqdm.auto import tqdm

    from clipaudit.report import figures as draw
    from clipaudit.report.analysis import plain

    planned = _plan(collected, tables, summary)
    stems = draw.figure_stems([item.key for item in planned])
    entries, paths, images = [], {}, {}
    folder.mkdir(parents=True, exist_ok=True)
    for item in tqdm(planned, desc="figures", unit=" figures", disable=not progress, leave=False):
        files = item.drawn() if item.drawn is not None else None
        if files is not None:  # the input run's own figure of the same data: copied, not drawn
            written, extra = draw.copy_figure(files, folder, stems[item.key]), {}
        else:
            # labels and titles are run, concept and model names: "$5 to $10" is text, not math
            with matplotlib.rc_context({"text.parse_math": False}):
                result = item.build()
                figure, extra = result if isinstance(result, tuple) else (result, {})
                written = draw.save(figure, folder, stems[item.key])
        png = written["png"]
        data = png.read_bytes()
        width, height = draw.png_size(data)
        paths[item.key] = png
        images[item.key] = _data_uri(data)
        entries.append(
            {
                "key": item.key,
                "kind": item.kind,
                "stem": stems[item.key],
                "png": f"figures/{png.name}",
                "svg": f"figures/{written['svg'].name}",
                "width": width,
                "height": height,
                "corpus": None,
                "model": None,
                "group": None,
                "labels": [],
                "unplaced": [],
                **item.fields,
                **extra,
            }
        )
    summary["figures"] = plain(entries)
    return paths, images


def _data_uri(png: bytes) -> str:
    """A PNG as the page embeds it."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")

"""The audit, joined: caption coverage against zero-shot awareness in one report.

Summarise to plain data first, then render (as skrub's ``TableReport`` does)::

    from clipaudit.report import build_report

    report = build_report(["runs/cov", "runs/zs"], "runs/report")
    report.summary["pairs"][0]["concepts"]["spearman"]   # {"value", "ci_low", "ci_high", ...}
    report.tables["groups"]                              # a DataFrame
    report.figures                                       # name -> PNG path
    report.to_markdown()                                 # report.md's text (to_html, to_json)
    report                                               # in Jupyter: headline and group table

Modules: :mod:`.inputs` (runs to corpora and models), :mod:`.join` (the joined tables and the
mismatches), :mod:`.stats` (correlations, bootstrap, fit, outliers), :mod:`.analysis` (the
summary), :mod:`.figures` (matplotlib), :mod:`.render` (jinja2 templates), :mod:`.core`.
Heavy libraries load only when a report is built.
"""

from __future__ import annotations

from clipaudit.report.core import Report, build_report, load_report_run

__all__ = ["Report", "build_report", "load_report_run"]

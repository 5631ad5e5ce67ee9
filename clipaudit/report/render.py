"""Rendering the summary: ``report.html``, ``report.md``, ``report.json`` and the notebook view,
all from the one summary dict through the jinja2 templates in ``templates/``.

HTML is autoescaped (captions and labels are untrusted text; no template marks data ``|safe``);
the page carries a Content-Security-Policy that allows no script and no request (figures are
``data:`` URIs, styles inline, fonts the system's). Markdown escapes what Markdown or inline HTML
would interpret, and makes what a terminal would act on a space. JSON is ``json.dumps`` of the
summary (no NaN: missing numbers are null).
"""

from __future__ import annotations

import json
import math
import re
from functools import cache
from pathlib import Path
from typing import Any

from clipaudit.text import inert_line

TEMPLATES = Path(__file__).resolve().parent / "templates"


def number(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def signed(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:+.{digits}f}"


def share(value: Any) -> str:
    """A rate as a percentage with enough digits for rare concepts (0.25%, 0.0031%,
    0.00000025%); none at all is "0%", as a share beside shares (a bare "0" reads as a count)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if value == 0:
        return "0%"
    percent = 100 * value
    if percent >= 10:
        return f"{percent:.0f}%"
    if percent >= 1:
        return f"{percent:.1f}%"
    # two significant digits, written out: a concept a few of LAION-400M's captions mention
    # is 2.5e-07% in .2g; trailing zeros go where rounding reached the next decade (0.0100)
    decimals = 1 - math.floor(math.log10(percent))
    return f"{percent:.{decimals}f}".rstrip("0").rstrip(".") + "%"


def interval(statistic: Any, digits: int = 2) -> str:
    if not isinstance(statistic, dict):
        return ""
    low, high = statistic.get("ci_low"), statistic.get("ci_high")
    if low is None or high is None:
        return ""
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


# what Markdown (CommonMark, GitHub tables) reads inside a line: emphasis, code, links, table
# cells, strikethrough; "#", "+", "-" only mean something at the start of a line, where no
# escaped text is put, and parentheses only after "]", which is escaped
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def markdown_text(value: Any) -> str:
    """Untrusted text for a Markdown table cell or paragraph: HTML escaped (a renderer that
    passes inline HTML through shows it as text), Markdown punctuation backslash-escaped, one
    line, and no character a terminal acts on (report.md is read with cat and less: a web
    caption's escape sequence would rename the window, a direction override reverse the line)."""
    text = " ".join(inert_line(str(value)).split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False)


def _filters() -> dict[str, Any]:
    return {"num": number, "signed": signed, "share": share, "ci": interval}


@cache
def environment(kind: str) -> Any:
    """The jinja2 environment for ``html`` (autoescaped) or ``text`` (Markdown, JSON)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=kind == "html",
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(_filters())
    if kind == "text":
        env.filters["md"] = markdown_text
        env.filters["to_json"] = to_json
    return env


def render(template: str, kind: str, **context: Any) -> str:
    return environment(kind).get_template(template).render(**context)


def render_html(summary: dict[str, Any], images: dict[str, str], to_files: str = "") -> str:
    """The self-contained page; ``images`` maps each figure key to its PNG ``data:`` URI.
    ``to_files`` leads each file the page names (figures, tables, report.md): the report folder
    as seen from where the page is saved, ending in "/" ("" beside them)."""
    return render("report.html.j2", "html", s=summary, images=images, to_files=to_files)


def render_markdown(summary: dict[str, Any]) -> str:
    return render("report.md.j2", "text", s=summary)


def render_json(summary: dict[str, Any]) -> str:
    return render("report.json.j2", "text", s=summary)


def render_repr_html(summary: dict[str, Any], html_path: str) -> str:
    return render("repr.html.j2", "html", s=summary, html_path=html_path)

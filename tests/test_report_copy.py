"""The report's page saved in another folder (helper 119): the demo's RUN/report.html was a byte
copy of RUN/report/report.html, whose "Files: figures/..." and "report.json and report.md, the
tables in tables/" named files that are not beside it but in RUN/report/."""

from __future__ import annotations

import re
from glob import glob
from html.parser import HTMLParser
from pathlib import Path

import pytest

from clipaudit.errors import RunFolderError
from clipaudit.report import build_report
from clipaudit.runs import load_run

# a file a page names in its text: a path with a folder, or a name with a report file's suffix
_MENTION = re.compile(
    r"[\w.@*-]*(?:/[\w.@*-]*)+|[\w@*-][\w.@*-]*\.(?:json|md|csv|parquet|png|svg|html)\b"
)


class _Page(HTMLParser):
    """A page's links (href, src) and the text it shows (no style, no script)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.text: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag, attrs):
        self._hidden += tag in ("style", "script")
        self.links += [value for name, value in attrs if name in ("href", "src") and value]

    def handle_endtag(self, tag):
        self._hidden -= tag in ("style", "script")

    def handle_data(self, data):
        if not self._hidden:
            self.text.append(data)


def named_files(html: str) -> list[str]:
    """Every relative file path the page links or names (globs kept as written)."""
    page = _Page()
    page.feed(html)
    links = [link for link in page.links if not link.startswith(("#", "data:"))]
    mentions = [m.rstrip(".") for m in _MENTION.findall(" ".join(page.text))]
    # "/x" is absolute (an input run's path); a bare "/" is the one of "0.5 / n"
    return [path for path in links + mentions if not path.startswith("/")]


def missing_files(html: str, folder: Path) -> list[str]:
    """The files ``html`` links or names that do not exist relative to ``folder``."""
    return [path for path in named_files(html) if not glob(str(folder / path))]


@pytest.fixture(scope="module")
def report(audit_runs, tmp_path_factory):
    runs = [audit_runs["coverage"], audit_runs["zeroshot_trained"]]
    return build_report(runs, tmp_path_factory.mktemp("copy") / "run" / "report", n_bootstrap=0)


def test_the_page_names_its_files_as_seen_from_its_own_folder(report):
    html = report.to_html()
    named = named_files(html)
    # the checker sees what the page names: figures, the confusion matrices, the footer's files
    assert {"figures/coverage_by_group.png", "figures/confusion_*.png"} <= set(named)
    assert {"report.json", "report.md", "tables/"} <= set(named)
    assert missing_files(html, report.out) == []
    # the same page, named for its own folder, is the file itself
    assert report.to_html(folder=report.out) == html


@pytest.mark.parametrize("where", ["run", "elsewhere"])
def test_a_page_for_another_folder_names_files_that_are_there(report, where):
    folder = report.out.parent.parent / where
    folder.mkdir(exist_ok=True)
    html = report.to_html(folder=folder)
    assert missing_files(report.to_html(), folder) != []  # the report's own page would not do
    assert missing_files(html, folder) == []
    prefix = "report/" if where == "run" else "../run/report/"
    assert f"{prefix}figures/coverage_by_group.png" in named_files(html)
    # still one self-contained page: the figures inline, the same as in the report's own
    inline = re.findall(r'src="(data:image/png;base64,[^"]+)"', html)
    assert inline and inline == re.findall(r'src="(data:image/png;base64,[^"]+)"', report.to_html())


def test_a_loaded_report_renders_the_same_page_for_another_folder(report):
    loaded = load_run(report.out)
    folder = report.out.parent
    assert loaded.to_html(folder=folder) == report.to_html(folder=folder)
    assert loaded.to_html(folder=report.out) == report.to_html()


def test_a_figure_gone_from_the_folder_is_a_run_folder_error(report, tmp_path):
    import shutil

    copy = tmp_path / "report"
    shutil.copytree(report.out, copy)
    loaded = load_run(copy)
    (copy / "figures" / "coverage_by_group.png").unlink()
    with pytest.raises(RunFolderError, match=r"coverage_by_group\.png.*build the report again"):
        loaded.to_html(folder=tmp_path)

"""report.html as a person sees it: opened in headless Chromium (playwright), screenshotted, and
checked for console errors, figures that did not load, requests beyond the file itself, and
injected captions that ran instead of showing as text."""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is absent: the browser test needs Debian's chromium")
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (it is in the dev extra)")
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        except Error as exc:
            pytest.skip(f"{CHROMIUM} does not start headless here: {str(exc).splitlines()[0]}")
        yield launched
        launched.close()


def test_the_page_loads_everything_from_itself_and_runs_no_injected_text(
    browser, audit_runs, tmp_path
):
    from clipaudit.report import build_report
    from tests.report_world import INJECTED

    report = build_report(
        [audit_runs["coverage"], audit_runs["zeroshot_trained"], audit_runs["zeroshot_random"]],
        tmp_path / "report",
        n_bootstrap=200,
    )
    url = report.html_path.resolve().as_uri()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems, requests = [], []
    page.on(
        "console",
        lambda m: (
            problems.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning")
            else None
        ),
    )
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("request", lambda r: requests.append(r.url))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.goto(url, wait_until="load")
    page.screenshot(path=str(tmp_path / "report.png"))  # the artefact a person looks at
    # open every collapsed section, so that the figures in them are laid out too
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    page.wait_for_load_state("load")
    page.screenshot(path=str(tmp_path / "report_full.png"), full_page=True)

    images = page.evaluate(
        "Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])"
    )
    assert len(images) == len(report.summary["figures"]) >= 15
    not_loaded = [
        alt
        for alt, complete, width, height in images
        if not (complete and width > 0 and height > 0)
    ]
    assert not_loaded == []
    assert problems == []
    assert [r for r in requests if r != url and not r.startswith("data:")] == []
    assert page.evaluate("window.__pwned === undefined")
    text = page.inner_text("#examples")
    for caption in INJECTED:
        assert caption in text  # shown verbatim, as text
    assert page.evaluate("document.querySelectorAll('script').length") == 0
    assert page.evaluate("document.querySelectorAll('img[src=\"x\"]').length") == 0
    assert (tmp_path / "report.png").stat().st_size > 20_000
    page.close()

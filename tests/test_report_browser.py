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


LONG_CORPUS = "COCO val2017 — légendes «humaines» (25 014 captions, five per image)"
LONG_MODEL = "ViT-B-32@laion400m_e32_but_a_really_long_pretrained_tag_name_for_testing"


@pytest.fixture(scope="module")
def long_named_report(audit_runs, tmp_path_factory):
    """The audit world's report with a second corpus and a third model of long, non-ASCII names
    (a corpus is labelled by its run folder, a model by its spec's name)."""
    import shutil

    from clipaudit.models import ModelSpec
    from clipaudit.report import build_report
    from clipaudit.zeroshot import run_zeroshot
    from tests.report_world import IMAGED

    root = tmp_path_factory.mktemp("long-names")
    corpus = root / LONG_CORPUS
    shutil.copytree(audit_runs["coverage"], corpus)
    models = Path(audit_runs["root"]) / "models"
    spec = ModelSpec(
        str(models / "tiny-clip.json"), str(models / "random.safetensors"), name=LONG_MODEL
    )
    run_zeroshot(
        spec, audit_runs["images"], root / "zeroshot-long", groups=tuple(IMAGED),
        cache_dir=None, workers=0, device="cpu", progress=False,
    )  # fmt: skip
    runs = [audit_runs["coverage"], corpus, audit_runs["zeroshot_trained"]]
    runs += [audit_runs["zeroshot_random"], root / "zeroshot-long"]
    return build_report(runs, root / "report", n_bootstrap=50)


OVERFLOWING_TABLES = """Array.from(document.querySelectorAll('.table-wrap'))
    .filter(w => w.scrollWidth > w.clientWidth + 1)
    .map(w => w.closest('section').id + ': ' + w.querySelector('th').textContent)"""


def test_long_names_fit_a_wide_window_a_phone_and_the_printed_page(browser, long_named_report):
    """Long corpus and model names break instead of pushing numbers out of sight: behind a
    scroll bar at the bottom of a long table, past a phone's screen, or off the printed page
    (which cannot scroll); collapsed sections print open."""
    url = long_named_report.html_path.resolve().as_uri()
    summary = long_named_report.summary
    assert LONG_CORPUS in [c["label"] for c in summary["corpora"]]
    assert LONG_MODEL in [m["label"] for m in summary["models"]]

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url, wait_until="load")
    assert page.evaluate(OVERFLOWING_TABLES) == []
    page.close()

    page = browser.new_page(viewport={"width": 420, "height": 900})
    page.goto(url, wait_until="load")
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    assert page.evaluate("document.documentElement.scrollWidth") <= 420
    page.close()

    page = browser.new_page(viewport={"width": 718, "height": 1000})  # A4 less its margins
    page.goto(url, wait_until="load")
    page.emulate_media(media="print")
    assert page.evaluate(OVERFLOWING_TABLES) == []
    assert page.evaluate("document.documentElement.scrollWidth") <= 718
    shut = page.evaluate(
        """Array.from(document.querySelectorAll('details:not([open])'))
        .map(d => d.querySelector(':scope > :not(summary)').getBoundingClientRect().height)"""
    )
    assert len(shut) >= 5 and min(shut) > 0  # the concept tables and confusion matrices print
    page.close()


RTL_CORPUS = "تعليقات الويب"  # "web captions"
RTL_MODEL = "نموذج مدرب"  # "trained model"
RTL_GROUP = "لون"  # "colour"
LONG_CONCEPT = "photograph" * 12  # one word of 120 letters


@pytest.fixture(scope="module")
def foreign_named_report(audit_runs, tmp_path_factory):
    """The audit world's report with right-to-left corpus, model and group names and a concept
    named by one very long word (a corpus is labelled by its run folder; the rest renamed in
    the loaded runs)."""
    import dataclasses
    import shutil

    import pyarrow as pa

    from clipaudit.report import build_report
    from clipaudit.runs import load_run

    root = tmp_path_factory.mktemp("foreign-names")
    shutil.copytree(audit_runs["coverage"], root / RTL_CORPUS)
    coverage = load_run(root / RTL_CORPUS)
    zeroshot = load_run(audit_runs["zeroshot_trained"])

    def renamed(frame):
        frame = frame.assign(group=frame["group"].replace({"Color": RTL_GROUP}))
        if "concept" in frame:
            frame["concept"] = frame["concept"].replace({"dog": LONG_CONCEPT})
        if "model" in frame:
            frame["model"] = RTL_MODEL
        return frame

    tables = {
        **coverage.arrow_tables,
        "concepts": pa.Table.from_pandas(renamed(coverage.concepts)),
        "groups": pa.Table.from_pandas(renamed(coverage.groups)),
    }
    runs = [
        dataclasses.replace(coverage, arrow_tables=tables),
        dataclasses.replace(
            zeroshot, concepts=renamed(zeroshot.concepts), groups=renamed(zeroshot.groups)
        ),
    ]
    return build_report(runs, root / "report", n_bootstrap=50)


# the horizontal extent [left, right] of a text in the first element a selector picks that holds
# another text, wherever the browser drew it (right-to-left runs are reordered)
TEXT_EXTENT = """([selector, within, needle]) => {
  for (const element of document.querySelectorAll(selector)) {
    if (!element.textContent.includes(within)) continue;
    const at = element.textContent.indexOf(needle);
    if (at < 0) continue;
    const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
    const range = document.createRange();
    let offset = 0, started = false, node;
    while ((node = walker.nextNode())) {
      const length = node.data.length;
      if (!started && at < offset + length) { range.setStart(node, at - offset); started = true; }
      if (started && at + needle.length <= offset + length) {
        range.setEnd(node, at + needle.length - offset);
        const box = range.getBoundingClientRect();
        return [box.left, box.right];
      }
      offset += length;
    }
  }
  return null;
}"""


def test_right_to_left_names_keep_their_place_and_long_words_break(browser, foreign_named_report):
    """Names are untrusted text in any script: a right-to-left corpus and model drawn as
    "model × corpus" swap the pair, and a count beside a right-to-left group ("لون · 25
    captions") is drawn on the name's other side. A concept of one very long word pushed the
    concept table's numbers behind a scroll bar."""
    summary = foreign_named_report.summary
    assert [c["label"] for c in summary["corpora"]] == [RTL_CORPUS]
    assert [m["label"] for m in summary["models"]] == [RTL_MODEL]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(foreign_named_report.html_path.resolve().as_uri(), wait_until="load")
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")

    def extent(selector, within, text):
        found = page.evaluate(TEXT_EXTENT, [selector, within, text])
        assert found is not None, f"{text!r} not in {selector} holding {within!r}"
        return found

    for selector in ("#glance .card h3", "#groups details summary", "#concepts summary"):
        corpus = extent(selector, RTL_MODEL, RTL_CORPUS)
        model = extent(selector, RTL_CORPUS, RTL_MODEL)
        assert corpus[1] <= model[0], f"{selector}: the model is drawn before the corpus"
    green = next(e for e in summary["examples"][RTL_CORPUS] if e["concept"] == "green")
    count = f"{green['count']} captions"
    assert f"{RTL_GROUP} · {count}" in page.inner_text("#examples")
    group, number = (
        extent("#examples h3", "green", RTL_GROUP),
        extent("#examples h3", "green", count),
    )
    assert group[1] <= number[0], "the count is drawn before the group"
    assert page.evaluate(OVERFLOWING_TABLES) == []
    page.close()


@pytest.fixture(scope="module")
def audit_report(audit_runs, tmp_path_factory):
    from clipaudit.report import build_report

    runs = [audit_runs["coverage"], audit_runs["zeroshot_trained"], audit_runs["zeroshot_random"]]
    return build_report(runs, tmp_path_factory.mktemp("page") / "report", n_bootstrap=50)


# each text's contrast with what it is drawn on (its nearest opaque background, translucent ones
# blended in), against WCAG 2's AA minimum: 4.5:1, or 3:1 for large text (24px, or bold 18.66px)
LOW_CONTRAST = """() => {
  const parse = c => {
    const v = c.match(/rgba?\\(([^)]+)\\)/)[1].split(/[ ,\\/]+/).filter(Boolean).map(Number);
    return {r: v[0], g: v[1], b: v[2], a: v.length > 3 ? v[3] : 1};
  };
  const luminance = ({r, g, b}) => {
    const f = x => (x /= 255) <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4);
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const behind = element => {
    const layers = [];
    for (let e = element; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c.a > 0) { layers.push(c); if (c.a >= 1) break; }
    }
    let out = {r: 255, g: 255, b: 255};
    for (const c of layers.reverse()) {
      out = {r: c.r * c.a + out.r * (1 - c.a), g: c.g * c.a + out.g * (1 - c.a),
             b: c.b * c.a + out.b * (1 - c.a)};
    }
    return out;
  };
  const found = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  let node;
  while ((node = walker.nextNode())) {
    if (!node.data.trim()) continue;
    const element = node.parentElement, style = getComputedStyle(element);
    const a = luminance(parse(style.color)) + 0.05, b = luminance(behind(element)) + 0.05;
    const ratio = Math.max(a, b) / Math.min(a, b);
    const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight) >= 700;
    const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    if (ratio < need) found.push(`${ratio.toFixed(2)}: ${element.className} "${node.data.trim()}"`);
  }
  return [...new Set(found)];
}"""

# what the page shows only for some inputs: a statistic's reason, a reason in a table, a note
SOMETIMES_SHOWN = """() => {
  const stat = document.querySelector('.stat');
  stat.insertAdjacentHTML('beforeend', '<div class="reason">only 2 points, fewer than the 3 needed</div>');
  const cell = document.querySelector('#method td.text');
  cell.insertAdjacentHTML('beforeend', '<span class="reason">uncalibrated defaults</span>');
  document.querySelector('#glance').insertAdjacentHTML('afterbegin',
    '<div class="info">info</div><div class="warn">warn</div><div class="note">note</div>');
}"""


def test_every_text_on_the_page_is_legible_against_its_background(browser, audit_report):
    """The "risk" badges were white on Okabe-Ito vermillion, 3.9:1, and a statistic's reason
    vermillion on white: below WCAG AA's 4.5:1 for text of their size."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(audit_report.html_path.resolve().as_uri(), wait_until="load")
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    page.evaluate(SOMETIMES_SHOWN)
    found = page.evaluate(LOW_CONTRAST)
    assert found == [], "\n".join(found)
    page.close()


# the box of the innermost element under a selector holding a text, and the ancestors that clip
# or scroll their content without holding that box whole
SHOWN_WHOLE = """([scope, text]) => {
  const holders = Array.from(document.querySelectorAll(scope + ' *'))
    .filter(e => e.textContent.includes(text));
  const element = holders[holders.length - 1];  // the innermost
  const box = element.getBoundingClientRect();
  const clipped = [];
  for (let e = element.parentElement; e; e = e.parentElement) {
    if (getComputedStyle(e).overflowX === 'visible') continue;
    const outer = e.getBoundingClientRect();
    if (box.left < outer.left - 1 || box.right > outer.right + 1) clipped.push(e.className);
  }
  return {left: box.left, right: box.right, clipped: clipped};
}"""


def test_the_sensitive_groups_note_is_whole_on_a_phone(browser, audit_report):
    """At 420 px the note under the group table sat in a row of the table, inside its horizontal
    scroller: as wide as the table, part of it was off the screen until the table was scrolled."""
    note = audit_report.summary["sensitive_note"]
    page = browser.new_page(viewport={"width": 420, "height": 900})
    page.goto(audit_report.html_path.resolve().as_uri(), wait_until="load")
    wrap = page.evaluate("document.querySelector('#groups .table-wrap').scrollWidth")
    assert wrap > 420  # the group table itself scrolls at this width: the case in question
    shown = page.evaluate(SHOWN_WHOLE, ["#groups", note[:60]])
    width = page.evaluate("document.documentElement.clientWidth")
    assert shown["clipped"] == []
    assert shown["left"] >= 0 and shown["right"] <= width
    assert note in page.inner_text("#groups")
    page.close()


# what is drawn past the page's text column (outside the horizontal scrollers that hold wide
# tables and figures): it runs into the page's margin, or off a phone's screen
PAST_THE_COLUMN = """() => {
  const main = document.querySelector('main'), style = getComputedStyle(main);
  const box = main.getBoundingClientRect();
  const left = box.left + parseFloat(style.paddingLeft);
  const right = box.right - parseFloat(style.paddingRight);
  const found = [];
  for (const element of main.querySelectorAll('*')) {
    let scrolled = false;
    for (let e = element.parentElement; e !== main; e = e.parentElement) {
      if (getComputedStyle(e).overflowX !== 'visible') { scrolled = true; break; }
    }
    const r = element.getBoundingClientRect();
    if (!scrolled && r.width && (r.left < left - 1 || r.right > right + 1)) {
      found.push(`${element.tagName.toLowerCase()}.${element.className}: ` +
                 `${Math.round(r.left)} to ${Math.round(r.right)}, the column ` +
                 `${Math.round(left)} to ${Math.round(right)}`);
    }
  }
  return [...new Set(found)];
}"""


@pytest.mark.parametrize("width", [1280, 390, 360])
def test_nothing_runs_past_the_text_column(browser, audit_report, width):
    """At 390 px (a phone) each glance card kept its 340 px minimum in a 326 px column and ran
    14 px into the page's right margin (at 360 px, 44 px: past the screen's edge)."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(audit_report.html_path.resolve().as_uri(), wait_until="load")
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    assert page.evaluate(PAST_THE_COLUMN) == []
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    page.close()


# each figure's shown width over its own, and whether a scroller holds all of it
FIGURE_SCALES = """() => Array.from(document.images).map(image => {
  let scroller = image.parentElement;
  while (scroller && getComputedStyle(scroller).overflowX === 'visible') {
    scroller = scroller.parentElement;
  }
  return {alt: image.alt, scale: image.getBoundingClientRect().width / image.naturalWidth,
          reachable: !scroller || scroller.scrollWidth >= image.getBoundingClientRect().width};
})"""


def test_figures_stay_legible_on_a_phone(browser, audit_report):
    """At 390 px every figure was shrunk to the column: the wide ones to 0.39 of their size, their
    8 pt labels (12 px drawn) 4.7 px on the screen. A figure now keeps at least 0.6 of its size
    (its labels 7 px and more) and scrolls sideways in its own box; the page itself does not."""
    page = browser.new_page(viewport={"width": 390, "height": 900})
    page.goto(audit_report.html_path.resolve().as_uri(), wait_until="load")
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    shown = page.evaluate(FIGURE_SCALES)
    assert len(shown) == len(audit_report.summary["figures"])
    small = [f"{f['alt']}: {f['scale']:.2f}" for f in shown if f["scale"] < 0.6]
    assert small == []
    assert all(f["reachable"] for f in shown)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.close()
    page = browser.new_page(viewport={"width": 1280, "height": 900})  # a wide screen: whole
    page.goto(audit_report.html_path.resolve().as_uri(), wait_until="load")
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    assert [f["alt"] for f in page.evaluate(FIGURE_SCALES) if f["scale"] < 0.98] == []
    page.close()


def test_every_keyboard_stop_on_a_phone_has_a_name(browser, audit_report):
    """On a phone the figures scroll sideways in their own boxes, which Chromium makes Tab stops
    (so that a keyboard can scroll them): they were nameless boxes, announced as nothing."""
    page = browser.new_page(viewport={"width": 390, "height": 900})
    page.goto(audit_report.html_path.resolve().as_uri(), wait_until="load")
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    stops = []
    for _ in range(200):
        page.keyboard.press("Tab")
        stop = page.evaluate(
            """() => { const e = document.activeElement;
            return [e.className || e.tagName, e.getAttribute('aria-label') || e.innerText]; }"""
        )
        if stop[0] == "BODY" or stop in stops[:1]:
            break  # round the page once
        stops.append(stop)
    figures = [name for kind, name in stops if kind == "figure-scroll"]
    assert len(figures) >= 2, "no figure box took the keyboard: the check saw nothing to check"
    assert [name for name in figures if not name.strip()] == []
    assert any(name.startswith("Scatter plot of F1 against caption coverage") for name in figures)
    # a table too wide for a phone scrolls in its box too: each box is named for its table
    boxes = page.evaluate(
        """() => [...document.querySelectorAll('.table-wrap')]
        .map(e => [e.getAttribute('role'), e.getAttribute('aria-label') || ''])"""
    )
    assert len(boxes) >= 5
    assert [box for box in boxes if box[0] != "region" or not box[1].strip()] == []
    assert ["region", "Statistics"] in boxes
    page.close()

"""Screenshot a report.html as a person sees it (headless Debian Chromium through playwright), for
the README: ``.venv/bin/python docs/screenshot.py runs/demo/report.html docs/demo_report.png`` (the
demo's report), and ``docs/report_screenshot.png`` from the report of the tests' small audit world
(``tests.report_world.build_audit_runs(ROOT)`` from the repository root, ROOT an existing folder,
then ``clipaudit report ROOT/web-captions ROOT/zeroshot-trained ROOT/zeroshot-random --out
ROOT/report``).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from PIL import Image

from clipaudit.provenance import atomic_write_bytes

CHROMIUM = Path("/usr/bin/chromium")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--height", type=int, default=1500, help="CSS pixels of the page shown")
    parser.add_argument("--width", type=int, default=960, help="pixels of the saved image")
    args = parser.parse_args()
    # checked first: a browser shown a missing page fails with a long playwright trace instead
    if not args.html.is_file():
        parser.error(f"{args.html} is no file: write the report first (clipaudit report ... --out)")
    if not CHROMIUM.is_file():
        parser.error(
            f"no browser at {CHROMIUM}: install Debian's chromium (apt-get install chromium)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": args.height})
        page.goto(args.html.resolve().as_uri(), wait_until="load")
        shot = page.screenshot()
        browser.close()
    image = Image.open(io.BytesIO(shot))
    height = round(image.height * args.width / image.width)
    png = io.BytesIO()
    image.convert("RGB").resize((args.width, height), Image.LANCZOS).save(png, "PNG", optimize=True)
    atomic_write_bytes(args.png, png.getvalue())  # the README's image: replaced whole, or kept


if __name__ == "__main__":
    main()

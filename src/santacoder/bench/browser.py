"""Drive the running demo in a real headless browser, record what the page shows and requests, and save a
screenshot: `make figures` draws the README's picture with it, and tests/test_demo.py checks the app through it.

    python -m santacoder.bench.browser http://127.0.0.1:7860 out.png ["code with <FILL-HERE>"]

Uses the OS's Chromium (Debian: apt-get install chromium) through Playwright (a dev dependency, imported when a
page is driven); no browser is downloaded.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from urllib.parse import urlparse

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium() -> str | None:
    """The path of a Chromium the OS has, or None."""
    names = [os.environ.get("CHROMIUM"), *CHROMIUM_NAMES]
    return next((path for name in names if name and (path := shutil.which(name))), None)


def drive(url: str, out: Path, code: str, timeout_s: float = 60) -> dict:
    """Type ``code`` into the app at ``url``, press Generate, wait until it is done, save a screenshot of the page
    to ``out``. Returns what the page showed (status, generated text, output HTML) and every URL it requested that
    is not the app's own host (the app must fetch nothing from elsewhere)."""
    from playwright.sync_api import sync_playwright

    browser_path = chromium()
    if browser_path is None:
        raise RuntimeError("no Chromium found: apt-get install chromium (or set CHROMIUM=/path/to/chrome)")
    host = urlparse(url).netloc
    foreign: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda r: None if urlparse(r.url).netloc in (host, "") else foreign.append(r.url))
            page.goto(url, wait_until="networkidle", timeout=timeout_s * 1000)
            box = page.locator("#code textarea")
            box.fill(code)
            page.locator("#generate").click()
            page.wait_for_function(
                "() => /Done|⚠️/.test(document.querySelector('#status')?.innerText ?? '')", timeout=timeout_s * 1000
            )
            shown = {
                "status": page.locator("#status").inner_text(),
                "generated": page.locator("#generated textarea").input_value(),
                "output_html": page.locator("#output").inner_html(),
            }
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()
    return {**shown, "foreign_requests": foreign}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    code = argv[2] if len(argv) == 3 else 'def is_even(n):\n    """True when n is even."""\n    <FILL-HERE>\n'
    shown = drive(argv[0], Path(argv[1]), code)
    print(shown["status"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

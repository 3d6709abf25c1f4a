"""The report in a real browser: data/samples through the real pipeline, report.html opened from disk in
headless Chromium (Debian's ``chromium`` package) driven by Playwright.

Without Chromium these tests fail with a message saying how to install it; set CXNLP_SKIP_BROWSER=1 to
skip them on a machine that cannot have it. Playwright's own browser downloads are never used.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cxnlp.report import CHROMIUM_ARGS
from tests.conftest import SAMPLES

CHROMIUM = os.environ.get("CXNLP_CHROMIUM", "/usr/bin/chromium")
XSS = ["<script>alert(1)</script>", "<img src=x onerror=alert(2)>", '"><svg onload=alert(3)>']
# the input file's name is shown in the report's header, so this payload is always on the page
HOSTILE_FILE = "<img src=x onerror=alert(4)>.jsonl"
SECTIONS = ["headline", "journey", "stages", "drivers", "alerts", "pain-points", "trends", "data-quality"]
HEADINGS = [
    "Headline numbers",
    "Journey map",
    "Stages",
    "Drivers",
    "Alerts",
    "Pain points",
    "Trends",
    "Data quality",
]

# Every element the payloads could have injected, and every inline event handler on the page.
INJECTED = """() => {
  const handlers = [...document.querySelectorAll('*')].filter(e => [...e.attributes].some(a => a.name.startsWith('on')));
  return {
    scripts: document.querySelectorAll('script').length,
    imgs: document.querySelectorAll('img').length,
    handlers: handlers.map(e => e.outerHTML.slice(0, 120)),
    svgOnload: document.querySelectorAll('svg[onload]').length,
  };
}"""


def _require_browser() -> None:
    if os.environ.get("CXNLP_SKIP_BROWSER") == "1":
        pytest.skip("CXNLP_SKIP_BROWSER=1: browser tests skipped")
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"Chromium was not found at {CHROMIUM}. The browser tests need Debian's chromium package: "
            "`apt-get install -y chromium` (or point CXNLP_CHROMIUM at a Chromium binary). "
            "Set CXNLP_SKIP_BROWSER=1 to skip them.",
            pytrace=False,
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail(
            "Playwright is not installed: `pip install -e '.[dev]'` (never `playwright install`).",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def report_dir(analyzer, tmp_path_factory) -> Path:
    """The samples plus hostile reviews, analysed for real and written like `cxnlp analyze` does."""
    _require_browser()
    tmp = tmp_path_factory.mktemp("browser")
    rows = [
        json.loads(line)
        for line in (SAMPLES / "reviews.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    hostile = [
        f"The courier was rude and my parcel arrived smashed, the worst delivery ever. {XSS[0]}",
        f"Support never answered, awful and useless service {XSS[1]}",
        f"I was charged twice and the refund never came, terrible billing {XSS[2]}",
    ]
    for i, text in enumerate(hostile):
        rows.append(
            {
                "review_id": f"XSS-{i}",
                "created_at": "2026-10-01T10:00:00Z",
                "rating": 1,
                "channel": XSS[i],
                "text": text,
            }
        )
    src = tmp / HOSTILE_FILE
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = analyzer.analyze([str(src)])
    return result.write(tmp / "out")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
        yield browser
        browser.close()


def _open(browser: Any, report: Path, bypass_csp: bool = False) -> SimpleNamespace:
    """Load the report in a fresh context, recording requests, console errors and dialogs."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=bypass_csp)
    seen = SimpleNamespace(requests=[], errors=[], dialogs=[], context=context)
    context.route(
        "**/*", lambda route: route.continue_() if route.request.url.startswith("file://") else route.abort()
    )
    page = context.new_page()
    page.on("request", lambda r: seen.requests.append(r.url))
    page.on("console", lambda m: seen.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen.errors.append(str(e)))
    page.on("dialog", lambda d: (seen.dialogs.append(d.message), d.dismiss()))
    seen.url = report.resolve().as_uri()
    page.goto(seen.url, wait_until="load")
    page.wait_for_timeout(200)  # let any late script or event run
    seen.page = page
    return seen


@pytest.fixture(scope="module")
def loaded(browser, report_dir) -> Iterator[SimpleNamespace]:
    seen = _open(browser, report_dir / "report.html")
    yield seen
    seen.context.close()


def test_browser_report_loads_without_console_errors_or_network(loaded) -> None:
    assert loaded.errors == []
    assert loaded.requests == [loaded.url]  # the page itself, from disk; nothing else
    assert loaded.dialogs == []


def test_browser_report_key_sections_are_shown(loaded) -> None:
    page = loaded.page
    assert page.title().startswith("Customer experience report")
    assert [page.locator(f"section#{s} > h2").inner_text() for s in SECTIONS] == HEADINGS
    for section in SECTIONS:
        assert page.locator(f"section#{section}").is_visible(), section
    assert page.locator(".jstage").count() == 9 and page.locator("details.card").count() == 9
    assert page.locator(".jstage.worst").count() == 1
    assert page.locator("#trends svg.trend").count() >= 2
    assert page.locator("#pain-points tbody tr").count() >= 5
    assert "✓ holds" in page.locator("#data-quality").inner_text()
    assert page.locator("#drivers tbody tr").count() >= 3  # the samples carry ratings
    assert "churn risk" in page.locator("#headline").inner_text().lower()


def test_browser_report_own_script_runs_under_its_csp(loaded) -> None:
    """The inline script is allowed by hash: its buttons appear and fold every stage card."""
    page = loaded.page
    collapse = page.locator("button[data-toggle=close]")
    assert collapse.is_visible()
    collapse.click()
    assert page.locator("details.card[open]").count() == 0
    page.locator("button[data-toggle=open]").click()
    assert page.locator("details.card[open]").count() == 9
    assert loaded.errors == []


def test_browser_xss_payloads_stay_inert_text(loaded, browser, report_dir) -> None:
    page = loaded.page
    header = page.locator("header.top").inner_text()
    assert HOSTILE_FILE in header  # shown as text
    channels = page.locator("#data-quality").inner_text()
    assert XSS[1] in channels
    # Escaping alone must keep them inert: also load the page with its Content-Security-Policy bypassed.
    unguarded = _open(browser, report_dir / "report.html", bypass_csp=True)
    try:
        for seen in (loaded, unguarded):
            assert seen.dialogs == []
            found = seen.page.evaluate(INJECTED)
            assert found == {"scripts": 1, "imgs": 0, "handlers": [], "svgOnload": 0}
        assert unguarded.requests == [unguarded.url]
    finally:
        unguarded.context.close()


def test_browser_report_screenshot_and_print(loaded, tmp_path) -> None:
    page = loaded.page
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot))
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000
    keep = os.environ.get("CXNLP_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "report.png")
    pdf = page.pdf(format="A4", print_background=True)
    assert pdf.startswith(b"%PDF") and len(pdf) > 10_000
    assert loaded.errors == []

"""Screenshots of the demo report for the docs: docs/img/report-top.png and docs/img/report-stage.png.

    make demo && .venv/bin/python docs/screenshots.py      # or: make screenshots

Opens out/demo/report.html from disk in Debian's headless Chromium through Playwright (never
`playwright install`), shoots the top of the page (header, headline numbers, journey map) and the card
of the stage that hurts most, and stores them as palette PNGs (small enough to commit, < 400 KB each).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

from cxnlp.report import CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parent.parent
ARGS = list(CHROMIUM_ARGS)
MAX_BYTES = 400_000


def _save(png: bytes, path: Path) -> int:
    """A palette PNG (256 colours) of the screenshot: text and flat colours survive, the size drops."""
    image = (
        Image.open(io.BytesIO(png))
        .convert("RGB")
        .quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    )
    image.save(path, optimize=True)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{path} is {size:,} bytes, over {MAX_BYTES:,}: shoot a smaller area")
    return size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", type=Path, default=ROOT / "out" / "demo" / "report.html")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--width", type=int, default=1200)
    args = ap.parse_args()
    if not args.report.is_file():
        raise SystemExit(f"{args.report} does not exist: run `make demo` first")
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=ARGS)
        page = browser.new_page(viewport={"width": args.width, "height": 1000})
        page.goto(args.report.resolve().as_uri(), wait_until="load")
        journey = page.locator("section#journey").bounding_box()
        assert journey is not None
        top = page.screenshot(
            clip={"x": 0, "y": 0, "width": args.width, "height": journey["y"] + journey["height"] + 16}
        )
        size = _save(top, args.out / "report-top.png")
        print(f"{args.out / 'report-top.png'}: {size:,} bytes")
        worst = page.locator(".jstage.worst .name a").get_attribute("href") or "#stages details.card"
        card = page.locator(worst if worst.startswith("#stage-") else "details.card").first
        size = _save(card.screenshot(), args.out / "report-stage.png")
        print(f"{args.out / 'report-stage.png'}: {size:,} bytes ({worst})")
        browser.close()


if __name__ == "__main__":
    main()

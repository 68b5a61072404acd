"""Screenshot a run's HTML report in headless Chromium, to look at it without a browser.

    python scripts/screenshot_report.py RUN [--out PNG] [--height 4000] [--rebuild]

Builds RUN/report.html first when it is missing (or with --rebuild), then renders it with
`chromium --headless` (Debian: apt-get install chromium) and prints the PNG's path.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from aigi.pipeline.report_html import build_report, screenshot

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="the run directory (or a report .html file)")
    p.add_argument("--out", help="the PNG (default: beside the report, report.png)")
    p.add_argument("--width", type=int, default=1200)
    p.add_argument("--height", type=int, default=2000, help="pixels of the page captured from its top")
    p.add_argument("--rebuild", action="store_true", help="rebuild the report even when it exists")
    p.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser") or "chromium")
    args = p.parse_args(argv)
    target = Path(args.run)
    if target.suffix == ".html":
        page = target
    else:
        page = target / "report.html"
        if args.rebuild or not page.exists():
            page = build_report(target)
    out = Path(args.out) if args.out else page.with_suffix(".png")
    print(screenshot(page, out, chromium=args.chromium, size=(args.width, args.height)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Screenshot HTML pages in headless Chromium, to see a report or the docs site as a reader does.

    python tools/screenshot.py runs/quickstart/search/report_search.html shot.png
    python tools/screenshot.py build/site/index.html site.png --width 1280 --height 2400

Needs Debian's ``chromium`` (``apt-get install chromium``). The page is opened from disk
with the network off, so a report that links anything outside its folder shows it broken.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# What a sandboxed root session needs, and no background traffic on a closed network.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def chromium() -> str | None:
    """The Chromium executable on PATH, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(page: Path, png: Path, width: int = 1280, height: int = 1800) -> Path:
    """Render ``page`` (a local HTML file) to ``png`` at ``width`` x ``height`` CSS pixels."""
    exe = chromium()
    if exe is None:
        raise RuntimeError("chromium is not installed; apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
             f"--screenshot={png.resolve()}", page.resolve().as_uri()],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    return png


def main(argv: list[str] | None = None) -> int:
    """Command line: PAGE PNG [--width W] [--height H]."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1800)
    args = parser.parse_args(argv)
    print(screenshot(args.page, args.png, args.width, args.height))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""tools/screenshot.py: a rendered report, as a browser shows it (needs Debian's chromium)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autodeeplab.engine.html import markdown_page

REPO = Path(__file__).resolve().parents[2]


def _tool():
    spec = importlib.util.spec_from_file_location("screenshot", REPO / "tools" / "screenshot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="needs chromium (apt-get install chromium)"
)
def test_a_report_page_renders_in_headless_chromium(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    text = "# Report\n\n**Warning:** a small margin.\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n"
    page.write_text(markdown_page(text, "report"), encoding="utf-8")
    png = _tool().screenshot(page, tmp_path / "shot.png", width=800, height=600)
    image = np.asarray(Image.open(png).convert("RGB"))
    assert image.shape == (600, 800, 3)
    # The warning's yellow box is painted (#fff8c5), and the text is dark on white.
    assert (np.abs(image.astype(int) - [255, 248, 197]).sum(-1) < 6).sum() > 1000
    assert (image.sum(-1) < 200).sum() > 200

"""Class masks as pictures: palette PNGs keep the indices, overlays blend the colours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from autodeeplab.viz.overlay import colorize, overlay

PALETTE = [(0, 0, 0), (255, 0, 0), (0, 128, 255)]


def test_colorize_keeps_class_indices_and_palette(tmp_path: Path) -> None:
    mask = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    colorize(mask, PALETTE).save(tmp_path / "m.png")
    image = Image.open(tmp_path / "m.png")
    assert image.mode == "P"
    assert np.array_equal(np.asarray(image), mask)
    rgb = np.asarray(image.convert("RGB"))
    assert tuple(rgb[0, 2]) == PALETTE[2] and tuple(rgb[0, 1]) == PALETTE[1]


def test_overlay_blends_half_and_half() -> None:
    image = np.full((1, 2, 3), 100, dtype=np.uint8)
    mask = np.array([[0, 1]])
    out = overlay(image, mask, PALETTE, alpha=0.5)
    assert out.tolist() == [[[50, 50, 50], [178, 50, 50]]]

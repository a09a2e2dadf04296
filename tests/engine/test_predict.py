"""Prediction files: palette masks, overlays, unreadable images; the report's figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autodeeplab.engine.predict import colorize, overlay, predict_images, read_image_file
from autodeeplab.engine.report import plot_training_curves

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


def test_unreadable_image_gives_one_line_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ValueError, match=r"broken.png: cannot read image") as info:
        read_image_file(bad)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"nope.jpg: image not found"):
        read_image_file(tmp_path / "nope.jpg")


def test_predict_writes_masks_and_overlays(trained_run: Path, tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (27, 41, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.jpg")
    (tmp_path / "notes.png").write_text("not an image")
    result = predict_images(
        trained_run / "checkpoints" / "best.pt",
        [tmp_path / "photo.jpg", tmp_path / "notes.png"],
        tmp_path / "out",
        device="cpu",
        scales=(0.75, 1.0),
        flip=True,
    )
    assert [p.name for p in result.written] == ["photo_mask.png", "photo_overlay.png"]
    assert len(result.errors) == 1 and "notes.png: cannot read image" in result.errors[0]
    mask = Image.open(tmp_path / "out" / "photo_mask.png")
    assert mask.mode == "P" and mask.size == (41, 27)
    assert np.asarray(mask).max() < 8
    assert Image.open(tmp_path / "out" / "photo_overlay.png").size == (41, 27)


def test_training_curves_plot(trained_run: Path, tmp_path: Path) -> None:
    path = plot_training_curves(trained_run / "train_log.jsonl", tmp_path / "c.png", 0.1)
    assert Image.open(path).size == (1000, 400)

"""Prediction files: palette masks, overlays and unreadable images, from a trained run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autodeeplab.config import EvalConfig
from autodeeplab.engine.infer.predict import predict_images, read_image_file


def test_unreadable_image_gives_one_line_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ValueError, match=r"broken.png: cannot read image") as info:
        read_image_file(bad)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"nope.jpg: image not found"):
        read_image_file(tmp_path / "nope.jpg")


@pytest.mark.slow
def test_predict_writes_masks_and_overlays(trained_run: Path, tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (27, 41, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.jpg")
    (tmp_path / "notes.png").write_text("not an image")
    result = predict_images(
        trained_run / "checkpoints" / "best.pt",
        [tmp_path / "photo.jpg", tmp_path / "notes.png"],
        tmp_path / "out",
        EvalConfig(scales=(0.75, 1.0), flip=True),
        device="cpu",
    )
    assert [p.name for p in result.written] == ["photo_mask.png", "photo_overlay.png"]
    assert len(result.errors) == 1 and "notes.png: cannot read image" in result.errors[0]
    mask = Image.open(tmp_path / "out" / "photo_mask.png")
    assert mask.mode == "P" and mask.size == (41, 27)
    assert np.asarray(mask).max() < 8
    assert Image.open(tmp_path / "out" / "photo_overlay.png").size == (41, 27)

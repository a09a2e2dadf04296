"""The run report's figures: training curves and image | truth | prediction strips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from autodeeplab.viz.run_report import plot_training_curves, prediction_strip

PALETTE = [(0, 0, 0), (255, 0, 0), (0, 128, 255)]


def test_training_curves_plot(tmp_path: Path) -> None:
    # The records of a train_log.jsonl: a train record per logged step, an eval record each
    # evaluation, and events the plot ignores.
    records = [
        {"event": "start", "iter": 0},
        *({"event": "train", "iter": i, "loss": 2.0 / i} for i in range(1, 9)),
        *({"event": "eval", "iter": i, "val_miou": 0.1 * i} for i in (4, 8)),
    ]
    path = plot_training_curves(records, tmp_path / "c.png", 0.1)
    assert Image.open(path).size == (1000, 400)


def test_prediction_strip_puts_image_truth_and_prediction_side_by_side(tmp_path: Path) -> None:
    image = np.random.default_rng(0).integers(0, 255, (8, 10, 3), dtype=np.uint8)
    truth = np.full((8, 10), 255, dtype=np.uint8)  # all ignore: drawn black at half strength
    prediction = np.ones((8, 10), dtype=np.int64)
    path = prediction_strip(image, truth, prediction, PALETTE, tmp_path / "s.png")
    strip = np.asarray(Image.open(path).convert("RGB"))
    factor = 192 // 8  # small images are enlarged, nearest neighbour
    assert strip.shape == (8 * factor, (3 * 10 + 2 * 4) * factor, 3)
    assert np.array_equal(strip[::factor, : 10 * factor : factor], image)
    half = np.rint(image * 0.5).astype(np.uint8)
    assert np.array_equal(strip[::factor, 14 * factor : 24 * factor : factor], half)

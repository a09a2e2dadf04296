"""The figures of a run report: training curves, and image | truth | prediction strips.

These functions only draw: the engine reads the training log and runs the network, and
hands in plain records and arrays; :mod:`autodeeplab.engine.pipeline_report` writes the
report's text.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from autodeeplab.viz._figure import new_figure, save_figure
from autodeeplab.viz.overlay import overlay, save_png

__all__ = ["plot_training_curves", "prediction_strip"]

_LOSS_COLOR = "#1f5fa8"
_MIOU_COLOR = "#f28e2b"
_CHANCE_COLOR = "#7f7f7f"


def plot_training_curves(
    records: Sequence[dict[str, Any]],
    out_path: str | os.PathLike[str],
    chance_miou: float | None = None,
) -> Path:
    """Training loss and validation mIoU against the iteration, from ``train_log.jsonl`` records."""
    train = [r for r in records if r.get("event") == "train"]
    evals = [r for r in records if r.get("event") == "eval"]
    fig = new_figure((10.0, 4.0))
    ax_loss, ax_miou = fig.subplots(1, 2)
    ax_loss.plot([r["iter"] for r in train], [r["loss"] for r in train], color=_LOSS_COLOR)
    ax_loss.set(xlabel="iteration", ylabel="training loss (cross-entropy)", title="Loss")
    ax_loss.grid(alpha=0.3)
    xs = [r["iter"] for r in evals]
    ys = [100 * r["val_miou"] for r in evals]
    ax_miou.plot(xs, ys, marker="o", color=_MIOU_COLOR, label="val mIoU")
    if chance_miou is not None:
        ax_miou.axhline(100 * chance_miou, color=_CHANCE_COLOR, linestyle="--", label="chance")
    ax_miou.set(xlabel="iteration", ylabel="mIoU (%)", title="Validation mIoU", ylim=(0, 100))
    ax_miou.grid(alpha=0.3)
    ax_miou.legend(loc="lower right")
    fig.tight_layout()
    return save_figure(fig, out_path)


def prediction_strip(
    image: np.ndarray,
    truth: np.ndarray,
    prediction: np.ndarray,
    palette: Sequence[Sequence[int]],
    out_path: str | os.PathLike[str],
) -> Path:
    """One PNG: ``image`` ``(H, W, 3)`` | ``truth`` overlaid | ``prediction`` overlaid."""
    # Ignore pixels (255) of ``truth`` take overlay's colour row 255, which is black.
    gap = np.full((image.shape[0], 4, 3), 255, dtype=np.uint8)
    strip = np.concatenate(
        [image, gap, overlay(image, truth, palette), gap, overlay(image, prediction, palette)],
        axis=1,
    )
    # Small synthetic images are enlarged (nearest) so the report shows them legibly.
    factor = max(1, 192 // image.shape[0])
    enlarged = Image.fromarray(strip).resize(
        (strip.shape[1] * factor, strip.shape[0] * factor), Image.Resampling.NEAREST
    )
    return save_png(enlarged, out_path)

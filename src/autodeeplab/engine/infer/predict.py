"""Segment image files with a trained checkpoint (colour masks and overlays), or samples of a
dataset for the run report.

The mask is written as a palette PNG (mode ``P``): its pixel values are the class indices
and its palette is the dataset's, stored in the checkpoint, so one file is both the label
map and its colour picture. The overlay blends those colours over the image. The drawing
itself is :mod:`autodeeplab.viz.overlay`'s; this module runs the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from autodeeplab.config import EvalConfig
from autodeeplab.data import denormalize, normalize
from autodeeplab.data.base import check_image_mode
from autodeeplab.engine.infer.forward import inference_options, predict_probabilities
from autodeeplab.engine.infer.memory import InferenceMemoryCheck
from autodeeplab.files import require_file
from autodeeplab.model import load_trained_model
from autodeeplab.viz.overlay import colorize, overlay, save_png

__all__ = [
    "PredictResult",
    "output_stems",
    "predict_images",
    "predict_samples",
    "read_image_file",
]


@dataclass
class PredictResult:
    """Files written, and one line per image that could not be read."""

    written: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def read_image_file(path: str | Path) -> np.ndarray:
    """Read ``path`` as ``uint8`` RGB ``(H, W, 3)``; one-line ``ValueError`` when unreadable."""
    try:
        p = require_file(path, "image", "check the path")
    except FileNotFoundError as exc:  # one bad image of many is reported, not fatal
        raise ValueError(str(exc)) from None
    try:
        image = Image.open(p)
        image.load()  # decode now: a truncated file fails here
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... for bad files
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ValueError(
            f"{p}: cannot read image ({type(exc).__name__}: {first}); pass a PNG or JPEG file"
        ) from None
    with image:
        check_image_mode(image, p)  # 16-bit and float pixels would be clipped, not read
        return np.array(image.convert("RGB"))  # a writable copy, for torch.from_numpy


def output_stems(images: Sequence[str | Path]) -> list[str]:
    """One distinct output name per image: its stem, plus ``_2``, ``_3``... when taken.

    Two images called ``a/img.png`` and ``b/img.png`` get ``img`` and ``img_2``, so the
    second never overwrites the first's mask.
    """
    taken: set[str] = set()
    stems = []
    for path in images:
        stem, n = Path(path).stem, 1
        name = stem
        while name in taken:
            n += 1
            name = f"{stem}_{n}"
        taken.add(name)
        stems.append(name)
    return stems


def predict_images(
    checkpoint: str | Path,
    images: Sequence[str | Path],
    out_dir: str | Path,
    eval_cfg: EvalConfig | None = None,
    *,
    device: str = "auto",
) -> PredictResult:
    """Write ``<stem>_mask.png`` and ``<stem>_overlay.png`` per image into ``out_dir``.

    ``eval_cfg``: the inference (whole image or slide, scales, flip); None: one forward pass
    over the whole image. Images that share a file name get distinct names
    (:func:`output_stems`).
    """
    from autodeeplab.engine.device import select_device

    dev = select_device(device)
    model, state = load_trained_model(checkpoint, dev)
    palette = [tuple(c) for c in state["palette"]]
    out = Path(out_dir)
    result = PredictResult()
    eval_cfg = eval_cfg or EvalConfig()
    fits = InferenceMemoryCheck(model, dev, eval_cfg)
    for path, stem in zip(images, output_stems(images), strict=True):
        try:
            rgb = read_image_file(path)
        except ValueError as exc:
            result.errors.append(str(exc))
            continue
        try:  # before the image is copied to the device: refuse what would not fit
            fits(rgb.shape[:2], str(path))
        except ValueError as exc:
            result.errors.append(str(exc))
            continue
        x = normalize(rgb).unsqueeze(0).to(dev)
        prob = predict_probabilities(model, x, **inference_options(eval_cfg))
        mask = prob.argmax(1)[0].to(torch.uint8).cpu().numpy()
        result.written.append(save_png(colorize(mask, palette), out / f"{stem}_mask.png"))
        result.written.append(save_png(overlay(rgb, mask, palette), out / f"{stem}_overlay.png"))
    return result


@torch.no_grad()
def predict_samples(
    model: torch.nn.Module, dataset: Any, count: int, device: torch.device | str = "cpu"
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The first ``count`` samples of ``dataset`` as (RGB image, truth, prediction) arrays."""
    model.eval()
    samples = []
    for i in range(min(count, len(dataset))):
        x, target = dataset[i]
        prob = predict_probabilities(model, x.unsqueeze(0).to(device))
        samples.append((denormalize(x), target.numpy(), prob.argmax(1)[0].cpu().numpy()))
    return samples

"""Segment image files with a trained checkpoint: colour masks and overlays (PNG).

The mask is written as a palette PNG (mode ``P``): its pixel values are the class indices
and its palette is the dataset's, stored in the checkpoint, so one file is both the label
map and its colour picture. The overlay blends those colours over the image.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from autodeeplab.checkpoint import atomic_write
from autodeeplab.data import normalize
from autodeeplab.data.base import check_image_mode
from autodeeplab.engine.evaluate import load_trained_model, predict_probabilities
from autodeeplab.engine.inference_memory import InferenceMemoryCheck
from autodeeplab.files import require_file

__all__ = [
    "PredictResult",
    "colorize",
    "overlay",
    "output_stems",
    "predict_images",
    "read_image_file",
    "save_png",
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


def colorize(mask: np.ndarray, palette: Sequence[Sequence[int]]) -> Image.Image:
    """Class-index mask ``(H, W)`` -> palette PNG image whose colours are ``palette``."""
    image = Image.fromarray(mask.astype(np.uint8))  # mode L; putpalette turns it into P
    flat = [int(v) for colour in palette for v in colour]
    image.putpalette(flat + [0] * (768 - len(flat)))
    return image


def overlay(
    image: np.ndarray, mask: np.ndarray, palette: Sequence[Sequence[int]], alpha: float = 0.5
) -> np.ndarray:
    """``image`` ``(H, W, 3)`` with the class colours of ``mask`` blended over it (``uint8``)."""
    colours = np.zeros((256, 3), dtype=np.float32)
    colours[: len(palette)] = np.asarray(palette, dtype=np.float32)
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours[mask.astype(np.int64)]
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def save_png(image: Image.Image | np.ndarray, path: str | Path) -> Path:
    """Write a PNG atomically."""
    pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return Path(path)


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
    *,
    device: str = "auto",
    mode: str = "whole",
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    window: int | None = None,
    stride: int | None = None,
) -> PredictResult:
    """Write ``<stem>_mask.png`` and ``<stem>_overlay.png`` per image into ``out_dir``.

    Images that share a file name get distinct names (:func:`output_stems`).
    """
    from autodeeplab.engine.runtime import select_device

    dev = select_device(device)
    model, state = load_trained_model(checkpoint, dev)
    palette = [tuple(c) for c in state["palette"]]
    out = Path(out_dir)
    result = PredictResult()
    options = {"mode": mode, "scales": scales, "flip": flip, "window": window, "stride": stride}
    fits = InferenceMemoryCheck(model, dev, **options)
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
        prob = predict_probabilities(
            model, x, mode=mode, scales=scales, flip=flip, window=window, stride=stride
        )
        mask = prob.argmax(1)[0].to(torch.uint8).cpu().numpy()
        result.written.append(save_png(colorize(mask, palette), out / f"{stem}_mask.png"))
        result.written.append(save_png(overlay(rgb, mask, palette), out / f"{stem}_overlay.png"))
    return result

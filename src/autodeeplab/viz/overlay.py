"""Class masks as pictures: palette PNGs of class indices, and colours blended over an image."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from autodeeplab.viz._figure import write_png

__all__ = ["colorize", "overlay", "save_png"]


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


def save_png(image: Image.Image | np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write a PIL image or a ``uint8`` array as PNG, atomically; return the path."""
    pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return write_png(buffer.getvalue(), path)

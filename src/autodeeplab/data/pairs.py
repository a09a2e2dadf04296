"""Image/label pairs on disk: reading and verifying one pair, and listing a dataset's files.

Every check fails with one ``ValueError`` that names the file and the fix: an unreadable or
truncated file, an image whose pixels 8-bit RGB would clip, a label that is not a
single-channel class-index image, an image/label size mismatch, a label value outside the
class set, a pair with a partner missing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "Pair",
    "check_image_mode",
    "describe_values",
    "load_pair",
    "missing_files",
    "pair_by_key",
    "read_image",
    "read_label",
    "read_list_lines",
    "scan_dir",
]

Pair = tuple[Path, Path]


def read_list_lines(path: Path) -> list[str]:
    """The lines of a split list file; ValueError naming it if it is not UTF-8 text."""
    try:
        return path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path}: not UTF-8 text (byte {exc.start}); a split list holds one file name a "
            "line: rewrite it as UTF-8 or remove it"
        ) from None


def describe_values(values: Sequence[int] | np.ndarray) -> str:
    """Compress sorted integers into ranges: ``[0, 1, 2, 5, 255]`` -> ``'0-2, 5, 255'``."""
    values = sorted(int(v) for v in values)
    parts: list[str] = []
    start = prev = None
    for v in [*values, None]:
        if start is not None and v is not None and v == prev + 1:
            prev = v
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = v
    return ", ".join(parts)


# --- reading and checking one pair -----------------------------------------------------------


def _open(path: Path, what: str) -> Image.Image:
    """Open and fully decode ``path``; any failure becomes one ``ValueError`` naming the file."""
    try:
        image = Image.open(path)
        image.load()  # decodes everything: a truncated file fails here, not in the model
    except FileNotFoundError:
        raise ValueError(f"{path}: {what} file is missing; add it or remove the pair") from None
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... for bad files
        raise ValueError(
            f"{path}: cannot read {what} ({type(exc).__name__}: {exc}); "
            "re-export or remove the pair"
        ) from None
    return image


# Modes whose pixels 8-bit RGB cannot hold: PIL's convert("RGB") clips them at 255, so a
# 16-bit or float image would reach the network as a near-white (or collapsed) picture.
_WIDE_MODES = {"I": "32-bit integer", "F": "32-bit float"}


def check_image_mode(image: Image.Image, path: str | Path) -> None:
    """Refuse an image whose pixels 8-bit RGB would clip (16-bit, 32-bit or float modes)."""
    mode = image.mode
    kind = _WIDE_MODES.get(mode) or ("16-bit" if mode.startswith("I;16") else None)
    if kind is not None:
        raise ValueError(
            f"{path}: image has mode {mode} ({kind} pixels), which 8-bit RGB would clip; "
            "convert it to 8-bit RGB first (e.g. scale its values to 0-255)"
        )


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as ``uint8`` RGB ``(H, W, 3)``; ``ValueError`` if unreadable."""
    image = _open(Path(path), "image")
    check_image_mode(image, path)
    return np.array(image.convert("RGB"))  # a writable copy: torch.from_numpy warns on read-only


def read_label(path: str | Path) -> np.ndarray:
    """Read a class-index label file as ``uint8`` ``(H, W)`` raw values; ``ValueError`` if bad."""
    path = Path(path)
    label = _open(path, "label")
    if label.mode not in ("L", "P", "I", "I;16", "1"):
        raise ValueError(
            f"{path}: label has mode {label.mode} ({len(label.getbands())} channels); labels "
            "must be single-channel class-index PNGs (grayscale or palette), not colour images"
        )
    array = np.asarray(label)
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(
                f"{path}: label values {int(array.min())}..{int(array.max())} do not fit in "
                "0..255; store class indices as an 8-bit PNG"
            )
        array = array.astype(np.uint8)
    return array


def load_pair(
    image_path: str | Path, label_path: str | Path, label_map: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Read and verify one pair: ``uint8`` image ``(H, W, 3)``, mapped ``uint8`` mask ``(H, W)``.

    Raises one ``ValueError`` naming the file for: a missing, unreadable or truncated file, an
    image/label size mismatch, or a label value whose ``label_map`` entry is ``-1``.
    """
    image = read_image(image_path)
    raw = read_label(label_path)
    if raw.shape != image.shape[:2]:
        (lh, lw), (ih, iw) = raw.shape, image.shape[:2]
        raise ValueError(
            f"{label_path}: label is {lw}x{lh} but image {image_path} is {iw}x{ih}; "
            "fix or remove the pair"
        )
    mask = label_map[raw]  # (H, W) int16
    bad = mask < 0
    if bad.any():
        values = np.unique(raw[bad])
        raise ValueError(
            f"{label_path}: label values {describe_values(values)} are outside the class set "
            f"(allowed: {describe_values(np.flatnonzero(label_map >= 0))}); fix the label, "
            "or the class list if it is incomplete"
        )
    return image, mask.astype(np.uint8)


# --- listing ---------------------------------------------------------------------------------


def scan_dir(directory: Path, suffixes: Sequence[str], *, depth: int = 0) -> dict[str, Path]:
    """Files under ``directory`` ending in one of ``suffixes``, keyed by path minus the suffix.

    ``depth`` = 1 also looks one folder down (Cityscapes' city folders); the key keeps the
    folder (``'aachen/aachen_000000_000019'``). A missing directory gives an empty dict.
    """
    found: dict[str, Path] = {}
    if not directory.is_dir():
        return found
    with os.scandir(directory) as entries:
        for entry in entries:
            if depth > 0 and entry.is_dir():
                for key, path in scan_dir(Path(entry.path), suffixes, depth=depth - 1).items():
                    found[f"{entry.name}/{key}"] = path
                continue
            lower = entry.name.lower()
            for suffix in suffixes:
                if lower.endswith(suffix.lower()) and entry.is_file():
                    found[entry.name[: -len(suffix)]] = Path(entry.path)
                    break
    return found


def pair_by_key(
    images: dict[str, Path],
    labels: dict[str, Path],
    image_for: Callable[[str], Path],
    label_for: Callable[[str], Path],
) -> list[Pair]:
    """Pairs over the union of keys, sorted; a partner not found is its expected path."""
    keys = sorted(images.keys() | labels.keys())
    return [(images.get(k) or image_for(k), labels.get(k) or label_for(k)) for k in keys]


def missing_files(pairs: Sequence[Pair]) -> list[str]:
    """One line per pair whose image or label file does not exist, naming it and the fix."""
    problems = []
    for image_path, label_path in pairs:
        has_image, has_label = image_path.is_file(), label_path.is_file()
        if not has_label and has_image:
            problems.append(
                f"{label_path}: missing label for image {image_path}; add it or remove the image"
            )
        elif not has_image and has_label:
            problems.append(
                f"{image_path}: missing image for label {label_path}; add it or remove the label"
            )
        elif not has_image and not has_label:
            problems.append(
                f"{image_path}: listed but neither it nor its label {label_path} exists; "
                "fix the split list"
            )
    return problems

"""Build a ``folder:`` dataset from a public archive: ``autodeeplab data prepare msrc21``.

MSRC-21 (Shotton et al., ECCV 2006; the Microsoft Research Cambridge object-class database
v2) ships as BMP photographs (``Images/<stem>.bmp``) with labels in one of two forms:

- the cleaned-up labels of Malisiewicz and Efros (BMVC 2007), one MATLAB file per image,
  ``newsegmentations_mats/<stem>_GT.mat``: ``newseg`` maps each pixel to a segment
  1..K, ``newlabels`` gives each segment's 1-based MSRC-23 class (segments past its end
  are unlabelled). These are the labels the project's experiments used.
- the original coarse labels, ``GroundTruth/<stem>_GT.bmp``, colour-coded with the MSRC
  palette (black = void).

MSRC-23 has ``horse`` and ``mountain``, which the standard 21-class protocol drops: they
become void (255) with the unlabelled pixels. The split is deterministic and written out:
within each photo group (the first number of the stem), in natural order, one
``numpy.random.RandomState(0)`` permutes the images (groups in numeric order) and
``round(0.467 n)`` go to train, ``round(0.1 n)`` to val, the rest to test: 276 / 58 / 257
of the 591 images. It is not the TextonBoost split (whose files are not public), so
numbers on it do not compare with published MSRC-21 results.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["MSRC21_CLASSES", "MSRC21_COUNTS", "MSRC21_PALETTE", "msrc21_split", "prepare_msrc21"]

MSRC21_CLASSES: tuple[str, ...] = (
    "building", "grass", "tree", "cow", "sheep", "sky", "aeroplane", "water", "face", "car",
    "bicycle", "flower", "sign", "bird", "book", "chair", "road", "cat", "dog", "body", "boat",
)  # fmt: skip
#: The official MSRC colours of the 21 classes (the GroundTruth BMPs use them).
MSRC21_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (0, 128, 128), (128, 128, 128),
    (192, 0, 0), (64, 128, 0), (192, 128, 0), (64, 0, 128), (192, 0, 128), (64, 128, 128),
    (192, 128, 128), (0, 64, 0), (128, 64, 0), (0, 192, 0), (128, 64, 128), (0, 192, 128),
    (128, 192, 128), (64, 64, 0), (192, 64, 0),
)  # fmt: skip
#: MSRC-23's 1-based class order: ``horse`` (5) and ``mountain`` (8) are dropped.
_MSRC23 = (
    "building", "grass", "tree", "cow", "horse", "sheep", "sky", "mountain", "aeroplane",
    "water", "face", "car", "bicycle", "flower", "sign", "bird", "book", "chair", "road",
    "cat", "dog", "body", "boat",
)  # fmt: skip
#: What a complete archive gives: images per split.
MSRC21_COUNTS = {"train": 276, "val": 58, "test": 257}
_IGNORE = 255


def _natural(stem: str) -> tuple[int | str, ...]:
    return tuple(int(p) if p.isdigit() else p for p in stem.split("_"))


def msrc21_split(stems: list[str]) -> dict[str, list[str]]:
    """The project's deterministic train/val/test split of MSRC stems (see the module)."""
    groups: dict[int, list[str]] = {}
    for stem in stems:
        head = stem.split("_")[0]
        if not head.isdigit():
            raise ValueError(f"{stem}: not an MSRC image name (<group>_<n>_s); is this MSRC-v2?")
        groups.setdefault(int(head), []).append(stem)
    rng = np.random.RandomState(0)
    split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for group in sorted(groups):
        members = sorted(groups[group], key=_natural)
        order = [members[i] for i in rng.permutation(len(members))]
        n_train, n_val = round(len(members) * 0.467), round(len(members) * 0.1)
        split["train"] += order[:n_train]
        split["val"] += order[n_train : n_train + n_val]
        split["test"] += order[n_train + n_val :]
    return {name: sorted(s, key=_natural) for name, s in split.items()}


class _Archive:
    """The files of a zip archive or a folder, by their path relative to its root."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.is_dir():
            self.names = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
            self._read: Callable[[str], bytes] = lambda n: (path / n).read_bytes()
        elif zipfile.is_zipfile(path):
            archive = zipfile.ZipFile(path)
            self.names = [n for n in archive.namelist() if not n.endswith("/")]
            self._read = archive.read
        else:
            raise ValueError(
                f"{path}: neither a folder nor a zip archive; give the MSRC-v2 archive "
                "(a .zip or its unpacked folder holding Images/)"
            )

    def find(self, folder: str, suffix: str) -> dict[str, str]:
        """Stem -> member name of the files ``.../folder/<stem><suffix>`` (any depth)."""
        pattern = re.compile(rf"(?:^|/){re.escape(folder)}/([^/]+){re.escape(suffix)}$", re.I)
        found = {}
        for name in self.names:
            match = pattern.search(name)
            if match and not Path(name).name.startswith("."):
                found[match.group(1)] = name
        return found

    def read(self, name: str) -> bytes:
        """The bytes of one member."""
        return self._read(name)


def _label_from_mat(data: bytes, where: str) -> np.ndarray:
    from scipy.io import loadmat  # only this path needs scipy

    try:
        mat = loadmat(io.BytesIO(data))
        segments = np.asarray(mat["newseg"]).astype(np.int64)
        classes = np.asarray(mat["newlabels"]).reshape(-1).astype(np.int64)
    except (KeyError, ValueError, TypeError, OSError) as exc:
        raise ValueError(
            f"{where}: not a cleaned-up MSRC label file (newseg, newlabels): "
            f"{type(exc).__name__}; use the archive's newsegmentations_mats/"
        ) from None
    # Segment s (1-based) has MSRC-23 class classes[s-1] (1-based); 0 or past the end: void.
    to21 = np.full(len(_MSRC23) + 1, _IGNORE, np.uint8)
    for index, name in enumerate(_MSRC23, start=1):
        if name in MSRC21_CLASSES:
            to21[index] = MSRC21_CLASSES.index(name)
    per_segment = np.full(int(segments.max(initial=0)) + 1, _IGNORE, np.uint8)
    valid = (classes >= 1) & (classes <= len(_MSRC23))
    known = np.flatnonzero(valid) + 1
    known = known[known < per_segment.size]
    per_segment[known] = to21[classes[known - 1]]
    return per_segment[np.clip(segments, 0, per_segment.size - 1)]


def _label_from_bmp(data: bytes, where: str) -> np.ndarray:
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int64)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    label = np.full(code.shape, _IGNORE, np.uint8)
    for index, (r, g, b) in enumerate(MSRC21_PALETTE):
        label[code == (r << 16 | g << 8 | b)] = index
    return label


def _pairs(archive: _Archive) -> Iterator[tuple[str, str, str, Callable[[bytes, str], np.ndarray]]]:
    images = archive.find("Images", ".bmp")
    mats = archive.find("newsegmentations_mats", "_GT.mat")
    bmps = archive.find("GroundTruth", "_GT.bmp")
    labels, reader = (mats, _label_from_mat) if mats else (bmps, _label_from_bmp)
    if not images or not labels:
        raise ValueError(
            f"{archive.path}: no MSRC-v2 images (Images/*.bmp) or labels "
            "(newsegmentations_mats/*_GT.mat or GroundTruth/*_GT.bmp) in it; give the "
            "MSRC-v2 archive"
        )
    for stem in sorted(images, key=_natural):
        if stem in labels:
            yield stem, images[stem], labels[stem], reader


def prepare_msrc21(archive: str | Path, out: str | Path, *, expect_counts: bool = True) -> dict:
    """Write MSRC-21 in the ``folder:`` layout under ``out``; returns the counts per split.

    ``expect_counts``: refuse an archive that does not give the full 276 / 58 / 257 images
    (after writing nothing), so that a partial download is not taken for the dataset.
    """
    source, target = Path(archive), Path(out)
    if not source.exists():
        raise FileNotFoundError(f"{source}: not found; give the MSRC-v2 archive or its folder")
    if target.exists() and any(target.iterdir()):
        raise ValueError(f"{target}: not empty; give a new folder for the prepared dataset")
    reader = _Archive(source)
    pairs = list(_pairs(reader))
    split = msrc21_split([stem for stem, *_ in pairs])
    counts = {name: len(stems) for name, stems in split.items()}
    if expect_counts and counts != MSRC21_COUNTS:
        raise ValueError(
            f"{source}: gives {counts} images with labels, not {MSRC21_COUNTS}; is the "
            "archive complete? (--any-count prepares it anyway)"
        )
    where = {stem: name for name, stems in split.items() for stem in stems}
    for name in split:
        (target / "images" / name).mkdir(parents=True, exist_ok=True)
        (target / "labels" / name).mkdir(parents=True, exist_ok=True)
    for stem, image_name, label_name, read_label in pairs:
        image = Image.open(io.BytesIO(reader.read(image_name))).convert("RGB")
        label = read_label(reader.read(label_name), f"{source}/{label_name}")
        if label.shape != (image.height, image.width):
            raise ValueError(
                f"{source}/{label_name}: label {label.shape[1]}x{label.shape[0]} but image "
                f"{image.width}x{image.height}; the archive's files do not belong together"
            )
        image.save(target / "images" / where[stem] / f"{stem}.png")
        Image.fromarray(label, mode="L").save(target / "labels" / where[stem] / f"{stem}.png")
    for name, stems in split.items():
        (target / f"{name}.txt").write_text("".join(f"{s}\n" for s in stems), encoding="utf-8")
    meta = {
        "name": "msrc21",
        "classes": list(MSRC21_CLASSES),
        "palette": [list(c) for c in MSRC21_PALETTE],
        "ignore_index": _IGNORE,
        "splits": counts,
    }
    (target / "classes.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return counts

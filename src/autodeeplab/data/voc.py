"""PASCAL VOC 2012 segmentation, 20 classes + background (docs/design.md §7.3).

Layout (``VOCtrainval_11-May-2012.tar``; ``voc:PATH`` may name ``VOC2012/``, ``VOCdevkit/``
or the folder above it)::

    VOC2012/JPEGImages/<id>.jpg
    VOC2012/SegmentationClass/<id>.png                 palette PNG: class index, 255 = boundary
    VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt

With the SBD-augmented annotations (the paper's 10582-image ``train_aug``), i.e. a
``SegmentationClassAug/`` folder of class-index PNGs and a ``train_aug.txt`` list in
``ImageSets/SegmentationAug/``, ``ImageSets/Segmentation/`` or ``VOC2012/`` itself, the
``train`` split is train_aug. ``val`` and ``trainval`` always use the official lists and
labels. A list line is an id (``2007_000032``) or the DeepLab form
(``/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png``); only the id is read.
The test labels are not public, so there is no test split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autodeeplab.data.base import (
    MissingSplitError,
    Pair,
    Palette,
    SegmentationDataset,
    default_palette,
    identity_label_map,
)
from autodeeplab.data.pairs import read_list_lines

__all__ = ["CLASS_NAMES", "PALETTE", "VOCDataset"]

CLASS_NAMES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

#: The VOC colour map, which is also the palette stored in SegmentationClass PNGs.
PALETTE: Palette = default_palette(len(CLASS_NAMES))

_LABEL_MAP = identity_label_map(len(CLASS_NAMES))  # 0-20 kept, 255 boundary -> ignore
_LABEL_MAP.setflags(write=False)

_AUG_LISTS = (
    "ImageSets/SegmentationAug/train_aug.txt",
    "ImageSets/Segmentation/train_aug.txt",
    "train_aug.txt",
)


def _read_list(path: Path) -> list[str]:
    """Image ids of a split list: the stem of each line's first token."""
    ids = []
    for line in read_list_lines(path):
        tokens = line.split()
        if tokens:
            ids.append(Path(tokens[0]).stem)
    return ids


class VOCDataset(SegmentationDataset):
    """PASCAL VOC 2012 (train = train_aug when present); spec ``voc:PATH``."""

    name = "voc"
    splits = ("train", "val", "trainval")
    # The root is the ``VOC2012`` folder (the one holding ``JPEGImages/``).
    root_folders = ("", "VOC2012", "VOCdevkit/VOC2012")
    root_marks = ("JPEGImages",)
    root_error = (
        "not a VOC 2012 root (no JPEGImages/ in it, in VOC2012/ or in "
        "VOCdevkit/VOC2012/); point voc:PATH at VOCdevkit/VOC2012"
    )

    @classmethod
    def _native_splits(cls) -> tuple[str, ...]:
        return cls.splits

    @classmethod
    def train_aug_list(cls, root: Path) -> Path | None:
        """The train_aug list when the SBD-augmented labels are there, else None."""
        if not (root / "SegmentationClassAug").is_dir():
            return None
        return next((root / p for p in _AUG_LISTS if (root / p).is_file()), None)

    @classmethod
    def _list_split(cls, root: Path, split: str) -> list[Pair]:
        aug_list = cls.train_aug_list(root) if split == "train" else None
        if aug_list is not None:
            list_path, label_dir = aug_list, root / "SegmentationClassAug"
        else:
            list_path = root / "ImageSets" / "Segmentation" / f"{split}.txt"
            label_dir = root / "SegmentationClass"
        if not list_path.is_file():
            raise MissingSplitError(
                f"{list_path}: VOC split list not found; restore ImageSets/Segmentation "
                "from the VOC 2012 archive or use another split"
            )
        return [
            (root / "JPEGImages" / f"{i}.jpg", label_dir / f"{i}.png")
            for i in _read_list(list_path)
        ]

    @classmethod
    def metadata(cls, root: Path) -> tuple[tuple[str, ...], Palette, np.ndarray]:
        """The 21 VOC classes, the VOC colour map, and the identity LUT (255 ignored)."""
        return CLASS_NAMES, PALETTE, _LABEL_MAP

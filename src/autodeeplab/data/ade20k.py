"""ADE20K (SceneParsing / ADEChallengeData2016), 150 classes (docs/design.md §7.4).

Layout (``ADEChallengeData2016.zip``; ``ade20k:PATH`` may name that folder or its parent)::

    ADEChallengeData2016/images/{training,validation}/ADE_*.jpg
    ADEChallengeData2016/annotations/{training,validation}/ADE_*.png   0 = other, 1-150

Splits ``train`` and ``val`` are the ``training`` and ``validation`` folders. Label 0
("other objects") becomes the ignore index and 1-150 become train ids 0-149 (mmseg's
``reduce_zero_label``). Class names are the first name of each row of the release's
``objectInfo150`` table; the palette is the VOC colour map, not the toolkit's.
The paper resizes training images so that the longer side is 513: pass
``train_transform(513, longest_side=513)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autodeeplab.data.base import Pair, Palette, SegmentationDataset, default_palette, folder_pairs
from autodeeplab.metrics import IGNORE_INDEX

__all__ = ["ADE20KDataset", "CLASS_NAMES", "PALETTE"]

# fmt: off
CLASS_NAMES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane",
    "grass", "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant",
    "curtain", "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror",
    "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp",
    "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator",
    "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow", "screen door",
    "stairway", "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower",
    "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island", "computer",
    "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman",
    "bottle", "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt",
    "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen",
    "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan",
    "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag",
)
# fmt: on

PALETTE: Palette = default_palette(len(CLASS_NAMES) + 1)[1:]  # skip black, which is 0 = other

_FOLDERS = {"train": "training", "val": "validation"}

_LABEL_MAP = np.full(256, -1, dtype=np.int16)
_LABEL_MAP[0] = IGNORE_INDEX
_LABEL_MAP[1 : len(CLASS_NAMES) + 1] = np.arange(len(CLASS_NAMES))
_LABEL_MAP.setflags(write=False)


class ADE20KDataset(SegmentationDataset):
    """ADE20K SceneParsing images and annotations; spec ``ade20k:PATH``."""

    name = "ade20k"
    splits = ("train", "val", "trainval")
    # The root is the ``ADEChallengeData2016`` folder (holding ``images/`` and ``annotations/``).
    root_folders = ("", "ADEChallengeData2016")
    root_marks = ("images", "annotations")
    root_error = (
        "not an ADE20K root (no images/ and annotations/ in it or in "
        "ADEChallengeData2016/); point ade20k:PATH at ADEChallengeData2016"
    )

    @classmethod
    def _list_split(cls, root: Path, split: str) -> list[Pair]:
        folders = (f"images/{_FOLDERS[split]}", f"annotations/{_FOLDERS[split]}")
        return folder_pairs(root, split, folders, (".jpg", ".png"), what="ADE20K")

    @classmethod
    def metadata(cls, root: Path) -> tuple[tuple[str, ...], Palette, np.ndarray]:
        """The 150 classes, a generated palette, and the ``0 -> ignore, k -> k - 1`` LUT."""
        return CLASS_NAMES, PALETTE, _LABEL_MAP

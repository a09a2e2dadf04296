"""The base of every dataset read from files: image/label pairs, label mapping and checks.

A dataset on disk is a list of ``(image_path, label_path)`` pairs plus a 256-entry label
lookup table (LUT) that maps the value stored in a label file to a train id in
``0 .. num_classes - 1`` or to :data:`IGNORE_INDEX`. Entries of ``-1`` mark values that must
not occur: a label holding one is an error, not silently ignored.

A subclass only describes a layout (mmseg's metadata-only datasets): ``name``, ``splits``,
the marks of its root folder, ``_list_split(root, split)`` (often :func:`folder_pairs`) and
``metadata(root)``. Construction lists files and checks that every partner exists; it
decodes nothing. Each sample is verified when it is read
(:func:`~autodeeplab.data.pairs.load_pair`): an unreadable or truncated file, an
image/label size mismatch or a label value outside the class set raises one ``ValueError``
that names the file and the fix. ``autodeeplab.data.check`` runs the same function over a
whole split. Reading, checking and listing files live in :mod:`autodeeplab.data.pairs`;
their names import from here too, as the dataset modules do.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, NamedTuple, Self

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from autodeeplab.data.pairs import (
    Pair,
    check_image_mode,
    describe_values,
    load_pair,
    missing_files,
    pair_by_key,
    read_image,
    read_label,
    scan_dir,
)
from autodeeplab.data.transforms import Transform, to_sample, train_transform
from autodeeplab.metrics import IGNORE_INDEX

__all__ = [
    "TRAIN_SPLITS",
    "MissingSplitError",
    "Pair",
    "Palette",
    "SegmentationDataset",
    "SpecDataset",
    "SpecOptions",
    "check_image_mode",
    "default_palette",
    "describe_values",
    "folder_pairs",
    "identity_label_map",
    "load_pair",
    "missing_files",
    "pair_by_key",
    "read_image",
    "read_label",
    "scan_dir",
]

Palette = tuple[tuple[int, int, int], ...]

#: Splits that get the training augmentation when ``build_dataset`` is given no transform.
TRAIN_SPLITS: frozenset[str] = frozenset({"train", "trainval"})


class MissingSplitError(ValueError):
    """The dataset root has no files for a split (its folder or list file is absent)."""


# --- label maps and palettes -----------------------------------------------------------------


def identity_label_map(
    num_classes: int, ignore_values: Sequence[int] = (IGNORE_INDEX,)
) -> np.ndarray:
    """LUT ``(256,) int16``: ``0 .. num_classes-1`` kept, ``ignore_values`` -> ignore, rest -1."""
    lut = np.full(256, -1, dtype=np.int16)
    lut[:num_classes] = np.arange(num_classes)
    for value in ignore_values:
        lut[value] = IGNORE_INDEX
    return lut


def default_palette(num_classes: int) -> Palette:
    """The PASCAL VOC colour map (bits of the class index spread over R, G, B)."""
    colours = []
    for index in range(num_classes):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours.append((r, g, b))
    return tuple(colours)


# --- what a spec builds ------------------------------------------------------------------


class SpecOptions(NamedTuple):
    """What ``build_dataset`` asks of a split besides its name: crop, seed, subset, transform."""

    size: int | tuple[int, int]
    seed: int
    num_samples: int | None
    transform: Transform | None


class SpecDataset(Dataset):
    """A dataset that a spec ``NAME`` or ``NAME:ARGUMENT`` names (see ``autodeeplab.data``).

    Subclasses say what the argument means (``_root_argument``), how a split is built from it
    (``_build``) and what its classes are (``_info``); the two spec methods are these.
    """

    name: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_spec(
        cls,
        argument: str | None,
        split: str,
        *,
        size: int | tuple[int, int] = 64,
        seed: int = 0,
        num_samples: int | None = None,
        transform: Transform | None = None,
    ) -> Self:
        """Build ``split`` from a spec argument (see ``build_dataset``)."""
        options = SpecOptions(size, seed, num_samples, transform)
        return cls._build(cls._root_argument(argument), split, options)

    @classmethod
    def spec_info(cls, argument: str | None) -> tuple[int, tuple[str, ...], Palette]:
        """``(num_classes, class_names, palette)`` for a spec argument, reading no sample."""
        return cls._info(cls._root_argument(argument))

    @classmethod
    def _root_argument(cls, argument: str | None) -> str | None:
        """The spec's argument, checked; a one-line ``ValueError`` if it is wrong."""
        raise NotImplementedError

    @classmethod
    def _build(cls, argument: str | None, split: str, options: SpecOptions) -> Self:
        raise NotImplementedError

    @classmethod
    def _info(cls, argument: str | None) -> tuple[int, tuple[str, ...], Palette]:
        raise NotImplementedError


def folder_pairs(
    root: Path,
    split: str,
    folders: tuple[str, str],
    suffixes: tuple[str, str],
    *,
    what: str,
    depth: int = 0,
    fix: str = "use another split",
) -> list[Pair]:
    """The pairs of ``split``: same-key files in the image and label ``folders`` below ``root``.

    ``suffixes``: the image's and the label's; ``depth`` as for ``scan_dir``. When neither
    folder exists, ``MissingSplitError`` names both, the dataset (``what``) and the ``fix``.
    """
    image_dir, label_dir = root / folders[0], root / folders[1]
    if not image_dir.is_dir() and not label_dir.is_dir():
        raise MissingSplitError(
            f"{root}: {what} split {split!r} not found (no {folders[0]}/ nor {folders[1]}/); {fix}"
        )
    image_suffix, label_suffix = suffixes
    return pair_by_key(
        scan_dir(image_dir, (image_suffix,), depth=depth),
        scan_dir(label_dir, (label_suffix,), depth=depth),
        lambda key: image_dir / f"{key}{image_suffix}",
        lambda key: label_dir / f"{key}{label_suffix}",
    )


# --- the dataset -----------------------------------------------------------------------------


class SegmentationDataset(SpecDataset):
    """Image/label file pairs -> ``(image (3, H, W) float32 normalised, mask (H, W) int64)``.

    Subclasses describe a layout; this class lists, checks, reads and maps. Construction only
    lists files (and checks that each partner exists), so it is cheap, and instances pickle
    (DataLoader workers).

    Args:
        root: the dataset folder (see the subclass for its layout).
        split: one of ``splits``; ``trainval`` is train + val unless the layout lists it.
        transform: ``transform(image_uint8_hwc, mask) -> (image_uint8_hwc, mask)`` applied
            before normalisation; ``None`` gives whole, unaugmented images.
        num_samples: use a seeded random subset of this many pairs (smoke runs); all if None.
        seed: seed of that subset.
    """

    ignore_index: int = IGNORE_INDEX
    #: Folders below the given root where the dataset may stand ("" = the root itself).
    root_folders: ClassVar[tuple[str, ...]] = ("",)
    #: Sub-folders that mark the dataset's root; none: any folder is one.
    root_marks: ClassVar[tuple[str, ...]] = ()
    #: Whether a root needs every mark (else one is enough).
    root_needs_all_marks: ClassVar[bool] = True
    #: The error after ``PATH: `` when no candidate folder has the marks (says the fix).
    root_error: ClassVar[str] = ""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        transform: Transform | None = None,
        num_samples: int | None = None,
        seed: int = 0,
    ) -> None:
        if split not in self.splits:
            raise ValueError(
                f"unknown split {split!r} for dataset {self.name!r}; "
                f"use one of: {', '.join(self.splits)}"
            )
        if transform is not None and not callable(transform):
            raise ValueError(f"transform must be callable, got {type(transform).__name__}")
        self.root = self.resolve_root(root)
        self.split = split
        self.transform = transform
        pairs = self.list_split(self.root, split)
        if not pairs:
            raise ValueError(
                f"{self.root}: split {split!r} of dataset {self.name!r} is empty; "
                "add files or use another split"
            )
        problems = missing_files(pairs)
        if problems:
            more = f" ({len(problems) - 1} more pairs are incomplete)" if len(problems) > 1 else ""
            raise ValueError(
                f"{problems[0]}{more}; `autodeeplab data check {self.name}:{self.root}` lists all"
            )
        self.pairs: list[Pair] = _subset(pairs, num_samples, seed)
        self._class_names, self._palette, self.label_map = self.metadata(self.root)

    # --- layout hooks (subclasses) -----------------------------------------------------------

    @classmethod
    def resolve_root(cls, root: str | Path) -> Path:
        """The dataset folder that ``root`` names: the first of ``root_folders`` with the marks.

        ``FileNotFoundError`` if ``root`` does not exist or no candidate has the marks.
        """
        path = Path(root).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(
                f"dataset root {path} does not exist or is not a folder; "
                f"fix the path in '{cls.name}:PATH'"
            )
        if not cls.root_marks:
            return path
        enough = all if cls.root_needs_all_marks else any
        for candidate in (path / folder for folder in cls.root_folders):
            if enough((candidate / mark).is_dir() for mark in cls.root_marks):
                return candidate
        raise FileNotFoundError(f"{path}: {cls.root_error}")

    @classmethod
    def _list_split(cls, root: Path, split: str) -> list[Pair]:
        """Expected pairs of one split; ``MissingSplitError`` if the layout lacks it."""
        raise NotImplementedError

    @classmethod
    def metadata(cls, root: Path) -> tuple[tuple[str, ...] | None, Palette | None, np.ndarray]:
        """``(class_names, palette, label_map)`` for the dataset at ``root``; reads no sample."""
        raise NotImplementedError

    # --- shared ------------------------------------------------------------------------------

    @classmethod
    def list_split(cls, root: Path, split: str) -> list[Pair]:
        """Expected ``(image, label)`` pairs of ``split`` (partners may be missing on disk)."""
        if split == "trainval" and "trainval" not in cls._native_splits():
            return cls._list_split(root, "train") + cls._list_split(root, "val")
        return cls._list_split(root, split)

    @classmethod
    def _native_splits(cls) -> tuple[str, ...]:
        """Splits the layout stores itself; ``trainval`` is otherwise train + val."""
        return tuple(s for s in cls.splits if s != "trainval")

    @classmethod
    def class_info(cls, root: Path) -> tuple[int, tuple[str, ...], Palette]:
        """``(num_classes, class_names, palette)`` of the dataset at ``root``."""
        names, palette, _ = cls.metadata(root)
        if names is None or palette is None:
            raise NotImplementedError(f"{cls.__name__} must override class_info")
        return len(names), names, palette

    @classmethod
    def _build(cls, argument: str | None, split: str, options: SpecOptions) -> Self:
        """The split at path ``argument``; no transform: ``train_transform(size)`` on train ones."""
        transform, size = options.transform, options.size
        if transform is None and split in TRAIN_SPLITS and split in cls.splits:
            transform = train_transform(size)
        root, seed = str(argument), options.seed
        return cls(root, split, transform=transform, num_samples=options.num_samples, seed=seed)

    @classmethod
    def _info(cls, argument: str | None) -> tuple[int, tuple[str, ...], Palette]:
        return cls.class_info(cls.resolve_root(str(argument)))

    @classmethod
    def _root_argument(cls, argument: str | None) -> str:
        if not argument:
            raise ValueError(f"dataset {cls.name!r} needs a path: use '{cls.name}:PATH'")
        return argument

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names in train-id order."""
        if self._class_names is None:
            _, self._class_names, self._palette = self.class_info(self.root)
        return self._class_names

    @property
    def palette(self) -> Palette:
        """RGB colour of each class."""
        if self._palette is None:
            _, self._class_names, self._palette = self.class_info(self.root)
        return self._palette

    @property
    def num_classes(self) -> int:
        """Number of classes (train ids ``0 .. num_classes - 1``)."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.pairs)

    def _index(self, i: int) -> int:
        n = len(self.pairs)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} samples")
        return i % n

    def raw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``i`` untransformed: ``uint8`` image ``(H, W, 3)``, mapped ``uint8`` mask."""
        image_path, label_path = self.pairs[self._index(i)]
        return load_pair(image_path, label_path, self.label_map)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        image, mask = self.raw(i)
        return to_sample(image, mask, self.transform, str(self.pairs[self._index(i)][0]))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
            f"num_samples={len(self)})"
        )


def _subset(pairs: list[Pair], num_samples: int | None, seed: int) -> list[Pair]:
    """All pairs, or a seeded random subset of ``num_samples`` of them in listing order."""
    if num_samples is None:
        return pairs
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    if num_samples > len(pairs):
        raise ValueError(
            f"num_samples={num_samples} but the split has only {len(pairs)} pairs; "
            "lower it or leave it unset to use all"
        )
    keep = np.random.default_rng(seed).choice(len(pairs), size=num_samples, replace=False)
    return [pairs[j] for j in sorted(keep.tolist())]

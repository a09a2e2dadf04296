"""Datasets by spec string, augmentation, data checks, normalisation and the trainA/trainB split.

A dataset spec is ``NAME`` or ``NAME:ARGUMENT``: ``synthetic`` (generated), or a dataset on
disk, ``cityscapes:PATH``, ``voc:PATH``, ``ade20k:PATH``, ``camvid:PATH``, ``folder:PATH``
(each module's docstring gives its layout). :data:`DATASETS` maps each name to a dataset
class, which provides two class methods:

- ``from_spec(argument, split, *, size, seed, num_samples, transform) -> Dataset``
- ``spec_info(argument) -> (num_classes, class_names, palette)``, reading no samples

and a ``splits`` attribute (:class:`~autodeeplab.data.base.SpecDataset` defines them once).
Adding a dataset means adding one entry here.

For datasets on disk, ``size`` is the training crop: with ``transform=None`` the ``train``
and ``trainval`` splits get :func:`train_transform` ``(size)`` and the other splits return
whole images (any size); pass ``transform=`` to choose, e.g. ``val_transform()`` for whole
training images. ``num_samples`` takes a ``seed``-ed random subset (smoke runs).
:func:`check_dataset` scans a dataset for the problems the loaders would stop on.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from torch.utils.data import Dataset

from autodeeplab.data.ade20k import ADE20KDataset
from autodeeplab.data.base import SegmentationDataset
from autodeeplab.data.camvid import CamVidDataset
from autodeeplab.data.check import DataReport, check_dataset
from autodeeplab.data.cityscapes import CityscapesDataset
from autodeeplab.data.folder import FolderDataset
from autodeeplab.data.split import load_split, save_split, split_indices
from autodeeplab.data.synthetic import SyntheticDataset
from autodeeplab.data.transforms import (
    MEAN,
    STD,
    denormalize,
    normalize,
    train_transform,
    val_transform,
)
from autodeeplab.data.voc import VOCDataset

__all__ = [
    "DATASETS",
    "MEAN",
    "STD",
    "ADE20KDataset",
    "CamVidDataset",
    "CityscapesDataset",
    "DataReport",
    "DatasetInfo",
    "FolderDataset",
    "SegmentationDataset",
    "SyntheticDataset",
    "VOCDataset",
    "build_dataset",
    "check_dataset",
    "dataset_info",
    "denormalize",
    "load_split",
    "normalize",
    "parse_spec",
    "save_split",
    "split_indices",
    "train_transform",
    "val_transform",
]

#: Spec name -> dataset class (see the module docstring for what a class provides).
#: The built-in ``synthetic`` comes first; error messages list the names in this order.
DATASETS: dict[str, Any] = {
    "synthetic": SyntheticDataset,
    "cityscapes": CityscapesDataset,
    "voc": VOCDataset,
    "ade20k": ADE20KDataset,
    "camvid": CamVidDataset,
    "folder": FolderDataset,
}


class DatasetInfo(NamedTuple):
    """Class metadata of a dataset."""

    num_classes: int
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split ``NAME`` or ``NAME:ARGUMENT`` into ``(name, argument or None)``; checks the name."""
    if not isinstance(spec, str):
        raise ValueError(f"a dataset spec is a string, got {type(spec).__name__}")
    name, sep, argument = spec.partition(":")
    if name not in DATASETS:
        raise ValueError(
            f"unknown dataset {name!r}; use one of: {', '.join(DATASETS)} "
            "(as NAME or NAME:ARGUMENT)"
        )
    return name, (argument if sep else None)


def build_dataset(
    spec: str,
    split: str,
    *,
    size: int | tuple[int, int] = 64,
    seed: int = 0,
    num_samples: int | None = None,
    transform: Any = None,
) -> Dataset:
    """Build the ``split`` of the dataset named by ``spec`` (``NAME`` or ``NAME:ARGUMENT``)."""
    name, argument = parse_spec(spec)
    cls = DATASETS[name]
    if split not in cls.splits:
        raise ValueError(
            f"unknown split {split!r} for dataset {name!r}; use one of: {', '.join(cls.splits)}"
        )
    return cls.from_spec(
        argument, split, size=size, seed=seed, num_samples=num_samples, transform=transform
    )


def dataset_info(spec: str) -> DatasetInfo:
    """``(num_classes, class_names, palette)`` of the dataset ``spec``, reading no samples."""
    name, argument = parse_spec(spec)
    return DatasetInfo(*DATASETS[name].spec_info(argument))

"""Datasets by spec string, the normalisation constants and the trainA/trainB split.

A dataset spec is ``NAME`` or ``NAME:ARGUMENT`` (``synthetic``; later ``cityscapes:PATH``).
:data:`DATASETS` maps each name to a dataset class, which provides two class methods:

- ``from_spec(argument, split, *, size, seed, num_samples, transform) -> Dataset``
- ``spec_info(argument) -> (num_classes, class_names, palette)``, reading no samples

and a ``splits`` attribute. Adding a dataset means adding one entry here.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from torch.utils.data import Dataset

from autodeeplab.data.split import load_split, save_split, split_indices
from autodeeplab.data.synthetic import SyntheticDataset
from autodeeplab.data.transforms import IGNORE_INDEX, MEAN, STD, denormalize, normalize

__all__ = [
    "DATASETS",
    "IGNORE_INDEX",
    "MEAN",
    "STD",
    "DatasetInfo",
    "SyntheticDataset",
    "build_dataset",
    "dataset_info",
    "denormalize",
    "load_split",
    "normalize",
    "parse_spec",
    "save_split",
    "split_indices",
]

#: Spec name -> dataset class (see the module docstring for what a class provides).
DATASETS: dict[str, Any] = {
    "synthetic": SyntheticDataset,
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
            f"unknown dataset {name!r}; use one of: {', '.join(sorted(DATASETS))} "
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

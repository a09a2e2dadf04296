"""``autodeeplab data check SPEC``: scan a dataset and list every problem with its file.

Per split it counts pairs, decodes every image and label (threads; PIL releases the GIL),
and collects image sizes and a per-class pixel histogram. Problems are the ones the loaders
raise on (:func:`autodeeplab.data.base.load_pair`), so a clean report means training will
not stop on bad data: missing partner files, unreadable or truncated files, image/label
size mismatches, label values outside the class set, and empty or missing splits. The
caller decides the exit code (non-zero when ``report.problems`` is not empty).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autodeeplab.data.base import (
    MissingSplitError,
    Pair,
    SegmentationDataset,
    load_pair,
    missing_files,
)
from autodeeplab.metrics import IGNORE_INDEX

__all__ = ["DataReport", "SplitReport", "check_dataset"]

_CHECK_SPLITS = ("train", "val", "test")  # trainval is their union: not scanned twice


@dataclass
class SplitReport:
    """What one split holds: counts, image sizes ``(H, W)`` and label pixels per value."""

    split: str
    num_pairs: int = 0
    num_checked: int = 0
    num_problems: int = 0
    sizes: Counter = field(default_factory=Counter)  # (H, W) -> number of images
    pixels: np.ndarray = field(default_factory=lambda: np.zeros(256, dtype=np.int64))

    def to_dict(self, num_classes: int) -> dict[str, Any]:
        """JSON-ready summary; ``class_pixels`` has one entry per class."""
        heights = [h for h, _ in self.sizes.elements()]
        widths = [w for _, w in self.sizes.elements()]
        return {
            "num_pairs": self.num_pairs,
            "num_checked": self.num_checked,
            "num_problems": self.num_problems,
            "height": [min(heights), max(heights)] if heights else None,
            "width": [min(widths), max(widths)] if widths else None,
            "sizes": {f"{h}x{w}": n for (h, w), n in self.sizes.most_common()},
            "class_pixels": self.pixels[:num_classes].tolist(),
            "ignore_pixels": int(self.pixels[IGNORE_INDEX]),
        }


@dataclass
class DataReport:
    """The result of :func:`check_dataset`; ``problems`` holds one actionable line each."""

    spec: str
    class_names: tuple[str, ...]
    splits: dict[str, SplitReport]
    problems: list[str]
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form of the whole report."""
        return {
            "spec": self.spec,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "splits": {name: s.to_dict(self.num_classes) for name, s in self.splits.items()},
            "problems": list(self.problems),
            "seconds": round(self.seconds, 3),
        }

    def format(self) -> str:
        """Human-readable tables: splits, class pixel shares per split, then the problems."""
        lines = [
            f"dataset {self.spec}: {self.num_classes} classes, checked in {self.seconds:.1f} s"
        ]
        lines.append(f"{'split':<8}{'pairs':>8}{'checked':>9}{'problems':>10}  image sizes (HxW)")
        for name, s in self.splits.items():
            d = s.to_dict(self.num_classes)
            if d["height"] is None:
                sizes = "-"
            else:
                common = ", ".join(f"{k} ({n})" for k, n in list(d["sizes"].items())[:3])
                more = f", +{len(d['sizes']) - 3} more" if len(d["sizes"]) > 3 else ""
                sizes = (
                    f"H {d['height'][0]}-{d['height'][1]}, W {d['width'][0]}-{d['width'][1]}: "
                    f"{common}{more}"
                )
            lines.append(
                f"{name:<8}{s.num_pairs:>8}{s.num_checked:>9}{s.num_problems:>10}  {sizes}"
            )
        splits = [s for s in self.splits.values() if s.pixels.sum() > 0]
        if splits:
            width = max(12, *(len(n) for n in self.class_names))
            lines.append("")
            lines.append(
                f"{'class (% of pixels)':<{width + 4}}" + "".join(f"{s.split:>9}" for s in splits)
            )
            rows = [*enumerate(self.class_names), (IGNORE_INDEX, "(ignore)")]
            for index, name in rows:
                shares = "".join(
                    f"{100.0 * s.pixels[index] / s.pixels.sum():>8.2f}%" for s in splits
                )
                lines.append(f"{index:>3} {name:<{width}}{shares}")
        lines.append("")
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines.extend(f"  {p}" for p in self.problems)
        else:
            lines.append("no problems found")
        return "\n".join(lines)


def _check_pair(pair: Pair, label_map: np.ndarray) -> tuple[tuple[int, int], np.ndarray] | str:
    """``((H, W), label histogram (256,))`` of a good pair, or the problem line of a bad one."""
    try:
        image, mask = load_pair(pair[0], pair[1], label_map)
    except ValueError as exc:
        return str(exc)
    return image.shape[:2], np.bincount(mask.ravel(), minlength=256)


def _spread(n: int, limit: int | None) -> list[int]:
    """Indices of at most ``limit`` items spread evenly over ``n`` (all when no limit)."""
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, num=limit).round().astype(int).tolist()))


def check_dataset(
    spec: str, splits: list[str] | tuple[str, ...] | None = None, *, max_files: int | None = None
) -> DataReport:
    """Scan the dataset ``spec`` and report per split, listing every problem found.

    Args:
        spec: ``NAME:PATH`` as for ``build_dataset``.
        splits: the splits to scan; default every one of train/val/test that the root holds.
            A split asked for here but absent is a problem.
        max_files: decode at most this many pairs per split, spread evenly over the listing
            (listing-level problems such as missing partners are still found for all).

    Raises ``ValueError`` for an unknown spec or split name and ``FileNotFoundError`` for a
    missing root: those are usage errors, not data problems.
    """
    from autodeeplab.data import DATASETS, parse_spec  # the registry lives in the package

    start = time.perf_counter()
    if max_files is not None and (not isinstance(max_files, int) or max_files < 1):
        raise ValueError(f"max_files must be a positive int or None, got {max_files!r}")
    name, argument = parse_spec(spec)
    cls = DATASETS[name]
    for split in splits or ():
        if split not in cls.splits:
            raise ValueError(
                f"unknown split {split!r} for dataset {name!r}; use one of: {', '.join(cls.splits)}"
            )
    if not (isinstance(cls, type) and issubclass(cls, SegmentationDataset)):
        return _check_generated(spec, splits or cls.splits, max_files, start)

    root = cls.resolve_root(cls._root_argument(argument))
    _, _, label_map = cls.metadata(root)
    wanted = list(splits) if splits else [s for s in _CHECK_SPLITS if s in cls.splits]
    problems: list[str] = []
    reports: dict[str, SplitReport] = {}
    with ThreadPoolExecutor(max_workers=min(16, 2 * (os.cpu_count() or 1))) as pool:
        for split in wanted:
            try:
                pairs = cls.list_split(root, split)
            except MissingSplitError as exc:
                if splits:  # asked for explicitly
                    problems.append(str(exc))
                continue
            report = reports[split] = SplitReport(split, num_pairs=len(pairs))
            split_problems = []
            if not pairs:
                split_problems.append(
                    f"{root}: split {split!r} is empty; add its files or remove its folder/list"
                )
            present = [p[0].is_file() and p[1].is_file() for p in pairs]
            split_problems.extend(
                missing_files([p for p, ok in zip(pairs, present, strict=True) if not ok])
            )
            complete = [p for p, ok in zip(pairs, present, strict=True) if ok]
            chosen = [complete[i] for i in _spread(len(complete), max_files)]
            for result in pool.map(lambda p: _check_pair(p, label_map), chosen):
                if isinstance(result, str):
                    split_problems.append(result)
                    continue
                report.sizes[result[0]] += 1
                report.pixels += result[1]
            report.num_checked = len(chosen)
            report.num_problems = len(split_problems)
            problems.extend(split_problems)
    if not reports and not problems:
        problems.append(
            f"{root}: no split of {', '.join(wanted)} found; check the path and the layout "
            f"described in autodeeplab.data.{cls.__module__.rsplit('.', 1)[-1]}"
        )
    class_names = _class_names(cls, root, reports)
    return DataReport(spec, class_names, reports, problems, time.perf_counter() - start)


def _class_names(
    cls: type[SegmentationDataset], root: Path, reports: dict[str, SplitReport]
) -> tuple[str, ...]:
    """Class names; for a folder without classes.json, inferred from the histogram just made."""
    names, _, _ = cls.metadata(root)
    if names is not None:
        return names
    seen = sum((r.pixels for r in reports.values()), np.zeros(256, dtype=np.int64))
    seen[IGNORE_INDEX] = 0
    num_classes = int(np.flatnonzero(seen).max()) + 1 if seen.any() else 0
    return tuple(f"class_{i}" for i in range(num_classes))


def _check_generated(
    spec: str, splits: tuple[str, ...] | list[str], max_files: int | None, start: float
) -> DataReport:
    """A generated dataset (``synthetic``): render samples and report the same statistics."""
    from autodeeplab.data import build_dataset, dataset_info

    reports = {}
    for split in splits:
        dataset = build_dataset(spec, split)
        report = reports[split] = SplitReport(split, num_pairs=len(dataset))
        for i in _spread(len(dataset), max_files):
            image, mask = dataset.raw(i)
            report.sizes[image.shape[:2]] += 1
            report.pixels += np.bincount(mask.ravel(), minlength=256)
            report.num_checked += 1
    names = dataset_info(spec).class_names
    return DataReport(spec, names, reports, [], time.perf_counter() - start)

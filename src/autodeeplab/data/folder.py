"""Any dataset stored as image and class-index label files; spec ``folder:PATH``.

Layout::

    ROOT/images/<split>/<stem>.{png,jpg,jpeg,bmp,tif,tiff}
    ROOT/labels/<split>/<stem>.png    8-bit class index per pixel, 255 = ignore
    ROOT/<split>.txt                  optional: the stems of the split, one a line
    ROOT/classes.json                 optional: {"classes": [...], "palette": [[r, g, b], ...]}

A split is ``train``, ``val``, ``test`` or ``trainval`` (train + val unless stored itself).
When ``ROOT/<split>.txt`` exists it decides which stems belong to the split, and the files
are looked up in ``images/<split>/`` and ``labels/<split>/`` if those folders exist, else
in ``images/`` and ``labels/`` directly; without a list, the split is every file of the two
split folders. ``/work/shared/data/msrc21`` (MSRC-21) has both, and they agree.

``classes.json`` keys: ``classes`` (or ``names``), the class names in index order;
``palette`` (optional, default the VOC colour map); ``num_classes`` (optional, checked);
``ignore_index`` (optional: a stored value that also means "ignore"; 255 always does).

Without ``classes.json`` any value 0-254 is a class. ``num_classes`` is then inferred as
1 + the largest label value, which costs one decode of every label file under ``labels/``
(threaded; about 1 ms per 320x240 PNG, 15 ms per 2048x1024 one) the first time
``dataset_info`` or ``num_classes`` / ``class_names`` / ``palette`` is asked for; a class
that never occurs at the top end is then missed. Write a ``classes.json`` for real runs.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np

from autodeeplab.data.base import (
    MissingSplitError,
    Pair,
    Palette,
    SegmentationDataset,
    default_palette,
    identity_label_map,
    pair_by_key,
    read_label,
    scan_dir,
)
from autodeeplab.files import DuplicateKeyError, reject_duplicate_keys
from autodeeplab.metrics import IGNORE_INDEX

__all__ = ["IMAGE_SUFFIXES", "FolderDataset"]

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_LABEL_SUFFIX = ".png"


def _read_list(path: Path) -> list[str]:
    """Stems of a split list: first token of each line, minus an image suffix if it has one."""
    stems = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path}: not a UTF-8 text file (byte {exc.start}); a split list holds one "
            "file name per line"
        ) from None
    for line in text.splitlines():
        tokens = line.split()
        if not tokens:
            continue
        name = Path(tokens[0]).name
        for suffix in IMAGE_SUFFIXES:
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                break
        stems.append(name)
    return stems


def _short(value: object) -> str:
    """A bounded repr: a hostile file must not flood the terminal with its error."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _read_classes(root: Path) -> tuple[tuple[str, ...], Palette, np.ndarray] | None:
    """``(class_names, palette, label_map)`` from ``ROOT/classes.json``; None if absent."""
    path = root / "classes.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=reject_duplicate_keys)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, DuplicateKeyError) as exc:
        raise ValueError(f"{path}: cannot read it as JSON ({exc}); fix or remove it") from None
    except (RecursionError, ValueError) as exc:  # absurd nesting; integers past Python's limit
        raise ValueError(
            f"{path}: cannot read it as JSON ({type(exc).__name__}: {str(exc)[:80]}); fix or "
            "remove it"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: must hold a JSON object with a 'classes' list")
    names = data.get("classes", data.get("names"))
    if (
        not isinstance(names, list)
        or not 1 <= len(names) <= IGNORE_INDEX
        or not all(isinstance(n, str) for n in names)
    ):
        raise ValueError(
            f"{path}: 'classes' must be a list of 1 to {IGNORE_INDEX} class-name strings, "
            f"got {_short(names)}"
        )
    num_classes = len(names)
    if "num_classes" in data and data["num_classes"] != num_classes:
        raise ValueError(
            f"{path}: 'num_classes' is {data['num_classes']!r} but 'classes' has {num_classes} "
            "names; make them agree"
        )
    palette = data.get("palette")
    if palette is None:
        palette = default_palette(num_classes)
    else:
        ok = (
            isinstance(palette, list)
            and len(palette) == num_classes
            and all(
                isinstance(c, list)
                and len(c) == 3
                and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
                for c in palette
            )
        )
        if not ok:
            raise ValueError(
                f"{path}: 'palette' must be {num_classes} [r, g, b] lists of ints 0-255, "
                "one per class; fix it or leave it out"
            )
        palette = tuple(tuple(c) for c in palette)
    ignore = data.get("ignore_index", IGNORE_INDEX)
    if not isinstance(ignore, int) or isinstance(ignore, bool) or not num_classes <= ignore <= 255:
        raise ValueError(
            f"{path}: 'ignore_index' must be an int in {num_classes}-255 (not a class index), "
            f"got {ignore!r}"
        )
    label_map = identity_label_map(num_classes, sorted({IGNORE_INDEX, ignore}))
    return tuple(names), palette, label_map


@lru_cache(maxsize=8)
def _infer_num_classes(root: str) -> int:
    """1 + the largest non-ignore value over every label PNG under ``ROOT/labels/``."""
    files = sorted((Path(root) / "labels").rglob(f"*{_LABEL_SUFFIX}"))
    if not files:
        raise ValueError(
            f"{root}: no label files under labels/ to infer the classes from; "
            "add labels or a classes.json"
        )

    def largest(path: Path) -> int:
        values = np.unique(read_label(path))
        values = values[values != IGNORE_INDEX]
        return int(values.max()) if values.size else -1

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        top = max(pool.map(largest, files))
    if top < 0:
        raise ValueError(
            f"{root}: every label pixel is ignore ({IGNORE_INDEX}); cannot infer the classes, "
            "add a classes.json"
        )
    return top + 1


class FolderDataset(SegmentationDataset):
    """Images and class-index PNG labels in ``images/<split>/`` and ``labels/<split>/``."""

    name = "folder"
    splits = ("train", "val", "test", "trainval")

    @classmethod
    def _stores(cls, root: Path, split: str) -> bool:
        """Whether ``root`` holds ``split`` itself (a list file or a split folder)."""
        return (
            (root / f"{split}.txt").is_file()
            or (root / "images" / split).is_dir()
            or (root / "labels" / split).is_dir()
        )

    @classmethod
    def list_split(cls, root: Path, split: str) -> list[Pair]:
        """Expected pairs of ``split``; ``trainval`` is train + val unless stored."""
        if split == "trainval" and not cls._stores(root, split):
            return cls._list_split(root, "train") + cls._list_split(root, "val")
        return cls._list_split(root, split)

    @classmethod
    def _list_split(cls, root: Path, split: str) -> list[Pair]:
        if not cls._stores(root, split):
            raise MissingSplitError(
                f"{root}: split {split!r} not found (no {split}.txt, images/{split}/ or "
                f"labels/{split}/); use another split"
            )
        image_dir, label_dir = root / "images" / split, root / "labels" / split
        list_path = root / f"{split}.txt"
        if list_path.is_file():
            if not image_dir.is_dir():
                image_dir = root / "images"
            if not label_dir.is_dir():
                label_dir = root / "labels"
        images = scan_dir(image_dir, IMAGE_SUFFIXES)
        labels = scan_dir(label_dir, (_LABEL_SUFFIX,))
        if list_path.is_file():
            stems = _read_list(list_path)
            return [
                (
                    images.get(s) or image_dir / f"{s}.png",
                    labels.get(s) or label_dir / f"{s}{_LABEL_SUFFIX}",
                )
                for s in stems
            ]
        return pair_by_key(
            images,
            labels,
            lambda key: image_dir / f"{key}.png",
            lambda key: label_dir / f"{key}{_LABEL_SUFFIX}",
        )

    @classmethod
    def metadata(cls, root: Path) -> tuple[tuple[str, ...] | None, Palette | None, np.ndarray]:
        """From ``classes.json``; without it, names and palette are None (inferred on demand)."""
        classes = _read_classes(root)
        if classes is not None:
            return classes
        return None, None, identity_label_map(IGNORE_INDEX)  # 0-254 are classes

    @classmethod
    def class_info(cls, root: Path) -> tuple[int, tuple[str, ...], Palette]:
        """From ``classes.json``, or inferred by scanning every label file (see module doc)."""
        classes = _read_classes(root)
        if classes is not None:
            names, palette, _ = classes
            return len(names), names, palette
        num_classes = _infer_num_classes(str(root.resolve()))
        names = tuple(f"class_{i}" for i in range(num_classes))
        return num_classes, names, default_palette(num_classes)

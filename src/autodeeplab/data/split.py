"""The seeded trainA/trainB split of the search (paper §5.1), persisted as JSON in the run folder.

The search trains the network weights on trainA and the architecture (alpha, beta) on
trainB, two disjoint halves of the training set. :func:`split_indices` draws the split from
its own ``torch.Generator``, so it never touches the global random state; the run folder keeps
it as ``split.json`` so a resumed search uses the same halves.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from autodeeplab.files import (
    DuplicateKeyError,
    reject_duplicate_keys,
    require_file,
    write_text_atomic,
)

__all__ = ["check_split", "load_split", "save_split", "split_indices"]

_FORMAT = "autodeeplab-split"
_VERSION = 1


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def split_indices(
    num_samples: int, seed: int, fraction: float = 0.5
) -> tuple[list[int], list[int]]:
    """Seeded random split of ``range(num_samples)`` into sorted, disjoint ``(train_a, train_b)``.

    ``train_a`` gets ``floor(num_samples * fraction)`` indices, clamped so both parts are
    non-empty.
    """
    if not _is_int(num_samples) or num_samples < 2:
        raise ValueError(
            f"cannot split {num_samples!r} samples into trainA/trainB; need at least 2"
        )
    if not _is_int(seed):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if not isinstance(fraction, int | float) or not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be strictly between 0 and 1, got {fraction!r}")
    size_a = min(max(math.floor(num_samples * fraction), 1), num_samples - 1)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(num_samples, generator=generator).tolist()
    return sorted(order[:size_a]), sorted(order[size_a:])


def check_split(train_a: Any, train_b: Any, num_samples: Any, where: str) -> None:
    """Raise ``ValueError`` naming ``where`` unless the split is well formed."""
    if not _is_int(num_samples) or num_samples < 2:
        raise ValueError(f"{where}: 'num_samples' must be an int >= 2, got {num_samples!r}")
    seen: set[int] = set()
    for key, part in (("train_a", train_a), ("train_b", train_b)):
        if not isinstance(part, list | tuple) or not part:
            raise ValueError(f"{where}: {key!r} must be a non-empty list of sample indices")
        for i in part:
            if not _is_int(i):
                raise ValueError(f"{where}: {key!r} holds {i!r}; indices must be integers")
            if not 0 <= i < num_samples:
                raise ValueError(
                    f"{where}: {key!r} holds index {i}, outside [0, {num_samples}) "
                    f"for num_samples={num_samples}"
                )
            if i in seen:
                raise ValueError(
                    f"{where}: index {i} appears twice ({key!r}); trainA and trainB must be "
                    "disjoint"
                )
            seen.add(i)


def save_split(
    path: str | os.PathLike[str],
    train_a: list[int],
    train_b: list[int],
    *,
    seed: int,
    num_samples: int,
) -> None:
    """Write the split as readable JSON, atomically (temp file + fsync + rename)."""
    p = Path(path)
    if not _is_int(seed):
        raise ValueError(f"{p}: seed must be an int, got {seed!r}")
    check_split(train_a, train_b, num_samples, where=f"{p}")
    a, b = sorted(int(i) for i in train_a), sorted(int(i) for i in train_b)
    text = (
        "{\n"
        f'  "format": "{_FORMAT}",\n'
        f'  "version": {_VERSION},\n'
        f'  "seed": {json.dumps(seed)},\n'
        f'  "num_samples": {num_samples},\n'
        f'  "train_a": {json.dumps(a)},\n'
        f'  "train_b": {json.dumps(b)}\n'
        "}\n"
    )
    write_text_atomic(p, text)


def load_split(
    path: str | os.PathLike[str], *, num_samples: int | None = None
) -> tuple[list[int], list[int], dict[str, Any]]:
    """Read a split file: ``(train_a, train_b, meta)`` with ``meta`` = ``{seed, num_samples}``.

    With ``num_samples`` given, also check that the file was made for a dataset of that size.
    """
    p = Path(path)
    fix = "delete it to draw a new split"
    require_file(p, "split file", "pass the split.json of a search run folder")
    try:
        data = json.loads(p.read_text(encoding="utf-8"), object_pairs_hook=reject_duplicate_keys)
    except DuplicateKeyError as exc:
        raise ValueError(f"{p}: {exc}; {fix}") from None
    except RecursionError:
        raise ValueError(f"{p}: JSON nested too deeply for a split; {fix}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{p}: not a text file; a split is UTF-8 JSON; {fix}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno}); {fix}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a JSON object, got {type(data).__name__}; {fix}")
    if data.get("format", _FORMAT) != _FORMAT:
        raise ValueError(f"{p}: 'format' is {data['format']!r}, expected {_FORMAT!r}; {fix}")
    if data.get("version", _VERSION) != _VERSION:
        raise ValueError(
            f"{p}: split version {data['version']!r} is not supported "
            f"(this autodeeplab reads version {_VERSION}); {fix}"
        )
    for key in ("seed", "num_samples", "train_a", "train_b"):
        if key not in data:
            raise ValueError(f"{p}: missing key {key!r}; {fix}")
    if not _is_int(data["seed"]):
        raise ValueError(f"{p}: 'seed' must be an int, got {data['seed']!r}; {fix}")
    try:
        check_split(data["train_a"], data["train_b"], data["num_samples"], where=f"{p}")
    except ValueError as exc:
        raise ValueError(f"{exc}; {fix}") from None
    if num_samples is not None and data["num_samples"] != num_samples:
        raise ValueError(
            f"{p}: split made for {data['num_samples']} samples, but the dataset has "
            f"{num_samples}; {fix}"
        )
    meta = {"seed": data["seed"], "num_samples": data["num_samples"]}
    return sorted(data["train_a"]), sorted(data["train_b"]), meta

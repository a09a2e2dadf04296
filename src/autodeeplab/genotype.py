"""The discrete Auto-DeepLab architecture as data: cell + network path, JSON I/O, validation.

A :class:`Genotype` holds what decoding produces (paper §4.3):

- ``cell``: one entry per block, each a pair of ``(op, input)`` branches whose outputs are
  added. Inputs use the DARTS numbering: ``0`` = H^{l-2}, ``1`` = H^{l-1}, ``k >= 2`` = the
  output of block ``k - 1`` of the same cell. The cell outputs the concatenation of all
  blocks.
- ``path``: the level of each of the L layers, level ``i`` being stride ``4 * 2**i``; the
  stem feeds layer 1 at level 0, and consecutive levels differ by at most one.

Genotypes are stored as readable JSON, never pickled. :data:`PAPER_GENOTYPE` is the
architecture the paper found on Cityscapes (Fig. 3; TF ``hnasnet``; docs/design.md §5).
"""

from __future__ import annotations

import json
import math
import os
import random
import reprlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from autodeeplab.files import (
    DuplicateKeyError,
    reject_duplicate_keys,
    require_file,
    write_text_atomic,
)
from autodeeplab.ops import OPS, PRIMITIVES

__all__ = [
    "Genotype",
    "GenotypeError",
    "PAPER_GENOTYPE",
    "SearchSpaceSize",
    "count_paths",
    "genotype_provenance",
    "load_genotype",
    "random_genotype",
    "save_genotype",
    "search_space_size",
]

_FORMAT = "autodeeplab-genotype"
_VERSION = 1
_MAX_LAYERS = 1024
_MAX_LEVELS = 16
_MAX_BLOCKS = 64  # config.num_blocks's bound: a cell of a million blocks is no search result


class GenotypeError(ValueError):
    """A genotype (or its JSON file) is malformed; the message names the field."""


Branch = tuple[str, int]
Block = tuple[Branch, ...]


@dataclass(frozen=True)
class Genotype:
    """A decoded architecture: the cell's blocks and the network's level per layer."""

    cell: tuple[Block, ...]
    path: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "cell", tuple(tuple(tuple(b) for b in blk) for blk in self.cell))
        object.__setattr__(self, "path", tuple(self.path))
        _validate(self.cell, self.path, where="genotype")

    @property
    def num_blocks(self) -> int:
        """B, the number of blocks in the cell."""
        return len(self.cell)

    @property
    def num_layers(self) -> int:
        """L, the number of layers on the path."""
        return len(self.path)

    @property
    def strides(self) -> tuple[int, ...]:
        """The output stride of each layer (4, 8, 16, 32 for levels 0..3)."""
        return tuple(4 * 2**level for level in self.path)

    def same_network(self, other: Genotype) -> bool:
        """Whether ``other`` decodes to the same network: a block sums its branches, so
        their order within a block does not matter (the decode lists the stronger first)."""
        return self.path == other.path and [sorted(b) for b in self.cell] == [
            sorted(b) for b in other.cell
        ]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "cell": [[[op, inp] for op, inp in block] for block in self.cell],
            "path": list(self.path),
            "strides": list(self.strides),
            "inputs": "0 = H^{l-2}, 1 = H^{l-1}, k >= 2 = block k-1 of the same cell",
        }

    def to_json(self, search: dict[str, Any] | None = None) -> str:
        """Readable JSON text, one block per line.

        ``search``: how the genotype was found (decode mode, path margin, ...), written as
        a ``"search"`` object that loading ignores.
        """
        d = self.to_dict()
        blocks = ",\n    ".join(json.dumps(b) for b in d["cell"])
        extra = "" if search is None else f',\n  "search": {json.dumps(search)}'
        return (
            "{\n"
            f'  "format": "{_FORMAT}",\n'
            f'  "version": {_VERSION},\n'
            f'  "inputs": {json.dumps(d["inputs"])},\n'
            f'  "cell": [\n    {blocks}\n  ],\n'
            f'  "path": {json.dumps(d["path"])},\n'
            f'  "strides": {json.dumps(d["strides"])}{extra}\n'
            "}\n"
        )

    @classmethod
    def from_dict(cls, data: Any, where: str = "genotype") -> Genotype:
        """Build from a parsed JSON object, with errors that name ``where`` and the field."""
        if not isinstance(data, dict):
            raise GenotypeError(f"{where}: expected a JSON object, got {type(data).__name__}")
        if "format" in data and data["format"] != _FORMAT:
            raise GenotypeError(
                f"{where}: 'format' is {_show(data['format'])}, expected {_FORMAT!r}"
            )
        if "version" in data and (not _is_int(data["version"]) or data["version"] != _VERSION):
            raise GenotypeError(
                f"{where}: genotype version {_show(data['version'])} is not supported "
                f"(this autodeeplab reads version {_VERSION})"
            )
        for key in ("cell", "path"):
            if key not in data:
                raise GenotypeError(f"{where}: missing key {key!r}")
        cell_raw, path_raw = data["cell"], data["path"]
        if not isinstance(cell_raw, list):
            raise GenotypeError(f"{where}: 'cell' must be a list of blocks")
        cell = []
        for i, block in enumerate(cell_raw):
            if not isinstance(block, list):
                raise GenotypeError(f"{where}: cell block {i} must be a list of [op, input] pairs")
            branches = []
            for j, branch in enumerate(block):
                if not (isinstance(branch, list) and len(branch) == 2):
                    raise GenotypeError(
                        f"{where}: cell block {i} branch {j} must be [op, input], "
                        f"got {_show(branch)}"
                    )
                branches.append((branch[0], branch[1]))
            cell.append(tuple(branches))
        if not isinstance(path_raw, list):
            raise GenotypeError(f"{where}: 'path' must be a list of levels")
        _validate(tuple(cell), tuple(path_raw), where)
        if "strides" in data and data["strides"] != [4 * 2**lv for lv in path_raw]:
            raise GenotypeError(
                f"{where}: 'strides' {_show(data['strides'])} disagree with "
                f"'path' {_show(path_raw)}; remove 'strides' or fix it"
            )
        return cls(tuple(cell), tuple(path_raw))

    @classmethod
    def from_json(cls, text: str, where: str = "genotype") -> Genotype:
        """Parse JSON text."""
        try:
            data = json.loads(text, object_pairs_hook=reject_duplicate_keys)
        except json.JSONDecodeError as exc:
            msg = f"{where}: not valid JSON ({exc.msg} at line {exc.lineno})"
            raise GenotypeError(msg) from None
        except DuplicateKeyError as exc:
            raise GenotypeError(f"{where}: {exc}") from None
        except (ValueError, RecursionError) as exc:  # huge integers, absurd nesting
            msg = f"{where}: not a readable genotype ({type(exc).__name__}: {str(exc)[:80]})"
            raise GenotypeError(msg) from None
        return cls.from_dict(data, where)


_REPR = reprlib.Repr()  # keyword arguments need Python 3.12
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict = 3, 16, 6
_REPR.maxstring, _REPR.maxlong, _REPR.maxother = 60, 40, 60


def _show(value: Any) -> str:
    """A bounded repr for error messages: a hostile file must not flood the terminal."""
    text = _REPR.repr(value)
    return text if len(text) <= 120 else f"{text[:117]}..."


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _validate(cell: tuple, path: tuple, where: str) -> None:
    if len(cell) == 0:
        raise GenotypeError(f"{where}: 'cell' has no blocks")
    if len(cell) > _MAX_BLOCKS:
        raise GenotypeError(f"{where}: 'cell' has {len(cell)} blocks, at most {_MAX_BLOCKS}")
    for i, block in enumerate(cell):
        if len(block) != 2:
            raise GenotypeError(f"{where}: cell block {i} has {len(block)} branches, expected 2")
        for j, (op, inp) in enumerate(block):
            if not isinstance(op, str) or op not in OPS:
                raise GenotypeError(
                    f"{where}: cell block {i} branch {j}: unknown op {_show(op)} "
                    f"(known: {', '.join(OPS)})"
                )
            if op == "none":
                raise GenotypeError(
                    f"{where}: cell block {i} branch {j}: op 'none' (zero) cannot be in a "
                    "decoded cell; pick another op"
                )
            if not _is_int(inp) or not 0 <= inp <= i + 1:
                raise GenotypeError(
                    f"{where}: cell block {i} branch {j}: input {_show(inp)} must be an integer in "
                    f"0..{i + 1} (0 = H^{{l-2}}, 1 = H^{{l-1}}, k >= 2 = block k-1)"
                )
    if len(path) == 0:
        raise GenotypeError(f"{where}: 'path' has no layers")
    if len(path) > _MAX_LAYERS:
        raise GenotypeError(f"{where}: 'path' has {len(path)} layers, at most {_MAX_LAYERS}")
    prev = 0
    for layer, level in enumerate(path, start=1):
        if not _is_int(level) or not 0 <= level < _MAX_LEVELS:
            raise GenotypeError(
                f"{where}: path layer {layer}: level {_show(level)} must be an integer >= 0 "
                "(0 = stride 4, 1 = stride 8, 2 = stride 16, 3 = stride 32)"
            )
        if abs(level - prev) > 1:
            raise GenotypeError(
                f"{where}: path layer {layer} jumps from level {prev} to {level}; "
                "consecutive layers may change by one level at most (the stem is level 0)"
            )
        prev = level


def load_genotype(path: str | os.PathLike[str]) -> Genotype:
    """Read a genotype JSON file, with one-line errors naming the file."""
    p = require_file(
        path, "genotype file", "pass the genotype.json written by 'autodeeplab search'"
    )
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise GenotypeError(f"{p}: not a text file; a genotype is UTF-8 JSON") from None
    return Genotype.from_json(text, where=str(p))


def save_genotype(
    genotype: Genotype, path: str | os.PathLike[str], search: dict[str, Any] | None = None
) -> None:
    """Write ``genotype`` as JSON atomically (temp file + rename); see :meth:`Genotype.to_json`."""
    write_text_atomic(path, genotype.to_json(search))  # unchanged (a resume): left as it is


def genotype_provenance(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``search`` object :func:`save_genotype` kept beside the genotype ({} if none).

    Raises OSError or ValueError (bad UTF-8 or JSON) as reading the file does.
    """
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    found = data.get("search") if isinstance(data, dict) else None
    return found if isinstance(found, dict) else {}


#: The architecture found on Cityscapes (paper Fig. 3; TF ``hnasnet``; docs/design.md §5).
PAPER_GENOTYPE = Genotype(
    cell=(
        (("dil_conv_5x5", 0), ("sep_conv_3x3", 1)),
        (("sep_conv_3x3", 0), ("dil_conv_3x3", 1)),
        (("sep_conv_3x3", 3), ("sep_conv_3x3", 0)),
        (("sep_conv_5x5", 4), ("sep_conv_5x5", 2)),
        (("sep_conv_5x5", 3), ("dil_conv_5x5", 5)),
    ),
    path=(0, 0, 0, 1, 2, 1, 2, 2, 3, 3, 2, 1),
)


@dataclass(frozen=True)
class SearchSpaceSize:
    """Sizes of the Auto-DeepLab search space (docs/design.md §8)."""

    network_paths: int
    """Walks over the levels for L free layers, the first in {0, 1} (75,025 for L=12)."""
    network_paths_paper: int
    """The paper's count, L-1 transitions (28,657 = 2.9e4 for L=12)."""
    cells: int
    """Cell structures: prod over blocks of ((i+1) * |O|)^2 (5.566e14 for B=5, |O|=8)."""

    @property
    def joint(self) -> int:
        """Network x cell, the paper's convention (about 1.6e19)."""
        return self.network_paths_paper * self.cells

    @property
    def joint_literal(self) -> int:
        """Network x cell with L free layers (about 4.2e19)."""
        return self.network_paths * self.cells


def _count_walks(transitions: int, num_levels: int) -> int:
    """Walks of ``transitions`` steps of -1/0/+1 over ``num_levels`` levels from level 0."""
    counts = [1] + [0] * (num_levels - 1)
    for _ in range(transitions):
        counts = [
            sum(counts[j] for j in (i - 1, i, i + 1) if 0 <= j < num_levels)
            for i in range(num_levels)
        ]
    return sum(counts)


def search_space_size(
    num_layers: int = 12,
    num_blocks: int = 5,
    num_ops: int = len(PRIMITIVES),
    num_levels: int = 4,
) -> SearchSpaceSize:
    """Count network paths and cell structures from the formulas of docs/design.md §8."""
    for name, value in (("num_layers", num_layers), ("num_blocks", num_blocks)):
        if not _is_int(value) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    for name, value in (("num_ops", num_ops), ("num_levels", num_levels)):
        if not _is_int(value) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    cells = math.prod(((i + 1) * num_ops) ** 2 for i in range(1, num_blocks + 1))
    return SearchSpaceSize(
        network_paths=_count_walks(num_layers, num_levels),
        network_paths_paper=_count_walks(num_layers - 1, num_levels),
        cells=cells,
    )


def count_paths(num_layers: int, num_levels: int) -> list[list[int]]:
    """``counts[l][s]``: valid level sequences for layers l+1..L given level s at layer l.

    Layer 0 is the stem at level 0; a path moves at most one level per layer and stays
    within 0..num_levels-1. ``counts[0][0]`` is the number of paths of the search space.
    """
    counts = [[0] * num_levels for _ in range(num_layers + 1)]
    counts[num_layers] = [1] * num_levels
    for layer in range(num_layers - 1, -1, -1):
        for s in range(num_levels):
            nxt = counts[layer + 1]
            counts[layer][s] = sum(nxt[t] for t in (s - 1, s, s + 1) if 0 <= t < num_levels)
    return counts


def random_genotype(
    rng: random.Random,
    num_layers: int,
    num_blocks: int = 5,
    num_levels: int = 4,
    primitives: Sequence[str] | None = None,
) -> Genotype:
    """A genotype drawn uniformly: cells without 'none', and paths over the valid ones.

    Each block reads two distinct inputs, an unordered pair drawn uniformly from its
    ``block + 2`` predecessors, each through an op drawn uniformly from ``primitives``
    less 'none'. The path is uniform over every valid level sequence: each layer's level is
    drawn in proportion to the number of ways the path can go on from it.
    """
    ops = [p for p in (primitives or PRIMITIVES) if p != "none"]
    if not ops:
        raise ValueError("random_genotype needs at least one op other than 'none'")
    cell = []
    for block in range(num_blocks):
        inputs = rng.sample(range(block + 2), 2)
        cell.append(tuple((rng.choice(ops), i) for i in inputs))
    counts = count_paths(num_layers, num_levels)
    path, prev = [], 0
    for layer in range(1, num_layers + 1):
        options = [t for t in (prev - 1, prev, prev + 1) if 0 <= t < num_levels]
        level = rng.choices(options, weights=[counts[layer][t] for t in options])[0]
        path.append(level)
        prev = level
    return Genotype(tuple(cell), tuple(path))

"""Drawings of a :class:`~autodeeplab.genotype.Genotype`, in the style of the paper's figures.

- :func:`render_path`: the network level (paper Fig. 1 and Fig. 3 top). Layers run left to
  right from the stem, the downsample rate 4, 8, 16, 32 top to bottom; the decoded path is
  drawn in bold over the L x 4 trellis and ends in the ASPP head. Given the transition
  probabilities ``beta`` (§3.2, Eq. 7), the max-probability edge out of every node is drawn as
  a grey dashed arrow, as in Fig. 3.
- :func:`~autodeeplab.viz.cell.render_cell` (in :mod:`autodeeplab.viz.cell`): the cell as a
  DAG (Fig. 3 bottom).

Figures are made and written by :mod:`autodeeplab.viz._figure` (headless Agg canvas, atomic
PNG files). The trellis is :mod:`autodeeplab.trellis`'s.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.lines import Line2D

from autodeeplab.genotype import Genotype
from autodeeplab.trellis import edges as trellis_edges
from autodeeplab.trellis import levels_at
from autodeeplab.viz._figure import arrow, new_figure, save_figure
from autodeeplab.viz.cell import render_cell

__all__ = ["render_cell", "render_genotype", "render_path"]

#: Figure size in inches at :data:`~autodeeplab.viz._figure.DPI`: 1200 x 500 px.
PATH_FIGSIZE = (12.0, 5.0)

_PATH_COLOR = "#1f5fa8"
_ASPP_COLOR = "#f28e2b"
_GRID_EDGE = "#d9d9d9"
_GRID_NODE = "#ececec"
_BETA_COLOR = "#4d4d4d"


def _num_levels_at(x: int, num_levels: int) -> int:
    """Levels that exist at column x (0 = stem, l = layer l): the stem only has level 0."""
    return len(levels_at(x, num_levels))


def _check_beta(beta: np.ndarray | None, num_layers: int, num_levels: int) -> np.ndarray | None:
    if beta is None:
        return None
    probs = np.asarray(beta, dtype=np.float64)
    expected = (num_layers, num_levels, 3)
    if probs.shape != expected:
        raise ValueError(
            f"beta has shape {probs.shape}, expected {expected} "
            "(layer, source level, direction -1/0/+1); pass transition probabilities"
        )
    if not np.all(np.isfinite(probs)):
        raise ValueError("beta contains NaN or inf; pass finite transition probabilities")
    return probs


def render_path(
    genotype: Genotype,
    out_path: str | os.PathLike[str],
    *,
    num_levels: int = 4,
    beta: np.ndarray | None = None,
    title: str | None = None,
) -> Path:
    """Draw the network-level path over the trellis (paper Fig. 1/3) and write it as PNG.

    Args:
        genotype: its ``path`` (one level per layer) is drawn.
        out_path: the PNG to write; parent folders are created.
        num_levels: rows of the trellis (4 = strides 4..32); must cover every level on the path.
        beta: transition probabilities, shape (L, num_levels, 3): column (0 = stem -> layer 1),
            source level, direction -1/0/+1, zero where an edge does not exist. Adds the
            max-probability edge of every node (dashed) and shades edges by probability.
        title: figure title; ``None`` gives a default naming L.
    """
    path = genotype.path
    num_layers = len(path)
    if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 1:
        raise ValueError(f"num_levels must be a positive integer, got {num_levels!r}")
    if max(path) >= num_levels:
        raise ValueError(
            f"the path reaches level {max(path)} (stride {4 * 2 ** max(path)}) but "
            f"num_levels={num_levels}; pass num_levels={max(path) + 1} or more"
        )
    probs = _check_beta(beta, num_layers, num_levels)
    # Rows that exist at all: a short network never reaches the deeper levels.
    rows = min(num_levels, num_layers + 1)

    fig = new_figure(PATH_FIGSIZE)
    rect = (0.07, 0.13, 0.9, 0.72)
    ax = fig.add_axes(rect)
    ax_w_pt = PATH_FIGSIZE[0] * rect[2] * 72
    ax_h_pt = PATH_FIGSIZE[1] * rect[3] * 72

    # Room right of the last layer for the ASPP box (~75 pt, placed in points).
    left = -0.6
    right_pad = max(0.9, 75 * (num_layers - left) / (ax_w_pt - 75))
    ax.set_xlim(left, num_layers + right_pad)
    bottom = -(rows - 1) - 0.5
    ax.set_ylim(bottom, 0.5)

    # Node size follows the spacing so long paths stay drawable; capped for short ones.
    unit_pt = min(ax_w_pt / (num_layers + right_pad - left), ax_h_pt / (0.5 - bottom))
    diam = min(22.0, 0.42 * unit_pt)
    lw_path = float(np.clip(diam / 7, 0.8, 3.0))
    # Arrows stop at the node rim; shrink is in points, like the marker size.
    shrink = {"shrinkA": diam / 2 + 1.5, "shrinkB": diam / 2 + 1.5}
    head = max(7.0, diam * 0.75)

    # Possible transitions: light grey, or shaded by beta. y = -level puts stride 4 on top.
    edges = trellis_edges(num_layers, num_levels)  # column = the layer an edge leaves
    segs = [((e.layer, -e.source), (e.layer + 1, -e.target)) for e in edges]
    if probs is None:
        colors: list | str = _GRID_EDGE
        widths: list[float] | float = 1.0
    else:
        p = np.array([np.clip(probs[e.layer, e.source, e.direction], 0.0, 1.0) for e in edges])
        grey = 0.9 - 0.3 * p  # stays light, so the dashed max-beta arrows stand out
        colors = [(g, g, g, 1.0) for g in grey]
        widths = list(0.6 + 2.4 * p)
    ax.add_collection(LineCollection(segs, colors=colors, linewidths=widths, zorder=1))

    xs = [x for x in range(num_layers + 1) for _ in range(_num_levels_at(x, num_levels))]
    ys = [-i for x in range(num_layers + 1) for i in range(_num_levels_at(x, num_levels))]
    ax.scatter(xs, ys, s=diam**2, c=_GRID_NODE, edgecolors="#b5b5b5", linewidths=0.8, zorder=2)

    if probs is not None:
        # Fig. 3: the max-beta edge out of each node, whether or not the path takes it.
        out_of: dict[tuple[int, int], list] = {}
        for e in edges:
            out_of.setdefault((e.layer, e.source), []).append(e)
        for out in out_of.values():
            best = max(out, key=lambda e: probs[e.layer, e.source, e.direction])  # first max
            if probs[best.layer, best.source, best.direction] <= 0:
                continue  # no probability mass: the node is unused
            ends = ((best.layer, -best.source), (best.layer + 1, -best.target))
            style = {"ls": (0, (4, 2)), "lw": max(0.8, lw_path * 0.55), "zorder": 3}
            arrow(ax, *ends, mutation_scale=head * 0.7, color=_BETA_COLOR, **style, **shrink)

    # The decoded path, from the stem (column 0, level 0) through layers 1..L.
    levels = (0, *path)
    for x in range(num_layers):
        ends = ((x, -levels[x]), (x + 1, -levels[x + 1]))
        arrow(ax, *ends, mutation_scale=head, lw=lw_path, color=_PATH_COLOR, zorder=4, **shrink)
    on_path = {"s": (diam * 1.1) ** 2, "c": _PATH_COLOR, "edgecolors": "white", "linewidths": 1.2}
    ax.scatter(range(num_layers + 1), [-lv for lv in levels], zorder=5, **on_path)

    # The ASPP head reads the last layer's output (paper Fig. 1, right end).
    ax.annotate(
        "ASPP",
        xy=(num_layers, -path[-1]),
        xytext=(38, 0),
        textcoords="offset points",
        ha="left",
        va="center",
        fontsize=11,
        fontweight="bold",
        bbox={"boxstyle": "round,pad=0.35", "fc": _ASPP_COLOR, "ec": "#a35a12", "lw": 1.0},
        arrowprops={"arrowstyle": "<|-", "color": _PATH_COLOR, "lw": lw_path, **shrink}
        | {"mutation_scale": head, "shrinkA": 0},
        zorder=6,
    )

    ax.set_yticks([-i for i in range(rows)], [str(4 * 2**i) for i in range(rows)])
    step = max(1, int(np.ceil(num_layers / 24)))  # keep at most ~25 x tick labels
    ticks = [0, *[x for x in range(1, num_layers + 1) if x % step == 0]]
    ax.set_xticks(ticks, ["stem", *[str(x) for x in ticks[1:]]])
    ax.tick_params(labelsize=11, length=0)
    ax.set_xlabel("layer", fontsize=12)
    ax.set_ylabel("downsample rate", fontsize=12)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)

    grid_label = "possible transition" + ("" if probs is None else " (darker = higher beta)")
    handles = [
        Line2D([], [], color=_PATH_COLOR, lw=2.5, marker="o", ms=7, label="decoded path"),
        Line2D([], [], color="#a0a0a0", lw=1.5, label=grid_label),
    ]
    if probs is not None:
        handles.append(
            Line2D([], [], color=_BETA_COLOR, lw=1.5, ls=(0, (4, 2)), label="max-beta edge")
        )
    # One row between title and plot: inside, it would cover nodes for some L and levels.
    ax.legend(
        handles=handles,
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        ncol=len(handles),
        fontsize=10,
        frameon=False,
        borderaxespad=0.2,
    )
    if title is None:
        title = f"Auto-DeepLab network-level architecture (L={num_layers})"
    fig.suptitle(title, fontsize=13, y=0.97)
    return save_figure(fig, out_path)


def render_genotype(
    genotype: Genotype,
    out_dir: str | os.PathLike[str],
    *,
    beta: np.ndarray | None = None,
    prefix: str = "",
) -> tuple[Path, Path]:
    """Write ``{prefix}path.png`` and ``{prefix}cell.png`` into ``out_dir``; return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # beta's shape (L, num_levels, 3) says how many levels the search used.
    num_levels = 4 if beta is None or np.ndim(beta) != 3 else int(np.shape(beta)[1])
    return (
        render_path(genotype, out / f"{prefix}path.png", num_levels=num_levels, beta=beta),
        render_cell(genotype, out / f"{prefix}cell.png"),
    )

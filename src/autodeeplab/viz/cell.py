"""The cell of a :class:`~autodeeplab.genotype.Genotype` drawn as a DAG (paper Fig. 3 bottom).

H^{l-2}, H^{l-1} -> B "+" blocks -> concat -> H^l, one labelled arrow per branch, coloured by
op. There is no graphviz: the layout below is a small greedy search over edge curvatures
that keeps edges off nodes and labels off each other.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, FancyBboxPatch
from matplotlib.path import Path as MplPath

from autodeeplab.genotype import Genotype
from autodeeplab.ops import OPS, PRIMITIVES
from autodeeplab.viz._figure import DPI, arrow, new_figure, save_figure

__all__ = ["render_cell"]

#: Figure size in inches at :data:`DPI`: 1200 x 600 px.
CELL_FIGSIZE = (12.0, 6.0)

# Short labels in the paper's vocabulary (Fig. 3 writes "atr" for the dilated convs).
_OP_LABELS = {
    "none": "zero",
    "max_pool_3x3": "max pool 3x3",
    "avg_pool_3x3": "avg pool 3x3",
    "skip_connect": "skip",
    "sep_conv_3x3": "sep 3x3",
    "sep_conv_5x5": "sep 5x5",
    "dil_conv_3x3": "atr 3x3",
    "dil_conv_5x5": "atr 5x5",
}
_OP_COLORS = {
    "none": "#7f7f7f",
    "max_pool_3x3": "#bcbd22",
    "avg_pool_3x3": "#e377c2",
    "skip_connect": "#8c564b",
    "sep_conv_3x3": "#1f77b4",
    "sep_conv_5x5": "#2ca02c",
    "dil_conv_3x3": "#d62728",
    "dil_conv_5x5": "#9467bd",
}

# For ops users add to OPS: assigned in OPS order so a name always gets the same colour.
_EXTRA_COLORS = ("#17becf", "#ff7f0e", "#393b79", "#637939", "#843c39", "#7b4173")


def _op_label(op: str) -> str:
    return _OP_LABELS.get(op, op.replace("_", " "))


def _op_color(op: str) -> str:
    if op in _OP_COLORS:
        return _OP_COLORS[op]
    extra = [name for name in OPS if name not in _OP_COLORS]
    idx = extra.index(op) if op in extra else len(extra)
    return _EXTRA_COLORS[idx % len(_EXTRA_COLORS)]


_CELL_DX = 1.7  # distance between consecutive blocks
_BLOCK_R = 0.3  # block node radius
_BOX_W, _BOX_H = 1.05, 0.56  # input and concat boxes
_RADS = (0.0, 0.2, -0.2, 0.35, -0.35, 0.5, -0.5, 0.65, -0.65)
_LABEL_TS = (0.5, 0.4, 0.6, 0.3, 0.7, 0.22, 0.78)
_SAMPLES = np.linspace(0.0, 1.0, 81)
_LABEL_STYLE = {"ha": "center", "va": "center", "fontsize": 10, "fontweight": "bold"}


class _Node:
    """A node of the cell drawing: a circle (block) or a box (inputs, concat)."""

    def __init__(self, x: float, y: float, *, circle: bool) -> None:
        self.x, self.y, self.circle = x, y, circle

    def inside(self, pts: np.ndarray, margin: float) -> np.ndarray:
        """Which of the points (N, 2) lie within the node grown by ``margin``."""
        dx, dy = pts[:, 0] - self.x, pts[:, 1] - self.y
        if self.circle:
            return np.hypot(dx, dy) < _BLOCK_R + margin
        return (np.abs(dx) < _BOX_W / 2 + margin) & (np.abs(dy) < _BOX_H / 2 + margin)

    def box(self, margin: float = 0.0) -> tuple[float, float, float, float]:
        """Bounding box (x0, y0, x1, y1)."""
        hw = (_BLOCK_R if self.circle else _BOX_W / 2) + margin
        hh = (_BLOCK_R if self.circle else _BOX_H / 2) + margin
        return (self.x - hw, self.y - hh, self.x + hw, self.y + hh)


def _bezier(p0: np.ndarray, c: np.ndarray, p2: np.ndarray, t: np.ndarray) -> np.ndarray:
    t = t[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * c + t**2 * p2


def _control(p0: np.ndarray, p2: np.ndarray, rad: float) -> np.ndarray:
    """Control point of a quadratic curve bowed by ``rad`` x its length (left of travel)."""
    v = p2 - p0
    return (p0 + p2) / 2 + rad * np.array([-v[1], v[0]])


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _in_boxes(pts: np.ndarray, boxes: list[tuple[float, ...]]) -> int:
    """How many of ``boxes`` the points (N, 2) enter."""
    x, y = pts[:, 0], pts[:, 1]
    return sum(bool(np.any((x > b[0]) & (x < b[2]) & (y > b[1]) & (y < b[3]))) for b in boxes)


def _outside(pts: np.ndarray, limits: tuple[float, ...]) -> bool:
    """Whether any of the points (N, 2) leaves the drawing area (x0, y0, x1, y1)."""
    x, y = pts[:, 0], pts[:, 1]
    return bool(np.any((x < limits[0]) | (x > limits[2]) | (y < limits[1]) | (y > limits[3])))


class _CellLayout:
    """Greedy placement of curved edges and their labels; deterministic for a given cell."""

    def __init__(self, nodes: list[_Node], limits: tuple[float, float, float, float]) -> None:
        self.nodes = nodes
        self.limits = limits
        self.labels: list[tuple[float, float, float, float]] = []
        self.curves: list[np.ndarray] = []
        self.used: dict[tuple[int, int], list[float]] = {}

    def place(
        self, src: int, dst: int, label_size: tuple[float, float] | None
    ) -> tuple[float, np.ndarray | None]:
        """Pick the curvature (and label point) with the fewest collisions; record it."""
        p0 = np.array([self.nodes[src].x, self.nodes[src].y])
        p2 = np.array([self.nodes[dst].x, self.nodes[dst].y])
        others = [n for k, n in enumerate(self.nodes) if k not in (src, dst)]
        best_score, best_rad, best_pos, best_box = np.inf, 0.0, None, None
        best_pts = p0[None, :]
        for rad in _RADS:
            c = _control(p0, p2, rad)
            pts = _bezier(p0, c, p2, _SAMPLES)
            score = 2.0 * abs(rad)
            score += 100.0 * sum(bool(n.inside(pts, 0.12).any()) for n in others)
            score += 6.0 * _in_boxes(pts, self.labels)
            score += 50.0 * _outside(pts, self.limits)
            # Two edges between the same pair of nodes must not coincide.
            score += 40.0 * sum(abs(rad - r) < 0.12 for r in self.used.get((src, dst), []))
            for t in _LABEL_TS if label_size is not None else (None,):
                s, box, pos = score, None, None
                if t is not None and label_size is not None:
                    pos = _bezier(p0, c, p2, np.array([t]))[0]
                    w, h = label_size
                    box = (pos[0] - w / 2, pos[1] - h / 2, pos[0] + w / 2, pos[1] + h / 2)
                    s += 20.0 * sum(_overlap(box, b) for b in self.labels)
                    s += 15.0 * sum(_overlap(box, n.box(0.04)) for n in self.nodes)
                    s += 4.0 * sum(_in_boxes(curve, [box]) for curve in self.curves)
                    s += 50.0 * _outside(np.reshape(box, (2, 2)), self.limits)
                    s += 1.5 * abs(t - 0.5)
                if s < best_score - 1e-9:  # strict: ties keep the earlier, simpler candidate
                    best_score, best_rad, best_pos, best_box, best_pts = s, rad, pos, box, pts
        if best_box is not None:
            self.labels.append(best_box)
        self.curves.append(best_pts)
        self.used.setdefault((src, dst), []).append(best_rad)
        return best_rad, best_pos


def _trimmed_curve(src: _Node, dst: _Node, rad: float, gap: float) -> MplPath:
    """The quadratic curve src -> dst, cut where it leaves src and enters dst (de Casteljau)."""
    p0, p2 = np.array([src.x, src.y]), np.array([dst.x, dst.y])
    c = _control(p0, p2, rad)
    ts = np.linspace(0.0, 1.0, 401)
    pts = _bezier(p0, c, p2, ts)
    out_src = np.nonzero(~src.inside(pts, gap))[0]
    out_dst = np.nonzero(~dst.inside(pts, gap))[0]
    a = ts[out_src[0]] if len(out_src) else 0.0
    b = ts[out_dst[-1]] if len(out_dst) else 1.0
    if b <= a:  # nodes overlap; draw the whole curve rather than nothing
        a, b = 0.0, 1.0
    # The sub-curve on [a, b] has end points B(a), B(b) and control point blossom(a, b).
    q0, q2 = _bezier(p0, c, p2, np.array([a, b]))
    q1 = (1 - a) * (1 - b) * p0 + (a * (1 - b) + b * (1 - a)) * c + a * b * p2
    return MplPath([q0, q1, q2], [MplPath.MOVETO, MplPath.CURVE3, MplPath.CURVE3])


def render_cell(
    genotype: Genotype, out_path: str | os.PathLike[str], *, title: str | None = None
) -> Path:
    """Draw the cell as a DAG (paper Fig. 3 bottom) and write it as PNG."""
    cell = genotype.cell
    num_blocks = len(cell)
    fig = new_figure(CELL_FIGSIZE)
    ax_rect = (0.01, 0.12, 0.98, 0.78)
    ax = fig.add_axes(ax_rect)
    ax.set_axis_off()

    # Node k uses the genotype's input numbering: 0 = H^{l-2}, 1 = H^{l-1}, k >= 2 = block k-1.
    # Blocks zigzag left to right so edges that skip a block can bow around it.
    # The first gap is wider: the input boxes are wider than the block circles.
    nodes = [_Node(0.0, 1.7, circle=False), _Node(0.0, -1.7, circle=False)]
    for j in range(1, num_blocks + 1):
        y = 0.0 if num_blocks == 1 else (0.75 if j % 2 else -0.75)
        nodes.append(_Node(0.4 + j * _CELL_DX, y, circle=True))
    concat = _Node(0.4 + (num_blocks + 1) * _CELL_DX, 0.0, circle=False)
    nodes.append(concat)
    x_out = concat.x + _BOX_W / 2 + 0.9
    x0, x1 = -_BOX_W / 2 - 0.25, x_out + 0.45
    # Use all the height the width leaves (aspect is equal), so wide cells get room to bow.
    fig_w, fig_h = CELL_FIGSIZE
    half_h = max(2.6, 0.5 * (x1 - x0) * (fig_h * ax_rect[3]) / (fig_w * ax_rect[2]))
    limits = (x0, -half_h, x1, half_h)
    ax.set_xlim(x0, x1)
    ax.set_ylim(-half_h, half_h)
    ax.set_aspect("equal", adjustable="box")
    ax.apply_aspect()  # fixes transData now, so text sizes convert to data units exactly

    renderer = fig.canvas.get_renderer()
    px_per_unit = ax.transData.transform((1.0, 0.0))[0] - ax.transData.transform((0.0, 0.0))[0]
    font = FontProperties(size=10, weight="bold")  # as drawn: edge labels are bold

    def text_size(s: str, pad_pt: float) -> tuple[float, float]:
        w, h, _ = renderer.get_text_width_height_descent(s, font, ismath=False)
        pad = pad_pt * DPI / 72
        return ((w + 2 * pad) / px_per_unit, (h + 2 * pad) / px_per_unit)

    layout = _CellLayout(nodes, limits)
    # Block captions sit outside the zigzag; they are obstacles for edge labels too.
    for j in range(1, num_blocks + 1):
        node = nodes[j + 1]
        w, h = text_size(f"block {j}", 1.0)
        sign = 1.0 if node.y >= 0 else -1.0
        cy = node.y + sign * (_BLOCK_R + 0.08 + h / 2)
        layout.labels.append((node.x - w / 2, cy - h / 2, node.x + w / 2, cy + h / 2))
        ax.text(node.x, cy, f"block {j}", ha="center", va="center", fontsize=10, color="#333")

    # Op branches first (they carry labels), then the unlabelled block -> concat edges.
    ops_seen: list[str] = []
    for j, block in enumerate(cell, start=1):
        for op, inp in block:
            if op not in ops_seen:
                ops_seen.append(op)
            label = _op_label(op)
            rad, pos = layout.place(inp, j + 1, text_size(label, 4.0))
            color = _op_color(op)
            curve = _trimmed_curve(nodes[inp], nodes[j + 1], rad, 0.06)
            arrow(ax, path=curve, mutation_scale=14, lw=1.8, color=color, zorder=2)
            if pos is not None:
                frame = {"boxstyle": "round,pad=0.25", "fc": "white", "ec": color, "lw": 0.9}
                ax.text(*pos, label, color=color, bbox=frame, zorder=5, **_LABEL_STYLE)
    for j in range(1, num_blocks + 1):
        rad, _ = layout.place(j + 1, len(nodes) - 1, None)
        curve = _trimmed_curve(nodes[j + 1], concat, rad, 0.06)
        arrow(ax, path=curve, mutation_scale=11, lw=1.1, color="#9a9a9a", zorder=1)

    def box(node: _Node, text: str, fc: str, ec: str) -> None:
        corner = (node.x - _BOX_W / 2 + 0.06, node.y - _BOX_H / 2 + 0.06)
        shape = {"boxstyle": "round,pad=0.06", "fc": fc, "ec": ec, "lw": 1.4, "zorder": 4}
        ax.add_patch(FancyBboxPatch(corner, _BOX_W - 0.12, _BOX_H - 0.12, **shape))
        ax.text(node.x, node.y, text, ha="center", va="center", fontsize=13, zorder=6)

    box(nodes[0], r"$H^{l-2}$", "#dbe8f6", "#4a78a8")
    box(nodes[1], r"$H^{l-1}$", "#dbe8f6", "#4a78a8")
    box(concat, "concat", "#fde3c8", "#c0712a")
    for node in nodes[2:-1]:
        ax.add_patch(Circle((node.x, node.y), _BLOCK_R, fc="#f4f4f4", ec="#444", lw=1.4, zorder=4))
        ax.text(node.x, node.y, "+", ha="center", va="center", fontsize=16, zorder=6)
    ends = ((concat.x + _BOX_W / 2 + 0.02, 0.0), (x_out - 0.3, 0.0))
    arrow(ax, *ends, mutation_scale=14, lw=1.8, color="#444", zorder=2)
    ax.text(x_out - 0.25, 0.0, r"$H^{l}$", ha="left", va="center", fontsize=14)

    # Legend in PRIMITIVES order (then any user op), naming the DARTS string behind each label.
    order = [op for op in PRIMITIVES if op in ops_seen] + [
        op for op in ops_seen if op not in PRIMITIVES
    ]
    handles = [
        Line2D([], [], color=_op_color(op), lw=2.5, label=f"{_op_label(op)}  ({op})")
        for op in order
    ]
    below = {"loc": "lower center", "bbox_to_anchor": (0.5, 0.01), "frameon": False}
    fig.legend(handles=handles, ncol=min(len(handles), 4), fontsize=10, **below)
    if title is None:
        title = f"Auto-DeepLab cell (B={num_blocks})"
    fig.suptitle(title, fontsize=13, y=0.96)
    return save_figure(fig, out_path)

"""How every figure is made and written: a headless Agg ``Figure``, one DPI, atomic PNG files.

Only ``matplotlib.figure.Figure`` with the Agg canvas is used, never pyplot, so drawing keeps
no global state and runs headless, in threads or worker processes. A PNG is rendered in
memory and then written with :func:`~autodeeplab.checkpoint.atomic_write` (temp file +
rename), so a killed run never leaves half a file and a failed render leaves none.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

from autodeeplab.checkpoint import atomic_write

__all__ = ["DPI", "arrow", "new_figure", "save_figure", "write_png"]

Point = tuple[float, float]

#: Dots per inch of every figure: a figure of W x H inches is 100 W x 100 H pixels.
DPI = 100


def new_figure(figsize: tuple[float, float], **kwargs: Any) -> Figure:
    """An empty figure of ``figsize`` inches at :data:`DPI` on its own Agg canvas."""
    fig = Figure(figsize=figsize, dpi=DPI, **kwargs)
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas; no pyplot, no global backend
    return fig


def write_png(data: bytes, path: str | os.PathLike[str]) -> Path:
    """Write encoded PNG bytes to ``path`` atomically; return the path."""
    atomic_write(path, lambda f: f.write(data))
    return Path(path)


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Render ``fig`` as PNG and write it to ``path`` atomically; return the path."""
    buffer = io.BytesIO()
    # No 'Software' key: the bytes then depend only on the drawing.
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return write_png(buffer.getvalue(), path)


def arrow(ax: Axes, a: Point | None = None, b: Point | None = None, **style: Any) -> None:
    """Add a filled-head arrow from ``a`` to ``b`` (or along ``path=``)."""
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", **style))

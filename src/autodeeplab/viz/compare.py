"""The figure of ``autodeeplab compare``: mIoU against Multi-Adds, searched vs random."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from autodeeplab.viz._figure import new_figure, save_figure

__all__ = ["plot_compare"]

#: marker, colour and legend label of each kind of network
_STYLE = {
    "random": ("o", "#9e9e9e", "random"),
    "searched": ("*", "#d62728", "searched"),
    "handmade": ("s", "#1f77b4", "hand-made path"),
    "paper": ("D", "#2ca02c", "paper genotype"),
}


def plot_compare(
    results: list[dict[str, Any]], summary: dict[str, Any], path: str | os.PathLike[str]
) -> Path:
    """mIoU against Multi-Adds: the searched networks, the random cloud, the references."""
    fig = new_figure((6.4, 4.4))
    ax = fig.add_subplot(1, 1, 1)
    for kind, (marker, colour, label) in _STYLE.items():
        pts = [(r["madds"] / 1e9, 100 * r["miou"]) for r in results if r["kind"] == kind]
        if pts:
            xs, ys = zip(*pts, strict=True)
            size = 160 if kind == "searched" else 50
            ax.scatter(xs, ys, marker=marker, c=colour, s=size, label=label, zorder=3)
    if summary.get("random_mean") is not None:
        mean, std = 100 * summary["random_mean"], 100 * (summary.get("random_std") or 0.0)
        ax.axhline(mean, color="#9e9e9e", lw=1, ls="--", label="random mean")
        ax.axhspan(mean - std, mean + std, color="#9e9e9e", alpha=0.15, label="random +- 1 std")
    ax.set_xlabel("Multi-Adds (G)")
    ax.set_ylabel(f"{summary['split']} mIoU (%)")
    ax.set_title("Searched network against random ones")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return save_figure(fig, path)

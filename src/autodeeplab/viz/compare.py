"""The figure of ``autodeeplab compare``: mIoU against Multi-Adds, searched vs random; and,
where the networks were scored on the supernet, retrained mIoU against that score."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes

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
    results: list[dict[str, Any]],
    summary: dict[str, Any],
    path: str | os.PathLike[str],
    ranking: dict[str, Any] | None = None,
) -> Path:
    """mIoU against Multi-Adds (the searched networks, the random cloud, the references);
    beside it, with ``ranking``'s scores, retrained mIoU against the supernet's score."""
    networks = (ranking or {}).get("networks", [])
    # A genotype whose every run collapsed has no mIoU to plot.
    scored = [g for g in networks if g["score_val_ce"] is not None and g["miou"] is not None]
    fig = new_figure((12.0, 4.4) if scored else (6.4, 4.4))
    ax = fig.add_subplot(1, 2 if scored else 1, 1)
    for kind, (marker, colour, label) in _STYLE.items():
        pts = [(r["madds"] / 1e9, 100 * r["miou"]) for r in results if r["kind"] == kind]
        if pts:
            xs, ys = zip(*pts, strict=True)
            size = 160 if kind == "searched" else 50
            ax.scatter(xs, ys, marker=marker, c=colour, s=size, label=label, zorder=3)
    collapsed = {c["name"] for c in (ranking or {}).get("collapsed", [])}
    pts = [(r["madds"] / 1e9, 100 * r["miou"]) for r in results if r["name"] in collapsed]
    if pts:
        xs, ys = zip(*pts, strict=True)
        ax.scatter(xs, ys, marker="x", c="black", s=70, label="collapsed (not ranked)", zorder=4)
    if summary.get("random_mean") is not None:
        mean, std = 100 * summary["random_mean"], 100 * (summary.get("random_std") or 0.0)
        ax.axhline(mean, color="#9e9e9e", lw=1, ls="--", label="random mean")
        ax.axhspan(mean - std, mean + std, color="#9e9e9e", alpha=0.15, label="random +- 1 std")
    ax.set_xlabel("Multi-Adds (G)")
    ax.set_ylabel(f"{summary['split']} mIoU (%)")
    ax.set_title("Searched network against random ones")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    if scored and ranking is not None:
        _plot_ranking(fig.add_subplot(1, 2, 2), scored, ranking)
    fig.tight_layout()
    return save_figure(fig, path)


def _plot_ranking(ax: Axes, scored: list[dict[str, Any]], ranking: dict[str, Any]) -> None:
    """Retrained mIoU (mean over seeds) against the supernet's score, -val CE."""
    for kind, (marker, colour, label) in _STYLE.items():
        pts = [(-g["score_val_ce"], 100 * g["miou"]) for g in scored if g["kind"] == kind]
        if pts:
            xs, ys = zip(*pts, strict=True)
            size = 160 if kind == "searched" else 50
            ax.scatter(xs, ys, marker=marker, c=colour, s=size, label=label, zorder=3)
    a = ranking["agreement"].get(f"all/val_ce/{ranking['split']}", {})
    tau = a.get("kendall_tau")
    ci = a.get("kendall_ci")
    title = "Supernet score against retrained mIoU"
    if tau is not None:
        title += f"\nKendall tau {tau:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")
        title += f", n = {a['n']}"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("supernet score: -val CE (higher is better)")
    ax.set_ylabel(f"retrained {ranking['split']} mIoU (%), mean over seeds")
    ax.grid(alpha=0.3)

"""What the search learnt, epoch by epoch: the search report's dynamics figure.

Four panels from the search log's diagnostic fields (:mod:`autodeeplab.space.diagnostics`):
the mean entropy of alpha (per edge) and beta (per node); how far alpha and beta moved, in
logits, since the architecture updates began; the decoded path's margin over its runner-up
against the warning threshold; and the share of parameter-free ops in the decoded cell,
with the epochs whose genotype changed marked.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from matplotlib.ticker import MaxNLocator

from autodeeplab.viz._figure import new_figure, save_figure

__all__ = ["plot_search_dynamics"]


def _series(records: list[dict[str, Any]], key: str) -> list[float]:
    """``key`` of every record as floats (nan where absent)."""
    out = []
    for r in records:
        v = r.get(key)
        out.append(float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan)
    return out


def plot_search_dynamics(
    records: list[dict[str, Any]], threshold: float | None, path: str | os.PathLike[str]
) -> Path:
    """Draw the four dynamics panels of ``records`` (search-log epochs) to ``path``."""
    epochs = [int(r["epoch"]) for r in records]
    fig = new_figure((11.0, 6.4))
    (ent, shift), (margin, share) = fig.subplots(2, 2)
    style = {"marker": "o", "ms": 4}
    ent.plot(epochs, _series(records, "alpha_entropy_mean"), label="alpha (per edge)", **style)
    ent.plot(epochs, _series(records, "beta_entropy_mean"), label="beta (per node)", **style)
    ent.set(title="Mean entropy (nats; falls as the search commits)", xlabel="epoch")
    for key, label in (
        ("alpha_shift_max", "alpha, largest"),
        ("alpha_shift_mean", "alpha, mean"),
        ("beta_shift_max", "beta, largest"),
        ("beta_shift_mean", "beta, mean"),
    ):
        shift.plot(epochs, _series(records, key), label=label, **style)
    shift.set(title="Logit movement since the updates began", xlabel="epoch")
    margin.plot(epochs, _series(records, "path_margin"), color="#1f5fa8", label="margin", **style)
    if threshold is not None:
        margin.axhline(threshold, color="#d62728", ls="--", lw=1, label="warning threshold")
    margin.set(title="Decoded path: margin over the runner-up (nats)", xlabel="epoch")
    share.plot(
        epochs,
        [100 * v for v in _series(records, "param_free_share")],
        color="#7f7f7f",
        label="parameter-free branches",
        **style,
    )
    changed = [e for e, r in zip(epochs, records, strict=True) if r.get("genotype_changed")]
    if changed:
        share.scatter(changed, [-4] * len(changed), marker="^", color="#d62728", zorder=3,
                      label="genotype changed")  # fmt: skip
    share.set(title="Decoded cell: parameter-free branches (%)", xlabel="epoch", ylim=(-8, 104))
    for ax in (ent, shift, margin, share):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if epochs:
            ax.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)
    fig.tight_layout()
    return save_figure(fig, path)

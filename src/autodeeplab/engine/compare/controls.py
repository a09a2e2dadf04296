"""The ranking's controls: what ranks the random networks as well without a trained supernet.

A supernet's Kendall tau means little on its own: on a short retraining schedule the
retrained mIoU follows a network's size and structure, and a score can read those without
having learnt anything. So every ranking is set beside three controls, measured on the same
random genotypes against the same retrained mIoU:

- ``untrained``: the same supernet freshly initialised (from the comparison's seed), scored
  the same way (-val CE after BatchNorm recalibration; ``autodeeplab score --untrained``):
  what the score reads from a genotype's structure alone;
- ``parameters``: the retrained network's parameter count, a size prior. Its sign is not
  known beforehand (a short schedule favours small networks, a long one large ones), so the
  verdict gives it its better sign, the control's best case;
- ``resolution``: the path's mean level (0 = stride 4), a resolution prior. On MSRC-21 at
  crop 96 and 600 iterations it ranked 20 random networks at -0.51 (finer is better),
  above five of six trained supernets; its sign is left open as the size prior's is.

Training the supernet is worth something for ranking only where the trained score's tau
exceeds every control's.
"""

from __future__ import annotations

from typing import Any

from autodeeplab.engine.compare.ranking import Bootstrap, rank_agreement

__all__ = ["CONTROLS", "measure_controls"]

#: Each control: (name, key in a ranking row, sign that makes higher the claimed better, label).
CONTROLS = (
    ("untrained", "control_val_ce", -1.0, "untrained supernet, -val CE"),
    ("parameters", "parameters", 1.0, "parameter count (more is higher)"),
    ("resolution", "path_level", 1.0, "path's mean level, 0 = stride 4 (coarser is higher)"),
)


def measure_controls(
    groups: list[dict[str, Any]],
    split: str | None,
    trained: dict[str, Any],
    *,
    seed: int = 0,
) -> dict[str, Any]:
    """Each control's agreement with the retrained val and ``split`` mIoU, and the verdict.

    ``groups``: the ranking's rows (one per genotype, with ``kind``, ``miou``, ``val_miou``,
    ``score_val_ce``, ``control_val_ce``, ``parameters`` and ``path_level``); ``trained``:
    the trained score's agreement with the ``split`` mIoU over the random genotypes, as the
    ranking measured it. The controls are measured on the same genotypes: the random ones that have
    a trained score and a retraining that did not collapse.
    """
    rows = [
        g
        for g in groups
        if g["kind"] == "random" and g["miou"] is not None and g["score_val_ce"] is not None
    ]
    agreement: dict[str, Any] = {}
    for name, key, sign, _ in CONTROLS:
        usable = [g for g in rows if g.get(key) is not None]
        for target in ("val_miou", "miou"):
            agreement[f"{name}/{'val' if target == 'val_miou' else split}"] = rank_agreement(
                [sign * g[key] for g in usable], [g[target] for g in usable], Bootstrap(seed)
            )
    return {"agreement": agreement, "verdict": _verdict(trained, agreement, split)}


def _verdict(
    trained: dict[str, Any], agreement: dict[str, Any], split: str | None
) -> dict[str, Any]:
    """Whether the trained supernet's tau against ``split`` mIoU beats every control's."""
    tau = trained["kendall_tau"]
    untrained = agreement[f"untrained/{split}"]["kendall_tau"]
    size = agreement[f"parameters/{split}"]["kendall_tau"]
    resolution = agreement[f"resolution/{split}"]["kendall_tau"]
    # The structural priors with their better sign: each control's best case.
    priors = [abs(t) for t in (size, resolution) if t is not None]
    best = max([t for t in (untrained, *priors) if t is not None], default=None)
    return {
        "trained_tau": tau,
        "untrained_tau": untrained,
        "parameters_tau": size,
        "resolution_tau": resolution,
        # What training the supernet adds to the ranking of a freshly initialised one.
        "training_adds": None if tau is None or untrained is None else tau - untrained,
        "beats_controls": None if tau is None or best is None else tau > best,
    }

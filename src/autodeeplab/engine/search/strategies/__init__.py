"""Search strategies by name (``search.strategy``): how w and alpha/beta are updated.

The interface is :class:`~autodeeplab.engine.search.strategies.base.SearchStrategy`. To add one,
write ``engine/search/strategies/<name>.py`` with a class built like
:class:`~autodeeplab.engine.search.strategies.darts.FirstOrderDarts` and add one line below.
"""

from __future__ import annotations

from autodeeplab.config import SearchConfig
from autodeeplab.engine.search.strategies.base import (
    SearchEnd,
    SearchStrategy,
    StepResult,
    StrategyContext,
    StrategyFactory,
)
from autodeeplab.engine.search.strategies.darts import FirstOrderDarts
from autodeeplab.engine.search.strategies.spos import SinglePathOneShot
from autodeeplab.space.memory import MemoryEstimate

__all__ = [
    "STRATEGIES",
    "SearchEnd",
    "SearchStrategy",
    "StepResult",
    "StrategyContext",
    "check_strategy",
    "memory_estimate",
]

#: ``search.strategy`` -> the strategy's constructor.
STRATEGIES: dict[str, StrategyFactory] = {
    "darts": FirstOrderDarts,  # first-order bi-level DARTS (the paper's)
    "spos": SinglePathOneShot,  # uniform single-path one-shot, evolutionary decode (SPOS)
}


def check_strategy(name: str) -> StrategyFactory:
    """The constructor ``search.strategy`` names; ValueError listing the choices otherwise."""
    if name not in STRATEGIES:
        raise ValueError(
            f"search.strategy={name!r} is not a search strategy; use one of "
            f"{', '.join(sorted(STRATEGIES))}"
        )
    return STRATEGIES[name]


def memory_estimate(
    cfg: SearchConfig, num_classes: int, device: str, world_size: int, available: int | None
) -> MemoryEstimate:
    """The estimated peak memory of the search ``cfg`` describes, by its strategy's model.

    ``device``: ``cpu`` or ``cuda``; ``available``: the device's memory in bytes (what
    ``checkpoint_cells=auto`` weighs), None if unknown.
    """
    return check_strategy(cfg.search.strategy).estimate_memory(
        cfg.data.crop,
        cfg.search.batch_size,
        num_classes,
        spec=cfg.model.supernet_spec(),
        checkpoint_cells=cfg.model.checkpoint_cells,
        amp=cfg.search.amp,
        device=device,
        world_size=world_size,
        available=available,
    )

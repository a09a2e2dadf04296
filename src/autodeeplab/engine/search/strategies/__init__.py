"""Search strategies by name (``search.strategy``): how w and alpha/beta are updated.

The interface is :class:`~autodeeplab.engine.search.strategies.base.SearchStrategy`. To add one,
write ``engine/search/strategies/<name>.py`` with a class built like
:class:`~autodeeplab.engine.search.strategies.darts.FirstOrderDarts` and add one line below.
"""

from __future__ import annotations

from autodeeplab.engine.search.strategies.base import SearchStrategy, StepResult, StrategyFactory
from autodeeplab.engine.search.strategies.darts import FirstOrderDarts

__all__ = ["STRATEGIES", "SearchStrategy", "StepResult", "check_strategy"]

#: ``search.strategy`` -> the strategy's constructor.
STRATEGIES: dict[str, StrategyFactory] = {
    "darts": FirstOrderDarts,  # first-order bi-level DARTS (the paper's)
}


def check_strategy(name: str) -> StrategyFactory:
    """The constructor ``search.strategy`` names; ValueError listing the choices otherwise."""
    if name not in STRATEGIES:
        raise ValueError(
            f"search.strategy={name!r} is not a search strategy; use one of "
            f"{', '.join(sorted(STRATEGIES))}"
        )
    return STRATEGIES[name]

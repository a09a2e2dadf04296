"""The cost-aware search's architecture-loss term (beyond the paper): pull the decoded network
toward a Multi-Adds budget, lambda * log(E[Multi-Adds] / target)^2."""

from __future__ import annotations

import torch
from torch import Tensor

from autodeeplab.config import SearchConfig
from autodeeplab.genotype import Genotype
from autodeeplab.model import build_model
from autodeeplab.model.complexity import count_multiply_adds
from autodeeplab.space.cost import CostModel, parse_madds_target
from autodeeplab.space.network import SearchNetwork

__all__ = ["CostTerm"]


class CostTerm:
    """lambda * log(E[Multi-Adds] / target)^2 for the architecture loss (cost-aware search)."""

    def __init__(self, cfg: SearchConfig, model: SearchNetwork, num_classes: int) -> None:
        loop, m = cfg.search, cfg.model
        self.target = parse_madds_target(loop.target_madds)
        self.weight, self.model, self.num_classes = loop.cost_weight, model, num_classes
        self.filter_multiplier = loop.cost_filter_multiplier
        self.cost = CostModel.of_space(m, num_classes, self.filter_multiplier, self.target.size)

    def expected(self) -> Tensor:
        """E[Multi-Adds] of the decoded network under the current alpha and beta."""
        return self.cost.expected(self.model.alpha_weights(), self.model.beta_weights())

    def __call__(self) -> Tensor:
        """The penalty, in fp32, differentiable in alpha and beta."""
        ratio = torch.log(self.expected() / self.target.madds)
        return (self.weight * ratio.square()).to(torch.float32)

    def report(self, genotype: Genotype) -> dict[str, float]:
        """Expected and counted Multi-Adds, for the log."""
        with torch.no_grad():
            expected = float(self.expected())
        net = build_model(genotype, self.num_classes, self.filter_multiplier)
        return {
            "target_madds": self.target.madds,
            "expected_madds": expected,
            "decoded_madds": float(count_multiply_adds(net, self.target.size)),
        }

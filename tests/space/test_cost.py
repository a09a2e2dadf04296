"""The expected Multi-Adds of the cost-aware search against counted Multi-Adds."""

from __future__ import annotations

import random

import pytest
import torch

from autodeeplab.genotype import PAPER_GENOTYPE, Genotype
from autodeeplab.model import build_model
from autodeeplab.model.complexity import count_multiply_adds
from autodeeplab.ops import PRIMITIVES
from autodeeplab.space.cell import edge_index, num_edges
from autodeeplab.space.cost import CostModel, MaddsTarget, parse_madds_target
from autodeeplab.space.network import beta_probabilities


def one_hot_alpha(genotype: Genotype) -> torch.Tensor:
    """alpha weights that decode to ``genotype``: kept edges one-hot on their op, others on none."""
    a = torch.zeros(num_edges(genotype.num_blocks), len(PRIMITIVES), dtype=torch.float64)
    a[:, PRIMITIVES.index("none")] = 1.0
    for block, branches in enumerate(genotype.cell):
        for op, inp in branches:
            row = edge_index(block, inp)
            a[row] = 0.0
            a[row, PRIMITIVES.index(op)] = 1.0
    return a


def random_genotype(rng: random.Random, num_layers: int, num_blocks: int) -> Genotype:
    path, level = [], 0
    for _ in range(num_layers):
        level = min(3, max(0, level + rng.choice((-1, 0, 1))))
        path.append(level)
    cell = []
    for block in range(num_blocks):
        inputs = rng.sample(range(block + 2), 2)
        cell.append(tuple((rng.choice(PRIMITIVES[1:]), j) for j in inputs))
    return Genotype(tuple(cell), tuple(path))


def test_paper_genotype_cost_equals_its_counted_multiply_adds():
    size = (129, 257)
    cost = CostModel(12, 5, PRIMITIVES, 4, 19, 20, size)
    expected = cost.of_path(one_hot_alpha(PAPER_GENOTYPE), PAPER_GENOTYPE.path)
    assert int(expected) == count_multiply_adds(build_model(PAPER_GENOTYPE, 19, 20), size)


@pytest.mark.parametrize("seed", range(5))
def test_one_hot_cost_equals_counted_multiply_adds(seed):
    rng = random.Random(seed)
    genotype = random_genotype(rng, rng.randint(1, 6), rng.randint(1, 4))
    size = (rng.randint(33, 99), rng.randint(33, 99))
    classes, f = rng.randint(2, 9), rng.choice((2, 4))
    cost = CostModel(genotype.num_layers, genotype.num_blocks, PRIMITIVES, 4, classes, f, size)
    expected = cost.of_path(one_hot_alpha(genotype), genotype.path)
    assert int(expected) == count_multiply_adds(build_model(genotype, classes, f), size)


def test_path_without_a_stride4_cell_uses_the_stem_as_low_level_input():
    genotype = Genotype(PAPER_GENOTYPE.cell, (1, 2, 2))
    cost = CostModel(3, 5, PRIMITIVES, 4, 5, 4, (65, 65))
    expected = cost.of_path(one_hot_alpha(genotype), genotype.path)
    assert int(expected) == count_multiply_adds(build_model(genotype, 5, 4), (65, 65))


def test_gradient_reaches_alpha_and_beta():
    torch.manual_seed(0)
    alpha = torch.randn(num_edges(3), len(PRIMITIVES), requires_grad=True)
    beta = torch.randn(4, 4, 3, requires_grad=True)
    cost = CostModel(4, 3, PRIMITIVES, 4, 5, 4, (64, 64))
    expected = cost.expected(torch.softmax(alpha, -1), beta_probabilities(beta, 4))
    expected.backward()
    assert alpha.grad is not None and beta.grad is not None
    assert alpha.grad.abs().sum() > 0 and beta.grad[1:].abs().sum() > 0
    # Raising a costly op's weight everywhere raises the expected cost.
    sep5 = PRIMITIVES.index("dil_conv_5x5")
    assert (alpha.grad[:, sep5] > 0).all()


def test_expected_cost_lies_between_the_cheapest_and_dearest_paths():
    torch.manual_seed(1)
    cost = CostModel(3, 2, PRIMITIVES, 4, 5, 4, (64, 64))
    alpha = torch.softmax(torch.randn(num_edges(2), len(PRIMITIVES)), -1)
    beta = beta_probabilities(torch.randn(3, 4, 3), 4)
    paths = [(a, b, c) for a in (0, 1) for b in range(4) for c in range(4)]
    paths = [p for p in paths if abs(p[1] - p[0]) <= 1 and abs(p[2] - p[1]) <= 1]
    costs = [float(cost.of_path(alpha, p)) for p in paths]
    assert min(costs) <= float(cost.expected(alpha, beta)) <= max(costs)


@pytest.mark.parametrize(
    ("text", "madds", "size"),
    [
        ("50G@1024x2048", 50e9, (1024, 2048)),
        ("333.25B@1025x2049", 333.25e9, (1025, 2049)),
        ("1.5T@512X512", 1.5e12, (512, 512)),
        ("800M @ 64x64", 800e6, (64, 64)),
    ],
)
def test_parse_madds_target(text, madds, size):
    assert parse_madds_target(text) == MaddsTarget(pytest.approx(madds), size)


@pytest.mark.parametrize("text", ["50G", "G@1x1", "50Q@10x10", "0G@10x10", "5G@0x10", ""])
def test_parse_madds_target_rejects_malformed(text):
    with pytest.raises(ValueError, match="expected NUMBER|must be positive"):
        parse_madds_target(text)


@pytest.mark.parametrize("seed", range(3))
def test_of_genotype_with_narrow_heads_equals_counted_multiply_adds(seed):
    # compare prices hundreds of random genotypes of a retrain config with narrow heads.
    rng = random.Random(100 + seed)
    genotype = random_genotype(rng, rng.randint(2, 6), rng.randint(1, 5))
    size, f, classes = (rng.randint(33, 80), rng.randint(33, 80)), 4, 5
    aspp, dec = rng.choice((8, 64)), rng.choice((16, 64))
    cost = CostModel(genotype.num_layers, genotype.num_blocks, PRIMITIVES, 4, classes, f, size,
                     aspp_channels=aspp, decoder_channels=dec)  # fmt: skip
    net = build_model(genotype, classes, f, aspp_channels=aspp, decoder_channels=dec)
    assert cost.of_genotype(genotype) == count_multiply_adds(net, size)

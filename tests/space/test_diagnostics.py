"""The search log's diagnostics: entropies, shifts, the parameter-free share."""

from __future__ import annotations

import math

import pytest
import torch

from autodeeplab.genotype import PAPER_GENOTYPE, Genotype
from autodeeplab.space.diagnostics import (
    PARAMETER_FREE_OPS,
    alpha_entropy,
    beta_entropy,
    logit_shift,
    parameter_free_share,
    search_diagnostics,
)
from autodeeplab.space.network import beta_mask, beta_probabilities


def test_entropies_at_uniform_and_one_hot() -> None:
    uniform = torch.full((20, 8), 1 / 8)
    assert alpha_entropy(uniform) == pytest.approx([math.log(8)] * 20)
    one_hot = torch.eye(8)[[0] * 20]
    assert alpha_entropy(one_hot) == pytest.approx([0.0] * 20)
    b = beta_entropy(beta_probabilities(torch.zeros(3, 4, 3), 4))
    # Layer 0: only the stem (2 edges); layer 1: levels 0 (2 edges) and 1 (3 edges).
    assert b[0][0] == pytest.approx(math.log(2)) and b[0][1:] == [None, None, None]
    assert b[1][:2] == pytest.approx([math.log(2), math.log(3)]) and b[1][2:] == [None, None]
    assert b[2][3] is None and b[2][2] == pytest.approx(math.log(3))


def test_logit_shift_over_the_mask() -> None:
    start = torch.zeros(2, 4, 3)
    now = start.clone()
    now[0, 0, 1] = 0.5
    now[0, 3, 0] = 9.0  # not an edge at layer 0: ignored under the mask
    mask = beta_mask(2, 4)
    biggest, mean = logit_shift(now, start, mask)
    assert biggest == 0.5 and mean == pytest.approx(0.5 / int(mask.sum()))
    assert logit_shift(now, start)[0] == 9.0


def test_parameter_free_share() -> None:
    assert parameter_free_share(PAPER_GENOTYPE) == 0.0
    g = Genotype(((("max_pool_3x3", 0), ("sep_conv_3x3", 1)),), (0,))
    assert parameter_free_share(g) == 0.5


def test_genotype_changed_ignores_the_order_of_a_blocks_branches() -> None:
    # The CPU preset's last epochs reordered [dil5(1), sep3(3)] to [sep3(3), dil5(1)]: the
    # same network (a block sums its branches), which the log had counted as a change.
    a = Genotype(((("dil_conv_5x5", 1), ("sep_conv_3x3", 0)),), (0, 1))
    swapped = Genotype(((("sep_conv_3x3", 0), ("dil_conv_5x5", 1)),), (0, 1))
    other_op = Genotype(((("dil_conv_3x3", 1), ("sep_conv_3x3", 0)),), (0, 1))
    other_path = Genotype(((("dil_conv_5x5", 1), ("sep_conv_3x3", 0)),), (0, 0))
    assert a.same_network(swapped) and a != swapped
    assert not a.same_network(other_op) and not a.same_network(other_path)
    alpha, beta = torch.zeros(2, 8), torch.zeros(2, 2, 3)

    def changed(previous: Genotype, now: Genotype) -> bool:
        probs = beta_probabilities(beta, 2)
        rec = search_diagnostics(
            torch.softmax(alpha, -1), probs, now, 0.0, previous, None, alpha, beta, beta_mask(2, 2)
        )
        return rec["genotype_changed"]

    assert changed(a, swapped) is False
    assert changed(a, other_op) is True and changed(a, other_path) is True


def test_search_diagnostics_record() -> None:
    alpha, beta = torch.zeros(20, 8), torch.zeros(12, 4, 3)
    beta2 = beta.clone()
    beta2[0, 0, 2] = 0.25
    rec = search_diagnostics(
        torch.softmax(alpha, -1),
        beta_probabilities(beta2, 4),
        PAPER_GENOTYPE,
        1.5,
        PAPER_GENOTYPE,
        (alpha, beta),
        alpha,
        beta2,
        beta_mask(12, 4),
    )
    assert rec["path_margin"] == 1.5 and rec["genotype_changed"] is False
    assert rec["alpha_entropy_mean"] == pytest.approx(math.log(8))
    assert rec["beta_shift_max"] == 0.25 and rec["alpha_shift_max"] == 0.0
    first = search_diagnostics(
        torch.softmax(alpha, -1),
        beta_probabilities(beta, 4),
        PAPER_GENOTYPE,
        0.0,
        None,
        None,
        alpha,
        beta,
        beta_mask(12, 4),
    )
    assert first["genotype_changed"] is None and "alpha_shift_max" not in first


def test_parameter_free_ops_are_read_from_the_op_profiles() -> None:
    # The DARTS op set's weightless ops; a new op is classed by its OpSpec.weights.
    assert set(PARAMETER_FREE_OPS) == {"none", "max_pool_3x3", "avg_pool_3x3", "skip_connect"}

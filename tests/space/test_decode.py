"""Tests of decoding: Viterbi against brute force, the DARTS cell rule, decode()."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from autodeeplab.genotype import Genotype
from autodeeplab.ops import PRIMITIVES
from autodeeplab.space.cell import edge_index, num_edges
from autodeeplab.space.decode import (
    PATH_DECODES,
    decode,
    decode_cell,
    path_log_probability,
    path_margin,
    path_score,
    viterbi_path,
)
from autodeeplab.space.network import beta_probabilities

OPS_IDX = {name: k for k, name in enumerate(PRIMITIVES)}


# -- Viterbi ----------------------------------------------------------------------------------


def _log_prob(probs: np.ndarray, path: tuple[int, ...], mode: str = "literal") -> float:
    """Independent scoring: sum of log transition probabilities from the stem (level 0).

    ``relative``: each probability times the number of edges leaving its source node.
    """
    total, prev = 0.0, 0
    for layer, level in enumerate(path):
        if abs(level - prev) > 1:
            return -math.inf
        p = probs[layer, prev, level - prev + 1]
        if p <= 0:
            return -math.inf
        if mode == "relative":
            p *= sum(1 for q in probs[layer, prev] if q > 0)
        total += math.log(p)
        prev = level
    return total


def _all_scored(probs: np.ndarray, mode: str) -> list[tuple[float, tuple[int, ...]]]:
    num_layers, num_levels, _ = probs.shape
    scored = [
        (_log_prob(probs, path, mode), path)
        for path in itertools.product(range(num_levels), repeat=num_layers)
    ]
    return sorted((s for s in scored if s[0] > -math.inf), key=lambda s: -s[0])


def _brute_force(probs: np.ndarray, mode: str = "literal") -> tuple[tuple[int, ...], float]:
    scored = _all_scored(probs, mode)
    best = scored[0][0]
    winners = [path for score, path in scored if score == best]
    assert len(winners) == 1  # continuous random beta: no ties
    return winners[0], best


@pytest.mark.parametrize("mode", PATH_DECODES)
@pytest.mark.parametrize("num_levels", [2, 3, 4])
@pytest.mark.parametrize("num_layers", [1, 2, 3, 4, 5, 6])
def test_viterbi_equals_brute_force(num_layers: int, num_levels: int, mode: str) -> None:
    gen = torch.Generator().manual_seed(100 * num_layers + num_levels)
    for _ in range(25):
        beta = torch.randn(num_layers, num_levels, 3, generator=gen, dtype=torch.float64) * 2
        probs = beta_probabilities(beta, num_levels)
        scored = _all_scored(probs.numpy(), mode)
        expected, best = _brute_force(probs.numpy(), mode)
        path = viterbi_path(probs, mode)
        assert path == expected
        assert len(path) == num_layers and path[0] in (0, 1)
        assert path_score(probs, path, mode) == pytest.approx(best, rel=1e-12, abs=1e-12)
        assert viterbi_path(probs.numpy(), mode) == expected  # numpy input too
        # The margin is the best score minus the runner-up's, over every distinct path.
        runner_up = scored[1][0] if len(scored) > 1 else -math.inf
        assert path_margin(probs, mode) == pytest.approx(best - runner_up, rel=1e-9, abs=1e-12)


def test_relative_decode_has_no_preference_at_uniform_beta() -> None:
    # Every path through the trellis scores the same, so the margin is 0: the decode is a tie
    # that says nothing. The literal reading prefers the border levels by ln(3/2) a layer.
    probs = beta_probabilities(torch.zeros(6, 4, 3, dtype=torch.float64), 4).numpy()
    scores = [s for s, _ in _all_scored(probs, "relative")]
    assert max(scores) == pytest.approx(0.0, abs=1e-12)
    assert min(scores) == pytest.approx(0.0, abs=1e-12)
    assert path_margin(probs, "relative") == pytest.approx(0.0, abs=1e-12)
    literal = _all_scored(probs, "literal")
    all_four = _log_prob(probs, (0,) * 6, "literal")
    assert literal[0][0] == pytest.approx(all_four)  # stride 4 throughout is (one of) the best
    assert all_four - _log_prob(probs, (0, 1, 1, 1, 1, 1)) == pytest.approx(4 * math.log(1.5))


@pytest.mark.parametrize("raise_by", [0.01, 0.1])
def test_relative_decode_recovers_the_paper_path_from_a_small_push(raise_by: float) -> None:
    # The paper's path, its edges raised by a small logit margin over random 1e-3 noise: the
    # relative decode finds it; the literal one (which needs >= 0.435 a layer) returns stride 4.
    paper = (0, 0, 0, 1, 2, 1, 2, 2, 3, 3, 2, 1)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        beta = 1e-3 * torch.randn(12, 4, 3, generator=gen, dtype=torch.float64)
        prev = 0
        for layer, level in enumerate(paper):
            beta[layer, prev, level - prev + 1] += raise_by
            prev = level
        probs = beta_probabilities(beta, 4)
        assert viterbi_path(probs, "relative") == paper
        assert path_margin(probs, "relative") > 0
        assert viterbi_path(probs, "literal") != paper


def test_decode_modes_are_checked() -> None:
    probs = beta_probabilities(torch.zeros(2, 4, 3), 4)
    with pytest.raises(ValueError, match="relative, literal"):
        viterbi_path(probs, "greedy")
    with pytest.raises(ValueError, match="relative, literal"):
        path_margin(probs, "greedy")


def test_path_log_probability_matches_independent_scoring() -> None:
    gen = torch.Generator().manual_seed(7)
    probs = beta_probabilities(torch.randn(5, 4, 3, generator=gen, dtype=torch.float64), 4)
    p = probs.numpy()
    for path in itertools.product(range(4), repeat=5):
        ours, theirs = _log_prob(p, path), path_log_probability(probs, path)
        if math.isinf(ours):
            assert theirs == -math.inf
        else:
            assert theirs == pytest.approx(ours, rel=1e-12)
    assert path_log_probability(probs, (2, 2, 2, 2, 2)) == -math.inf  # jumps from the stem
    assert path_log_probability(probs, (0, 1, 2, 3, 4)) == -math.inf  # level out of range


def test_viterbi_on_hand_made_transitions() -> None:
    # 3 layers, 2 levels; row 0 is the stem (level 0 only).
    b = np.zeros((3, 2, 3))
    b[0, 0] = [0, 0.4, 0.6]  # stem -> 0: 0.4, stem -> 1: 0.6
    b[1, 0] = [0, 0.9, 0.1]
    b[1, 1] = [0.5, 0.5, 0]
    b[2, 0] = [0, 0.9, 0.1]
    b[2, 1] = [0.2, 0.8, 0]
    # Greedy takes stem->1 (0.6), but 0,0,0 has 0.4*0.9*0.9 = 0.324 > 0.6*0.5*0.9 = 0.27.
    assert viterbi_path(b) == (0, 0, 0)
    b[0, 0] = [0, 0.2, 0.8]  # now 1,0,0: 0.8*0.5*0.9 = 0.36 beats 1,1,1: 0.8*0.5*0.8 = 0.32
    assert viterbi_path(b) == (1, 0, 0)


def test_viterbi_last_level_is_free() -> None:
    b = np.zeros((2, 2, 3))
    b[0, 0] = [0, 0.5, 0.5]
    b[1, 0] = [0, 0.1, 0.9]
    b[1, 1] = [0.3, 0.7, 0]
    assert viterbi_path(b) == (0, 1)  # 0.5*0.9 = 0.45 beats 0.5*0.7 = 0.35


def test_viterbi_tie_is_deterministic() -> None:
    probs = beta_probabilities(torch.zeros(4, 4, 3), 4)
    for mode in PATH_DECODES:
        first = viterbi_path(probs, mode)
        assert all(viterbi_path(probs, mode) == first for _ in range(3))
        best = _brute_force_best(probs.numpy(), mode)
        assert _log_prob(probs.numpy(), first, mode) == pytest.approx(best)


def _brute_force_best(probs: np.ndarray, mode: str) -> float:
    num_layers, num_levels, _ = probs.shape
    paths = itertools.product(range(num_levels), repeat=num_layers)
    return max(_log_prob(probs, p, mode) for p in paths)


def test_viterbi_errors() -> None:
    with pytest.raises(ValueError, match=r"shape \(L, num_levels, 3\), got \(4, 3\)"):
        viterbi_path(np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"got \(4, 4, 2\)"):
        viterbi_path(np.ones((4, 4, 2)))
    with pytest.raises(ValueError, match="admit no path"):
        viterbi_path(np.zeros((3, 4, 3)))


# -- cell decoding ----------------------------------------------------------------------------


def _weights(num_blocks: int, fill: float = 0.01) -> np.ndarray:
    return np.full((num_edges(num_blocks), len(PRIMITIVES)), fill)


def test_decode_cell_top2_by_max_non_none_weight_and_argmax_op() -> None:
    w = _weights(2)
    w[:, OPS_IDX["none"]] = 0.9  # 'none' is the largest on every edge
    # Block 0 (rows 0, 1): both states are kept; ops by argmax over non-'none'.
    w[edge_index(0, 0), OPS_IDX["dil_conv_5x5"]] = 0.05
    w[edge_index(0, 1), OPS_IDX["sep_conv_3x3"]] = 0.06
    # Block 1 (rows 2..4): state 2 strongest (sep5 0.3), state 0 second (max pool 0.2),
    # state 1 weakest (0.1) even though its 'none' is the largest weight of all.
    w[edge_index(1, 0), OPS_IDX["max_pool_3x3"]] = 0.2
    w[edge_index(1, 1), OPS_IDX["skip_connect"]] = 0.1
    w[edge_index(1, 1), OPS_IDX["none"]] = 0.99
    w[edge_index(1, 2), OPS_IDX["sep_conv_5x5"]] = 0.3
    cell = decode_cell(w, PRIMITIVES, 2)
    assert cell == (
        (("sep_conv_3x3", 1), ("dil_conv_5x5", 0)),  # strongest first
        (("sep_conv_5x5", 2), ("max_pool_3x3", 0)),
    )


def test_decode_cell_never_picks_none() -> None:
    gen = np.random.default_rng(0)
    for _ in range(20):
        w = gen.random((num_edges(4), len(PRIMITIVES)))
        w[:, 0] = 10.0  # 'none' dominates every edge
        cell = decode_cell(w, PRIMITIVES, 4)
        assert all(op != "none" for block in cell for op, _ in block)
        Genotype(cell=cell, path=(0,))  # a valid decoded cell


def test_decode_cell_with_none_not_first() -> None:
    prims = ("skip_connect", "none", "sep_conv_3x3")
    w = np.array([[0.1, 0.8, 0.1], [0.05, 0.9, 0.05]])  # B=1; 'none' is the max on both
    w[0, 2] = 0.15
    assert decode_cell(w, prims, 1) == ((("sep_conv_3x3", 0), ("skip_connect", 1)),)


def test_decode_cell_ties_are_deterministic() -> None:
    # All equal: the first non-'none' op, and the lower input index first.
    cell = decode_cell(_weights(3, 0.125), PRIMITIVES, 3)
    assert cell == ((("max_pool_3x3", 0), ("max_pool_3x3", 1)),) * 3
    w = _weights(2, 0.0)
    w[edge_index(1, 2), OPS_IDX["sep_conv_3x3"]] = 0.5
    w[edge_index(1, 1), OPS_IDX["dil_conv_3x3"]] = 0.5
    w[edge_index(1, 1), OPS_IDX["avg_pool_3x3"]] = 0.5  # tie within an edge: earlier op
    w[edge_index(1, 0), OPS_IDX["sep_conv_5x5"]] = 0.5
    assert decode_cell(w, PRIMITIVES, 2)[1] == (("sep_conv_5x5", 0), ("avg_pool_3x3", 1))
    assert all(decode_cell(w, PRIMITIVES, 2) == decode_cell(w, PRIMITIVES, 2) for _ in range(3))


def test_decode_cell_accepts_tensors() -> None:
    w = torch.softmax(torch.randn(num_edges(3), 8), dim=-1)
    assert decode_cell(w, PRIMITIVES, 3) == decode_cell(w.numpy(), PRIMITIVES, 3)
    assert decode_cell(w.requires_grad_(), PRIMITIVES, 3) == decode_cell(
        w.detach().numpy(), PRIMITIVES, 3
    )


def test_decode_cell_shape_errors() -> None:
    with pytest.raises(ValueError, match=r"shape \(20, 8\), expected \(14, 8\) for B=4"):
        decode_cell(np.ones((20, 8)), PRIMITIVES, 4)
    with pytest.raises(ValueError, match=r"expected \(20, 8\)"):
        decode_cell(np.ones((20, 7)), PRIMITIVES, 5)
    with pytest.raises(ValueError, match=r"expected \(20, 8\)"):
        decode_cell(np.ones(160), PRIMITIVES, 5)
    with pytest.raises(ValueError, match="only op is 'none'"):
        decode_cell(np.ones((2, 1)), ("none",), 1)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 5).flatmap(
        lambda b: st.tuples(
            st.just(b),
            arrays(
                np.float64,
                (num_edges(b), len(PRIMITIVES)),
                elements=st.floats(0, 1, allow_nan=False, width=32),
            ),
        )
    )
)
def test_decode_cell_equals_reference_rule(case) -> None:
    b, w = case
    cell = decode_cell(w, PRIMITIVES, b)
    assert len(cell) == b
    for block, branches in enumerate(cell):
        strength = {
            s: max(w[edge_index(block, s), 1:]) for s in range(block + 2)
        }  # column 0 is 'none'
        inputs = [inp for _, inp in branches]
        assert len(set(inputs)) == 2  # distinct predecessors
        # Reference: sort by strength (desc), ties to the lower index; keep two.
        expected = sorted(strength, key=lambda s: (-strength[s], s))[:2]
        assert inputs == expected
        for op, inp in branches:
            row = w[edge_index(block, inp)]
            assert op != "none"
            assert op == PRIMITIVES[1 + int(np.argmax(row[1:]))]


# -- decode -----------------------------------------------------------------------------------


def test_decode_returns_a_valid_genotype() -> None:
    gen = torch.Generator().manual_seed(3)
    alpha_w = torch.softmax(torch.randn(num_edges(5), 8, generator=gen), -1)
    beta_w = beta_probabilities(torch.randn(12, 4, 3, generator=gen), 4)
    g = decode(alpha_w, beta_w, PRIMITIVES, 5)
    assert isinstance(g, Genotype)
    assert g.num_blocks == 5 and g.num_layers == 12
    assert g.cell == decode_cell(alpha_w, PRIMITIVES, 5)
    assert g.path == viterbi_path(beta_w)
    assert Genotype.from_json(g.to_json()) == g


def test_network_genotype_agrees_with_decode(make_net) -> None:
    net = make_net(num_layers=5, num_blocks=3, strides=(4, 8, 16))
    with torch.no_grad():
        net.alpha.normal_(0, 2)
        net.beta.normal_(0, 2)
    g = net.genotype()
    expected = decode(net.alpha_weights(), net.beta_weights(), net.primitives, 3)
    assert g == expected
    assert g.num_layers == 5 and g.num_blocks == 3 and max(g.path) <= 2
    probs = net.beta_weights().detach().double().numpy()
    assert g.path == _brute_force(probs, "relative")[0]

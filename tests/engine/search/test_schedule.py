"""The architecture schedule: when alpha/beta start, at what lr, the auxiliary skip."""

from __future__ import annotations

import math

import pytest
import torch

from autodeeplab.config import SearchLoopConfig
from autodeeplab.engine.search.schedule import (
    ARCH_LR_RANGE,
    ArchSchedule,
    auto_arch_lr,
    class_prior_entropy,
    cosine_factor,
)


def _loop(**kw) -> SearchLoopConfig:
    return SearchLoopConfig(**{"epochs": 10, "arch_start_epoch": 2, **kw})


def test_auto_lr_spends_the_budget_within_the_range() -> None:
    assert auto_arch_lr(3.0, 300) == pytest.approx(0.01)  # 300 steps x 0.01 = 3 logits
    assert auto_arch_lr(3.0, 10) == ARCH_LR_RANGE[1]  # capped: Adam would jump about
    assert auto_arch_lr(3.0, 14880) == ARCH_LR_RANGE[0]  # the paper's schedule: its 3e-3
    assert auto_arch_lr(3.0, 0) == ARCH_LR_RANGE[1]


def test_class_prior_entropy() -> None:
    assert class_prior_entropy(torch.zeros(3)) is None
    assert class_prior_entropy(torch.tensor([5.0, 5.0, 0.0])) == pytest.approx(math.log(2))
    p = torch.tensor([0.627, 0.373])
    assert class_prior_entropy(p * 1000) == pytest.approx(float(-(p * p.log()).sum()))


def test_fixed_epoch_start_is_the_paper_rule() -> None:
    s = ArchSchedule(3)
    loop = _loop()
    assert [s.should_start(loop, e) for e in range(4)] == [False, False, True, True]


@pytest.mark.parametrize("threshold", ["prior", 1.0])
def test_loss_condition_waits_for_the_train_loss(threshold) -> None:
    s, loop = ArchSchedule(2), _loop(arch_start_loss=threshold)
    # Two equally frequent classes: the prior's entropy is ln 2 = 0.69.
    s.end_epoch(1.5, torch.tensor([10.0, 10.0]))
    assert not s.should_start(loop, 2)  # epoch 2 may start, but the loss is too high
    s.end_epoch(0.5, torch.tensor([10.0, 10.0]))
    assert s.should_start(loop, 3) and not s.forced
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    alpha, beta = torch.randn(4, 3), torch.randn(2, 2, 3)
    s.start(loop, 3, 20, alpha, beta, optimizer)
    assert s.started_epoch == 3 and s.lr == 3e-3
    assert optimizer.param_groups[0]["lr"] == 3e-3
    torch.testing.assert_close(s.start_alpha, alpha)
    assert s.should_start(loop, 4)


def test_loss_condition_has_a_deadline() -> None:
    s, loop = ArchSchedule(2), _loop(arch_start_loss=0.01)
    s.end_epoch(1.0, torch.tensor([1.0, 1.0]))
    assert s.deadline(loop) == 6  # halfway from epoch 2 to 10
    assert [s.should_start(loop, e) for e in (2, 5)] == [False, False]
    assert s.should_start(loop, 6) and s.forced


def test_auto_lr_is_set_from_the_steps_left() -> None:
    s, loop = ArchSchedule(2), _loop(arch_lr="auto", arch_logit_budget=2.0)
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    s.start(loop, 2, 25, torch.zeros(1), torch.zeros(1), optimizer)
    assert s.lr == pytest.approx(2.0 / (8 * 25))  # 8 epochs of 25 architecture steps
    assert optimizer.param_groups[0]["lr"] == s.lr


def test_cosine_lr_anneals_and_keeps_the_logit_budget() -> None:
    assert cosine_factor(0, 8) == 1.0 and cosine_factor(4, 8) == pytest.approx(0.5)
    s, loop = (
        ArchSchedule(2),
        _loop(arch_lr="auto", arch_logit_budget=2.0, arch_lr_schedule="cosine"),
    )
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    s.start(loop, 2, 25, torch.zeros(1), torch.zeros(1), optimizer)
    lrs = [s.epoch_lr(loop, e) for e in range(2, 10)]
    assert lrs[0] == s.lr == optimizer.param_groups[0]["lr"]
    assert all(a > b > 0 for a, b in zip(lrs, lrs[1:], strict=False))
    assert sum(lr * 25 for lr in lrs) == pytest.approx(2.0, rel=0.01)  # the same 2 logits
    assert s.epoch_lr(loop, 1) is None  # before the updates
    s.set_epoch_lr(loop, 9, optimizer)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(lrs[-1])
    # A fixed lr anneals from itself; the constant schedule (the paper's) does not.
    fixed = _loop(arch_lr=0.01, arch_lr_schedule="cosine")
    s.start(fixed, 2, 25, torch.zeros(1), torch.zeros(1), optimizer)
    assert s.epoch_lr(fixed, 2) == 0.01 and s.epoch_lr(fixed, 6) == pytest.approx(0.005)
    assert s.epoch_lr(_loop(arch_lr=0.01), 9) == 0.01


def test_aux_skip_decays_over_the_architecture_epochs() -> None:
    s, loop = ArchSchedule(2), _loop(aux_skip=1.0)
    assert s.aux_skip(loop, 0) == 1.0  # before the updates: full weight
    s.started_epoch = 2
    weights = [s.aux_skip(loop, e) for e in range(2, 10)]
    assert weights[0] == 1.0 and weights[-1] == pytest.approx(1 / 8)
    assert all(a > b for a, b in zip(weights, weights[1:], strict=False))
    assert ArchSchedule(2).aux_skip(_loop(), 5) == 0.0  # off by default


def test_state_round_trips() -> None:
    s = ArchSchedule(3)
    s.end_epoch(0.7, torch.tensor([1.0, 2.0, 3.0]))
    s.started_epoch, s.lr, s.forced = 4, 0.01, True
    s.start_alpha, s.start_beta = torch.randn(2), torch.randn(3)
    t = ArchSchedule(3)
    t.load(s.state())
    assert t.state()["started_epoch"] == 4 and t.lr == 0.01 and t.forced
    assert t.last_train_loss == 0.7
    torch.testing.assert_close(t.class_counts, s.class_counts)
    torch.testing.assert_close(t.start_beta, s.start_beta)

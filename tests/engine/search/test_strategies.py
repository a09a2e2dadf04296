"""The search-strategy seam: the registry, each registered strategy, and a toy second strategy
that drives a whole search (and its resume) through the seam alone."""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

import pytest
import torch

from autodeeplab.checkpoint import load_checkpoint
from autodeeplab.config import SearchConfig, SearchLoopConfig
from autodeeplab.engine.guards import NonFiniteGuard
from autodeeplab.engine.search.loop import run_search
from autodeeplab.engine.search.step import search_step
from autodeeplab.engine.search.strategies import (
    STRATEGIES,
    StepResult,
    StrategyContext,
    check_strategy,
)
from autodeeplab.engine.search.strategies.base import Batch
from autodeeplab.engine.search.strategies.bilevel import BiLevelStrategy
from autodeeplab.space.network import SearchNetwork


def test_registry_names_resolve_and_the_default_is_registered():
    for name, factory in STRATEGIES.items():
        assert check_strategy(name) is factory
    assert SearchLoopConfig().strategy == "darts" and "darts" in STRATEGIES


def test_an_unknown_strategy_names_the_key_and_the_choices(tmp_path, search_config):
    with pytest.raises(ValueError, match=r"search\.strategy='nope'.*use one of darts"):
        run_search(search_config("search.strategy=nope"), tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()  # refused before the run folder is written


def _batch(seed: int, n: int = 2, size: int = 32, classes: int = 3) -> Batch:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, size, size, generator=g)
    return images, torch.randint(0, classes, (n, size, size), generator=g)


@pytest.mark.parametrize("name", sorted(n for n, f in STRATEGIES.items() if f.uses_train_b))
def test_each_bilevel_strategy_steps_decodes_and_round_trips_its_state(name, make_net):
    net = make_net()
    device = torch.device("cpu")
    guard = NonFiniteGuard("stop", 0, device, "search")
    context = StrategyContext(device, None, guard)
    make = functools.partial(STRATEGIES[name], loop=SearchLoopConfig(), context=context)
    strategy = make(net)
    arch_ids = {id(p) for p in strategy.arch_parameters()}
    assert arch_ids == {id(p) for p in net.arch_parameters()}
    before = [p.detach().clone() for p in strategy.arch_parameters()]
    w_only = strategy.step(_batch(0), None, "a test step")
    assert w_only.arch_loss is None and w_only.w_applied and torch.isfinite(w_only.w_loss)
    assert all(torch.equal(a, b) for a, b in zip(before, strategy.arch_parameters(), strict=True))
    both = strategy.step(_batch(1), _batch(2), "a test step")
    assert both.arch_applied and torch.isfinite(both.arch_loss)
    assert not torch.equal(before[0], strategy.arch_parameters()[0])  # alpha learnt
    assert strategy.decode("relative") == net.genotype("relative")
    # A fresh strategy on a copy of the network continues bitwise from the state dict (a
    # copy: optimisers load tensors of the right dtype and device as they are, not copied).
    twin = make_net()
    twin.load_state_dict(net.state_dict())
    again = make(twin)
    again.load_state_dict(copy.deepcopy(strategy.state_dict()))
    strategy.step(_batch(3), _batch(4), "a test step")
    again.step(_batch(3), _batch(4), "a test step")
    for a, b in zip(net.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


class ToySgdStrategy(BiLevelStrategy):
    """A second strategy for the test: the w step of DARTS, then plain SGD (no Adam) on
    alpha/beta; it counts its calls and keeps the count in its checkpoint state. The
    schedules, validation and decode are the bi-level base's."""

    calls: list[tuple[str, bool]] = []  # (where, with a trainB batch), over every instance

    def __init__(self, model: SearchNetwork, loop: SearchLoopConfig, context: StrategyContext):
        super().__init__(model, loop, context)
        self.arch_optimizer = torch.optim.SGD(self.arch, lr=0.5)
        self.steps = 0

    def step(self, batch_a: Batch, batch_b: Batch | None, where: str) -> StepResult:
        """A w step on trainA; with a trainB batch, an SGD step on alpha/beta."""
        ToySgdStrategy.calls.append((where, batch_b is not None))
        self.steps += 1
        w_loss, w_ok = search_step(
            self.model, batch_a, self.weights, self.arch, self.w_optimizer, None, self.device,
            guard=self.guard,
        )  # fmt: skip
        if batch_b is None:
            return StepResult(w_loss, w_ok)
        a_loss, a_ok = search_step(
            self.model, batch_b, self.arch, self.weights, self.arch_optimizer, None, self.device,
            guard=self.guard,
        )  # fmt: skip
        return StepResult(w_loss, w_ok, a_loss, a_ok)

    def state_dict(self) -> dict[str, Any]:
        """Both optimisers and the step count, under the toy's own keys."""
        return {
            "w_optimizer": self.w_optimizer.state_dict(),
            "arch_optimizer": self.arch_optimizer.state_dict(),
            "toy_steps": self.steps,
            **self.schedule_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """From :meth:`state_dict`'s entries."""
        self.w_optimizer.load_state_dict(state["w_optimizer"])
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        self.steps = state["toy_steps"]
        self.load_schedule_state(state)


@pytest.fixture
def toy_config(monkeypatch, search_config) -> functools.partial[SearchConfig]:
    """The tiny 3-epoch search (alpha/beta learn in epochs 2, 3) with the toy registered."""
    monkeypatch.setitem(STRATEGIES, "toy", ToySgdStrategy)
    monkeypatch.setattr(ToySgdStrategy, "calls", [])
    return functools.partial(search_config, "search.epochs=3", "search.strategy=toy")


@pytest.mark.slow
def test_a_registered_toy_strategy_drives_a_search_and_its_resume(tmp_path, toy_config):
    full = run_search(toy_config(), tmp_path / "full", progress=False)
    calls = ToySgdStrategy.calls
    # 2 step pairs an epoch; trainB batches only once the schedule starts (epoch 2).
    assert [with_b for _, with_b in calls] == [False, False, True, True, True, True]
    assert calls[0][0] == "epoch 1, step 1 (iteration 1)"
    state = load_checkpoint(tmp_path / "full" / "checkpoints" / "epoch_0003.pt", "search")
    assert state["toy_steps"] == 6 and "arch_scaler" not in state  # the toy's keys, not DARTS's
    assert state["arch_optimizer"]["param_groups"][0]["lr"] == 3e-3  # ArchSchedule set it
    records = [
        json.loads(line)
        for line in (tmp_path / "full" / "search_log.jsonl").read_text().splitlines()
    ]
    assert [r["arch_updates"] for r in records] == [False, True, True]
    assert records[0]["arch_loss"] is None and records[2]["arch_loss"] is not None
    assert records[2]["alpha_shift_max"] > 0  # SGD moved alpha from where the updates began
    # Through the seam, a stopped and resumed run is the uninterrupted one, bit for bit.
    run_search(toy_config(), tmp_path / "part", progress=False, stop_after=2)
    resumed = run_search(toy_config(), tmp_path / "part", progress=False, resume=True)
    assert resumed.genotype == full.genotype
    other = load_checkpoint(tmp_path / "part" / "checkpoints" / "epoch_0003.pt", "search")
    assert other["toy_steps"] == 6
    for key, value in state["model"].items():
        assert torch.equal(value, other["model"][key]), key

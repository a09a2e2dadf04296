"""The single-path strategy (search.strategy=spos): its sampler, its seam entries and its runs."""

from __future__ import annotations

import collections
import itertools
import json
import os
import random
import signal
from dataclasses import replace

import pytest
import torch
from scipy import stats
from torch.optim.optimizer import register_optimizer_step_post_hook

from autodeeplab.checkpoint import CheckpointError, load_checkpoint
from autodeeplab.cli.messages import arch_never_updated
from autodeeplab.config import SearchLoopConfig, config_to_dict
from autodeeplab.engine.guards import NonFiniteGuard
from autodeeplab.engine.logs import read_jsonl
from autodeeplab.engine.search.checkpoints import check_same_model
from autodeeplab.engine.search.evolution import GenotypeSpace
from autodeeplab.engine.search.loop import decode_checkpoint, run_search
from autodeeplab.engine.search.report import render_search_report
from autodeeplab.engine.search.sampling import sample_single_path, step_generator
from autodeeplab.engine.search.strategies import STRATEGIES, StrategyContext, memory_estimate
from autodeeplab.engine.search.strategies.spos import decode_band
from autodeeplab.genotype import Genotype, count_paths
from autodeeplab.ops import PRIMITIVES

OPS = tuple(p for p in PRIMITIVES if p != "none")


def _valid_paths(num_layers: int, num_levels: int) -> list[tuple[int, ...]]:
    """Every level sequence from the stem at level 0, at most one level a layer."""
    return [
        p
        for p in itertools.product(range(num_levels), repeat=num_layers)
        if all(abs(b - a) <= 1 for a, b in zip((0, *p), p, strict=False))
    ]


def _draws(n: int, num_layers: int, num_levels: int, num_blocks: int = 1, seed: int = 0):
    return [
        sample_single_path(
            step_generator(seed, step), num_layers, num_blocks, num_levels, PRIMITIVES
        )
        for step in range(n)
    ]


def test_the_sample_is_a_function_of_seed_and_step_alone():
    # What every rank computes, and what a resumed run computes again: no global RNG state.
    first = [_draws(1, 6, 4, 5, seed=7)[0] for _ in range(2)]
    torch.manual_seed(123)
    random.seed(5)
    again = sample_single_path(step_generator(7, 0), 6, 5, 4, PRIMITIVES)
    assert first[0] == first[1] == again
    steps = _draws(50, 6, 4, 5, seed=7)
    assert len({(g.cell, g.path) for g in steps}) == 50  # neighbouring steps are unrelated
    other_seed = _draws(50, 6, 4, 5, seed=8)
    assert sum(a == b for a, b in zip(steps, other_seed, strict=True)) == 0


def test_the_path_is_uniform_over_the_valid_paths():
    num_layers, num_levels = 4, 3
    paths = _valid_paths(num_layers, num_levels)
    assert len(paths) == count_paths(num_layers, num_levels)[0][0] == 29
    n = 5800
    draws = [g.path for g in _draws(n, num_layers, num_levels)]
    seen = collections.Counter(draws)
    assert set(seen) == set(paths)  # every valid path is reachable, and nothing else
    observed = [seen[p] for p in paths]
    assert stats.chisquare(observed).pvalue > 1e-3  # uniform: n / 29 each
    # Per layer, the level's share is its share of the valid paths: no level is favoured
    # (a uniform choice per layer would put 1/2 of layer 1 at level 1, not 17/29).
    for layer in range(num_layers):
        levels = collections.Counter(p[layer] for p in paths)
        expected = [n * levels[s] / len(paths) for s in sorted(levels)]
        got = collections.Counter(p[layer] for p in draws)
        assert stats.chisquare([got[s] for s in sorted(levels)], expected).pvalue > 1e-3
    assert collections.Counter(p[0] for p in paths) == {0: 12, 1: 17}


def test_each_block_reads_two_distinct_inputs_through_ops_other_than_none():
    draws = _draws(600, 3, 2, num_blocks=5)
    pairs = collections.Counter()
    ops = collections.Counter()
    for g in draws:
        for block, branches in enumerate(g.cell):
            (op_a, in_a), (op_b, in_b) = branches
            assert in_a != in_b and min(in_a, in_b) >= 0 and max(in_a, in_b) < block + 2
            assert "none" not in (op_a, op_b)
            ops.update([op_a, op_b])
            if block == 2:
                pairs[frozenset((in_a, in_b))] += 1
    assert set(ops) == set(OPS)
    assert stats.chisquare([ops[o] for o in OPS]).pvalue > 1e-3
    assert len(pairs) == 6 and stats.chisquare(list(pairs.values())).pvalue > 1e-3  # C(4, 2)


def test_resuming_under_another_strategy_is_refused_in_one_line(search_config):
    state = {"config": config_to_dict(search_config("search.strategy=darts"))}
    with pytest.raises(CheckpointError) as err:
        check_same_model(state, search_config("search.strategy=spos"), None)
    message = str(err.value)
    assert "\n" not in message and "search.strategy=darts, not spos" in message
    assert "--set search.strategy=darts" in message
    check_same_model(state, search_config("search.strategy=darts"), None)  # same: accepted


@pytest.mark.parametrize("crop", [64, 128, 321])
def test_the_dry_run_estimate_of_spos_is_below_darts(search_config, crop):
    paper = ("model.num_layers=12", "model.num_blocks=5", "model.filter_multiplier=8",
             "model.strides=[4,8,16,32]", f"data.crop={crop}")  # fmt: skip
    paper = (*paper, "model.checkpoint_cells=false")
    darts = memory_estimate(search_config(*paper), 19, "cpu", 1, None)
    spos = memory_estimate(search_config(*paper, "search.strategy=spos"), 19, "cpu", 1, None)
    assert spos.total < darts.total and spos.activations < darts.activations / 5
    assert spos.fixed == darts.fixed and spos.weight_params == darts.weight_params
    # checkpoint_cells=auto: DARTS turns it on where its activations dominate; one path's
    # activations never need it.
    auto = ("model.checkpoint_cells=auto",)
    assert not memory_estimate(
        search_config(*paper, *auto, "search.strategy=spos"), 19, "cpu", 1, 2**40
    ).checkpoint_cells
    if crop == 321:
        assert memory_estimate(search_config(*paper, *auto), 19, "cpu", 1, 2**33).checkpoint_cells


def test_spos_needs_no_train_b_and_keeps_its_own_checkpoint_entries():
    spos, darts = STRATEGIES["spos"], STRATEGIES["darts"]
    assert darts.uses_train_b and not spos.uses_train_b
    assert (
        "arch_optimizer" in darts.checkpoint_keys and "arch_optimizer" not in spos.checkpoint_keys
    )


def test_the_decode_band_is_the_target_or_compares_band_around_a_typical_network(
    search_config,
):
    space = GenotypeSpace(4, 2, 3)
    loop = search_config("model.num_layers=4", "model.strides=[4,8,16]").search
    band = decode_band(loop, space, 5)
    again = decode_band(loop, space, 5)
    assert (band.low, band.high) == (again.low, again.high)  # from search.seed alone
    assert band.high / band.low == pytest.approx(1.1 / 0.9)
    # The centre is a typical network: about half of the space's networks cost less.
    rng = random.Random(1)
    below = sum(band.madds(space.random(rng)) < band.center for _ in range(400))
    assert 120 < below < 280
    target = decode_band(replace(loop, target_madds="2G@64x64"), space, 5)
    assert (target.low, target.high) == pytest.approx((1.8e9, 2.2e9))


def _batch(seed: int, n: int = 2, size: int = 32, classes: int = 3):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, size, size, generator=g)
    return images, torch.randint(0, classes, (n, size, size), generator=g)


def _spos(net, **loop):
    device = torch.device("cpu")
    guard = NonFiniteGuard("stop", 0, device, "search")
    return STRATEGIES["spos"](
        net, replace(SearchLoopConfig(), **loop), StrategyContext(device, None, guard)
    )


def test_a_step_trains_only_the_sub_network_its_step_draws(make_net):
    net = make_net(num_classes=3, num_layers=3, strides=(4, 8))
    strategy = _spos(net, seed=4)
    genotype = strategy.sample(0)
    assert genotype == _spos(make_net(num_classes=3, num_layers=3, strides=(4, 8)), seed=4).sample(
        0
    )
    # The parameters its single-path forward reaches, by autograd (the reference).
    images, labels = _batch(0)
    net.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(net.forward_genotype(images, genotype), labels).backward()
    used = {n for n, p in net.named_parameters() if p.grad is not None}
    net.zero_grad(set_to_none=True)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    result = strategy.step((images, labels), None, "a test step")
    assert result.w_applied and result.arch_loss is None and strategy.steps == 1
    moved = {n for n, p in net.named_parameters() if not torch.equal(p, before[n])}
    assert moved and moved <= used and "alpha" not in moved and "beta" not in moved
    assert len(used) < len(before) / 2  # one path of a 3-layer, 2-level trellis
    assert strategy.arch_parameters() == [] and not strategy.start_epoch(0, 4, False)


@pytest.mark.slow
def test_a_spos_search_records_no_margin_and_writes_its_candidates(tmp_path, search_config):
    cfg = search_config("search.strategy=spos", "search.decode_candidates=3")
    result = run_search(cfg, tmp_path, progress=False)
    records = read_jsonl(tmp_path / "search_log.jsonl")
    assert [r["sampled_steps"] for r in records] == [4, 8]  # trainA + trainB: 8 images
    for r in records:  # no alpha, beta, path margin, nor its warning
        assert not {"alpha", "beta", "path_margin", "warning"} & set(r)
        assert len(r["validated"]) == 3 and r["arch_loss"] is None
    saved = json.loads((tmp_path / "genotype.json").read_text())
    assert saved["search"]["strategy"] == "spos" and saved["search"]["candidates"] == 3
    candidates = json.loads((tmp_path / "candidates.json").read_text())
    assert len(candidates["candidates"]) == 3
    best = min(candidates["candidates"], key=lambda c: c["val_loss"])
    assert Genotype.from_dict(best["genotype"]) == result.genotype
    low, high = candidates["band_madds"]
    assert all(low <= c["madds"] <= high for c in candidates["candidates"])
    assert not arch_never_updated(tmp_path)  # no "alpha and beta never updated" warning
    with pytest.raises(ValueError, match="strategy=spos run learns no alpha or beta to report"):
        render_search_report(tmp_path)


@pytest.mark.slow
def test_a_stopped_spos_search_resumes_to_the_same_bits(tmp_path, search_config):
    cfg = search_config("search.strategy=spos", "search.decode_candidates=2")
    full = run_search(cfg, tmp_path / "full", progress=False)
    out = tmp_path / "part"
    count = 0

    def sigterm_at_step_6(optimizer, args, kwargs):  # step 2 of epoch 2
        nonlocal count
        count += 1
        if count == 6:
            os.kill(os.getpid(), signal.SIGTERM)

    handle = register_optimizer_step_post_hook(sigterm_at_step_6)
    try:
        part = run_search(cfg, out, progress=False)
    finally:
        handle.remove()
    assert part.stopped and part.checkpoint.name == "epoch_0002_step_000002.pt"
    resumed = run_search(cfg, out, resume=True, progress=False)
    assert resumed.genotype == full.genotype
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "epoch_0002.pt", "search")
    b = load_checkpoint(out / "checkpoints" / "epoch_0002.pt", "search")
    assert a["model"].keys() == b["model"].keys() and any("path_edges" in k for k in a["model"])
    for key in a["model"]:  # weights, path edges and BN statistics
        assert torch.equal(a["model"][key], b["model"][key]), key
    for i, sa in a["w_optimizer"]["state"].items():
        for name, value in sa.items():
            assert torch.equal(value, b["w_optimizer"]["state"][i][name])
    assert a["spos"] == b["spos"] and a["step"] == b["step"] == 8
    assert (tmp_path / "full" / "candidates.json").read_bytes() == (
        out / "candidates.json"
    ).read_bytes()
    with pytest.raises(CheckpointError, match="learns no alpha or beta to decode"):
        decode_checkpoint(out / "checkpoints" / "epoch_0002.pt")
    # Resuming it as a DARTS search is refused before anything runs.
    with pytest.raises(CheckpointError, match="search.strategy=spos, not darts"):
        run_search(search_config(), out, resume=True, progress=False)


def test_the_resume_check_builds_the_spos_supernet_with_its_path_edges(tmp_path, search_config):
    """``search --resume``'s read-only check (engine/preflight.py) builds the supernet as the
    strategy does, path edges included: a spos checkpoint passes it, and a DARTS one is
    still checked without them (a resume under the other strategy is refused)."""
    from autodeeplab.engine.preflight import check_search_resume

    spos = search_config("search.strategy=spos", "search.decode_candidates=2", "search.epochs=1")
    run_search(spos, tmp_path / "spos", progress=False)
    state = load_checkpoint(tmp_path / "spos" / "checkpoints" / "epoch_0001.pt", "search")
    assert any(k.startswith("path_edges.") for k in state["model"])
    check_search_resume(spos, tmp_path / "spos", True)  # refused before the fix
    darts = search_config("search.epochs=1")
    run_search(darts, tmp_path / "darts", progress=False)
    check_search_resume(darts, tmp_path / "darts", True)
    with pytest.raises(CheckpointError, match="search.strategy=spos, not darts"):
        check_search_resume(darts, tmp_path / "spos", True)

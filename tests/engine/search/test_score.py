"""Tests of scoring genotypes on a supernet and of the score-based search over genotypes."""

from __future__ import annotations

import json
import random

import pytest
import torch
import torch.nn.functional as F

from autodeeplab.config import CPU_TRAIN_PRESET, TrainConfig, config_from_dict, load_config
from autodeeplab.engine.compare.plan import plan_compare
from autodeeplab.engine.search.evolution import (
    GenotypeSpace,
    MaddsBand,
    compare_band,
    compare_pricing,
    crossover,
    mutate,
    search_by_score,
    typical_genotype,
)
from autodeeplab.engine.search.score import GenotypeScore, score_genotype, score_genotypes
from autodeeplab.genotype import Genotype, random_genotype
from autodeeplab.metrics import ConfusionMatrix
from autodeeplab.space.single_path import recalibrate

SPACE = GenotypeSpace(4, 2, 4)


def _batches(n: int, seed: int, classes: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(2, 3, 32, 32, generator=gen),
            torch.randint(0, classes, (2, 32, 32), generator=gen),
        )
        for _ in range(n)
    ]


def _bn_buffers(net: torch.nn.Module) -> list[torch.Tensor]:
    return [b.clone() for name, b in net.named_buffers() if "running" in name or "batches" in name]


def test_score_is_the_recalibrated_single_path_val_ce_and_miou(make_net) -> None:
    net = make_net()
    genotype = random_genotype(random.Random(1), 4, 2, 4)
    recal, val = [x for x, _ in _batches(2, 1)], _batches(2, 2)
    before = _bn_buffers(net)
    net.train()
    score = score_genotype(net, genotype, recal, val, 3, name="g")
    # The supernet is left as it was found: statistics and mode.
    assert net.training
    for a, b in zip(_bn_buffers(net), before, strict=True):
        assert torch.equal(a, b)
    # By hand: recalibrate, then CE over every pixel and the confusion matrix's mIoU.
    recalibrate(net, genotype, recal)
    cm, total, pixels = ConfusionMatrix(3), 0.0, 0
    with torch.no_grad():
        for x, y in val:
            logits = net.forward_genotype(x, genotype)
            total += float(F.cross_entropy(logits, y, reduction="sum"))
            pixels += y.numel()
            cm.update(logits.argmax(1), y)
    assert score.val_loss == pytest.approx(total / pixels, rel=1e-6)
    assert score.val_miou == pytest.approx(cm.compute()["miou"])
    assert score.recal_batches == 2 and score.name == "g" and score.genotype == genotype


def test_scores_are_deterministic_and_each_recalibrated_afresh(make_net) -> None:
    net = make_net()
    rng = random.Random(3)
    genotypes = [random_genotype(rng, 4, 2, 4) for _ in range(3)]
    recal, val = _batches(2, 1), _batches(1, 2)  # (images, labels) batches work too
    first = score_genotypes(net, genotypes, recal, val, 3)
    # Order does not matter: each genotype starts from the supernet's own statistics.
    again = score_genotypes(net, genotypes[::-1], recal, val, 3, names=["c", "b", "a"])
    assert [s.val_loss for s in first] == [s.val_loss for s in again[::-1]]
    assert [s.name for s in first] == ["g0", "g1", "g2"]
    assert len({s.val_loss for s in first}) == 3
    with pytest.raises(ValueError, match="names"):
        score_genotypes(net, genotypes, recal, val, 3, names=["a"])
    with pytest.raises(ValueError, match="recalibrate"):
        score_genotypes(net, genotypes, [], val, 3)


def test_score_to_dict_is_json() -> None:
    g = random_genotype(random.Random(0), 4, 2, 4)
    d = GenotypeScore(g, 1.5, 0.25, 0.5, 8, "x").to_dict()
    assert json.loads(json.dumps(d))["genotype"]["path"] == list(g.path)
    assert Genotype.from_dict(d["genotype"]) == g


@pytest.mark.parametrize("seed", range(5))
def test_mutation_and_crossover_give_valid_genotypes_of_the_space(seed: int) -> None:
    rng = random.Random(seed)
    space = GenotypeSpace(12, 5, 4, ("none", "skip_connect", "sep_conv_3x3", "max_pool_3x3"))
    a, b = space.random(rng), space.random(rng)
    for _ in range(50):
        for g in (mutate(a, space, rng, 0.5), crossover(a, b, rng), mutate(a, space, rng, 1.0)):
            assert g.num_layers == 12 and g.num_blocks == 5 and max(g.path) < 4
            assert all(op in space.primitives and op != "none" for blk in g.cell for op, _ in blk)
            assert all(blk[0][1] != blk[1][1] for blk in g.cell)  # two distinct inputs
    assert mutate(a, space, rng, 0.0) == a
    child = crossover(a, b, rng)
    assert all(blk in (x, y) for blk, x, y in zip(child.cell, a.cell, b.cell, strict=True))


def test_compare_band_prices_as_compare_plans_its_random_genotypes() -> None:
    search_cfg = load_config(None, ["model.num_layers=4", "model.num_blocks=2"])
    tcfg = config_from_dict(CPU_TRAIN_PRESET, TrainConfig())
    center = random_genotype(random.Random(5), 4, 2, 4)
    entries = plan_compare(center, search_cfg, tcfg, 3, (64, 64), num_random=4)
    band = compare_band(center, 3)
    assert band.center == entries[0].madds
    for e in entries:
        assert band.madds(e.genotype) == e.madds
        if e.kind == "random":
            assert e.genotype in band


def _fake_score(g: Genotype, name: str) -> GenotypeScore:
    """A score that prefers level-0 paths and sep convs (a stand-in for the supernet's)."""
    ops = sum(op.startswith("sep") for blk in g.cell for op, _ in blk)
    return GenotypeScore(g, float(sum(g.path)) - 0.5 * ops, 0.0, 0.0, 1, name)


def test_random_sampling_keeps_the_start_and_draws_new_genotypes_in_the_band() -> None:
    start = SPACE.random(random.Random(0))
    band = compare_band(start, 3)
    got = search_by_score(
        _fake_score, band, random.Random(1), space=SPACE, population=6, start=[start]
    )
    assert got[0].origin == "start" and got[0].score.genotype == start
    assert len(got) == 6 and all(c.generation == 0 for c in got)
    assert all(c.score.genotype in band for c in got[1:])
    assert len({(c.score.genotype.path, c.score.genotype.cell) for c in got}) == 6
    assert [c.score.name for c in got] == [f"c{i}" for i in range(6)]
    again = search_by_score(
        _fake_score, band, random.Random(1), space=SPACE, population=6, start=[start]
    )
    assert [c.score.genotype for c in again] == [c.score.genotype for c in got]


def test_evolution_improves_on_random_sampling_of_the_same_budget() -> None:
    wide = MaddsBand(0, float("inf"), lambda g: 0)
    best_evolved, best_random = [], []
    for seed in range(4):
        evolved = search_by_score(
            _fake_score, wide, random.Random(seed), space=SPACE, population=6, generations=4
        )
        sampled = search_by_score(
            _fake_score, wide, random.Random(seed), space=SPACE, population=30
        )
        assert len(evolved) == len(sampled) == 30
        assert {c.origin for c in evolved[6:]} <= {"mutation", "crossover"}
        assert [c.generation for c in evolved] == sorted(c.generation for c in evolved)
        best_evolved.append(min(c.score.val_loss for c in evolved))
        best_random.append(min(c.score.val_loss for c in sampled))
    assert sum(best_evolved) < sum(best_random)


def test_mutation_fill_and_exhausted_or_unreachable_bands() -> None:
    start = SPACE.random(random.Random(2))
    wide = MaddsBand(0, float("inf"), lambda g: 0)
    got = search_by_score(
        _fake_score,
        wide,
        random.Random(0),
        space=SPACE,
        population=5,
        start=[start],
        fill="mutation",
    )
    assert [c.origin for c in got] == ["start"] + ["mutation"] * 4
    # A band of the start alone: the search ends with what it has.
    only = MaddsBand(1, 1, lambda g: 1 if g == start else 0)
    got = search_by_score(
        _fake_score, only, random.Random(0), space=SPACE, population=5, generations=2,
        start=[start], max_draws=20,
    )  # fmt: skip
    assert [c.score.genotype for c in got] == [start]
    with pytest.raises(ValueError, match="Multi-Adds band"):
        search_by_score(
            _fake_score, MaddsBand(1, 1, lambda g: 0), random.Random(0), space=SPACE, max_draws=5
        )
    with pytest.raises(ValueError, match="fill"):
        search_by_score(_fake_score, wide, random.Random(0), space=SPACE, fill="mutation")


def test_typical_genotype_is_the_median_cost_draw_and_centres_a_band() -> None:
    price = compare_pricing(3)
    g = typical_genotype(SPACE, 3, random.Random(4), samples=21)
    rng = random.Random(4)
    drawn = sorted(price(SPACE.random(rng)) for _ in range(21))
    assert price(g) == drawn[10]
    band = compare_band(g, 3)
    assert g in band and band.center == price(g)

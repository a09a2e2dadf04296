"""The networks ``compare`` retrains: the searched one, random ones at its cost, references.

Random genotypes (:func:`~autodeeplab.genotype.random_genotype`: cells without 'none', paths
uniform over the valid ones) are drawn until their Multi-Adds at the comparison's size are
within the tolerance of the searched network's, priced by the closed-form cost model, so a
win is not bought with compute. The references: the searched cell on a hand-made
DeepLabv3-like path and the paper's genotype.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from autodeeplab.config import SearchConfig, TrainConfig
from autodeeplab.engine.search.evolution import GenotypeSpace, compare_pricing, typical_genotype
from autodeeplab.genotype import PAPER_GENOTYPE, Genotype

__all__ = [
    "MAX_DRAWS_PER_GENOTYPE",
    "MAX_RANDOM",
    "MAX_SEEDS",
    "RANDOM_CENTERS",
    "CompareEntry",
    "check_counts",
    "handmade_path",
    "plan_compare",
    "seed_noise_entries",
]

#: How many random genotypes to draw, at most, to find each one within the tolerance.
MAX_DRAWS_PER_GENOTYPE = 400
#: Bounds of the counts, checked before any drawing: each network is a whole retraining.
MAX_RANDOM = 1000
MAX_SEEDS = 100

#: Where the random cloud is centred: on the searched network's Multi-Adds (the default:
#: a cost-matched comparison), or on the space's typical network, the one every search of
#: the space shares, so that several searches' comparisons retrain one set of random
#: networks (``--reuse``) and their supernets' rankings are measured on the same networks.
RANDOM_CENTERS = ("searched", "typical")


@dataclass(frozen=True)
class CompareEntry:
    """One network to retrain: its name, kind, genotype, seed and cost."""

    name: str
    kind: str  # searched | random | handmade | paper | seed_noise
    genotype: Genotype
    seed: int
    madds: int


def handmade_path(num_layers: int, num_levels: int) -> tuple[int, ...]:
    """DeepLabv3's layout on the trellis: stride 4 for 3 layers, 8 for one, then 16 on.

    [0, 0, 0, 1, 2, 2, 2, 2, 2, 2, 2, 2] for L=12 (the issue's reference); clipped to the
    levels there are.
    """
    shape = [0, 0, 0, 1] + [2] * max(num_layers - 4, 0)
    return tuple(min(level, num_levels - 1) for level in shape[:num_layers])


def _is_count(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def check_counts(num_random: int, searched_seeds: int, reference_seeds: int | None) -> None:
    """Refuse a count outside its bound, naming the flag and the bound (one line)."""
    counts = [("--random", num_random, 0, MAX_RANDOM)]
    counts.append(("--searched-seeds", searched_seeds, 1, MAX_SEEDS))
    if reference_seeds is not None:
        counts.append(("--reference-seeds", reference_seeds, 1, MAX_SEEDS))
    for flag, value, low, high in counts:
        if not _is_count(value, low, high):
            raise ValueError(
                f"{flag} {value!r}: must be an integer in {low}..{high} (each network is a "
                "whole retraining)"
            )


def plan_compare(
    searched: Genotype,
    search_cfg: SearchConfig,
    tcfg: TrainConfig,
    num_classes: int,
    size: tuple[int, int],
    num_random: int = 5,
    searched_seeds: int = 2,
    tolerance: float = 0.1,
    seed: int = 0,
    reference_seeds: int | None = None,
    random_center: str = "searched",
) -> list[CompareEntry]:
    """The networks to retrain, in order: searched (each seed), random, hand-made, paper.

    Random genotypes come from a ``random.Random(seed)`` and are kept when their
    Multi-Adds are within ``tolerance`` of the searched network's; the plan is the same
    every time for the same arguments. The two references get ``reference_seeds`` seeds
    (default: as many as the searched network), the same ones, so that searched against
    hand-made compares paths, not seeds; the first keeps the plain name (``handmade``).
    ``random_center``: ``searched`` centres the random cloud on the searched network's
    Multi-Adds, ``typical`` on the space's typical network
    (:func:`~autodeeplab.engine.search.evolution.typical_genotype` drawn with ``seed``),
    the same for every search of one space.
    """
    check_counts(num_random, searched_seeds, reference_seeds)
    if random_center not in RANDOM_CENTERS:
        raise ValueError(
            f"--random-center {random_center!r}: choose one of {', '.join(RANDOM_CENTERS)}"
        )
    base = tcfg.train.seed
    price = compare_pricing(num_classes, tcfg, size)
    searched_cost = price(searched)
    entries = [
        CompareEntry(f"searched_seed{base + k}", "searched", searched, base + k, searched_cost)
        for k in range(searched_seeds)
    ]
    m = search_cfg.model
    levels = len(m.strides)
    space = GenotypeSpace(m.num_layers, m.num_blocks, levels, tuple(m.primitives))
    if random_center == "typical":
        center = typical_genotype(
            space, num_classes, random.Random(seed), train_config=tcfg, size=size
        )
        target = price(center)
    else:
        target = searched_cost
    rng = random.Random(seed)
    draws = 0
    while len(entries) < searched_seeds + num_random:
        draws += 1
        if draws > MAX_DRAWS_PER_GENOTYPE * num_random:
            found = len(entries) - searched_seeds
            raise ValueError(
                f"found only {found} of {num_random} random genotypes within "
                f"{tolerance:.0%} of the {random_center} network's {target / 1e9:.3g}G Multi-Adds "
                f"in {draws - 1} draws; widen --tolerance or ask for fewer with --random"
            )
        g = space.random(rng)
        cost = price(g)
        if abs(cost - target) <= tolerance * target:
            name = f"random{len(entries) - searched_seeds}"
            entries.append(CompareEntry(name, "random", g, base, cost))
    hand = Genotype(searched.cell, handmade_path(searched.num_layers, levels))
    hand_cost = price(hand)
    paper_cost = price(PAPER_GENOTYPE)
    seeds = searched_seeds if reference_seeds is None else reference_seeds
    for kind, genotype, cost in (
        ("handmade", hand, hand_cost),
        ("paper", PAPER_GENOTYPE, paper_cost),
    ):
        for k in range(seeds):
            name = kind if k == 0 else f"{kind}_seed{base + k}"
            entries.append(CompareEntry(name, kind, genotype, base + k, cost))
    return entries


def seed_noise_entries(
    entries: list[CompareEntry], genotypes: int = 3, seeds: int = 3
) -> list[CompareEntry]:
    """More seeds of the plan's first ``genotypes`` random networks, to measure seed noise.

    Each gets seeds ``seed + 1 .. seed + seeds - 1`` beside the plan's own (kind
    ``seed_noise``, so that the random cloud's statistics still count one seed each).
    """
    randoms = [e for e in entries if e.kind == "random"][:genotypes]
    return [
        CompareEntry(f"{e.name}_seed{e.seed + k}", "seed_noise", e.genotype, e.seed + k, e.madds)
        for e in randoms
        for k in range(1, seeds)
    ]

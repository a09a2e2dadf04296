"""Search over genotypes by their score on a supernet, within a Multi-Adds band.

:func:`search_by_score` is the decode of a score-based search (``search.decode=score`` for
the paper's supernet, and the spos strategy's): random sampling, or an evolutionary search
as SPOS does it (Guo et al., ECCV 2020: a population, the best half as parents, children by
mutation and crossover), every candidate kept in the band so that a win is not bought with
compute. The band is the one ``compare`` draws its random genotypes in
(:func:`compare_band`): the retrain network's Multi-Adds, priced by the closed-form cost
model at compare's default training config, within a tolerance of a central genotype's.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from autodeeplab.config import CPU_TRAIN_PRESET, TrainConfig, config_from_dict
from autodeeplab.engine.search.score import GenotypeScore
from autodeeplab.genotype import Genotype, random_genotype
from autodeeplab.ops import PRIMITIVES
from autodeeplab.space.cost import CostModel

__all__ = [
    "Candidate",
    "GenotypeSpace",
    "MaddsBand",
    "compare_band",
    "compare_pricing",
    "crossover",
    "mutate",
    "search_by_score",
    "typical_genotype",
]


@dataclass(frozen=True)
class GenotypeSpace:
    """The genotypes of a supernet: L layers, B blocks, its levels and ops ('none' aside)."""

    num_layers: int
    num_blocks: int
    num_levels: int
    primitives: tuple[str, ...] = PRIMITIVES

    @classmethod
    def of(cls, model: Any) -> GenotypeSpace:
        """The space of a :class:`~autodeeplab.space.network.SearchNetwork`."""
        return cls(model.num_layers, model.num_blocks, model.num_levels, tuple(model.primitives))

    def random(self, rng: random.Random) -> Genotype:
        """A uniform genotype (:func:`~autodeeplab.genotype.random_genotype`)."""
        return random_genotype(
            rng, self.num_layers, self.num_blocks, self.num_levels, self.primitives
        )


@dataclass
class MaddsBand:
    """Genotypes whose retrain Multi-Adds lie in [low, high], priced by ``price``."""

    low: float
    high: float
    price: Callable[[Genotype], int]
    center: int = 0
    _cache: dict[Genotype, int] = field(default_factory=dict, repr=False)

    def madds(self, genotype: Genotype) -> int:
        """The genotype's Multi-Adds (memoised)."""
        if genotype not in self._cache:
            self._cache[genotype] = self.price(genotype)
        return self._cache[genotype]

    def __contains__(self, genotype: Genotype) -> bool:
        return self.low <= self.madds(genotype) <= self.high


def compare_pricing(
    num_classes: int, train_config: TrainConfig | None = None, size: tuple[int, int] | None = None
) -> Callable[[Genotype], int]:
    """Multi-Adds of a genotype's retrain network as ``compare`` prices them (its default:
    the CPU train preset's F and heads, at its crop)."""
    tcfg = train_config or config_from_dict(CPU_TRAIN_PRESET, TrainConfig())
    size = size or (tcfg.data.crop, tcfg.data.crop)
    models: dict[tuple[int, int, int], CostModel] = {}
    m = tcfg.model

    def price(g: Genotype) -> int:
        key = (g.num_layers, g.num_blocks, max(4, max(g.path) + 1))
        if key not in models:
            models[key] = CostModel(
                *key[:2],
                PRIMITIVES,
                key[2],
                num_classes,
                m.filter_multiplier or 20,
                size,
                aspp_channels=m.aspp_channels,
                decoder_channels=m.decoder_channels,
            )
        return models[key].of_genotype(g)

    return price


def compare_band(
    center: Genotype,
    num_classes: int,
    *,
    tolerance: float = 0.1,
    train_config: TrainConfig | None = None,
    size: tuple[int, int] | None = None,
) -> MaddsBand:
    """``compare``'s band: within ``tolerance`` of ``center``'s Multi-Adds, priced by
    :func:`compare_pricing`."""
    price = compare_pricing(num_classes, train_config, size)
    target = price(center)
    return MaddsBand(target * (1 - tolerance), target * (1 + tolerance), price, target)


def typical_genotype(
    space: GenotypeSpace,
    num_classes: int,
    rng: random.Random,
    *,
    samples: int = 101,
    train_config: TrainConfig | None = None,
    size: tuple[int, int] | None = None,
) -> Genotype:
    """A typical network of the space: of ``samples`` uniform genotypes, the one of median
    Multi-Adds (:func:`compare_pricing`). ``compare_band`` around it is a default band."""
    price = compare_pricing(num_classes, train_config, size)
    drawn = sorted((space.random(rng) for _ in range(samples)), key=price)
    return drawn[len(drawn) // 2]


def mutate(genotype: Genotype, space: GenotypeSpace, rng: random.Random, prob: float) -> Genotype:
    """Each branch's op and input, and each layer's level, redrawn with probability ``prob``.

    A block keeps two distinct inputs; a redrawn level moves to a neighbour of the previous
    layer's, and the layers after it are clamped back into the trellis (one level a layer).
    """
    ops = [p for p in space.primitives if p != "none"]
    cell = []
    for block, branches in enumerate(genotype.cell):
        new = []
        for op, inp in branches:
            if rng.random() < prob:
                op = rng.choice(ops)
            if rng.random() < prob:
                taken = {i for _, i in new}
                inp = rng.choice([i for i in range(block + 2) if i not in taken])
            new.append((op, inp))
        if new[0][1] == new[1][1]:  # the first branch's redraw took the second's input
            new[1] = (new[1][0], rng.choice([i for i in range(block + 2) if i != new[0][1]]))
        cell.append(tuple(new))
    path, prev = [], 0
    for level in genotype.path:
        if rng.random() < prob:
            level = rng.choice([t for t in (prev - 1, prev, prev + 1) if 0 <= t < space.num_levels])
        level = min(max(level, prev - 1), prev + 1)
        path.append(level)
        prev = level
    return Genotype(tuple(cell), tuple(path))


def crossover(a: Genotype, b: Genotype, rng: random.Random) -> Genotype:
    """Each block from either parent, and the path of either (a path is one whole)."""
    cell = tuple(x if rng.random() < 0.5 else y for x, y in zip(a.cell, b.cell, strict=True))
    return Genotype(cell, a.path if rng.random() < 0.5 else b.path)


def _child(
    parents: list[Genotype], space: GenotypeSpace, rng: random.Random, prob: float
) -> tuple[Genotype, str]:
    """A mutation of a parent, or (half the time) a mutated crossover of two."""
    if len(parents) > 1 and rng.random() < 0.5:
        a, b = rng.sample(parents, 2)
        return mutate(crossover(a, b, rng), space, rng, prob), "crossover"
    return mutate(rng.choice(parents), space, rng, prob), "mutation"


def _key(g: Genotype) -> tuple[Any, ...]:
    """The same network, whatever the order of a block's branches."""
    return (g.path, tuple(tuple(sorted(b)) for b in g.cell))


@dataclass(frozen=True)
class Candidate:
    """A scored genotype of :func:`search_by_score`: which generation, made how."""

    score: GenotypeScore
    generation: int
    origin: str  # start | random | mutation | crossover
    madds: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the score's fields."""
        return {
            **self.score.to_dict(),
            "generation": self.generation,
            "origin": self.origin,
            "madds": self.madds,
        }


def search_by_score(
    score_fn: Callable[[Genotype, str], GenotypeScore],
    band: MaddsBand,
    rng: random.Random,
    *,
    space: GenotypeSpace,
    population: int = 20,
    generations: int = 0,
    start: Sequence[Genotype] = (),
    fill: str = "random",
    mutation_prob: float = 0.1,
    max_draws: int = 400,
) -> list[Candidate]:
    """Score candidates in ``band``; every one, in the order scored (best: lowest val_loss).

    Generation 0 is ``start`` (kept even outside the band), filled to ``population`` with
    random genotypes in the band (``fill="random"``) or mutations of ``start``
    (``"mutation"``). Each of ``generations`` more generations breeds ``population`` new
    children from the best half so far: half by :func:`mutate`, half by :func:`crossover`
    then a mutation, kept only in the band and never seen before. With ``generations=0`` this
    is random sampling. ``score_fn(genotype, name)`` scores one; the same network is never
    scored twice. ``max_draws`` per wanted genotype bounds the rejection sampling: when they
    find no new genotype in the band, the search ends with what it has (a small space runs
    out); a band that none reaches at all is a ValueError naming it.
    """
    if population < 1 or generations < 0:
        raise ValueError(
            f"population must be >= 1 and generations >= 0, got {population}, {generations}"
        )
    if fill not in ("random", "mutation"):
        raise ValueError(f"fill must be 'random' or 'mutation', got {fill!r}")
    if fill == "mutation" and not start:
        raise ValueError("fill='mutation' needs start genotypes to mutate")
    out: list[Candidate] = []
    seen: set[tuple[Any, ...]] = set()
    exhausted: list[int] = []

    def add(g: Genotype, generation: int, origin: str) -> None:
        seen.add(_key(g))
        score = score_fn(g, f"c{len(out)}")
        out.append(Candidate(score, generation, origin, band.madds(g)))

    def draw(make: Callable[[], tuple[Genotype, str]], generation: int, count: int) -> None:
        for _ in range(count):
            for _ in range(max_draws):
                g, origin = make()
                if _key(g) not in seen and g in band:
                    add(g, generation, origin)
                    break
            else:  # the band holds no new genotype that these draws reach: stop here
                if not out:
                    raise ValueError(
                        f"no genotype within the Multi-Adds band {band.low / 1e9:.4g}G.."
                        f"{band.high / 1e9:.4g}G in {max_draws} draws; widen the tolerance"
                    )
                exhausted.append(generation)
                return

    for g in start:
        if _key(g) not in seen:
            add(g, 0, "start")
    if fill == "random":
        draw(lambda: (space.random(rng), "random"), 0, population - len(out))
    else:
        starts = list(start)
        draw(lambda: (mutate(rng.choice(starts), space, rng, mutation_prob), "mutation"), 0,
             population - len(out))  # fmt: skip
    for generation in range(1, generations + 1):
        if exhausted:
            break
        ranked = sorted(out, key=lambda c: c.score.val_loss)
        parents = [c.score.genotype for c in ranked[: max(2, len(ranked) // 2)]]
        draw(lambda p=parents: _child(p, space, rng, mutation_prob), generation, population)
    return out

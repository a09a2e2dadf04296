"""Uniform single-path one-shot search (SPOS: Guo et al., ECCV 2020; random search with weight
sharing: Li & Talwalkar, UAI 2019), on the Auto-DeepLab supernet.

Training: each iteration trains one sub-network of the retrain space on one batch, an SGD step
on the weights it uses (:meth:`~autodeeplab.space.network.SearchNetwork.forward_genotype`).
The sub-network is drawn uniformly (:func:`~autodeeplab.engine.search.sampling.
sample_single_path`: the path uniform over the valid paths, each block two distinct inputs
and two ops other than ``none``) by a generator seeded from (``search.seed``, the global
step) alone, so every rank trains the same sub-network (the gradients then all-reduce over
the same parameters) and a resumed run draws what the uninterrupted one did. There is no
alpha or beta to learn: the supernet's are kept, untouched, so its checkpoints stay readable.

Which data each stage uses:

- the weights: trainA and trainB together (nothing learns from a held-out trainB; the split
  is still stored in ``split.json``);
- BatchNorm recalibration before any score: the first training batches (train), one
  sub-network at a time, its statistics recomputed from scratch;
- validation each epoch and every score of the decode: val.

Decoding: an evolutionary search as SPOS runs it (a population, the best as parents, their
mutations and crossovers), within a Multi-Adds band: ``search.target_madds`` (at the retrain
width ``search.cost_filter_multiplier``) +- :data:`BAND`, or by default the band ``compare``
draws its random networks in, around the median network of the space at the search's crop.
Each candidate is scored by its val cross-entropy on the supernet after recalibration; every
candidate and its score go to ``candidates.jsonl`` in the run folder.
"""

from __future__ import annotations

import json
import random
import statistics
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from autodeeplab.config import SearchLoopConfig
from autodeeplab.engine.guards import NonFiniteGuard
from autodeeplab.engine.search.sampling import sample_single_path, step_generator
from autodeeplab.engine.search.step import search_step, validate_supernet
from autodeeplab.engine.search.strategies.base import (
    Batch,
    Decoded,
    Penalty,
    StepResult,
    ValidationData,
)
from autodeeplab.genotype import Genotype, random_genotype
from autodeeplab.space.cost import CostModel, parse_madds_target
from autodeeplab.space.memory import MemoryEstimate, estimate_single_path_memory
from autodeeplab.space.network import SearchNetwork

__all__ = ["BAND", "SinglePathOneShot", "evolve", "madds_band"]

#: The decode's Multi-Adds band: +-10% around its centre, the tolerance ``compare`` uses.
BAND = 0.1
#: Sub-networks validated each epoch: fixed ones, so the curve compares like with like.
VALIDATION_PATHS = 3
#: The validation paths' generator steps: negative, never a training step's.
_VALIDATION_STEPS = tuple(-1 - k for k in range(VALIDATION_PATHS))
#: The decode's first generation (and each later one), SPOS's 50 scaled to a CPU budget.
POPULATION = 8
#: A mutation redraws each block (and the path) with this probability (SPOS: 0.1).
MUTATION = 0.1
#: Draws per candidate before the band is given up on (compare's bound).
MAX_DRAWS = 400


def madds_band(loop: SearchLoopConfig, cost: CostModel, rng: random.Random) -> tuple[float, float]:
    """(low, high) Multi-Adds of the decode's band (``cost`` prices at the band's size)."""
    if loop.target_madds:
        centre = parse_madds_target(loop.target_madds).madds
    else:  # the median network of the space, as compare's random draws see it
        space = (cost.num_layers, cost.num_blocks, cost.num_levels, cost.primitives)
        centre = statistics.median(
            cost.of_genotype(random_genotype(rng, *space)) for _ in range(201)
        )
    return (1 - BAND) * centre, (1 + BAND) * centre


def _in_band(
    rng: random.Random, cost: CostModel, band: tuple[float, float], seen: set[Genotype]
) -> Genotype:
    """A random genotype of the space within ``band``, not in ``seen`` (by rejection)."""
    space = (cost.num_layers, cost.num_blocks, cost.num_levels, cost.primitives)
    for _ in range(MAX_DRAWS):
        g = random_genotype(rng, *space)
        if band[0] <= cost.of_genotype(g) <= band[1] and g not in seen:
            return g
    raise ValueError(
        f"found no new network within the Multi-Adds band {band[0] / 1e9:.3g}G-"
        f"{band[1] / 1e9:.3g}G in {MAX_DRAWS} draws; set another search.target_madds or fewer "
        "search.decode_candidates"
    )


def _child(rng: random.Random, cost: CostModel, parents: list[Genotype], mutate: bool) -> Genotype:
    """A mutation of one parent (each block and the path redrawn with probability
    :data:`MUTATION`) or a crossover of two (each block and the path from either)."""
    a, b = rng.sample(parents, 2) if len(parents) > 1 else (parents[0], parents[0])
    if mutate:
        space = (cost.num_layers, cost.num_blocks, cost.num_levels, cost.primitives)
        b = random_genotype(rng, *space)
        pick = [rng.random() < MUTATION for _ in range(len(a.cell) + 1)]
    else:
        pick = [rng.random() < 0.5 for _ in range(len(a.cell) + 1)]
    cell = tuple(y if p else x for x, y, p in zip(a.cell, b.cell, pick, strict=False))
    return Genotype(cell, b.path if pick[-1] else a.path)


def evolve(
    rng: random.Random,
    cost: CostModel,
    band: tuple[float, float],
    budget: int,
    scored: list[dict[str, Any]],
) -> Iterator[tuple[str, Genotype]]:
    """The candidates of an evolutionary search (SPOS, Guo et al., §3.3), one at a time.

    The first generation: :data:`POPULATION` random networks in ``band``. Each later one:
    children of the best half of everything scored so far (``scored``, filled by the caller
    with each candidate's ``val_loss`` and ``genotype`` before it asks for the next), half
    mutations, half crossovers, kept when in the band and new. ``budget`` candidates in all.
    """
    seen: set[Genotype] = set()
    population = min(POPULATION, budget)
    for _ in range(population):
        g = _in_band(rng, cost, band, seen)
        seen.add(g)
        yield "random", g
    while len(seen) < budget:
        ranked = sorted(scored, key=lambda e: e["val_loss"])
        parents = [Genotype.from_dict(e["genotype"]) for e in ranked[: max(2, len(ranked) // 2)]]
        for k in range(min(population, budget - len(seen))):
            mutate = k % 2 == 0
            for _ in range(MAX_DRAWS):
                g = _child(rng, cost, parents, mutate)
                if band[0] <= cost.of_genotype(g) <= band[1] and g not in seen:
                    break
            else:  # the parents' neighbourhood is exhausted: a fresh network
                g, mutate = _in_band(rng, cost, band, seen), True
            seen.add(g)
            yield ("mutation" if mutate else "crossover"), g


class SinglePathOneShot:
    """Uniform single-path training; an evolutionary decode scored on the supernet."""

    uses_train_b: ClassVar[bool] = False
    checkpoint_keys: ClassVar[tuple[str, ...]] = ("w_scheduler", "spos")

    @classmethod
    def estimate_memory(
        cls, crop: int, batch_size: int, num_classes: int, **kwargs: Any
    ) -> MemoryEstimate:
        """One sub-network's activations over the supernet's weights (no architecture step)."""
        return estimate_single_path_memory(crop, batch_size, num_classes, **kwargs)

    def __init__(
        self,
        model: SearchNetwork,
        loop: SearchLoopConfig,
        *,
        device: torch.device,
        amp_dtype: torch.dtype | None,
        guard: NonFiniteGuard,
        penalty: Penalty | None,
    ) -> None:
        del penalty  # no architecture loss: the Multi-Adds budget bounds the decode instead
        self.model, self.loop, self.device, self.amp_dtype = model, loop, device, amp_dtype
        self.guard, self.grad_clip, self.seed = guard, loop.grad_clip, loop.seed
        # The H^{l-2} edges that paths changing level read (new weights, seeded apart).
        model.add_path_edges(loop.seed)
        self.weights = model.weight_parameters()
        self.w_optimizer = torch.optim.SGD(
            self.weights, lr=loop.lr, momentum=loop.momentum, weight_decay=loop.weight_decay
        )
        self.w_sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.w_optimizer, T_max=loop.epochs, eta_min=loop.lr_min
        )
        self.w_scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        self.steps = 0  # sub-networks trained: the generator's step
        self.validated: list[dict[str, Any]] = []  # the last validation, per path

    def sample(self, step: int) -> Genotype:
        """The sub-network of global step ``step`` (a function of the seed and ``step``)."""
        m = self.model
        return sample_single_path(
            step_generator(self.seed, step), m.num_layers, m.num_blocks, m.num_levels, m.primitives
        )

    def start_epoch(self, epoch: int, steps_per_epoch: int, resumed_mid_epoch: bool) -> bool:
        """No trainB batches: the weights train on the whole training set."""
        self.model.set_skip_remedies(0.0, 0.0)  # DARTS's remedies for skip: not needed here
        return False

    def step(self, batch_a: Batch, batch_b: Batch | None, where: str) -> StepResult:
        """An SGD step of the sub-network of this step on ``batch_a``."""
        genotype = self.sample(self.steps)
        self.steps += 1
        loss, applied = search_step(
            self.model,
            batch_a,
            self.weights,
            self.model.arch_parameters(),
            self.w_optimizer,
            self.grad_clip,
            self.device,
            amp_dtype=self.amp_dtype,
            scaler=self.w_scaler,
            guard=self.guard,
            where=f"the weight step of {where}",
            forward=lambda x: self.model.forward_genotype(x, genotype),
        )
        return StepResult(loss, applied)

    def arch_parameters(self) -> list[Tensor]:
        """None: nothing architectural learns."""
        return []

    def end_epoch(self, train_loss: float | None, class_counts: Tensor) -> float:
        """Step w's cosine schedule; returns the epoch's lr."""
        lr = self.w_sched.get_last_lr()[0]
        with warnings.catch_warnings():  # a resume after the epoch's last step: see bilevel
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            self.w_sched.step()
        return lr

    def score(self, genotype: Genotype, data: ValidationData, num_classes: int) -> dict[str, float]:
        """``genotype`` on val after recalibrating the BatchNorms on training batches."""
        return validate_supernet(
            self.model,
            data.loader_val,
            num_classes,
            self.device,
            self.amp_dtype,
            recalibrate=data.recalibration_batches(),
            forward=lambda x: self.model.forward_genotype(x, genotype),
        )

    def validate(self, data: ValidationData, num_classes: int, sync_bn: bool) -> dict[str, float]:
        """The mean over :data:`VALIDATION_PATHS` fixed sub-networks, each recalibrated."""
        self.validated = []
        for step in _VALIDATION_STEPS:
            genotype = self.sample(step)
            metrics = self.score(genotype, data, num_classes)
            self.validated.append({"genotype": genotype.to_dict(), **metrics})
        keys = ("val_loss", "val_miou", "val_pixel_acc")
        return {k: statistics.fmean(v[k] for v in self.validated) for k in keys}

    def decode(self, path_decode: str) -> Genotype:
        """The best (lowest val loss) of the last validation's sub-networks, until the final
        decode searches; before any validation, the first of them."""
        if not self.validated:
            return self.sample(_VALIDATION_STEPS[0])
        best = min(self.validated, key=lambda v: v["val_loss"])
        return Genotype.from_dict(best["genotype"])

    def epoch_record(
        self, genotype: Genotype, previous: Genotype | None, epoch: int, arch_on: bool
    ) -> dict[str, Any]:
        """The genotype, the validated sub-networks and how many were trained; no margin."""
        return {
            "genotype": genotype.to_dict(),
            "strategy": "spos",
            "sampled_steps": self.steps,
            "validated": self.validated,
        }

    def final_decode(
        self,
        record: dict[str, Any],
        epochs: int,
        out: Path | None,
        data: ValidationData,
        num_classes: int,
    ) -> Decoded:
        """The best of ``search.decode_candidates`` networks in the band, by val loss after
        BN recalibration; each written to ``out/candidates.jsonl`` as it is scored."""
        loop, m = self.loop, self.model
        height, width = data.recalibration_batches(1)[0].shape[-2:]
        size = parse_madds_target(loop.target_madds).size if loop.target_madds else (height, width)
        cost = CostModel(
            m.num_layers, m.num_blocks, m.primitives, m.num_levels, num_classes,
            loop.cost_filter_multiplier, size,
        )  # fmt: skip
        rng = random.Random(loop.seed)
        band = madds_band(loop, cost, rng)
        path = None if out is None else out / "candidates.jsonl"
        if path is not None:
            path.unlink(missing_ok=True)  # a decode run again starts its file afresh
        scored: list[dict[str, Any]] = []
        for origin, genotype in evolve(rng, cost, band, loop.decode_candidates, scored):
            metrics = self.score(genotype, data, num_classes)
            entry = {
                "index": len(scored),
                "origin": origin,
                "madds": cost.of_genotype(genotype),
                **metrics,
                "genotype": genotype.to_dict(),
            }
            scored.append(entry)
            if path is not None:
                with path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(entry) + "\n")
        best = min(scored, key=lambda e: e["val_loss"])
        provenance = {
            "strategy": "spos",
            "decode": "evolution",
            "candidates": len(scored),
            "madds_band": [band[0], band[1]],
            "madds_size": list(size),
            "val_loss": best["val_loss"],
            "val_miou": best["val_miou"],
            "epochs": epochs,
            "sampled_steps": self.steps,
        }
        files = [] if path is None else [path]
        return Decoded(Genotype.from_dict(best["genotype"]), provenance, None, False, files)

    def state_dict(self) -> dict[str, Any]:
        """The optimiser, its schedule and scaler, the step count and the last validation."""
        return {
            "w_optimizer": self.w_optimizer.state_dict(),
            "w_scheduler": self.w_sched.state_dict(),
            "w_scaler": self.w_scaler.state_dict(),
            "spos": {"steps": self.steps, "validated": json.dumps(self.validated)},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """From a checkpoint holding :meth:`state_dict`'s entries."""
        self.w_optimizer.load_state_dict(state["w_optimizer"])
        self.w_sched.load_state_dict(state["w_scheduler"])
        if state.get("w_scaler"):
            self.w_scaler.load_state_dict(state["w_scaler"])
        self.steps = int(state["spos"]["steps"])
        self.validated = json.loads(state["spos"]["validated"])

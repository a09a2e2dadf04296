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

Decoding (:func:`~autodeeplab.engine.search.evolution.search_by_score`): random sampling of
``search.decode_candidates`` networks, then, with ``search.decode_generations`` > 0, an
evolutionary search as SPOS runs it (the best half as parents, their mutations and
crossovers), all within a Multi-Adds band (:func:`decode_band`): ``search.target_madds`` +-
:data:`BAND`, or by default the band ``compare`` draws its random networks in, around the
median network of the space. Each candidate is scored by its val cross-entropy on the
supernet after recalibration (:mod:`~autodeeplab.engine.search.score`); every candidate and
its score go to ``candidates.json`` in the run folder.
"""

from __future__ import annotations

import json
import random
import statistics
from typing import Any, ClassVar

from torch import Tensor

from autodeeplab.config import SearchLoopConfig
from autodeeplab.engine.search.evolution import (
    GenotypeSpace,
    MaddsBand,
    compare_band,
    search_by_score,
    typical_genotype,
)
from autodeeplab.engine.search.sampling import sample_single_path, step_generator
from autodeeplab.engine.search.score import GenotypeScore, score_genotype, write_json
from autodeeplab.engine.search.score_decode import CANDIDATES_FILE, score_batches
from autodeeplab.engine.search.strategies.base import (
    Batch,
    Decoded,
    SearchEnd,
    StepResult,
    StrategyContext,
    ValidationData,
)
from autodeeplab.engine.search.strategies.weights import WeightTraining
from autodeeplab.genotype import Genotype
from autodeeplab.space.cost import CostModel, parse_madds_target
from autodeeplab.space.network import SearchNetwork

__all__ = ["BAND", "SinglePathOneShot", "decode_band"]

#: The decode's Multi-Adds band: +-10% around its centre, the tolerance ``compare`` uses.
BAND = 0.1
#: Sub-networks validated each epoch: fixed ones, so the curve compares like with like.
VALIDATION_PATHS = 3
#: The validation paths' generator steps: negative, never a training step's.
_VALIDATION_STEPS = tuple(-1 - k for k in range(VALIDATION_PATHS))


def decode_band(loop: SearchLoopConfig, space: GenotypeSpace, num_classes: int) -> MaddsBand:
    """The decode's Multi-Adds band: around ``search.target_madds`` (priced at its size and
    at ``search.cost_filter_multiplier``), or by default the band ``compare`` draws its
    random networks in (:func:`~autodeeplab.engine.search.evolution.compare_band`) around the
    median network of the space (:func:`~autodeeplab.engine.search.evolution.typical_genotype`,
    drawn from ``search.seed``)."""
    if loop.target_madds:
        target = parse_madds_target(loop.target_madds)
        cost = CostModel(
            space.num_layers, space.num_blocks, space.primitives, space.num_levels,
            num_classes, loop.cost_filter_multiplier, target.size,
        )  # fmt: skip
        centre = target.madds
        return MaddsBand((1 - BAND) * centre, (1 + BAND) * centre, cost.of_genotype, int(centre))
    typical = typical_genotype(space, num_classes, random.Random(loop.seed))
    return compare_band(typical, num_classes, tolerance=BAND)


class SinglePathOneShot(WeightTraining):
    """Uniform single-path training; an evolutionary decode scored on the supernet."""

    uses_train_b: ClassVar[bool] = False
    checkpoint_keys: ClassVar[tuple[str, ...]] = ("w_scheduler", "spos")
    single_path: ClassVar[bool] = True  # one sub-network's activations, no architecture step

    @classmethod
    def prepare_model(cls, model: SearchNetwork, loop: SearchLoopConfig) -> None:
        """The H^{l-2} edges that paths changing level read (new weights, seeded apart)."""
        model.add_path_edges(loop.seed)

    def __init__(self, model: SearchNetwork, loop: SearchLoopConfig, context: StrategyContext):
        # ``context.penalty`` is not used: no architecture loss, the Multi-Adds budget bounds
        # the decode instead.
        super().__init__(model, loop, context)
        self.seed = loop.seed
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
        loss, applied = self.optimizer_step(
            batch_a, self.weights, self.model.arch_parameters(), self.w_optimizer, self.w_scaler,
            f"the weight step of {where}", clip=self.grad_clip,
            forward=lambda x: self.model.forward_genotype(x, genotype),
        )  # fmt: skip
        return StepResult(loss, applied)

    def arch_parameters(self) -> list[Tensor]:
        """None: nothing architectural learns."""
        return []

    def end_epoch(self, train_loss: float | None, class_counts: Tensor) -> float:
        """Step w's cosine schedule; returns the epoch's lr."""
        return self.step_w_schedule()

    def score(
        self, genotype: Genotype, data: ValidationData, num_classes: int, name: str = ""
    ) -> GenotypeScore:
        """``genotype`` on val after recalibrating its BatchNorms on training batches (the
        supernet's own statistics are left as they were)."""
        recal, val = score_batches(data, self.loop)
        return score_genotype(
            self.model, genotype, recal, val, num_classes,
            device=self.device, amp_dtype=self.amp_dtype, name=name,
        )  # fmt: skip

    def validate(self, data: ValidationData, num_classes: int, sync_bn: bool) -> dict[str, float]:
        """The mean score of :data:`VALIDATION_PATHS` fixed sub-networks, each recalibrated."""
        self.validated = []
        for step in _VALIDATION_STEPS:
            score = self.score(self.sample(step), data, num_classes).to_dict()
            self.validated.append({k: v for k, v in score.items() if k != "name"})
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

    def final_decode(self, end: SearchEnd) -> Decoded:
        """The best of the candidates in the band by val loss after BN recalibration
        (``search.decode_candidates`` random ones, then ``search.decode_generations``
        generations of mutations and crossovers); all written to ``out/candidates.json``."""
        loop, out, data, num_classes = self.loop, end.out, end.data, end.num_classes
        space = GenotypeSpace.of(self.model)
        band = decode_band(loop, space, num_classes)
        candidates = search_by_score(
            lambda g, name: self.score(g, data, num_classes, name),
            band,
            random.Random(loop.seed),
            space=space,
            population=loop.decode_candidates,
            generations=loop.decode_generations,
        )
        best = min(candidates, key=lambda c: c.score.val_loss)
        files = []
        if out is not None:
            files.append(out / CANDIDATES_FILE)
            write_json(
                files[0],
                {
                    "band_madds": [band.low, band.high],
                    "center_madds": band.center,
                    "best": best.score.name,
                    "candidates": [c.to_dict() for c in candidates],
                },
            )
        provenance = {
            "strategy": "spos",
            "decode": "score",
            "candidates": len(candidates),
            "generations": loop.decode_generations,
            "band_madds": [band.low, band.high],
            "val_loss": best.score.val_loss,
            "val_miou": best.score.val_miou,
            "epochs": end.epochs,
            "sampled_steps": self.steps,
        }
        return Decoded(best.score.genotype, provenance, None, False, files)

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

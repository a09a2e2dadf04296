"""Score genotypes on a trained supernet: BatchNorm recalibrated, then val CE and val mIoU.

A weight-sharing search can only beat random if the supernet's score of a network ranks
that network's retrained result (Yu et al., ICLR 2020; SPOS, Guo et al., ECCV 2020). The
score of a genotype here is its single-path forward on the supernet's shared weights
(:meth:`SearchNetwork.forward_genotype <autodeeplab.space.network.SearchNetwork.forward_genotype>`)
after the BatchNorm statistics it reads are recomputed over a few train batches
(:func:`autodeeplab.space.single_path.recalibrate`): the running statistics the supernet
kept describe the mixture of every path, not this one (SPOS recalibrates the same way).
Lower val cross-entropy is better; val mIoU is reported beside it. alpha and beta play no
part, so any supernet can be scored, the paper's included.

Scoring leaves the supernet as it found it: its BatchNorm statistics and train/eval mode
are put back after each call.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from autodeeplab.distributed import all_reduce_mean, all_reduce_sum, is_distributed
from autodeeplab.genotype import Genotype
from autodeeplab.metrics import IGNORE_INDEX, ConfusionMatrix
from autodeeplab.space.network import SearchNetwork
from autodeeplab.space.single_path import batchnorms_used, recalibrate

__all__ = [
    "GenotypeScore",
    "kept_batchnorm_stats",
    "score_genotype",
    "score_genotypes",
    "write_json",
]


@dataclass(frozen=True)
class GenotypeScore:
    """A genotype's score on a supernet: val CE (lower is better), val mIoU, pixel accuracy."""

    genotype: Genotype
    val_loss: float
    val_miou: float
    val_pixel_acc: float
    recal_batches: int  # train batches its BatchNorm statistics were recomputed over
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the genotype as :meth:`Genotype.to_dict` writes it)."""
        return {
            "name": self.name,
            "val_loss": self.val_loss,
            "val_miou": self.val_miou,
            "val_pixel_acc": self.val_pixel_acc,
            "recal_batches": self.recal_batches,
            "genotype": self.genotype.to_dict(),
        }


def _bn_buffers(model: torch.nn.Module) -> list[Tensor]:
    return [
        t
        for m in model.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        for t in (m.running_mean, m.running_var, m.num_batches_tracked)
        if t is not None
    ]


@contextlib.contextmanager
def kept_batchnorm_stats(model: torch.nn.Module) -> Iterator[None]:
    """Put every BatchNorm statistic and the train/eval mode of ``model`` back on exit."""
    buffers = _bn_buffers(model)
    saved = [b.clone() for b in buffers]
    was_training = model.training
    try:
        yield
    finally:
        with torch.no_grad():
            torch._foreach_copy_(buffers, saved)
        model.train(was_training)


def _images(batches: Iterable[Any]) -> Iterator[Tensor]:
    """Image tensors of ``batches``: plain tensors, or the first entry of (images, labels)."""
    for b in batches:
        yield b if isinstance(b, Tensor) else b[0]


@torch.no_grad()
def score_genotype(
    model: SearchNetwork,
    genotype: Genotype,
    recal_batches: Sequence[Any],
    val_batches: Iterable[tuple[Tensor, Tensor]],
    num_classes: int,
    *,
    device: torch.device | None = None,
    amp_dtype: torch.dtype | None = None,
    prev_prev: str = "auto",
    name: str = "",
) -> GenotypeScore:
    """Recalibrate ``genotype``'s BatchNorms on ``recal_batches``, then score it on val.

    Leaves the supernet's statistics as they were (:func:`kept_batchnorm_stats`). Under
    torchrun every rank passes its share of the batches: the recalibrated statistics are
    averaged and the val sums added over ranks, as the supernet's validation does.
    """
    device = device or next(model.parameters()).device
    with kept_batchnorm_stats(model):
        count = recalibrate(model, genotype, _images(recal_batches), prev_prev, device, amp_dtype)
        if is_distributed():
            bns = batchnorms_used(model, genotype, prev_prev)
            all_reduce_mean([t for m in bns for t in (m.running_mean, m.running_var)])
        model.eval()
        cm = ConfusionMatrix(num_classes, IGNORE_INDEX, device)
        total, pixels = torch.zeros((), dtype=torch.float64, device=device), 0
        for x, y in val_batches:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model.forward_genotype(x, genotype, prev_prev)
            logits = logits.float()
            total += F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum")
            pixels += int((y != IGNORE_INDEX).sum())
            cm.update(logits.argmax(1), y)
        cm.all_reduce()
        if is_distributed():
            sums = torch.stack([total, torch.tensor(float(pixels), device=device).double()])
            all_reduce_sum(sums)
            total, pixels = sums[0], int(sums[1])
    if pixels == 0:
        raise ValueError("scoring needs validation pixels; the val batches hold none")
    metrics = cm.compute()
    return GenotypeScore(
        genotype,
        float(total) / pixels,
        float(metrics["miou"]),
        float(metrics["pixel_acc"]),
        count,
        name,
    )


def score_genotypes(
    model: SearchNetwork,
    genotypes: Sequence[Genotype],
    recal_batches: Sequence[Any],
    val_batches: Iterable[tuple[Tensor, Tensor]],
    num_classes: int,
    *,
    names: Sequence[str] | None = None,
    **options: Any,
) -> list[GenotypeScore]:
    """:func:`score_genotype` for each genotype, in order (the same batches and ``options``,
    its keyword arguments ``device``, ``amp_dtype`` and ``prev_prev``, for each).

    ``val_batches`` is iterated once per genotype: pass a list or a DataLoader, not a
    generator. ``names`` label the scores (default ``g0``, ``g1``, ...).
    """
    if names is not None and len(names) != len(genotypes):
        raise ValueError(f"{len(names)} names for {len(genotypes)} genotypes")
    if not recal_batches:
        raise ValueError("scoring needs at least one train batch to recalibrate BatchNorm on")
    return [
        score_genotype(
            model,
            g,
            recal_batches,
            val_batches,
            num_classes,
            name=f"g{i}" if names is None else names[i],
            **options,
        )
        for i, g in enumerate(genotypes)
    ]


def write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON, atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

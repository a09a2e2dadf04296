"""Streaming confusion matrix -> aAcc, mIoU, mAcc and per-class IoU/accuracy (paper §5, Table 2).

The conventions are mmsegmentation's (``mmseg/evaluation/metrics/iou_metric.py``):

- pixels whose target is ``ignore_index`` are not counted;
- ``IoU_c = TP_c / (target_c + pred_c - TP_c)``; a class with an empty union (absent from
  both target and prediction) has IoU ``nan`` and is left out of mIoU (nanmean);
- ``Acc_c = TP_c / target_c``; ``nan`` for a class with no target pixels; mAcc = nanmean;
- aAcc = all correct pixels / all counted pixels.

The matrix (rows = target, columns = prediction) stays on the device of the tensors it is
fed, so evaluation on the GPU never copies labels to the host; ``all_reduce`` sums it over
ranks before ``compute``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["IGNORE_INDEX", "ConfusionMatrix"]

#: Label value of pixels that carry no class; datasets write it, losses and metrics skip it.
IGNORE_INDEX = 255


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _nanmean(x: Tensor) -> float:
    """Mean over the non-nan entries; nan when there are none (no warning)."""
    keep = ~torch.isnan(x)
    return float(x[keep].mean()) if bool(keep.any()) else math.nan


class ConfusionMatrix:
    """``num_classes x num_classes`` int64 pixel counts, rows = target, columns = prediction.

    Args:
        num_classes: ``K``; labels are ``0 .. K-1``.
        ignore_index: target value of pixels to skip; must not be a class index.
        device: where the matrix lives; ``None`` = the device of the first ``update``.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        device: torch.device | str | None = None,
    ) -> None:
        if not _is_int(num_classes) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if not _is_int(ignore_index) or 0 <= ignore_index < num_classes:
            raise ValueError(
                f"ignore_index must be an int outside [0, {num_classes}) (the class indices), "
                f"got {ignore_index!r}"
            )
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._follow_input = device is None
        self.matrix = torch.zeros(
            num_classes, num_classes, dtype=torch.int64, device=device or "cpu"
        )

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Count the pixels of integer tensors ``pred``, ``target`` of one shape, e.g. (N, H, W)."""
        for name, t in (("pred", pred), ("target", target)):
            if not isinstance(t, Tensor):
                raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
                raise ValueError(
                    f"{name} must hold integer class indices (e.g. logits.argmax(1)), "
                    f"got dtype {t.dtype}"
                )
        if pred.shape != target.shape:
            raise ValueError(
                f"pred shape {tuple(pred.shape)} differs from target shape "
                f"{tuple(target.shape)}; resize the prediction to the label size first"
            )
        if pred.device != target.device:
            raise ValueError(
                f"pred is on {pred.device} and target on {target.device}; put both on one device"
            )
        if self.matrix.device != pred.device:
            if self._follow_input:
                self.matrix = self.matrix.to(pred.device)
            else:
                pred, target = pred.to(self.matrix.device), target.to(self.matrix.device)

        k = self.num_classes
        pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
        valid = target != self.ignore_index
        bad = valid & ((target < 0) | (target >= k) | (pred < 0) | (pred >= k))
        if bool(bad.any()):  # a host sync, as is bincount's on CUDA; the slow path is errors only
            self._raise_out_of_range(pred[valid], target[valid])
        # Ignored pixels go to an extra bin K*K that is dropped, instead of boolean indexing.
        index = torch.where(valid, target * k + pred, k * k)
        counts = torch.bincount(index, minlength=k * k + 1)[: k * k]
        self.matrix += counts.view(k, k)

    def _raise_out_of_range(self, pred: Tensor, target: Tensor) -> None:
        k = self.num_classes
        for name, t in (("target", target), ("pred", pred)):
            bad = t[(t < 0) | (t >= k)]
            if bad.numel():
                values = sorted(set(bad.unique().tolist()))[:5]
                hint = (
                    f"labels must be in [0, {k}) or ignore_index={self.ignore_index}"
                    if name == "target"
                    else f"predictions must be in [0, {k})"
                )
                raise ValueError(
                    f"{name} holds value(s) {values} outside [0, {k}); {hint} (num_classes={k})"
                )

    def reset(self) -> None:
        """Zero the counts."""
        self.matrix.zero_()

    def all_reduce(self) -> None:
        """Sum the matrix over all ranks when torch.distributed is initialised; else do nothing."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)

    def compute(self) -> dict[str, Any]:
        """``pixel_acc`` (aAcc), ``mean_acc`` (mAcc), ``miou``; per-class ``iou``, ``acc`` lists."""
        m = self.matrix.detach().cpu().double()
        tp = m.diag()
        area_target, area_pred = m.sum(1), m.sum(0)
        union = area_target + area_pred - tp
        # 0/0 gives nan, which is the convention for classes absent from the union / target.
        iou = tp / union
        acc = tp / area_target
        total = float(m.sum())
        return {
            "pixel_acc": float(tp.sum()) / total if total > 0 else math.nan,
            "mean_acc": _nanmean(acc),
            "miou": _nanmean(iou),
            "iou": iou.tolist(),
            "acc": acc.tolist(),
        }

    def format_table(self, class_names: Sequence[str]) -> str:
        """A plain-text table: class, IoU %, Acc %, then a line with aAcc / mIoU / mAcc %."""
        if len(class_names) != self.num_classes:
            raise ValueError(
                f"got {len(class_names)} class names for {self.num_classes} classes; "
                "pass one name per class"
            )
        r = self.compute()

        def pct(x: float) -> str:
            return "nan" if math.isnan(x) else f"{100 * x:.2f}"

        width = max(len("Class"), *(len(str(n)) for n in class_names))
        lines = [f"{'Class':<{width}}  {'IoU':>7}  {'Acc':>7}", "-" * (width + 18)]
        for name, iou, acc in zip(class_names, r["iou"], r["acc"], strict=True):
            lines.append(f"{str(name):<{width}}  {pct(iou):>7}  {pct(acc):>7}")
        lines.append("-" * (width + 18))
        lines.append(
            f"aAcc {pct(r['pixel_acc'])}  mIoU {pct(r['miou'])}  mAcc {pct(r['mean_acc'])}"
        )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"pixels={int(self.matrix.sum())})"
        )

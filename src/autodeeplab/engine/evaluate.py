"""Inference and evaluation of a trained network (paper §5.2; SPEC.md §7).

- **whole**: one forward over the full image.
- **slide**: windows of ``window`` pixels every ``stride`` pixels, logits averaged where they
  overlap (mmseg's ``slide_inference``). A side shorter than the window is not padded: the
  window shrinks to the image, so an image smaller than the window gives exactly the whole
  result (padding would change BN-free statistics such as ASPP's image pooling).
- **multi-scale + flip** (paper Tab. 4, 5, 7 "MS"): the image is resized by each scale
  (bilinear, align_corners=True as in the network), predicted, resized back, and the
  softmax probabilities of every scale (and its mirror image) are averaged.

:func:`evaluate` feeds ``argmax`` predictions into a
:class:`~autodeeplab.metrics.ConfusionMatrix` that stays on the model's device as int64
counts; :func:`evaluate_checkpoint` does the same for a ``train`` checkpoint and writes
``metrics.json``. :func:`chance_level` gives the mIoU of predicting without looking.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autodeeplab.checkpoint import atomic_write
from autodeeplab.config import TrainConfig, config_from_dict
from autodeeplab.data import build_dataset
from autodeeplab.data.transforms import val_transform
from autodeeplab.metrics import IGNORE_INDEX, ConfusionMatrix
from autodeeplab.model import load_trained_model
from autodeeplab.ops import resize

__all__ = [
    "MODES",
    "chance_level",
    "evaluate",
    "evaluate_checkpoint",
    "predict_probabilities",
    "slide_logits",
]

MODES = ("whole", "slide")


def _check_inference_args(
    mode: str, scales: Sequence[float], window: int | None, stride: int | None
) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown inference mode {mode!r}; use one of: {', '.join(MODES)}")
    if not scales or any(not math.isfinite(s) or s <= 0 for s in scales):
        raise ValueError(f"scales must be positive numbers, got {list(scales)}; e.g. 0.75,1,1.25")
    if mode == "slide" and (window is None or window < 1):
        raise ValueError(f"slide inference needs a positive --window, got {window}")
    if stride is not None and stride < 1:
        raise ValueError(f"the sliding-window stride must be positive, got {stride}")


def slide_logits(model: nn.Module, image: Tensor, window: int, stride: int | None = None) -> Tensor:
    """Sliding-window logits ``(N, K, H, W)`` of ``image`` ``(N, C, H, W)``, overlaps averaged."""
    stride = stride or max(1, (2 * window) // 3)
    height, width = image.shape[-2:]
    rows = max(height - window + stride - 1, 0) // stride + 1
    cols = max(width - window + stride - 1, 0) // stride + 1
    total: Tensor | None = None
    count = torch.zeros(1, 1, height, width, device=image.device)
    for r in range(rows):
        for c in range(cols):
            # The last window is shifted back so it ends at the border (no padding).
            y1, x1 = min(r * stride + window, height), min(c * stride + window, width)
            y0, x0 = max(y1 - window, 0), max(x1 - window, 0)
            out = model(image[..., y0:y1, x0:x1]).float()
            if total is None:
                total = image.new_zeros(image.shape[0], out.shape[1], height, width).float()
            total[..., y0:y1, x0:x1] += out
            count[..., y0:y1, x0:x1] += 1
    assert total is not None  # at least one window always runs
    return total / count


def _logits(
    model: nn.Module, image: Tensor, mode: str, window: int | None, stride: int | None
) -> Tensor:
    if mode == "slide":
        assert window is not None
        return slide_logits(model, image, window, stride)
    return model(image).float()


@torch.no_grad()
def predict_probabilities(
    model: nn.Module,
    image: Tensor,
    *,
    mode: str = "whole",
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    window: int | None = None,
    stride: int | None = None,
    amp_dtype: torch.dtype | None = None,
) -> Tensor:
    """Class probabilities ``(N, K, H, W)`` for ``image`` ``(N, C, H, W)``, averaged over TTA."""
    _check_inference_args(mode, scales, window, stride)
    size = image.shape[-2:]
    # No autocast object without amp: the meta device (inference_memory's estimate) has none.
    autocast = (
        torch.autocast(image.device.type, dtype=amp_dtype)
        if amp_dtype is not None
        else contextlib.nullcontext()
    )
    total: Tensor | None = None
    with autocast:
        for scale in scales:
            scaled_size = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
            x = resize(image, scaled_size, align_corners=True)
            for flipped in (False, True) if flip else (False,):
                xi = x.flip(-1) if flipped else x
                logits = _logits(model, xi, mode, window, stride)
                if flipped:
                    logits = logits.flip(-1)
                prob = F.softmax(resize(logits.float(), size, align_corners=True), dim=1)
                total = prob if total is None else total + prob
    assert total is not None
    return total / (len(scales) * (2 if flip else 1))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    num_classes: int,
    device: torch.device | str,
    *,
    mode: str = "whole",
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    window: int | None = None,
    stride: int | None = None,
    amp_dtype: torch.dtype | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> ConfusionMatrix:
    """Confusion matrix (int64, on ``device``) of ``model`` over ``(image, mask)`` batches."""
    was_training = model.training
    model.eval()
    device = torch.device(device)
    cm = ConfusionMatrix(num_classes, ignore_index, device)
    try:
        for image, target in batches:
            image = image.to(device, non_blocking=True)
            target = target.to(device, non_blocking=True)
            prob = predict_probabilities(
                model,
                image,
                mode=mode,
                scales=scales,
                flip=flip,
                window=window,
                stride=stride,
                amp_dtype=amp_dtype,
            )
            cm.update(prob.argmax(1), target)
    finally:
        model.train(was_training)
    return cm


def chance_level(
    batches: Iterable[tuple[Tensor, Tensor]], num_classes: int, ignore_index: int = IGNORE_INDEX
) -> dict[str, float]:
    """mIoU without looking at the image: always the majority class, or uniformly random.

    ``majority_miou`` is exact; ``uniform_miou`` is the IoU of the expected confusion matrix
    (every pixel of class k counted 1/K times in each column). ``chance_miou`` is the larger.
    """
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for _, target in batches:
        t = target[target != ignore_index].long().cpu()
        counts += torch.bincount(t, minlength=num_classes)[:num_classes].double()
    total = float(counts.sum())
    if total == 0:
        raise ValueError("the labels hold no valid pixel; chance level is undefined")
    present = counts > 0
    majority = int(counts.argmax())
    # Majority class everywhere: its IoU is n_c / N, every other present class scores 0.
    majority_miou = (float(counts[majority]) / total) / int(present.sum())
    tp = counts / num_classes
    union = counts + total / num_classes - tp
    uniform = tp / union  # classes absent from the labels still get predicted: IoU 0
    uniform_miou = float(uniform.mean())
    return {
        "majority_miou": majority_miou,
        "uniform_miou": uniform_miou,
        "chance_miou": max(majority_miou, uniform_miou),
        "majority_class": majority,
        "class_frequency": (counts / total).tolist(),
    }


def _finite(x: float) -> float | None:
    """NaN (a class absent from labels and predictions) -> None, which JSON can hold."""
    return None if math.isnan(x) else x


def evaluate_checkpoint(
    path: str | Path,
    *,
    data: str | None = None,
    split: str = "val",
    mode: str | None = None,
    scales: Sequence[float] | None = None,
    flip: bool | None = None,
    window: int | None = None,
    stride: int | None = None,
    num_samples: int | None = None,
    device: str = "auto",
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate a ``train`` checkpoint on ``split`` of ``data``; write ``metrics.json``.

    ``data``, ``num_samples`` (on its val split) and the inference options default to the
    checkpoint's own config (data and eval sections). ``out`` is a folder or a ``.json``
    path; default: next to the checkpoint.
    """
    from autodeeplab.engine.runtime import select_device

    dev = select_device(device)
    model, state = load_trained_model(path, dev)
    cfg = config_from_dict(state["config"], TrainConfig(), where=str(path))
    spec = data or cfg.data.spec
    given = {"mode": mode, "scales": scales, "flip": flip, "window": window, "stride": stride}
    ecfg = replace(cfg.eval, **{k: v for k, v in given.items() if v is not None})
    num_classes = model.num_classes
    class_names = list(state["class_names"])
    if data is not None and data != cfg.data.spec:
        from autodeeplab.data import dataset_info

        info = dataset_info(spec)
        if info.num_classes != num_classes:
            raise ValueError(
                f"{spec}: has {info.num_classes} classes but {path} predicts {num_classes}; "
                "evaluate on the dataset the network was trained on"
            )
    if num_samples is None and spec == cfg.data.spec and split == "val":
        num_samples = cfg.data.val_samples  # the validation set the run itself scored
    seed = cfg.train.seed
    resize = val_transform(cfg.data.longest_side) if cfg.data.longest_side else None
    dataset = build_dataset(
        spec, split, size=cfg.data.crop, seed=seed, num_samples=num_samples, transform=resize
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=ecfg.batch_size,
        shuffle=False,
        num_workers=cfg.data.num_workers,
        generator=torch.Generator().manual_seed(seed),
    )
    window = ecfg.window or cfg.data.crop
    from autodeeplab.engine.inference_memory import InferenceMemoryCheck

    options = {"mode": ecfg.mode, "scales": ecfg.scales, "flip": ecfg.flip, "window": window}
    fits = InferenceMemoryCheck(model, dev, stride=ecfg.stride, **options)

    def checked() -> Iterable[tuple[Tensor, Tensor]]:
        """The loader's batches, each refused before inference if it would not fit."""
        for i, (image, target) in enumerate(loader):
            fits(image.shape[-2:], f"{spec} {split} batch {i}", batch=image.shape[0])
            yield image, target

    cm = evaluate(
        model,
        checked(),
        num_classes,
        dev,
        mode=ecfg.mode,
        scales=ecfg.scales,
        flip=ecfg.flip,
        window=window,
        stride=ecfg.stride,
    )
    result = cm.compute()
    metrics = {
        "checkpoint": str(path),
        "iteration": state.get("iteration"),
        "data": spec,
        "split": split,
        "num_images": len(dataset),
        "mode": ecfg.mode,
        "scales": list(ecfg.scales),
        "flip": ecfg.flip,
        "window": window if ecfg.mode == "slide" else None,
        "miou": _finite(result["miou"]),
        "pixel_acc": _finite(result["pixel_acc"]),
        "mean_acc": _finite(result["mean_acc"]),
        "per_class": {
            name: {"iou": _finite(iou), "acc": _finite(acc)}
            for name, iou, acc in zip(class_names, result["iou"], result["acc"], strict=True)
        },
        "table": cm.format_table(class_names),
        "confusion_matrix": cm.matrix.cpu().tolist(),
    }
    target = Path(out) if out is not None else Path(path).parent
    if target.suffix != ".json":
        target = target / "metrics.json"
    text = json.dumps(metrics, indent=2, allow_nan=False) + "\n"
    atomic_write(target, lambda f: f.write(text.encode("utf-8")))
    metrics["path"] = str(target)
    return metrics

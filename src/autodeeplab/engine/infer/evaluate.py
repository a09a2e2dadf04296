"""Evaluation of a trained network (paper §5.2; docs/design.md §7).

:func:`evaluate` runs :mod:`~autodeeplab.engine.infer.forward`'s inference (whole, slide,
multi-scale + flip) and feeds ``argmax`` predictions into a
:class:`~autodeeplab.metrics.ConfusionMatrix` that stays on the model's device as int64
counts; :func:`evaluate_checkpoint` does the same for a ``train`` checkpoint and writes
``metrics.json``. :func:`chance_level` gives the mIoU of predicting without looking.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from autodeeplab.checkpoint import atomic_write
from autodeeplab.config import EvalConfig, TrainConfig, config_from_dict
from autodeeplab.data import build_dataset
from autodeeplab.data.transforms import val_transform
from autodeeplab.engine.infer.forward import (
    MODES,
    inference_options,
    predict_probabilities,
    slide_logits,
)
from autodeeplab.engine.infer.memory import InferenceMemoryCheck
from autodeeplab.metrics import IGNORE_INDEX, ConfusionMatrix
from autodeeplab.model import load_trained_model

__all__ = [
    "MODES",
    "chance_level",
    "evaluate",
    "evaluate_checkpoint",
    "predict_probabilities",
    "resolve_eval",
    "slide_logits",
]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    num_classes: int,
    device: torch.device | str,
    eval_cfg: EvalConfig | None = None,
    *,
    amp_dtype: torch.dtype | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> ConfusionMatrix:
    """Confusion matrix (int64, on ``device``) of ``model`` over ``(image, mask)`` batches.

    ``eval_cfg`` is the inference (its ``window`` filled in for slide; None: one forward
    pass over the whole image); ``amp_dtype`` the autocast dtype of the training run that
    validates, None for full precision.
    """
    was_training = model.training
    model.eval()
    device = torch.device(device)
    cm = ConfusionMatrix(num_classes, ignore_index, device)
    options = inference_options(eval_cfg or EvalConfig())
    try:
        for image, target in batches:
            image = image.to(device, non_blocking=True)
            target = target.to(device, non_blocking=True)
            prob = predict_probabilities(model, image, amp_dtype=amp_dtype, **options)
            cm.update(prob.argmax(1), target)
    finally:
        model.train(was_training)
    return cm


def resolve_eval(cfg: TrainConfig, changes: Mapping[str, Any] | None = None) -> EvalConfig:
    """The run's eval section with ``changes`` applied and the window filled in.

    A window of None means the training crop (``data.crop``), as the run validated with.
    """
    eval_cfg = replace(cfg.eval, **(changes or {}))
    return replace(eval_cfg, window=eval_cfg.window or cfg.data.crop)


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
    changes: Mapping[str, Any] | None = None,
    num_samples: int | None = None,
    device: str = "auto",
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate a ``train`` checkpoint on ``split`` of ``data``; write ``metrics.json``.

    ``data``, ``num_samples`` (on its val split) and the inference default to the
    checkpoint's own config (data and eval sections); ``changes`` replaces fields of its eval
    section, e.g. ``{"mode": "slide", "flip": True}``. ``out`` is a folder or a ``.json``
    path; default: next to the checkpoint.
    """
    from autodeeplab.engine.device import select_device
    from autodeeplab.files import check_outputs_spare_inputs

    target = Path(out) if out is not None else Path(path).parent
    if target.suffix != ".json":
        target = target / "metrics.json"
    # Before any work: metrics.json must not be written over what the evaluation reads.
    check_outputs_spare_inputs([("--out", target)], [("checkpoint", path)])
    dev = select_device(device)
    model, state = load_trained_model(path, dev)
    cfg = config_from_dict(state["config"], TrainConfig(), where=str(path))
    spec = data or cfg.data.spec
    ecfg = resolve_eval(cfg, changes)
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
    fits = InferenceMemoryCheck(model, dev, ecfg)

    def checked() -> Iterable[tuple[Tensor, Tensor]]:
        """The loader's batches, each refused before inference if it would not fit."""
        for i, (image, target) in enumerate(loader):
            fits(image.shape[-2:], f"{spec} {split} batch {i}", batch=image.shape[0])
            yield image, target

    cm = evaluate(model, checked(), num_classes, dev, ecfg)
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
        "window": ecfg.window if ecfg.mode == "slide" else None,
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
    text = json.dumps(metrics, indent=2, allow_nan=False) + "\n"
    atomic_write(target, lambda f: f.write(text.encode("utf-8")))
    metrics["path"] = str(target)
    return metrics

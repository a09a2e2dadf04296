"""The forward passes of inference (paper §5.2; docs/design.md §7): whole image, sliding windows,
and multi-scale + flip.

- **whole**: one forward over the full image.
- **slide**: windows of ``window`` pixels every ``stride`` pixels, logits averaged where they
  overlap (mmseg's ``slide_inference``). A side shorter than the window is not padded: the
  window shrinks to the image, so an image smaller than the window gives exactly the whole
  result (padding would change BN-free statistics such as ASPP's image pooling).
- **multi-scale + flip** (paper Tab. 4, 5, 7 "MS"): the image is resized by each scale
  (bilinear, align_corners=True as in the network), predicted, resized back, and the
  softmax probabilities of every scale (and its mirror image) are averaged.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autodeeplab.config import EvalConfig
from autodeeplab.ops import resize

__all__ = [
    "MODES",
    "check_inference_args",
    "inference_options",
    "predict_probabilities",
    "slide_logits",
]

MODES = ("whole", "slide")


def check_inference_args(
    mode: str, scales: Sequence[float], window: int | None, stride: int | None
) -> None:
    """Refuse an unknown mode, non-positive scales, or a missing window or stride."""
    if mode not in MODES:
        raise ValueError(f"unknown inference mode {mode!r}; use one of: {', '.join(MODES)}")
    if not scales or any(not math.isfinite(s) or s <= 0 for s in scales):
        raise ValueError(f"scales must be positive numbers, got {list(scales)}; e.g. 0.75,1,1.25")
    if mode == "slide" and (window is None or window < 1):
        raise ValueError(f"slide inference needs a positive --window, got {window}")
    if stride is not None and stride < 1:
        raise ValueError(f"the sliding-window stride must be positive, got {stride}")


def inference_options(eval_cfg: EvalConfig) -> dict[str, Any]:
    """:func:`predict_probabilities`' keywords (mode, scales, flip, window, stride) of a config.

    ``eval_cfg.window`` is passed as it is: a caller whose config leaves it to the training
    crop fills it in first. The batch size is the data loader's, not inference's.
    """
    return {
        "mode": eval_cfg.mode,
        "scales": eval_cfg.scales,
        "flip": eval_cfg.flip,
        "window": eval_cfg.window,
        "stride": eval_cfg.stride,
    }


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
    check_inference_args(mode, scales, window, stride)
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

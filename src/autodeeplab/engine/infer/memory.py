"""Peak memory of inference (``eval``, ``predict``) for one image size, before it runs.

The estimate runs :func:`~autodeeplab.engine.infer.forward.predict_probabilities` itself on the
meta device (shapes only, no memory) under a dispatch mode that adds up the bytes of every
tensor an op creates and subtracts them when the tensor is freed; its peak plus the input
and the network's weights is the estimate. So it follows the real code path: the scales,
the flip, slide windows and the softmax buffers are all in it, with no formula to drift.
A size whose estimate exceeds the device's memory is refused with one line instead of an
allocator error (or the OOM killer) partway through.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from autodeeplab.config import EvalConfig
from autodeeplab.engine.infer.forward import inference_options, predict_probabilities
from autodeeplab.space.memory import device_memory_bytes

__all__ = ["InferenceMemoryCheck", "estimate_inference_bytes"]


class _LiveBytes(TorchDispatchMode):
    """Track the bytes of live tensors that ops create, and their peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0

    def _free(self, n: int) -> None:
        self.live -= n

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        # Views and in-place ops return storage that is already counted.
        if any(r.alias_info is not None for r in func._schema.returns):
            return out
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                n = t.numel() * t.element_size()
                self.live += n
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._free, n)
        return out


class _OnMeta(nn.Module):
    """``model`` called with meta copies of its weights: the same graph, no memory."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.weights = {
            name: torch.empty_like(t, device="meta")
            for name, t in [*model.named_parameters(), *model.named_buffers()]
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run ``model`` on meta tensors."""
        return functional_call(self.model, self.weights, (x,), strict=False)


def _size(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"


def _weight_bytes(model: nn.Module) -> int:
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def estimate_inference_bytes(
    model: nn.Module, size: tuple[int, int], *, batch: int = 1, **options: Any
) -> int:
    """Peak bytes of ``predict_probabilities(model, (batch, 3, *size), **options)`` on a device.

    Weights and the input included; ``options`` are predict_probabilities' (mode, scales,
    flip, window, stride).
    """
    height, width = size
    probe = (height, width)
    window = options.get("window")
    if options.get("mode") == "slide" and window:
        # Windows past the first few repeat the same peak: probe a 2x2-window image, then
        # add the full-size buffers (input, logit sum, count, probabilities) for the rest.
        side = window + (options.get("stride") or max(1, (2 * window) // 3))
        probe = (min(height, side), min(width, side))
    # Scales run one after another at the same original-size accumulators: the largest
    # sets the peak, so only it is probed (with the flip, if asked).
    scale = max(options.get("scales", (1.0,)))
    probe_options = {**options, "scales": (scale,)}
    was_training = model.training
    model.eval()
    x = torch.empty(batch, 3, *probe, device="meta")
    on_meta = _OnMeta(model)  # outside the count: the real weights are added once, below
    try:
        with _LiveBytes() as live:
            prob = predict_probabilities(on_meta, x, **probe_options)
            classes = prob.shape[1]
            del prob
    finally:
        model.train(was_training)
    rest = height * width - probe[0] * probe[1]
    per_pixel = 4 * batch * ((3 + 2 * classes + 1) * scale**2 + 2 * classes + 3)
    image = 4 * batch * 3 * height * width
    return int(live.peak + rest * per_pixel + image + _weight_bytes(model))


class InferenceMemoryCheck:
    """Refuse an image size whose inference would not fit the device (estimates cached)."""

    def __init__(self, model: nn.Module, device: torch.device, eval_cfg: EvalConfig) -> None:
        self.model, self.device = model, device
        self.options = inference_options(eval_cfg)
        self.available = device_memory_bytes(device.type)
        self._seen: dict[tuple[int, int, int], int] = {}

    def __call__(self, size: Sequence[int], where: str, batch: int = 1) -> None:
        """Raise ValueError naming ``where`` if ``batch`` images of ``size`` would not fit."""
        if self.available is None:
            return
        key = (batch, int(size[0]), int(size[1]))
        if key not in self._seen:
            self._seen[key] = estimate_inference_bytes(
                self.model, (key[1], key[2]), batch=batch, **self.options
            )
        need = self._seen[key]
        if need > self.available:
            scales = self.options.get("scales", (1.0,))
            raise ValueError(
                f"{where}: inference at {key[1]}x{key[2]} (scales {','.join(map(str, scales))}) "
                f"needs about {_size(need)}, more than the {_size(self.available)} of this "
                f"{self.device.type}; use --mode slide with a --window, fewer or smaller "
                "--scales, or a smaller image"
            )

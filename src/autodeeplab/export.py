"""Export a trained network to ONNX or TorchScript, and check it against PyTorch.

:func:`export_model` rebuilds the network of a ``train`` checkpoint from its own
``model_kwargs``, puts it in eval mode and writes

- **ONNX** (opset 17) with the TorchScript-based ``torch.onnx.export(..., dynamo=False)``.
  The torch.export-based exporter (``dynamo=True``, the default of ``torch.onnx.export``
  since torch 2.9) needs ``onnxscript``, which the ``export`` extra does not install, and
  on CPU it takes about 25x longer for this network; pass ``dynamo=True`` to use it.
  ``dynamic=True`` makes the batch, height and width dynamic axes;
- **TorchScript** with ``torch.jit.trace`` (``torch.jit.script`` cannot compile the shared
  ``resize`` helper). The trace records the size arithmetic of every resize, so it runs at
  any input size; ``dynamic=True`` only adds the check at a second size.

Every export is then run on a seeded random input (and, when dynamic, on a second batch
and size) with onnxruntime or ``torch.jit.load`` and compared with eager PyTorch: it
passes at max |export - torch| <= 1e-4 (+ 1e-5 per unit of the largest |logit|), or, for
an ill-conditioned network whose own float32 rounding is larger, when it is as close to a
float64 run as float32 PyTorch is (see ``_check_parity``). The file is written to a
temporary name and renamed into place only when the check passes, so a file at
``out_path`` is always one that matched.

Tracing freezes one decision: ``ops.resize`` skips a resize whose target equals the
current size. When both traced sides exceed the network's largest stride, every level
has its own feature size, so a skipped resize is one between equal levels, which stays a
no-op at every input size (a kept one whose sizes happen to match at run time is an exact
identity). :func:`export_network` therefore refuses smaller trace sizes.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autodeeplab.files import check_outputs_spare_inputs
from autodeeplab.model import load_trained_model

__all__ = [
    "FORMATS",
    "ONNX_OPSET",
    "ONNX_OPSET_DYNAMO",
    "TOLERANCE",
    "ExportError",
    "ExportResult",
    "export_model",
    "export_network",
]

FORMATS = ("onnx", "torchscript")
ONNX_OPSET = 17
ONNX_OPSET_DYNAMO = 18  # the torch.export-based exporter's lowest opset
#: Largest |exported - eager| accepted for fp32 logits of magnitude <= 1 ...
TOLERANCE = 1e-4
#: ... and the part that grows with the largest |logit| (fp32 rounding is relative).
RELATIVE_TOLERANCE = 1e-5
DEFAULT_SIZE = (513, 513)
_EXPORTERS = {
    ("onnx", False): "torch.onnx.export(dynamo=False)",
    ("onnx", True): "torch.onnx.export(dynamo=True)",
    ("torchscript", False): "torch.jit.trace",
}
_INSTALL = 'pip install "autodeeplab[export]"  (or: pip install onnx onnxruntime)'


class ExportError(ValueError):
    """An export that cannot be made (missing package, bad size) or does not match PyTorch."""


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and how closely it matches eager PyTorch."""

    path: Path
    format: str
    size: tuple[int, int]
    dynamic: bool
    max_abs_diff: float | None  # None when the check was skipped
    max_abs_logit: float | None  # the scale the difference is measured against
    checked_shapes: list[tuple[int, ...]] = field(default_factory=list)
    # Set only when max_abs_diff exceeds the plain tolerance: max |torch fp32 - torch fp64|
    # and max |export - torch fp64| (see _check_parity).
    torch_fp32_error: float | None = None
    export_fp64_error: float | None = None
    opset: int | None = None
    exporter: str = ""

    def describe(self) -> str:
        """One line: the parity figure and the input shapes it was measured over."""
        if self.max_abs_diff is None:
            return f"wrote {self.path} ({self.format}; parity not checked)"
        shapes = ["x".join(str(d) for d in s) for s in self.checked_shapes]
        line = (
            f"max |{self.format} - torch| = {self.max_abs_diff:.1e} over {shapes[0]} "
            f"(logits up to {self.max_abs_logit:.3g})"
        )
        if len(shapes) > 1:
            axes = "N,H,W" if self.format == "onnx" else "input size"
            line += f"; dynamic {axes} also checked at {', '.join(shapes[1:])}"
        if self.torch_fp32_error is not None:
            line += (
                f"; within float32 rounding: vs float64 torch the export is off by "
                f"{self.export_fp64_error:.1e}, torch float32 by {self.torch_fp32_error:.1e}"
            )
        return line


def export_model(
    checkpoint: str | os.PathLike[str],
    out_path: str | os.PathLike[str] | None = None,
    format: str = "onnx",
    size: tuple[int, int] | None = None,
    dynamic: bool = False,
    check: bool = True,
    dynamo: bool = False,
) -> ExportResult:
    """Export the network of a ``train`` checkpoint; verify it against PyTorch (see module doc).

    Args:
        checkpoint: ``checkpoints/best.pt`` or ``last.pt`` of an ``autodeeplab train`` run.
        out_path: the file to write; default: beside the checkpoint, ``<stem>.onnx`` or
            ``<stem>.torchscript.pt``.
        format: ``"onnx"`` or ``"torchscript"``.
        size: (H, W) of the traced input; default: the checkpoint's training crop.
        dynamic: ONNX: dynamic batch, height and width axes (a TorchScript trace runs at any
            shape anyway); both formats are then also checked at a second shape.
        check: compare with eager PyTorch and raise :class:`ExportError` on a mismatch.
        dynamo: ONNX only: use the torch.export-based exporter (needs ``onnxscript``).
    """
    _check_format(format)
    if out_path is None:
        ckpt = Path(checkpoint)
        suffix = ".onnx" if format == "onnx" else ".torchscript.pt"
        out_path = ckpt.with_name(ckpt.stem + suffix)
    # Before any work: a checkpoint named like its export must not be written over.
    check_outputs_spare_inputs([("--out", out_path)], [("checkpoint", checkpoint)])
    # Export traces the plain layout; the exported graph does not carry one.
    model, state = load_trained_model(checkpoint, channels_last=False)
    if size is None:
        crop = (state.get("config") or {}).get("data", {}).get("crop")
        size = (int(crop), int(crop)) if isinstance(crop, int) else DEFAULT_SIZE
    return export_network(model, out_path, format, size, dynamic, check, dynamo)


def export_network(
    model: nn.Module,
    out_path: str | os.PathLike[str],
    format: str = "onnx",
    size: tuple[int, int] = DEFAULT_SIZE,
    dynamic: bool = False,
    check: bool = True,
    dynamo: bool = False,
) -> ExportResult:
    """Export an :class:`~autodeeplab.model.AutoDeepLab` (any stride-aware module) and check it."""
    _check_format(format)
    height, width = (int(s) for s in size)
    min_side = _min_side(model)
    if min(height, width) < min_side:
        raise ExportError(
            f"size {height}x{width} is too small: both sides must be at least {min_side} "
            "(above the network's largest stride) for the traced graph to hold at every size"
        )
    if format == "onnx":
        _require_onnx(dynamo, check)
    model = model.eval().cpu()
    channels = _in_channels(model)
    x = _random_input((1, channels, height, width), seed=0)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        if format == "onnx":
            _export_onnx(model, x, tmp, dynamic, dynamo)
        else:
            _export_torchscript(model, x, tmp)
        result = ExportResult(
            path=out,
            format=format,
            size=(height, width),
            dynamic=dynamic,
            max_abs_diff=None,
            max_abs_logit=None,
            opset=None if format == "torchscript" else ONNX_OPSET_DYNAMO if dynamo else ONNX_OPSET,
            exporter=_EXPORTERS[format, dynamo and format == "onnx"],
        )
        if check:
            inputs = [x]
            if dynamic:
                second = (2, channels, *_second_size(height, width, min_side))
                inputs.append(_random_input(second, seed=1))
            _check_parity(model, tmp, format, inputs, result)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return result


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; use one of: {', '.join(FORMATS)}")


def _require_onnx(dynamo: bool, check: bool) -> None:
    needed = ("onnx",) + (("onnxruntime",) if check else ()) + (("onnxscript",) if dynamo else ())
    for module in needed:
        try:
            __import__(module)
        except ImportError:
            hint = "pip install onnxscript" if module == "onnxscript" else _INSTALL
            raise ExportError(f"ONNX export needs the '{module}' package; {hint}") from None


def _min_side(model: nn.Module) -> int:
    """Smallest input side whose coarsest feature map is larger than one pixel."""
    genotype = getattr(model, "genotype", None)
    largest_stride = max(genotype.strides) if genotype is not None else 32
    return largest_stride + 1


def _in_channels(model: nn.Module) -> int:
    kwargs = getattr(model, "model_kwargs", None) or {}
    return int(kwargs.get("in_channels", 3))


def _second_size(height: int, width: int, min_side: int) -> tuple[int, int]:
    """Another (H, W) for the dynamic check: smaller, non-square, other parities."""
    return (max(min_side, height * 3 // 4 + 1), max(min_side + 2, width // 2 + 3))


def _random_input(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    # A normalised image is roughly N(0, 1) per channel.
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _export_onnx(
    model: nn.Module, x: torch.Tensor, path: Path, dynamic: bool, dynamo: bool
) -> None:
    kwargs: dict[str, Any] = {"input_names": ["image"], "output_names": ["logits"]}
    if dynamo:
        if dynamic:
            n, h, w = (torch.export.Dim(name) for name in ("batch", "height", "width"))
            kwargs["dynamic_shapes"] = ({0: n, 2: h, 3: w},)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (x,), str(path), opset_version=ONNX_OPSET_DYNAMO, verbose=False, **kwargs
            )
        return
    if dynamic:
        axes = {0: "batch", 2: "height", 3: "width"}
        kwargs["dynamic_axes"] = {"image": axes, "logits": axes}
    # The tracer warns where ops.resize compares sizes (see the module docstring) and that
    # this exporter is deprecated; neither is actionable for the user here.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (x,), str(path), opset_version=ONNX_OPSET, dynamo=False, **kwargs)
    import onnx

    onnx.checker.check_model(str(path))


def _export_torchscript(model: nn.Module, x: torch.Tensor, path: Path) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(model, x, check_trace=False)
        torch.jit.save(traced, str(path))


def _run_exported(path: Path, format: str, inputs: list[torch.Tensor]) -> list[np.ndarray]:
    """Outputs of the exported file for each input, from onnxruntime or torch.jit.load."""
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return [session.run(None, {name: x.numpy()})[0] for x in inputs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return [loaded(x).numpy() for x in inputs]


def _max_abs(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(x.astype(np.float64) - y).max()) for x, y in zip(a, b, strict=True))


def _check_parity(
    model: nn.Module, path: Path, format: str, inputs: list[torch.Tensor], result: ExportResult
) -> None:
    """Fill ``result``'s parity fields; raise :class:`ExportError` past the tolerance.

    The export passes when max |export - torch| <= 1e-4 + 1e-5 * max |logit|. Past that,
    the network may be ill-conditioned (BN with tiny running variances amplifies rounding):
    then both are compared with a float64 run of the same network, and the export passes
    when it is at most twice as far from it (+ 1e-4) as PyTorch's own float32 result is.
    """
    with torch.no_grad():
        expected = [model(x).numpy() for x in inputs]
    got = _run_exported(path, format, inputs)
    for x, want, have in zip(inputs, expected, got, strict=True):
        result.checked_shapes.append(tuple(x.shape))
        if have.shape != want.shape:
            raise ExportError(
                f"the {format} export gives logits of shape {tuple(have.shape)} for input "
                f"{'x'.join(map(str, x.shape))}, PyTorch {tuple(want.shape)}; the export is wrong"
            )
    diff = _max_abs(got, expected)
    scale = max(float(np.abs(want).max()) for want in expected)
    result.max_abs_diff, result.max_abs_logit = diff, scale
    limit = TOLERANCE + RELATIVE_TOLERANCE * scale
    if diff <= limit:
        return
    if math.isfinite(diff):
        exact_model = copy.deepcopy(model).double()
        with torch.no_grad():
            exact = [exact_model(x.double()).numpy() for x in inputs]
        result.torch_fp32_error = _max_abs(expected, exact)
        result.export_fp64_error = _max_abs(got, exact)
        if result.export_fp64_error <= 2 * result.torch_fp32_error + TOLERANCE:
            return
    shapes = ", ".join("x".join(map(str, s)) for s in result.checked_shapes)
    floor = (
        ""
        if result.torch_fp32_error is None
        else f"; vs float64 torch: export {result.export_fp64_error:.1e}, torch float32 "
        f"{result.torch_fp32_error:.1e}"
    )
    raise ExportError(
        f"the {format} export does not match PyTorch: max |{format} - torch| = {diff:.2e} "
        f"> {limit:.1e} (logits up to {scale:.3g}) over {shapes}{floor}; nothing was written "
        "(--no-check / check=False keeps the file)"
    )

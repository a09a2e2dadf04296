"""Subcommands about a finished network: info (size and cost) and export (ONNX / TorchScript)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from autodeeplab.cli.arguments import add_command, parse_size

__all__ = ["register"]


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "export", _cmd_export)
    p.add_argument("checkpoint", help="checkpoints/best.pt or last.pt of a train run")
    p.add_argument(
        "--format", choices=("onnx", "torchscript"), default="onnx", help="(default: onnx)"
    )
    p.add_argument(
        "--size",
        type=parse_size,
        metavar="HxW",
        help="traced input size (default: the training crop)",
    )
    p.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width")
    p.add_argument("--out", help="output file (default: beside the checkpoint)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check")
    p.add_argument(
        "--dynamo", action="store_true", help="ONNX: torch.export-based exporter (needs onnxscript)"
    )


def _cmd_export(args: argparse.Namespace) -> int:
    """export a trained network to ONNX or TorchScript, checked against PyTorch

    Writes the file only if its output matches eager PyTorch on random input (max abs difference <=
    1e-4 + 1e-5 * max |logit|, or within PyTorch's own float32 rounding); exit status 2 otherwise.
    """
    from autodeeplab.export import export_model

    result = export_model(
        args.checkpoint,
        args.out,
        format=args.format,
        size=args.size,
        dynamic=args.dynamic,
        check=not args.no_check,
        dynamo=args.dynamo,
    )
    print(result.describe())
    print(f"wrote {result.path}", file=sys.stderr)
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "info", _cmd_info)
    p.add_argument("target", metavar="MODEL_OR_GENOTYPE", help="auto-deeplab-s/m/l or a .json")
    p.add_argument(
        "--size", type=parse_size, default=(1025, 2049), help="input HxW (default: 1025x2049)"
    )
    p.add_argument("--classes", type=int, default=19, help="number of classes (default: 19)")
    p.add_argument(
        "--filter-multiplier", type=int, help="F (default: the preset's; 20 for a genotype)"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _cmd_info(args: argparse.Namespace) -> int:
    """parameters, Multi-Adds, stride path and cell of a model or genotype"""
    import torch

    from autodeeplab.data.transforms import IGNORE_INDEX as MAX_CLASSES
    from autodeeplab.genotype import load_genotype
    from autodeeplab.model import MODELS, build_model, count_multiply_adds, count_parameters

    if args.target in MODELS:
        target = args.target
    elif args.target.endswith(".json") or Path(args.target).exists():
        target = load_genotype(args.target)
    else:
        raise ValueError(
            f"{args.target!r} is neither a model ({', '.join(MODELS)}) nor a genotype .json file"
        )
    if not 1 <= args.classes <= MAX_CLASSES:
        raise ValueError(
            f"--classes {args.classes}: give 1 to {MAX_CLASSES} (labels are 8-bit, "
            f"{MAX_CLASSES} is the ignore index)"
        )
    if args.filter_multiplier is not None and not 1 <= args.filter_multiplier <= 4096:
        raise ValueError(f"--filter-multiplier {args.filter_multiplier}: give 1 to 4096")
    # On the meta device: counting needs the shapes only, so no size or width allocates.
    with torch.device("meta"):
        model = build_model(target, args.classes, filter_multiplier=args.filter_multiplier)
    genotype = model.genotype
    height, width = args.size
    info = {
        "model": args.target,
        "filter_multiplier": model.filter_multiplier,
        "num_classes": args.classes,
        "parameters": count_parameters(model),
        "multiply_adds": count_multiply_adds(model, (height, width)),
        "size": [height, width],
        "output_stride": model.output_stride,
        "path": list(genotype.path),
        "strides": list(genotype.strides),
        "cell": [[[op, inp] for op, inp in block] for block in genotype.cell],
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    inputs = {0: "H^{l-2}", 1: "H^{l-1}"}
    rows = [
        ("model", args.target),
        ("filter multiplier F", str(info["filter_multiplier"])),
        ("classes", str(args.classes)),
        ("parameters", f"{info['parameters']:,} ({info['parameters'] / 1e6:.2f} M)"),
        ("Multi-Adds", f"{info['multiply_adds'] / 1e9:.2f} B at {height}x{width}"),
        ("ASPP output stride", str(info["output_stride"])),
        ("path (stride/layer)", " ".join(str(s) for s in genotype.strides)),
    ]
    for i, block in enumerate(genotype.cell):
        branches = " + ".join(f"{op}({inputs.get(inp, f'block {inp - 1}')})" for op, inp in block)
        rows.append((f"cell block {i}", branches))
    width_key = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width_key}}  {value}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands."""
    _add_export(sub)
    _add_info(sub)

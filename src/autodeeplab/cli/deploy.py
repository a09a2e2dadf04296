"""The export subcommand: ONNX / TorchScript with a parity check."""

from __future__ import annotations

import argparse
import sys

from autodeeplab.cli.arguments import parse_size

__all__ = ["register"]


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a trained network to ONNX or TorchScript, checked against PyTorch",
        description="Writes the file only if its output matches eager PyTorch on random "
        "input (max abs difference <= 1e-4 + 1e-5 * max |logit|, or within PyTorch's own "
        "float32 rounding); exit status 2 otherwise.",
    )
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
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
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


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands."""
    _add_export(sub)

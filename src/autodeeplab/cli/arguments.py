"""Command-line arguments shared by the subcommands, and how flags become config overrides."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from typing import TypeVar

__all__ = [
    "MAX_SCALE",
    "MAX_SCALES",
    "MAX_SIDE",
    "MIN_SCALE",
    "OVERWRITE_HELP",
    "add_inference_options",
    "add_set",
    "flag_overrides",
    "for_data",
    "parse_scales",
    "parse_size",
]

T = TypeVar("T")

#: Bounds of --scales and --size, before anything is allocated: the scales of the config's
#: ``scales`` key, a few more than the paper's six, and the config's largest window.
MIN_SCALE, MAX_SCALE, MAX_SCALES, MAX_SIDE = 0.01, 100.0, 16, 65536

#: The help of --overwrite, the same for search, train and run.
OVERWRITE_HELP = "replace the run that --out holds (its checkpoints, logs and results)"


def add_set(p: argparse.ArgumentParser, example: str) -> None:
    """Add the repeatable ``--set KEY=VALUE`` config override, with ``example`` in its help."""
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override any config key, e.g. --set {example} (repeatable)",
    )


def parse_scales(text: str) -> tuple[float, ...]:
    """``--scales`` type: comma-separated positive numbers, e.g. ``0.5,1,1.5``."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected comma-separated numbers, e.g. 0.5,0.75,1,1.25"
        ) from None
    if not values or not all(MIN_SCALE <= v <= MAX_SCALE for v in values):
        raise argparse.ArgumentTypeError(
            f"{text!r}: each scale must be a number in {MIN_SCALE:g}..{MAX_SCALE:g}"
        )
    if len(values) > MAX_SCALES:
        raise argparse.ArgumentTypeError(
            f"{text!r}: {len(values)} scales, at most {MAX_SCALES} (each is a forward pass)"
        )
    return values


def parse_size(text: str) -> tuple[int, int]:
    """``--size`` type: ``HxW`` or one side for a square, as ``(H, W)``."""
    parts = text.lower().split("x")
    try:
        values = [int(v) for v in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected HxW, e.g. 1025x2049, or one side")
    if any(v > MAX_SIDE for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: each side must be at most {MAX_SIDE}")
    return (values[0], values[-1])


def add_inference_options(p: argparse.ArgumentParser, defaults: str) -> None:
    """Add ``--mode --scales --flip --window --stride --device``; ``defaults`` ends their help."""
    p.add_argument("--mode", choices=("whole", "slide"), help=f"inference mode ({defaults})")
    p.add_argument(
        "--scales",
        type=parse_scales,
        metavar="S1,S2,...",
        help=f"multi-scale inference, e.g. 0.5,0.75,1,1.25,1.5,1.75 ({defaults})",
    )
    p.add_argument(
        "--flip", action="store_true", default=None, help="also average the mirrored image"
    )
    p.add_argument("--window", type=int, help="sliding-window size (default: the training crop)")
    p.add_argument("--stride", type=int, help="sliding-window step (default: 2/3 of the window)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")


def flag_overrides(args: argparse.Namespace, mapping: tuple[tuple[str, str], ...]) -> list[str]:
    """``key=value`` overrides for the ``(flag, config key)`` pairs whose flag was given."""
    overrides = []
    for flag, key in mapping:
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value) if isinstance(value, str) else value}")
    return overrides


def for_data(base: T, data_spec: str | None) -> T:
    """A CPU preset's image counts size the generated data; a real dataset is used whole."""
    from autodeeplab.data import parse_spec

    if base is None or not data_spec or parse_spec(data_spec)[0] == "synthetic":
        return base
    data = replace(base.data, train_samples=None, val_samples=None)
    return replace(base, data=data)

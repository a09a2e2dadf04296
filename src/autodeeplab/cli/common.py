"""Helpers shared by the subcommands: arguments, config overrides and messages."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from autodeeplab.config import SearchConfig

__all__ = ["MAX_SCALE", "MAX_SCALES", "MAX_SIDE", "MIN_SCALE", "OVERWRITE_HELP"]

T = TypeVar("T")

#: Bounds of --scales and --size, before anything is allocated: the scales of the config's
#: ``scales`` key, a few more than the paper's six, and the config's largest window.
MIN_SCALE, MAX_SCALE, MAX_SCALES, MAX_SIDE = 0.01, 100.0, 16, 65536

#: The help of --overwrite, the same for search, train and run.
OVERWRITE_HELP = "replace the run that --out holds (its checkpoints, logs and results)"


def _add_set(p: argparse.ArgumentParser, example: str) -> None:
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override any config key, e.g. --set {example} (repeatable)",
    )


def _scales(text: str) -> tuple[float, ...]:
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


def _size(text: str) -> tuple[int, int]:
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


def _add_inference_options(p: argparse.ArgumentParser, defaults: str) -> None:
    p.add_argument("--mode", choices=("whole", "slide"), help=f"inference mode ({defaults})")
    p.add_argument(
        "--scales",
        type=_scales,
        metavar="S1,S2,...",
        help=f"multi-scale inference, e.g. 0.5,0.75,1,1.25,1.5,1.75 ({defaults})",
    )
    p.add_argument(
        "--flip", action="store_true", default=None, help="also average the mirrored image"
    )
    p.add_argument("--window", type=int, help="sliding-window size (default: the training crop)")
    p.add_argument("--stride", type=int, help="sliding-window step (default: 2/3 of the window)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")


def _flag_overrides(args: argparse.Namespace, mapping: tuple[tuple[str, str], ...]) -> list[str]:
    overrides = []
    for flag, key in mapping:
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value) if isinstance(value, str) else value}")
    return overrides


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def _for_data(base: T, data_spec: str | None) -> T:
    """A CPU preset's image counts size the generated data; a real dataset is used whole."""
    from autodeeplab.data import parse_spec

    if base is None or not data_spec or parse_spec(data_spec)[0] == "synthetic":
        return base
    data = replace(base.data, train_samples=None, val_samples=None)
    return replace(base, data=data)


def _print_search_memory(cfg: SearchConfig, num_classes: int) -> None:
    """One line with the estimated peak memory; a warning if the device looks too small."""
    from autodeeplab.distributed import get_world_size
    from autodeeplab.engine.runtime import select_device
    from autodeeplab.search.memory import (
        device_memory_bytes,
        estimate_search_memory,
        format_estimate,
        memory_warning,
    )

    device = select_device(cfg.search.device)
    available = device_memory_bytes(device.type)
    est = estimate_search_memory(cfg, num_classes, device.type, get_world_size(), available)
    print(format_estimate(est, cfg), file=sys.stderr)
    warning = memory_warning(est, cfg, available) if available is not None else None
    if warning:
        print(warning, file=sys.stderr)


def _resume_command(command: str, out: Path) -> str:
    """The command that resumes the run in ``out`` with its own saved config."""
    from autodeeplab.distributed import get_world_size

    launcher = (
        "torchrun [the same options] -m autodeeplab" if get_world_size() > 1 else "autodeeplab"
    )
    config, folder = shlex.quote(str(out / "config.yaml")), shlex.quote(str(out))
    return f"{launcher} {command} --config {config} --out {folder} --resume"


def _arch_never_updated(out: Path) -> bool:
    """Whether the finished search in ``out`` logged no architecture step at all."""
    from autodeeplab.engine.runtime import read_jsonl

    records = read_jsonl(out / "search_log.jsonl")
    return bool(records) and all(r.get("arch_loss") is None for r in records)


def _warn_untrained_genotype(command: str, what: str) -> None:
    """Say that ``what`` decodes alpha and beta as initialised, not as searched."""
    print(
        f"autodeeplab {command}: warning: alpha and beta were never updated "
        f"(search.arch_start_epoch >= the epochs run, or every architecture step skipped), so "
        f"{what} is the decode of their initial values, not a search result",
        file=sys.stderr,
    )

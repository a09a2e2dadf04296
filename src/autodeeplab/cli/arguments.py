"""Command-line arguments shared by the subcommands, and how flags become config overrides."""

from __future__ import annotations

import argparse
import inspect
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any, NamedTuple, TypeVar

__all__ = [
    "MAX_SCALE",
    "MAX_SCALES",
    "MAX_SIDE",
    "MIN_SCALE",
    "OVERWRITE_HELP",
    "add_again_options",
    "add_command",
    "add_inference_options",
    "add_set",
    "add_stage_options",
    "flag_overrides",
    "for_data",
    "inference_changes",
    "parse_scales",
    "parse_size",
    "stage_overrides",
]

T = TypeVar("T")

#: Bounds of --scales and --size, before anything is allocated: the scales of the config's
#: ``scales`` key, a few more than the paper's six, and the config's largest window.
MIN_SCALE, MAX_SCALE, MAX_SCALES, MAX_SIDE = 0.01, 100.0, 16, 65536

#: The help of --overwrite, the same for search, train and run.
OVERWRITE_HELP = "replace the run that --out holds (its checkpoints, logs and results)"


def add_command(
    sub: argparse._SubParsersAction, name: str, func: Callable[[argparse.Namespace], Any]
) -> argparse.ArgumentParser:
    """Add the subcommand ``name``, which runs ``func``; ``func``'s docstring is its help.

    The docstring's first line is the command's line in ``autodeeplab --help``; the paragraph
    after it, if any, the description in ``autodeeplab NAME --help`` (as click does).
    """
    summary, _, body = inspect.cleandoc(func.__doc__ or "").partition("\n\n")
    p = sub.add_parser(name, help=summary, description=body or None)
    p.set_defaults(func=func)
    return p


class _Stage(NamedTuple):
    """The words in which the options of ``search`` and ``train`` differ."""

    length: tuple[str, str]  # the flag that sets how long the run is, and its help
    config: str  # an example --config
    crop: str  # --crop's help
    resume: str  # what a bare --resume continues from


_STAGES = {
    "search": _Stage(
        ("--epochs", "search epochs"),
        "configs/search/paper.yaml",
        "crop (image) size in pixels",
        "the newest complete checkpoint in --out",
    ),
    "train": _Stage(
        ("--iters", "training iterations"),
        "configs/train/synthetic.yaml",
        "training crop size in pixels",
        "--out's checkpoints/last.pt",
    ),
}


def add_stage_options(p: argparse.ArgumentParser, stage: str) -> None:
    """Add ``--data --out --config``, the run's length, ``--batch-size --crop --seed``."""
    words = _STAGES[stage]
    p.add_argument("--data", help="dataset spec, e.g. synthetic (default: the config's)")
    out = f"runs/{stage}"
    p.add_argument("--out", default=out, help=f"run directory (default: {out})")
    p.add_argument("--config", help=f"YAML preset, e.g. {words.config}")
    p.add_argument(words.length[0], type=int, help=words.length[1])
    p.add_argument("--batch-size", type=int, help="images per step")
    p.add_argument("--crop", type=int, help=words.crop)
    p.add_argument("--seed", type=int, help="random seed")


def stage_overrides(args: argparse.Namespace, stage: str) -> list[str]:
    """``key=value`` overrides for the :func:`add_stage_options` flags that were given."""
    length = _STAGES[stage].length[0].removeprefix("--")  # epochs or iters
    return flag_overrides(
        args,
        (
            ("data", "data.spec"),
            (length, f"{stage}.{length}"),
            ("batch_size", f"{stage}.batch_size"),
            ("crop", "data.crop"),
            ("seed", f"{stage}.seed"),
        ),
    )


def add_again_options(p: argparse.ArgumentParser, stage: str, resume_help: str = "") -> None:
    """Add ``--resume | --overwrite``: what to do with an ``--out`` that holds a run.

    ``search`` and ``train`` resume from a given checkpoint or, alone, from ``--out``'s;
    ``run`` (no entry in the table) resumes each stage from its own, as ``resume_help`` says.
    """
    again = p.add_mutually_exclusive_group()
    if stage in _STAGES:
        again.add_argument(
            "--resume",
            nargs="?",
            const=True,
            default=None,
            metavar="CHECKPOINT",
            help=f"resume from CHECKPOINT, or alone: {_STAGES[stage].resume}",
        )
    else:
        again.add_argument("--resume", action="store_true", help=resume_help)
    again.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)


def add_set(
    p: argparse.ArgumentParser,
    example: str,
    metavar: str = "KEY=VALUE",
    what: str = "any config key",
) -> None:
    """Add the repeatable ``--set KEY=VALUE`` config override, with ``example`` in its help."""
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar=metavar,
        help=f"override {what}, e.g. --set {example} (repeatable)",
    )


def add_random_center(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--random-center``: where the random genotypes' Multi-Adds band is centred."""
    p.add_argument(
        "--random-center",
        choices=("searched", "typical"),
        default="searched",
        help="centre of the random genotypes' Multi-Adds band: the searched network's "
        "(default), or the space's typical network, the same for every search of the space, "
        "so that several searches' comparisons share their random networks through --reuse",
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


def inference_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The eval config fields that :func:`add_inference_options`' given flags replace."""
    names = ("mode", "scales", "flip", "window", "stride")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


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

"""The skeleton that ``search``, ``train`` and ``run`` share: the config a stage runs with,
and its run in ``--out`` (refused if the folder holds a run, started afresh or resumed)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from autodeeplab.cli.arguments import for_data
from autodeeplab.cli.messages import print_search_memory
from autodeeplab.cli.outdir import check_out_dir, fresh_start

__all__ = ["run_stage", "stage_config"]

T = TypeVar("T")
R = TypeVar("R")


def stage_config(
    default: T, preset: dict[str, Any], path: str | None, data: str | None, overrides: list[str]
) -> T:
    """``default`` <- the CPU ``preset`` (only without a config file) <- ``path`` <- overrides.

    Without a config file the built-in CPU preset applies, so the bare command finishes on
    a laptop; a given file replaces it. ``data`` (``--data``) drops a preset's image counts.
    """
    from autodeeplab.config import config_from_dict, load_config

    base = default if path else config_from_dict(preset, default)
    return load_config(path, overrides, base=for_data(base, data))


def run_stage(
    args: argparse.Namespace,
    command: str,
    header: str,
    job: Callable[[], R],
    memory: tuple[Any, int] | None = None,
) -> R | None:
    """Run ``job`` in ``args.out`` once the settings passed; None for a ``--dry-run``.

    An ``--out`` that holds a run is refused before anything is printed (unless ``--resume``
    or ``--overwrite``); then ``header`` and, for a search, the memory estimate of
    ``memory`` = (search config, number of classes) go to stderr. A fresh start that fails
    before its first checkpoint removes what it wrote (:func:`fresh_start`).
    """
    out = Path(args.out)
    replaced = check_out_dir(out, command, bool(args.resume), args.overwrite)
    print(header, file=sys.stderr)
    if memory is not None:
        print_search_memory(*memory)
    if getattr(args, "dry_run", False):
        return None
    with contextlib.nullcontext() if args.resume else fresh_start(out, replaced):
        return job()

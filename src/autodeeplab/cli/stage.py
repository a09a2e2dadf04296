"""The skeleton that ``search``, ``train`` and ``run`` share: the config a stage runs with,
its run in ``--out`` (refused if the folder holds a run, started afresh or resumed), and
its exit (stopped early, or done)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from autodeeplab.cli.arguments import for_data
from autodeeplab.cli.messages import (
    Stopped,
    arch_never_updated,
    print_search_memory,
    warn_untrained_genotype,
)
from autodeeplab.cli.outdir import check_out_dir, claim_out_dir

if TYPE_CHECKING:
    from autodeeplab.config import SearchConfig, TrainConfig

__all__ = ["run_stage", "stage_config", "stage_exit"]

R = TypeVar("R")


@overload
def stage_config(
    stage: Literal["search"], path: str | None, data: str | None, overrides: list[str]
) -> SearchConfig: ...


@overload
def stage_config(
    stage: Literal["train"], path: str | None, data: str | None, overrides: list[str]
) -> TrainConfig: ...


def stage_config(
    stage: str, path: str | None, data: str | None, overrides: list[str]
) -> SearchConfig | TrainConfig:
    """The config of a ``search`` or ``train`` stage: defaults <- CPU preset <- file <- overrides.

    Without a config file the built-in CPU preset applies, so the bare command finishes on
    a laptop; a given file replaces it. ``data`` (``--data``) drops a preset's image counts.
    """
    from autodeeplab.config import (
        CPU_SEARCH_PRESET,
        CPU_TRAIN_PRESET,
        SearchConfig,
        TrainConfig,
        config_from_dict,
        load_config,
    )

    default: SearchConfig | TrainConfig = SearchConfig() if stage == "search" else TrainConfig()
    preset = CPU_SEARCH_PRESET if stage == "search" else CPU_TRAIN_PRESET
    base = default if path else config_from_dict(preset, default)
    return load_config(path, overrides, base=for_data(base, data))


def run_stage(
    args: argparse.Namespace,
    command: str,
    header: str,
    job: Callable[..., R],
    memory: tuple[Any, int] | None = None,
    *,
    check_resume: Callable[[], None] | None = None,
    inputs: Sequence[tuple[str, str | None]] = (),
) -> R | None:
    """``job(out, resume=..., progress=...)`` in ``--out`` once the settings passed.

    An ``--out`` that holds a run is refused before anything is printed (unless ``--resume``
    or ``--overwrite``); then ``header`` and, for a search, the memory estimate of
    ``memory`` = (search config, number of classes) go to stderr. None for a ``--dry-run``.
    The job runs as the one process on ``--out`` (:func:`~autodeeplab.cli.outdir.claim_out_dir`):
    no write of the run may hit one of ``inputs`` (``(what, path)`` the command reads),
    ``check_resume`` (read-only) validates a ``--resume`` before anything is written, and a
    fresh start that fails before its first checkpoint removes what it wrote.
    """
    out = Path(args.out)
    check_out_dir(out, command, bool(args.resume), args.overwrite)
    print(header, file=sys.stderr)
    if memory is not None:
        print_search_memory(*memory)
    if getattr(args, "dry_run", False):
        return None
    with claim_out_dir(out, command, args.resume, args.overwrite, check_resume, inputs=inputs):
        return job(out, resume=args.resume, progress=not args.no_progress)


def stage_exit(
    result: Any,
    stopped: Callable[[Any], Stopped],
    done: Callable[[Any], str],
    untrained: tuple[Path, str, str] | None = None,
) -> int | Stopped:
    """The exit of a stage command once :func:`run_stage` gave ``result``.

    None (a ``--dry-run``): 0. A run that SIGINT/SIGTERM ended (``result.stopped``):
    ``stopped(result)``, which says what was saved and how to go on. Otherwise ``done(result)``
    (it may print the result itself) gives the closing line; before it goes to stderr, a
    search that never updated its architecture is warned about (``untrained``: the search's
    folder, the command, what it produced; see :func:`warn_untrained_genotype`). Then 0.
    """
    if result is None:
        return 0
    if result.stopped:
        return stopped(result)
    message = done(result)
    if untrained is not None and arch_never_updated(untrained[0]):
        warn_untrained_genotype(untrained[1], untrained[2])
    print(message, file=sys.stderr)
    return 0

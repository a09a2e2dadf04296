"""What the subcommands print besides their results: percentages, the memory estimate, and
how to resume a run that was stopped early."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autodeeplab.config import SearchConfig

__all__ = [
    "Stopped",
    "arch_never_updated",
    "pct",
    "print_search_memory",
    "resume_command",
    "warn_untrained_genotype",
]


@dataclass(frozen=True)
class Stopped:
    """A run that SIGINT/SIGTERM ended early, after it wrote a checkpoint: exit status 0.

    A command returns it instead of an exit status, and ``cli.main`` prints
    ``<command>: stopped early<where>; <saved>; <how>``, the one form of that message.
    """

    where: str  # e.g. " at iteration 40"; may be empty
    saved: str  # what was written, e.g. "saved runs/train/checkpoints/last.pt"
    how: str  # how to go on, e.g. "resume with: autodeeplab train ... --resume"

    def message(self, command: str) -> str:
        """The line printed for ``command`` (``autodeeplab train``, ...)."""
        return f"{command}: stopped early{self.where}; {self.saved}; {self.how}"


def pct(x: float | None) -> str:
    """A fraction as a percentage with two decimals; ``n/a`` for None."""
    return "n/a" if x is None else f"{100 * x:.2f}"


def print_search_memory(cfg: SearchConfig, num_classes: int) -> None:
    """One line with the estimated peak memory; a warning if the device looks too small."""
    from autodeeplab.distributed import get_world_size
    from autodeeplab.engine.device import select_device
    from autodeeplab.engine.search.strategies import memory_estimate
    from autodeeplab.space.memory import device_memory_bytes, format_estimate, memory_warning

    device = select_device(cfg.search.device)
    available = device_memory_bytes(device.type)
    # The strategy's own model of its peak: DARTS's two steps over the whole supernet, or
    # one sampled path's.
    est = memory_estimate(cfg, num_classes, device.type, get_world_size(), available)
    print(format_estimate(est), file=sys.stderr)
    warning = memory_warning(est, available) if available is not None else None
    if warning:
        print(warning, file=sys.stderr)


def resume_command(command: str, out: Path) -> str:
    """The command that resumes the run in ``out`` with its own saved config."""
    from autodeeplab.distributed import get_world_size

    launcher = (
        "torchrun [the same options] -m autodeeplab" if get_world_size() > 1 else "autodeeplab"
    )
    config, folder = shlex.quote(str(out / "config.yaml")), shlex.quote(str(out))
    return f"{launcher} {command} --config {config} --out {folder} --resume"


def arch_never_updated(out: Path) -> bool:
    """Whether the finished search in ``out`` logged no architecture step at all (a strategy
    without alpha and beta, whose records hold none, never warrants the warning)."""
    from autodeeplab.engine.logs import read_jsonl

    records = read_jsonl(out / "search_log.jsonl")
    relaxed = any("alpha" in r for r in records)
    return relaxed and all(r.get("arch_loss") is None for r in records)


def warn_untrained_genotype(command: str, what: str) -> None:
    """Say that ``what`` decodes alpha and beta as initialised, not as searched."""
    print(
        f"autodeeplab {command}: warning: alpha and beta were never updated "
        f"(search.arch_start_epoch >= the epochs run, or every architecture step skipped), so "
        f"{what} is the decode of their initial values, not a search result",
        file=sys.stderr,
    )

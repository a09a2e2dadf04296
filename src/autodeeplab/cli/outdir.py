"""Run folders of ``search``, ``train`` and ``run``: never lose a run, never reuse a failed start.

A folder that holds a run (any of :data:`RUN_ENTRIES`) is refused as ``--out`` of a fresh
start, before anything is written, unless ``--resume`` continues it or ``--overwrite``
replaces it. A fresh start that fails before its first checkpoint removes what it wrote, so
a later start neither refuses the folder nor silently reuses a stale ``split.json`` or
``config.yaml``. Files that were there before the start are never touched on failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

__all__ = ["RUN_ENTRIES", "check_out_dir", "fresh_start", "holds_checkpoint"]

#: What the stages write into their run folder; any of them marks the folder as holding a run.
RUN_ENTRIES = (
    "config.yaml",
    "split.json",
    "checkpoints",
    "genotype.json",
    "genotype_path.png",
    "genotype_cell.png",
    "search_log.jsonl",
    "train_log.jsonl",
    "metrics.json",
    "tensorboard",
    "report_search.md",
    "report_search.html",
    "report_search",
    # autodeeplab run: one folder per stage, then the report
    "search",
    "train",
    "predictions",
    "training_curves.png",
    "report.md",
    "report.html",
)


def _run_entries(out: Path) -> list[str]:
    return [name for name in RUN_ENTRIES if os.path.lexists(out / name)]


def check_out_dir(out: Path, command: str, resume: bool, overwrite: bool) -> list[str]:
    """Refuse ``out`` unless it can take a fresh run; touches nothing. Returns its run entries.

    Raises ValueError when ``out`` is a file, or holds a run and neither ``resume`` nor
    ``overwrite`` is given.
    """
    for part in out.parts:
        if len(os.fsencode(part)) > 255:  # NAME_MAX of every common file system
            raise ValueError(
                f"--out: the name {part[:40]}... is {len(os.fsencode(part))} bytes long, more "
                "than the 255 a file system allows; use a shorter name"
            )
    if os.path.lexists(out) and not out.is_dir():
        raise ValueError(
            f"--out {out}: is a file, not a folder; give a folder for the {command} run"
        )
    if not out.is_dir():
        _check_creatable(out)
        return []
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(
            f"--out {out}: cannot write in this folder (read-only or no permission); "
            "give a folder you can write to"
        )
    found = _run_entries(out)
    if found and not resume and not overwrite:
        shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        raise ValueError(
            f"--out {out}: already holds a run ({shown}); continue it with --resume, "
            "write to a new --out folder, or replace it with --overwrite"
        )
    return found


def _check_creatable(out: Path) -> None:
    """Refuse an --out that mkdir would fail on, before any work: a file or no permission."""
    ancestor = out.parent
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(
            f"--out {out}: {ancestor} is a file, not a folder, so the folder cannot be made; "
            "give another path"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(
            f"--out {out}: cannot create it in {ancestor} (read-only or no permission); "
            "give a folder you can write to"
        )


def holds_checkpoint(out: Path) -> bool:
    """Whether ``out`` (or a stage folder of it) holds a checkpoint file a resume could use."""
    return any(out.glob("checkpoints/*.pt")) or any(out.glob("*/checkpoints/*.pt"))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def fresh_start(out: Path, replace: list[str] | tuple[str, ...] = ()) -> Iterator[None]:
    """Run a fresh start into ``out``; on failure before a checkpoint, remove what it wrote.

    ``replace``: run entries of an old run that ``--overwrite`` replaces. They are removed
    first, so no genotype or report of the old run survives beside the new run's checkpoints.
    """
    for name in replace:
        _remove(out / name)
    existed = out.is_dir()
    before = set(os.listdir(out)) if existed else set()
    try:
        yield
    except BaseException:
        # A run with a checkpoint is resumable: keep it, the error names what to do.
        if not holds_checkpoint(out) and out.is_dir():
            for name in set(os.listdir(out)) - before:
                with contextlib.suppress(OSError):  # the error being raised matters more
                    _remove(out / name)
            if not existed:
                with contextlib.suppress(OSError):
                    out.rmdir()
        raise

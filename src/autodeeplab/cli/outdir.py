"""Run folders of ``search``, ``train`` and ``run``: never lose a run, never reuse a failed start.

A folder that holds a run (any of :data:`RUN_ENTRIES`) is refused as ``--out`` of a fresh
start, before anything is written, unless ``--resume`` continues it or ``--overwrite``
replaces it. A fresh start that fails before its first checkpoint removes what it wrote, so
a later start neither refuses the folder nor silently reuses a stale ``split.json`` or
``config.yaml``. Files that were there before the start are never touched on failure.

One process per run folder: :func:`lock_out_dir` holds an flock on ``OUT/.autodeeplab.lock``
(which names the holder's PID) while the command runs, so a second ``search``, ``train`` or
``run`` on the folder is refused in one line. An flock, not a marker file: the kernel
releases it when its process dies, so a killed run leaves no stale lock. ``compare``
processes share their ``--out`` (each network has its own lock under it), so they take the
lock shared: they exclude the other commands, not each other. :func:`claim_out_dir` takes
the lock, checks the folder again under it, validates a resume and undoes a failed start.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

__all__ = [
    "LOCK_NAME",
    "RUN_ENTRIES",
    "check_out_dir",
    "check_run_inputs",
    "claim_out_dir",
    "dataset_path",
    "fresh_start",
    "holds_checkpoint",
    "lock_out_dir",
]

#: The lock file of a run folder (removed when its holder ends; the flock is what counts).
LOCK_NAME = ".autodeeplab.lock"

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


def dataset_path(spec: str) -> str | None:
    """The folder a dataset spec names (``folder:PATH``, ``cityscapes:PATH``...), if there."""
    from autodeeplab.data import parse_spec

    argument = parse_spec(spec)[1]
    return argument if argument and os.path.exists(argument) else None


#: Files a resume rewrites with what they already hold (checked by the resume validation).
_REWRITTEN_ON_RESUME = ("config.yaml", "genotype.json")


def check_run_inputs(out: Path, resume: bool, inputs: list[tuple[str, str | None]]) -> None:
    """Refuse a run folder whose writes would hit one of the command's ``inputs``.

    ``inputs``: ``(what, path)``, e.g. ``("config file", args.config)``. The folder may not
    be an input (a dataset folder), and no input may be a file or lie in a folder that the
    run writes or ``--overwrite`` replaces (``OUT/config.yaml`` given as ``--config``).
    """
    from autodeeplab.files import check_outputs_spare_inputs, same_path

    for what, given in inputs:
        if given is not None and same_path(out, given):
            raise ValueError(
                f"--out {out}: is the {what} this command reads; give the run its own folder"
            )
    skip = _REWRITTEN_ON_RESUME if resume else ()
    written = [("--out", out / name) for name in RUN_ENTRIES if name not in skip]
    check_outputs_spare_inputs(written, inputs)


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


def _make_folders(out: Path) -> list[Path]:
    """Create ``out`` and its missing parents; the folders made, deepest first."""
    missing = []
    folder = out
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    out.mkdir(parents=True, exist_ok=True)
    return missing


def _holders(fd: int) -> str:
    """The PIDs a lock file names that still run, as text for an error message."""
    try:
        text = os.pread(fd, 4096, 0).decode("ascii", "replace")
    except OSError:
        text = ""
    pids = []
    for word in text.split():
        if word.isdigit() and int(word) not in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError, OverflowError):
                os.kill(int(word), 0)  # signal 0: only whether it exists
                pids.append(int(word))
    if not pids:
        return "another process"
    return ("PID " if len(pids) == 1 else "PIDs ") + ", ".join(str(p) for p in pids)


def _acquire(path: Path, shared: bool) -> tuple[int | None, str]:
    """An open descriptor of ``path`` holding its flock, or None and who holds it.

    A holder that ends unlinks the file while it still holds the lock, so a descriptor
    locked after that names a file no longer there: open it anew until the lock is on the
    file the path names.
    """
    mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            holders = _holders(fd)
            os.close(fd)
            return None, holders
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise ValueError(
                    f"{path}: this file system does not support file locks ({exc.strerror}); "
                    "use an --out folder on a local disk"
                ) from None
            raise
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd, ""
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def lock_out_dir(out: Path, command: str, *, shared: bool = False) -> Iterator[None]:
    """Hold the run folder ``out`` for this process while the block runs.

    Creates ``out`` if need be (and removes the folders it made if they are empty at the
    end). ValueError naming the holder's PID when another process holds the folder.
    ``shared``: several holders at once (``compare``), still excluding an exclusive one.
    Under torchrun only rank 0 locks: the ranks of one run share its folder.
    """
    from autodeeplab.distributed import get_rank

    if get_rank():
        yield
        return
    made = _make_folders(out)
    path = out / LOCK_NAME
    try:
        fd, holders = _acquire(path, shared)
    except BaseException:
        _remove_empty(made)
        raise
    if fd is None:
        _remove_empty(made)
        raise ValueError(
            f"--out {out}: {holders} is using this folder (it holds {path}); wait for "
            f"it to end, or give {command} another --out folder"
        )
    try:
        if not shared:
            os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        # Unlink only while holding it exclusively: a shared holder may not be the last.
        with contextlib.suppress(OSError):
            if shared:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(path)
        os.close(fd)
        _remove_empty(made)


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first; a folder with anything in it stays
        with contextlib.suppress(OSError):
            folder.rmdir()


@contextlib.contextmanager
def claim_out_dir(
    out: Path,
    command: str,
    resume: object,
    overwrite: bool,
    check_resume: Callable[[], None] | None = None,
    *,
    inputs: Sequence[tuple[str, str | None]] = (),
    shared: bool = False,
) -> Iterator[None]:
    """Run the block as the one process on ``out``: lock, check, validate, undo a failed start.

    The folder is checked again under the lock (another process may have started a run in
    it since the first check); ``inputs`` (``(what, path)`` the command reads) may not be
    hit by the run's writes (:func:`check_run_inputs`); ``check_resume`` (read-only) runs
    before anything is written,
    so a refused resume leaves every file of the run as it was. A fresh start that fails
    before its first checkpoint removes what it wrote (:func:`fresh_start`).
    """
    from autodeeplab.distributed import get_rank

    check_out_dir(out, command, bool(resume), overwrite)
    check_run_inputs(out, bool(resume), list(inputs))
    with lock_out_dir(out, command, shared=shared):
        replaced = check_out_dir(out, command, bool(resume), overwrite)
        # Rank 0's disk holds the run (on several nodes the others' may not): it checks.
        if resume and check_resume is not None and not get_rank():
            check_resume()
        with contextlib.nullcontext() if resume else fresh_start(out, replaced):
            yield

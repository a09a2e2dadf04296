"""Writing checkpoints: atomic files, the free-space check, ``latest.json``, and the format.

Writes go to a temporary file ``.NAME.tmpPID`` in the same directory, are fsynced, then
renamed over the target: a killed process leaves the old checkpoint or the new one, never
half of one. Temporary names never match ``*.pt``, and :func:`save_checkpoint` deletes the
ones a killed process left behind. Before writing, :func:`save_checkpoint` checks that the
disk has room for the file (:class:`DiskSpaceError` otherwise, with nothing touched), and
after the rename it records the file in ``latest.json`` beside it (:func:`read_latest`):
the newest checkpoint of that directory known to be complete.

Test hook: the environment variable ``AUTODEEPLAB_TEST_PAUSE_IN_WRITE=SECONDS`` makes
:func:`atomic_write` sleep after the temporary file is written and before the rename, so a
test can kill a process in the middle of a checkpoint write. It is for tests only.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

__all__ = [
    "FORMAT_VERSION",
    "LATEST_NAME",
    "PAUSE_ENV",
    "CheckpointError",
    "DiskSpaceError",
    "atomic_write",
    "clean_stale_temp_files",
    "estimate_checkpoint_bytes",
    "read_latest",
    "save_checkpoint",
]

FORMAT_VERSION = 1
LATEST_NAME = "latest.json"
PAUSE_ENV = "AUTODEEPLAB_TEST_PAUSE_IN_WRITE"

# Room asked for on top of the estimate: zip headers, pickle framing, latest.json, and
# other writers of the same disk (TensorBoard, logs) between the check and the write.
_SPACE_MARGIN_BYTES = 16 * 2**20
_SPACE_MARGIN_FRACTION = 0.05
_TEMP_NAME = re.compile(r"^\..+\.tmp(\d+)$")  # what atomic_write names its temporary files


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, from another kind of run, or of another version."""


class DiskSpaceError(CheckpointError, OSError):
    """The disk has no room for a checkpoint; the previous checkpoint is left as it was."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.errno = errno.ENOSPC


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def _check_free_space(path: Path, size_hint: int) -> None:
    """Raise :class:`DiskSpaceError` unless ``path``'s disk has ``size_hint`` bytes + margin."""
    need = int(size_hint * (1 + _SPACE_MARGIN_FRACTION)) + _SPACE_MARGIN_BYTES
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:  # a file system that cannot tell: write, and report a failure if any
        return
    if free < need:
        raise DiskSpaceError(
            f"{path.parent}: not enough disk space to write {path.name}: needs about "
            f"{_mib(need)}, {_mib(free)} free; free some space (e.g. delete old runs or lower "
            "search.keep_checkpoints) or write to another disk with --out; the previous "
            "checkpoint is untouched"
        )


class _GuardedFile:
    """A file object that remembers the OSError of a failed ``write`` (then re-raises it)."""

    def __init__(self, f: BinaryIO) -> None:
        self._f, self.error = f, None

    def write(self, data: Any) -> int:
        """Write ``data``; remember an OSError before passing it on."""
        try:
            return self._f.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def atomic_write(
    path: str | os.PathLike[str],
    write: Callable[[BinaryIO], Any],
    size_hint: int | None = None,
) -> None:
    """Call ``write(file_object)`` on a temp file beside ``path``, fsync, rename over ``path``.

    ``size_hint``: the bytes about to be written; if given, the free space is checked first.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if size_hint is not None:
        _check_free_space(p, size_hint)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            guarded = _GuardedFile(f)
            try:
                write(guarded)
            except Exception:
                # torch.save reports a failed write as a RuntimeError about zip positions:
                # raise the OSError underneath (a full disk), which says what happened.
                if guarded.error is not None:
                    raise guarded.error from None
                raise
            f.flush()
            os.fsync(f.fileno())
        pause = os.environ.get(PAUSE_ENV)
        if pause:  # test-only: lets a test kill the process between the write and the rename
            time.sleep(float(pause))
        os.replace(tmp, p)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT) and not isinstance(exc, DiskSpaceError):
            raise DiskSpaceError(
                f"{p.parent}: the disk filled up while writing {p.name} ({exc.strerror}); free "
                "some space or write to another disk with --out; the previous file is untouched"
            ) from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(p.parent)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale_temp_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete the temp files of :func:`atomic_write` whose process is gone; returns them."""
    d = Path(directory)
    removed = []
    if not d.is_dir():
        return removed
    for entry in d.iterdir():
        m = _TEMP_NAME.match(entry.name)
        if m is None or int(m.group(1)) == os.getpid() or _pid_alive(int(m.group(1))):
            continue
        try:
            entry.unlink()
        except OSError:  # already gone, or not ours to delete: harmless either way
            continue
        removed.append(entry)
    return removed


def estimate_checkpoint_bytes(state: Any) -> int:
    """About how many bytes ``torch.save(state)`` writes: every tensor storage once, plus the rest.

    An estimate, not a serialisation, so that checking the free space needs no second copy
    of a large checkpoint in memory.
    """
    seen: set[tuple[str, int]] = set()
    total = 0
    stack = [state]
    while stack:
        obj = stack.pop()
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            key = (str(obj.device), storage.data_ptr())
            if key not in seen:  # torch.save writes a shared storage once, and whole
                seen.add(key)
                total += storage.nbytes() + 128  # zip entry header and alignment
            total += 64  # the tensor's pickled metadata
        elif isinstance(obj, dict):
            total += 8 * len(obj)
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            total += 8 * len(obj)
            stack.extend(obj)
        else:
            total += len(repr(obj)) + 4  # pickle is about as long as repr for plain values
    return total


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any], kind: str) -> None:
    """Write ``state`` plus ``format_version`` and ``kind`` to ``path`` atomically.

    Checks the free space first (:class:`DiskSpaceError`, nothing written), removes temp
    files of killed writers, and afterwards names ``path`` in ``latest.json`` beside it.
    """
    p = Path(path)
    payload = {"format_version": FORMAT_VERSION, "kind": kind, **state}
    clean_stale_temp_files(p.parent)
    atomic_write(p, lambda f: torch.save(payload, f), size_hint=estimate_checkpoint_bytes(payload))
    _write_latest(p, kind, state)


def _write_latest(path: Path, kind: str, state: dict[str, Any]) -> None:
    """Record ``path`` as the newest complete checkpoint of its directory (atomic, no pause)."""
    record: dict[str, Any] = {
        "checkpoint": path.name,
        "kind": kind,
        "format_version": FORMAT_VERSION,
        "bytes": path.stat().st_size,
    }
    for key in ("epoch", "iteration", "step"):
        if isinstance(state.get(key), int) and not isinstance(state.get(key), bool):
            record[key] = state[key]
    text = json.dumps(record, indent=2) + "\n"
    target = path.with_name(LATEST_NAME)
    tmp = target.with_name(f".{LATEST_NAME}.tmp{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_latest(directory: str | os.PathLike[str], kind: str | None = None) -> Path | None:
    """The checkpoint that ``directory/latest.json`` names, if it is there whole; else None.

    Cheap (reads no checkpoint): the file must exist with the recorded size and kind.
    A caller that needs certainty still loads it with :func:`load_checkpoint`.
    """
    d = Path(directory)
    try:
        record = json.loads((d / LATEST_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("checkpoint"), str):
        return None
    name = record["checkpoint"]
    if Path(name).name != name or name.startswith("."):  # a bare file name, never a path
        return None
    if kind is not None and record.get("kind") != kind:
        return None
    path = d / name
    try:
        if path.stat().st_size != record.get("bytes"):
            return None
    except OSError:
        return None
    return path

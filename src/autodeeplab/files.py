"""Paths the user names: say what stands there when it is not a readable regular file.

A folder or a FIFO given where a file belongs was reported as "not found" (``is_file()`` is
false for both), and opening a FIFO blocks forever. Every loader calls :func:`require_file`
first, so each case gets its own one-line error naming the path and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "DuplicateKeyError",
    "check_outputs_spare_inputs",
    "describe_os_error",
    "file_lock",
    "reject_duplicate_keys",
    "require_file",
    "same_path",
    "write_text_atomic",
]

# errno -> what to do about it; the first part of each message is the system's own words.
_FIXES = {
    errno.EACCES: "check its permissions, or use a path you may read and write",
    errno.EPERM: "check its permissions, or use a path you may read and write",
    errno.EROFS: "the disk is read-only; write to a folder on a writable disk",
    errno.ENOSPC: "free some space, or write to another disk",
    errno.EDQUOT: "free some space (disk quota), or write to another disk",
    errno.ENOTDIR: "a file stands where a folder is needed; move it, or use another path",
    errno.EISDIR: "a folder stands where a file is needed; give a file path",
    errno.ENAMETOOLONG: "use a shorter file or folder name",
    errno.ENOENT: "check the path",
    errno.EEXIST: "move it away, or use another path",
    errno.ELOOP: "the path loops through symbolic links; give the real path",
}


def describe_os_error(exc: OSError) -> str:
    """One line for an OSError: the path, the system's reason and what to do about it."""
    if exc.errno is None or not exc.strerror or not str(exc).startswith("[Errno"):
        return " ".join(str(exc).split()) or type(exc).__name__  # already our own message
    where = f"{exc.filename}: " if exc.filename is not None else ""
    fix = _FIXES.get(exc.errno)
    return f"{where}{exc.strerror.lower()}" + (f"; {fix}" if fix else "")


def require_file(path: str | os.PathLike[str], what: str, fix: str) -> Path:
    """``path`` as a Path if it is a regular file; else one line saying what stands there.

    Raises FileNotFoundError when nothing is there, ValueError for a folder, a FIFO, a socket
    or a device, and for a path the system cannot look up (too long, not permitted).
    """
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: {what} not found; {fix}") from None
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        hint = _FIXES.get(exc.errno or 0, fix)
        if exc.errno == errno.ENOTDIR:
            raise FileNotFoundError(
                f"{p}: {what} not found (a part of the path is a file, not a folder); {fix}"
            ) from None
        raise ValueError(f"{p}: cannot look up the {what} ({reason}); {hint}") from None
    article = "an" if what[:1] in "aeiou" else "a"
    if stat.S_ISDIR(mode):
        raise ValueError(f"{p}: is a folder, not {article} {what}; {fix}")
    if not stat.S_ISREG(mode):
        raise ValueError(
            f"{p}: is not a regular file (a FIFO, socket or device), not {article} {what}; {fix}"
        )
    return p


class DuplicateKeyError(ValueError):
    """A JSON object names a key twice: which of the values was meant cannot be known."""


def reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for ``json.loads``: the object as a dict, or DuplicateKeyError.

    Python's json keeps the last of repeated keys without a word, so a file edited by hand
    could silently lose the value its author meant.
    """
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise DuplicateKeyError(f"duplicate key {key[:60]!r} in a JSON object; keep one")
        obj[key] = value
    return obj


def _resolved(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(path)).resolve()


def same_path(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether ``a`` and ``b`` name one file: the same inode, or the same path after links."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):  # one of them is not there (yet): compare where they point
        try:
            return _resolved(a) == _resolved(b)
        except (OSError, RuntimeError):
            return False


def _inside(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> bool:
    try:
        return _resolved(path).is_relative_to(_resolved(folder))
    except (OSError, RuntimeError):
        return False


def check_outputs_spare_inputs(
    outputs: list[tuple[str, str | os.PathLike[str]]],
    inputs: list[tuple[str, str | os.PathLike[str] | None]],
) -> None:
    """Refuse, before any work, an output that is one of the command's inputs.

    ``outputs``: ``(option, path)`` of every file or folder the command writes (or
    replaces); ``inputs``: ``(what, path)`` of what it reads (None: not given). An input is
    hit when it is an output (the same file, links resolved) or lies inside an output
    folder. ValueError naming both and the fix.
    """
    for option, out in outputs:
        for what, given in inputs:
            if given is None:
                continue
            if same_path(out, given) or _inside(given, out):
                shown = f"{option} {out}" if option else str(out)
                raise ValueError(
                    f"{shown}: would overwrite the {what} {given} that this command reads; "
                    "write the output to another path"
                )


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically: temp file beside it, fsync, rename.

    A file that already holds ``text`` is left as it is (a resume keeps it and its mtime). The
    fsync comes before the rename, so a crash right after it cannot leave the file empty, and
    a failed write (full disk, read-only folder) leaves no temp file behind.
    """
    p = Path(path)
    if p.is_file() and p.read_bytes() == text.encode("utf-8"):
        return
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def file_lock(path: Path, *, wait: bool) -> Iterator[bool]:
    """Hold an exclusive flock on ``path`` (made if absent); yields False if another holds it
    and ``wait`` is off.

    An flock, not a marker file, because the OS releases it when its process dies (a kill
    leaves no stale lock to clean up); it needs POSIX and a file system that honours flock.
    Two opens of one file conflict even within a process, so threads can hold it apart too.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()

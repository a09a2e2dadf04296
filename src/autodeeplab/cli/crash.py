"""What ``main`` does with an error it did not foresee: one line, and the traceback in a file.

A bug (or a failure nobody mapped to a clear message) must not end a command with a page
of traceback, nor lose it: the full traceback is written to ``error.log`` in the command's
run folder when there is one (``--out`` of search, train, run, compare; the run folder of
``report``), else to a new file in the system's temporary folder, and the one line names
the error, the place in autodeeplab's code it came from, and that file.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import traceback
from pathlib import Path

__all__ = ["describe_unexpected", "write_traceback"]

#: The file a run folder keeps the traceback of an unexpected error in (appended to).
ERROR_LOG = "error.log"
_PACKAGE = str(Path(__file__).resolve().parent.parent)


def _run_folder(args: argparse.Namespace) -> Path | None:
    """The command's run folder, if it exists (a failed fresh start has removed its own)."""
    folder = (
        getattr(args, "out", None)
        if args.command in {"search", "train", "run", "compare"}
        else None
    )
    if args.command == "report":
        folder = getattr(args, "run_dir", None)
    if folder is None:
        return None
    path = Path(folder)
    return path if path.is_dir() else None


def write_traceback(exc: BaseException, args: argparse.Namespace) -> Path | None:
    """Write ``exc``'s full traceback to a file; its path, or None if no file could be written."""
    text = "".join(traceback.format_exception(exc))
    header = f"autodeeplab {args.command} (PID {os.getpid()}):\n"
    folder = _run_folder(args)
    if folder is not None:
        try:
            path = folder / ERROR_LOG
            with open(path, "a", encoding="utf-8") as f:
                f.write(header + text + "\n")
            return path
        except OSError:
            pass  # a read-only or full run folder: the temporary folder then
    try:
        fd, name = tempfile.mkstemp(prefix="autodeeplab-error-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(header + text)
        return Path(name)
    except OSError:
        return None


def _where(exc: BaseException) -> str:
    """``file:line in function`` of the innermost frame in autodeeplab's own code, or ''."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(_PACKAGE)]
    if not frames:
        return ""
    last = frames[-1]
    rel = os.path.relpath(last.filename, _PACKAGE)
    return f" (at {rel}:{last.lineno} in {last.name})"


def describe_unexpected(exc: BaseException, message: str, log: Path | None) -> str:
    """The one line for an unforeseen ``exc`` whose own message (one line) is ``message``."""
    saved = f"full traceback in {log}" if log is not None else "no traceback file could be written"
    return (
        f"unexpected {type(exc).__name__}: {message[:300]}{_where(exc)}; {saved}; please report it"
    )

"""The ``autodeeplab`` command line.

:func:`main` is the one place that turns the end of a command into an exit status and a
line on stderr: a user error (bad input, a file not found or unreadable) is one line and
status 2, a run that diverged (inf/nan) status 1, Ctrl-C status 130, and a run stopped
early by SIGINT/SIGTERM status 0 with the command that resumes it. Any other error (a bug)
is one line and status 1, its full traceback written to a file the line names
(:mod:`autodeeplab.cli.crash`). Nothing already written
is removed. Subcommands live in one module per stage (search, retrain, deploy).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Sequence
from typing import TextIO

from autodeeplab.cli import compare, data, deploy, pipeline, retrain, score, search

__all__ = ["main", "build_parser", "one_line"]

# How torch's DataLoader re-raises a worker's exception: the type, then the worker's traceback.
_WORKER_ERROR = re.compile(r"^Caught (\w+) in DataLoader worker process \d+")
# The last line of a traceback: "ValueError: message" (possibly a dotted type name).
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*: (.*)$")


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line, as the user should see it.

    A DataLoader worker's error reaches the main process as the worker's whole traceback:
    only its last line, the original message, is kept, so ``num_workers`` > 0 reports the
    same line as 0. OS errors name the path, the reason and the fix.
    """
    from autodeeplab.files import describe_os_error

    text = str(exc)
    if _WORKER_ERROR.match(text):
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(" ")]
        last = _EXCEPTION_LINE.match(lines[-1]) if lines else None
        return last.group(1) if last else " ".join(text.split())
    if isinstance(exc, OSError):
        return describe_os_error(exc)
    if isinstance(exc, KeyError) and exc.args:  # str() of a KeyError is its key's repr
        text = str(exc.args[0])
    return " ".join(text.split()) or type(exc).__name__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from autodeeplab._version import __version__

    parser = argparse.ArgumentParser(
        prog="autodeeplab",
        description="Auto-DeepLab: hierarchical architecture search for semantic segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"autodeeplab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for subject in (search, retrain, pipeline, compare, score, deploy, data):
        subject.register(sub)
    return parser


def _unexpected(exc: Exception, args: argparse.Namespace, name: str, err: TextIO) -> int:
    """One line for an error no branch of :func:`main` foresaw; the traceback goes to a file."""
    from autodeeplab.cli.crash import describe_unexpected, write_traceback

    log = write_traceback(exc, args)
    print(f"{name}: error: {describe_unexpected(exc, one_line(exc), log)}", file=err)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``autodeeplab`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from autodeeplab.checkpoint import CheckpointError
    from autodeeplab.cli.messages import Stopped
    from autodeeplab.distributed import cleanup, get_rank
    from autodeeplab.engine.guards import NonFiniteError

    rank, err = get_rank(), sys.stderr  # torchrun's RANK; 0 in a plain run
    name = f"autodeeplab {args.command}" + (f" (rank {rank})" if rank else "")
    with contextlib.ExitStack() as quiet:
        if rank:  # under torchrun only rank 0 prints; every rank's errors still do
            devnull = quiet.enter_context(open(os.devnull, "w"))
            quiet.enter_context(contextlib.redirect_stdout(devnull))
            quiet.enter_context(contextlib.redirect_stderr(devnull))
        try:
            outcome = args.func(args)
            if isinstance(outcome, Stopped):  # a checkpoint is written: not a failure
                print(outcome.message(name), file=sys.stderr)
                outcome = 0
            code = int(outcome or 0)
        except NonFiniteError as exc:  # the run diverged: not bad input (2), a failed run (1)
            # sys.stderr, not err: like the run's own output, only rank 0 says it.
            print(f"{name}: error: {exc}", file=sys.stderr)
            code = 1
        except (ValueError, FileNotFoundError, CheckpointError, OSError) as exc:
            print(f"{name}: error: {one_line(exc)}", file=err)
            return 2
        except RuntimeError as exc:
            if not _WORKER_ERROR.match(str(exc)):  # a bug: its traceback is what to report
                return _unexpected(exc, args, name, err)
            print(f"{name}: error: {one_line(exc)}", file=err)
            return 2
        except Exception as exc:  # what no branch above foresaw; SystemExit passes through
            return _unexpected(exc, args, name, err)
        except KeyboardInterrupt:
            print(f"{name}: interrupted", file=err)
            return 130
    cleanup()  # leave torchrun's process group, if a command joined one
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

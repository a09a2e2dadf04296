"""A run's JSONL logs: appended and flushed line by line, read back skipping a torn line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from autodeeplab.files import write_text_atomic

__all__ = ["append_jsonl", "read_jsonl", "truncate_jsonl"]


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and flush it to disk."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All complete JSON lines of ``path`` (a torn last line is skipped)."""
    if not path.is_file():
        return []
    records = []
    # A line of undecodable bytes is as unreadable as a torn one: skipped, not fatal.
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except (ValueError, RecursionError):  # torn, huge integers, absurd nesting: not ours
            continue
    return records


def truncate_jsonl(path: Path, keep: Any) -> None:
    """Rewrite ``path`` keeping the records for which ``keep(record)`` is true."""
    # Nothing to cut (a resume of a finished run): the file and its mtime are kept.
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in read_jsonl(path) if keep(r)))

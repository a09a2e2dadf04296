"""Run-time plumbing shared by the loops: seeding, device choice, RNG state, run folders,
peak memory, torch.compile."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "compile_backend",
    "peak_memory_mib",
    "seed_everything",
    "select_device",
    "rng_state",
    "set_rng_state",
    "append_jsonl",
    "read_jsonl",
    "truncate_jsonl",
]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def select_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device, checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {name!r} asked for, but CUDA is not available; use the device cpu or auto"
        )
    return device


def rng_state() -> dict[str, Any]:
    """Every global RNG state, as tensors and plain values (safe for weights_only loading)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": _tuples_to_lists(random.getstate()),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    random.setstate(_lists_to_tuples(state["python"]))
    npst = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples_to_lists(x: Any) -> Any:
    return [_tuples_to_lists(v) for v in x] if isinstance(x, tuple | list) else x


def _lists_to_tuples(x: Any) -> Any:
    return tuple(_lists_to_tuples(v) for v in x) if isinstance(x, list) else x


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
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except (ValueError, RecursionError):  # torn, huge integers, absurd nesting: not ours
            continue
    return records


def truncate_jsonl(path: Path, keep: Any) -> None:
    """Rewrite ``path`` keeping the records for which ``keep(record)`` is true."""
    records = [r for r in read_jsonl(path) if keep(r)]
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("".join(json.dumps(r) + "\n" for r in records))
            f.flush()
            os.fsync(f.fileno())  # a crash right after the rename must not leave an empty log
        os.replace(tmp, path)
    finally:  # a failed write leaves no temp file behind
        tmp.unlink(missing_ok=True)


def peak_memory_mib(device: torch.device) -> float:
    """Peak memory of this process so far, in MiB: max allocated on CUDA, peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # VmHWM where there is one: Linux keeps ru_maxrss across fork + exec, so a subprocess
    # would report its parent's peak if that were higher.
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        import resource  # Unix only; VmHWM covers Linux

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compile_backend(value: bool | str, key: str) -> str | None:
    """The torch.compile backend a ``compile`` option names (True: Inductor), or None for off.

    Raises ValueError naming ``key`` when the value is no registered backend.
    """
    if value is False or value == "off":
        return None
    backend = "inductor" if value is True else str(value)
    # Every registered backend, the debugging ones (aot_eager, eager) included.
    if backend not in torch.compiler.list_backends(exclude_tags=()):
        known = ", ".join(torch.compiler.list_backends())
        raise ValueError(
            f"{key}={value!r} is not a torch.compile backend; use true (inductor), false, "
            f"or one of {known}, aot_eager"
        )
    return backend

"""The device a run uses: its choice, its peak memory, and the torch.compile backend."""

from __future__ import annotations

import torch

__all__ = ["compile_backend", "peak_memory_mib", "select_device"]


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

"""Reading checkpoints safely: ``weights_only`` loads, the format and kind checks, and the
checks of what a caller reads (keys, state-dict fit, inf/nan), each failing in one line that
names the file and the fix.
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from autodeeplab.checkpoint.write import FORMAT_VERSION, CheckpointError
from autodeeplab.files import require_file

__all__ = [
    "check_finite",
    "check_same_settings",
    "check_state_dict",
    "load_checkpoint",
    "require_keys",
]


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    return (text.split(". ")[0] or "empty")[:160]


def _refusal_detail(message: str) -> str:
    """The line of torch's weights-only refusal that names what was refused."""
    for line in message.splitlines():
        if "nsupported" in line:
            return line.strip().rstrip(".")[:120]
    return "a pickle the weights-only loader does not read"


def load_checkpoint(
    path: str | os.PathLike[str], kind: str | None = None, required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Load a checkpoint safely (tensors on CPU) and check its version, kind and keys.

    ``required``: top-level keys the caller reads; a checkpoint without one is refused with
    a :class:`CheckpointError` naming the file, not a ``KeyError`` later.
    """
    p = require_file(path, "checkpoint", "pass a .pt file from a run's checkpoints/")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols: not for users
            state = torch.load(p, map_location="cpu", weights_only=True)
    except (PermissionError, IsADirectoryError):
        raise
    except pickle.UnpicklingError as exc:
        # A refused GLOBAL is code or a class someone pickled; anything else (an unknown
        # opcode) is garbage or a pickle the weights-only loader does not read: corrupt.
        detail = _refusal_detail(str(exc)) if "Weights only" in str(exc) else str(exc)
        if "GLOBAL" not in detail:
            raise CheckpointError(
                f"{p}: not a readable autodeeplab checkpoint (truncated or corrupt: "
                f"{_first_sentence(detail)}); use another checkpoint of the run"
            ) from None
        raise CheckpointError(
            f"{p}: refused, unsafe: it holds pickled Python objects, not only tensors and plain "
            f"data, and loading them could run code ({detail}); use a "
            "checkpoint written by autodeeplab"
        ) from None
    except (
        OSError,  # a cut zip archive can fail as EINVAL
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        UnicodeDecodeError,
        OverflowError,
        MemoryError,
        RecursionError,
    ) as exc:
        first = _first_sentence(str(exc)) if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{p}: not a readable autodeeplab checkpoint (truncated or corrupt: {first}); "
            "use another checkpoint of the run"
        ) from None
    if not isinstance(state, dict) or "format_version" not in state:
        raise CheckpointError(
            f"{p}: not an autodeeplab checkpoint (no format_version); pass a .pt file from a "
            "run's checkpoints/"
        )
    version = state["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version != FORMAT_VERSION:
        raise CheckpointError(
            f"{p}: checkpoint format {repr(version)[:40]} is not supported by this "
            f"autodeeplab (format {FORMAT_VERSION}); use the version that wrote it"
        )
    if kind is not None and state.get("kind") != kind:
        raise CheckpointError(
            f"{p}: this is a {str(state.get('kind'))[:40]!r} checkpoint, expected a {kind!r} one"
        )
    require_keys(state, p, required)
    return state


def require_keys(state: dict[str, Any], path: str | os.PathLike[str], required: Any) -> None:
    """Refuse a loaded checkpoint without one of the ``required`` top-level keys, by name."""
    missing = [key for key in required if key not in state]
    if missing:
        raise CheckpointError(
            f"{path}: incomplete checkpoint, it has no {', '.join(map(repr, missing))}; use "
            "another checkpoint of the run"
        )


def _few(names: list[str]) -> str:
    shown = ", ".join(repr(n[:60]) for n in names[:2])
    return shown + (f" and {len(names) - 2} more" if len(names) > 2 else "")


def check_finite(path: str | os.PathLike[str], tensors: Any, what: str) -> None:
    """Refuse a checkpoint whose tensors under ``what`` hold inf or nan, naming the first one."""
    stack: list[tuple[str, Any]] = [(what, tensors)]
    while stack:
        name, obj = stack.pop()
        if isinstance(obj, torch.Tensor):
            inexact = obj.is_floating_point() or obj.is_complex()
            if inexact and not bool(torch.isfinite(obj).all()):
                raise CheckpointError(
                    f"{path}: {name[:120]} holds inf/nan, so these are not usable weights; "
                    "use an earlier checkpoint of the run"
                )
        elif isinstance(obj, Mapping):
            stack.extend((f"{name}.{k}", v) for k, v in reversed(list(obj.items())))
        elif isinstance(obj, list | tuple):
            stack.extend((f"{name}[{i}]", v) for i, v in reversed(list(enumerate(obj))))


def check_state_dict(
    path: str | os.PathLike[str], expected: Mapping[str, torch.Tensor], loaded: Any, what: str
) -> None:
    """Refuse a state dict that does not fit the network: keys, shapes, types and inf/nan.

    ``expected``: the network's own ``state_dict()`` (a meta-device one will do). Checked
    before ``load_state_dict``, whose errors are many lines and name no file.
    """
    fix = "use a checkpoint of this run (or of the same model and config)"
    if not isinstance(loaded, Mapping):
        raise CheckpointError(
            f"{path}: {what!r} is a {type(loaded).__name__}, not a state dict; {fix}"
        )
    keys = [k for k in loaded if isinstance(k, str)]
    if len(keys) != len(loaded):
        raise CheckpointError(f"{path}: {what!r} has keys that are not strings; {fix}")
    missing = [k for k in expected if k not in loaded]
    extra = [k for k in keys if k not in expected]
    if missing or extra:
        parts = ([f"missing {_few(missing)}"] if missing else []) + (
            [f"unexpected {_few(extra)}"] if extra else []
        )
        raise CheckpointError(
            f"{path}: {what!r} does not fit the network ({'; '.join(parts)}); {fix}"
        )
    for key, want in expected.items():
        got = loaded[key]
        if not isinstance(got, torch.Tensor):
            raise CheckpointError(
                f"{path}: {what}.{key} is a {type(got).__name__}, not a tensor; {fix}"
            )
        if tuple(got.shape) != tuple(want.shape):
            raise CheckpointError(
                f"{path}: {what}.{key} has shape {tuple(got.shape)}, the network needs "
                f"{tuple(want.shape)}; {fix}"
            )
    check_finite(path, loaded, what)


def check_same_settings(
    path: Path | None,
    was: Mapping[str, Any],
    now: Mapping[str, Any],
    may_change: str,
    unshown: Mapping[str, str] | None = None,
) -> None:
    """Refuse a resume whose settings ``now`` differ from the checkpoint's ``was`` (flat keys).

    The error names the first setting that differs with both values (a key starting with a
    prefix in ``unshown`` by its words instead, e.g. "another genotype") and how to resume:
    with the run's own ``config.yaml`` beside ``path``'s folder and no setting but
    ``may_change`` (``--epochs``, ``--iters``), else with the settings the run started with.
    """
    differ = [k for k in now if was.get(k) != now[k]]
    if not differ:
        return
    key = differ[0]
    words = next((w for p, w in (unshown or {}).items() if key.startswith(p)), None)
    shown = words or f"{key}={_short(was.get(key))}, not {_short(now[key])}"
    more = f" (and {len(differ) - 1} more)" if len(differ) > 1 else ""
    run_config = path.parent.parent / "config.yaml" if path is not None else None
    fix = (
        f"resume with the run's own settings (--config {run_config} and no other "
        f"settings but {may_change})"
        if run_config is not None and run_config.is_file()
        else "resume with the settings the run was started with"
    )
    raise CheckpointError(f"{path}: the run was made with {shown}{more}; {fix}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."

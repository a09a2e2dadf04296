"""Run guards shared by the search and training loops: stop signals, inf/nan, mixed precision.

:class:`StopRequest` turns SIGINT/SIGTERM into "finish this step, write a checkpoint, return
``stopped=True``"; :class:`NonFiniteGuard` ends a run with :class:`NonFiniteError` on an
inf/nan loss, gradient or architecture weight (``nonfinite=stop``, the default) or drops that
batch's update (``skip``), and never lets a non-finite value into a checkpoint;
:func:`resolve_amp` maps an ``amp`` option to an autocast dtype.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from autodeeplab.distributed import all_reduce_sum, is_distributed

__all__ = [
    "AMP_MODES",
    "NONFINITE_MODES",
    "NonFiniteError",
    "NonFiniteGuard",
    "StopRequest",
    "check_loop_options",
    "grads_finite",
    "ignore_sigint",
    "resolve_amp",
]

AMP_MODES = ("auto", "bf16", "fp16", "off")
NONFINITE_MODES = ("stop", "skip")


def resolve_amp(amp: str, device: torch.device, key: str = "amp") -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``; None for full fp32.

    ``auto`` is bf16 (or fp16 where bf16 is unsupported) on CUDA and off elsewhere, since
    bf16 is slower than fp32 on CPUs without bf16 units and for the search's grouped convs.
    An explicit ``bf16`` autocasts on CPU too; an explicit ``fp16`` off CUDA is refused
    (``key`` names the option in the error) rather than silently run in fp32.
    """
    if amp not in AMP_MODES:
        raise ValueError(f"{key}={amp!r}: use one of {', '.join(AMP_MODES)}")
    if amp == "off":
        return None
    if device.type != "cuda":
        if amp == "fp16":
            raise ValueError(f"{key}=fp16 needs CUDA; on {device.type} use bf16 or off")
        return torch.bfloat16 if amp == "bf16" and device.type == "cpu" else None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def check_loop_options(section: str, nonfinite: str, max_skipped: float, amp: str) -> None:
    """Reject bad ``nonfinite``, ``max_skipped`` and ``amp`` values of a loop config section."""
    if nonfinite not in NONFINITE_MODES:
        raise ValueError(
            f"{section}.nonfinite={nonfinite!r}: use one of {', '.join(NONFINITE_MODES)}"
        )
    if not 0.0 <= max_skipped <= 1.0:
        raise ValueError(
            f"{section}.max_skipped={max_skipped}: give a fraction of the run's updates in [0, 1]"
        )
    if amp not in AMP_MODES:
        raise ValueError(f"{section}.amp={amp!r}: use one of {', '.join(AMP_MODES)}")


class StopRequest:
    """SIGINT/SIGTERM as a request to stop after the current step (a context manager).

    The loops install it for their own duration only, and restore the previous handlers on
    the way out, also on an exception. The first signal sets ``requested`` and hands both
    signals back to their previous handlers at once, so a second one acts as it would have
    without us (Ctrl-C raises KeyboardInterrupt, SIGTERM's default ends the process): a
    stuck stop can always be aborted. Python only lets the main thread install handlers;
    from another thread this does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        self._restore()

    def _restore(self) -> None:
        for sig, previous in self._previous.items():
            # None: a handler not installed from Python; the default is the best stand-in.
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def should_stop(self, device: torch.device) -> bool:
        """Whether to stop now; under torchrun every rank gets the same answer.

        One process reads a Python flag (no device work). Under torchrun a rank may have
        seen the signal a step before another, so the flag is summed over ranks (one tiny
        all-reduce and host sync per call), and all ranks stop after the same step.
        """
        if not is_distributed():
            return self.requested
        flag = torch.tensor([float(self.requested)], device=device)
        all_reduce_sum(flag)
        return bool(flag.item() > 0)


class NonFiniteError(RuntimeError):
    """A loss, gradient or parameter became inf or nan; the message names where."""


def _floating_tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point():
            yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _floating_tensors(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            yield from _floating_tensors(value)


class NonFiniteGuard:
    """Catches inf/nan losses, gradients and parameters; ``mode`` is ``stop`` or ``skip``.

    ``stop``: the run ends with :class:`NonFiniteError`, naming the first bad step and the
    last good checkpoint. ``skip``: the update of that batch is dropped (no optimiser step;
    the BatchNorm statistics its forward pass changed are put back), counted, and the run
    ends anyway once more than ``max_skipped`` updates have been dropped. In both modes
    :meth:`check_state` runs before every checkpoint write, so no checkpoint ever holds a
    non-finite tensor.

    Host syncs: ``skip`` must know before the optimiser step, so it reads one flag per
    update (GradScaler's fp16 step does the same). Everything else (``stop``, and what
    cannot be undone, such as alpha/beta after an Adam step) only has to end the run before
    anything bad is saved or logged: on CPU the flag is read at once (there is no device
    queue to stall, and the error names the very step), on CUDA the flags, and the index of
    the first bad one, are folded into device tensors that :meth:`check` reads at the loops'
    existing sync points (log and progress updates, checkpoints), so the hot loop gains no
    sync; a few steps may then run on nan weights before the run stops, none of them saved.
    """

    def __init__(
        self,
        mode: str,
        max_skipped: int,
        device: torch.device,
        section: str,
        buffers: Iterable[torch.Tensor] = (),
        last_checkpoint: Path | None = None,
        hint: str = "",
    ) -> None:
        self.mode, self.max_skipped, self.section, self.hint = mode, max_skipped, section, hint
        self.skipped = 0  # dropped updates in the whole run (restored on resume)
        self.last_checkpoint = last_checkpoint
        self.lazy = device.type == "cuda"  # fold flags on the device; read them in check()
        self._first = torch.full((), -1, dtype=torch.long, device=device)
        self._count = torch.zeros((), dtype=torch.long, device=device)
        self._labels: list[str] = []
        # A dropped batch's forward pass has already moved the BN running statistics (and
        # counted itself in num_batches_tracked): skip mode puts them back.
        self._buffers = list(buffers) if mode == "skip" else []
        self._saved = [b.detach().clone() for b in self._buffers]

    def before_forward(self) -> None:
        """In ``skip`` mode, remember the buffers (BN statistics) a dropped batch must not move."""
        if self._buffers:
            with torch.no_grad():
                torch._foreach_copy_(self._saved, self._buffers)

    def allow(self, ok: torch.Tensor, label: str) -> bool:
        """Whether to apply the update whose loss and gradients gave ``ok`` (all finite)."""
        if self.mode == "stop":
            self.watch(ok, label)
            return True
        if self._agree(ok):
            return True
        if self._buffers:
            with torch.no_grad():
                torch._foreach_copy_(self._buffers, self._saved)
        self.skipped += 1
        if self.skipped > self.max_skipped:
            raise NonFiniteError(
                self._message(
                    label,
                    f"skipped updates: {self.skipped}, more than the {self.max_skipped} that "
                    f"{self.section}.max_skipped allows in this run",
                )
            )
        return False

    def watch(self, ok: torch.Tensor, label: str) -> None:
        """Note ``ok`` (all finite) of something that cannot be undone, e.g. alpha after a step."""
        if not self.lazy:
            if not self._agree(ok):
                raise NonFiniteError(self._message(label))
            return
        self._first = torch.where((self._first < 0) & ~ok, self._count, self._first)
        self._count += 1
        self._labels.append(label)

    def check(self) -> None:
        """Raise :class:`NonFiniteError` if a value watched since the last check was not finite."""
        if not self.lazy or not self._labels:
            return
        first = self._first.clone()
        if is_distributed():  # the smallest bad index of any rank: every rank raises together
            import torch.distributed as dist

            big = torch.iinfo(torch.long).max
            first = torch.where(first < 0, torch.full_like(first, big), first)
            dist.all_reduce(first, dist.ReduceOp.MIN)
            first = torch.where(first == big, torch.full_like(first, -1), first)
        index = int(first)
        labels, self._labels = self._labels, []
        self._first.fill_(-1)
        self._count.zero_()
        if index >= 0:
            raise NonFiniteError(self._message(labels[index]))

    def check_state(self, state: Any, what: str) -> None:
        """Raise unless every floating tensor in ``state`` is finite; call before saving it."""
        self.check()
        tensors = list(_floating_tensors(state))
        if not tensors:
            return
        # A state mixes devices on a GPU (Adam keeps its step counters on the CPU): reduce
        # per device, then on the run's device, where a NCCL collective needs the flag.
        per_device: dict[torch.device, list[torch.Tensor]] = {}
        for t in tensors:
            per_device.setdefault(t.device, []).append(torch.isfinite(t).all())
        home = self._first.device
        ok = torch.stack([torch.stack(v).all().to(home) for v in per_device.values()]).all()
        if not self._agree(ok):
            raise NonFiniteError(self._message(what))

    def _agree(self, ok: torch.Tensor) -> bool:
        """``ok`` on the host; under torchrun, true only if it is true on every rank."""
        if not is_distributed():
            return bool(ok)
        bad = (~ok).to(torch.float32).reshape(1)
        all_reduce_sum(bad)
        return bool(bad.item() == 0)

    def _message(self, label: str, why: str = "") -> str:
        if self.last_checkpoint is not None:
            good = f"the last good checkpoint is {self.last_checkpoint}"
        else:
            good = "no checkpoint was written before it"
        why = f" ({why})" if why else ""
        fix = self.hint or "Lower the learning rate"
        if self.mode == "stop":
            fix += f", or set {self.section}.nonfinite=skip to drop such batches"
        return (
            f"non-finite value (inf or nan) in {label}{why}; {good}, and nothing non-finite "
            f"was saved. {fix}"
        )


def grads_finite(loss: torch.Tensor, params: Iterable[torch.Tensor], norm: Any = None) -> Any:
    """A device bool: ``loss`` and the gradients of ``params`` are finite (no host sync).

    ``norm``: the total gradient norm when the caller already has it (from clipping); the
    norm is inf or nan exactly when some gradient entry is. ``params`` None: the loss only.
    """
    ok = torch.isfinite(loss.detach())
    if params is None:
        return ok
    if norm is None:
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return ok
        norm = torch.nn.utils.get_total_norm(grads)
    return ok & torch.isfinite(norm)


def ignore_sigint(worker_id: int) -> None:
    """DataLoader worker init: Ctrl-C reaches the whole process group; the main process decides.

    A worker that took the KeyboardInterrupt would exit, and the graceful stop would fail
    on the next batch. The main process ends its workers itself.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)

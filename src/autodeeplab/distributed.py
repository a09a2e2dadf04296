"""Many processes under torchrun: the environment, the process group, rank helpers, reductions.

torchrun (``python -m torch.distributed.run``) starts one process per device and tells each
its place through environment variables: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` (on several nodes its rendezvous sets
them). :func:`init_distributed` reads them and joins the default process group with
``init_method="env://"``: NCCL with one GPU per process (``cuda:LOCAL_RANK``), gloo on CPU.
Without torchrun (``WORLD_SIZE`` unset or 1) it starts nothing, and every helper here is then
the single-process identity, so the loops call them unconditionally.

The reductions flatten a list of tensors into one buffer per (device, dtype), so a whole set
of gradients costs one collective. Collectives give the same bytes on every rank (NCCL and
gloo reduce each chunk once and copy the result to the others), which is what keeps replicas
identical without ever re-broadcasting them; :func:`check_same_across_ranks` verifies it.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "DistInfo",
    "TorchrunEnv",
    "all_gather_object",
    "all_reduce_mean",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "broadcast_tensors",
    "call_on_main",
    "check_same_across_ranks",
    "cleanup",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "rank_indices",
    "sharded_mean",
    "torchrun_env",
]

T = TypeVar("T")


@dataclass(frozen=True)
class TorchrunEnv:
    """What torchrun tells a process about its place (defaults: one process, rank 0)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    master_addr: str | None = None
    master_port: int | None = None


@dataclass(frozen=True)
class DistInfo:
    """This process's rank, the number of processes, and the device it computes on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # "nccl", "gloo"; None in a single process

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def torchrun_env() -> TorchrunEnv:
    """Read RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(
            f"RANK={rank} and WORLD_SIZE={world} are inconsistent; start the processes with "
            "torchrun, which sets both"
        )
    port = os.environ.get("MASTER_PORT")
    return TorchrunEnv(
        rank=rank,
        world_size=world,
        local_rank=_env_int("LOCAL_RANK", 0),
        local_world_size=_env_int("LOCAL_WORLD_SIZE", 1),
        master_addr=os.environ.get("MASTER_ADDR"),
        master_port=int(port) if port else None,
    )


def is_distributed() -> bool:
    """True when a process group with more than one process is up."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's rank: the process group's, else torchrun's RANK, else 0."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return _env_int("RANK", 0)


def get_world_size() -> int:
    """The number of processes in the process group (1 without one)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def is_main_process() -> bool:
    """Rank 0, or the only process; also right before :func:`init_distributed` has run."""
    return get_rank() == 0


def _device_for(device: torch.device | str, local_rank: int, world_size: int) -> torch.device:
    """``auto``/``cuda``/``cuda:N`` -> this process's GPU under torchrun; anything else as is."""
    name = str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type != "cuda" or world_size == 1:
        return dev
    if not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available; use device=cpu")
    count = torch.cuda.device_count()
    # One visible GPU per process (a launcher that sets CUDA_VISIBLE_DEVICES) -> cuda:0.
    index = 0 if count == 1 else local_rank
    if index >= count:
        raise ValueError(
            f"LOCAL_RANK={local_rank} but only {count} GPUs are visible; start at most "
            f"{count} processes per node (torchrun --nproc-per-node {count})"
        )
    return torch.device("cuda", index)


def init_distributed(device: torch.device | str = "auto") -> DistInfo:
    """Join torchrun's process group (NCCL on CUDA, gloo on CPU); a no-op in one process.

    ``device``: ``auto``, ``cpu`` or ``cuda`` (any ``cuda:N`` means "this process's GPU"
    under torchrun). Calling it again returns the group already joined.
    """
    env = torchrun_env()
    if dist.is_available() and dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
        dev = _device_for(device, env.local_rank, world)
        backend = str(dist.get_backend())
        return DistInfo(rank, world, env.local_rank, dev, backend if world > 1 else None)
    if env.world_size == 1:
        return DistInfo(0, 1, 0, _device_for(device, 0, 1), None)
    if not dist.is_available():
        raise ValueError("WORLD_SIZE > 1, but this PyTorch build has no torch.distributed")
    dev = _device_for(device, env.local_rank, env.world_size)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)  # before NCCL starts, so every rank talks from its own GPU
    dist.init_process_group(backend, init_method="env://")
    return DistInfo(env.rank, env.world_size, env.local_rank, dev, backend)


def cleanup() -> None:
    """Leave the process group (after a barrier, so no rank exits while others still talk)."""
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            barrier()
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank; a no-op in one process."""
    if not is_distributed():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def _as_list(tensors: Tensor | Iterable[Tensor]) -> list[Tensor]:
    return [tensors] if isinstance(tensors, Tensor) else list(tensors)


def _flat_apply(tensors: Sequence[Tensor], collective: Callable[[Tensor], Any]) -> None:
    """Run ``collective`` in place on one flat buffer per (device, dtype) of ``tensors``."""
    groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    for group in groups.values():
        if len(group) == 1 and group[0].is_contiguous():
            collective(group[0].view(-1))
            continue
        flat = torch.cat([t.reshape(-1) for t in group])
        collective(flat)
        offset = 0
        for t in group:
            n = t.numel()
            t.copy_(flat[offset : offset + n].view_as(t))
            offset += n


def all_reduce_sum(tensors: T) -> T:
    """Sum a tensor or a list of tensors over ranks, in place (one collective per dtype)."""
    if is_distributed():
        _flat_apply(_as_list(tensors), lambda flat: dist.all_reduce(flat, dist.ReduceOp.SUM))
    return tensors


def all_reduce_mean(tensors: T) -> T:
    """Average a tensor or a list of floating-point tensors over ranks, in place."""
    if is_distributed():
        world = dist.get_world_size()

        def mean(flat: Tensor) -> None:
            dist.all_reduce(flat, dist.ReduceOp.SUM)  # AVG exists for NCCL only
            flat.div_(world)

        _flat_apply(_as_list(tensors), mean)
    return tensors


def broadcast_tensors(tensors: T, src: int = 0) -> T:
    """Overwrite a tensor or a list of tensors with rank ``src``'s values, in place."""
    if is_distributed():
        _flat_apply(_as_list(tensors), lambda flat: dist.broadcast(flat, src))
    return tensors


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` (anything picklable) on every rank."""
    if not is_distributed():
        return obj
    box = [obj if dist.get_rank() == src else None]
    dist.broadcast_object_list(box, src)
    return box[0]  # type: ignore[return-value]


def all_gather_object(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in one process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def call_on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and hand its result (or its exception) to every rank.

    For what one process must decide for all (which checkpoint to resume, the data split),
    and for files that only rank 0 can see: on several nodes, only rank 0's disk holds the
    run folder. An exception is re-raised on every rank, so none waits forever.
    """
    if not is_distributed():
        return fn()
    result: Any = None
    error: Exception | None = None
    shared: Exception | None = None
    if dist.get_rank() == 0:
        try:
            result = fn()
        except Exception as exc:
            error = shared = exc
            try:
                pickle.dumps(exc)
            except Exception:
                shared = RuntimeError(f"{type(exc).__name__}: {exc}")
    result, shared = broadcast_object((result, shared))
    if error is not None:
        raise error  # rank 0 keeps the original, with its traceback
    if shared is not None:
        raise shared
    return result


def check_same_across_ranks(tensors: Iterable[Tensor], what: str) -> None:
    """Raise RuntimeError on every rank unless ``tensors`` hold the same bits on all ranks."""
    if not is_distributed():
        return
    mine = [t.detach().clone() for t in tensors]
    ref = broadcast_tensors([t.clone() for t in mine])
    differs = torch.tensor(
        [float(not all(torch.equal(a, b) for a, b in zip(mine, ref, strict=True)))],
        device=mine[0].device,
    )
    all_reduce_sum(differs)
    if float(differs) > 0:
        raise RuntimeError(
            f"{what} differ between ranks ({int(differs)} of {dist.get_world_size()} ranks "
            "disagree with rank 0); the replicas have diverged"
        )


def sharded_mean(local_sum: Tensor, local_count: Tensor) -> Tensor:
    """This rank's share of a mean over all ranks: ``world * local_sum / sum(counts)``.

    Averaging the gradient of this value over ranks gives the gradient of the global mean
    ``sum(local_sums) / sum(counts)``, the loss one process holding the whole batch would
    use, even when the ranks count different numbers of items (e.g. non-ignored pixels).
    In one process: ``local_sum / local_count``.
    """
    if not is_distributed():
        return local_sum / local_count
    total = all_reduce_sum(local_count.detach().to(local_sum.dtype).clone())
    return local_sum * (dist.get_world_size() / total)


def rank_indices(n: int) -> range:
    """This rank's share of ``range(n)``, for evaluation: every ``world``-th item, no padding.

    Unlike ``DistributedSampler``, nothing is repeated to even out the shards, so a metric
    summed over ranks counts each item exactly once.
    """
    return range(get_rank() if is_distributed() else 0, n, get_world_size())

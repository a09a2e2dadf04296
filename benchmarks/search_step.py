"""Seconds and peak memory of one search iteration (w step on trainA + alpha/beta step on trainB).

Prints one JSON object per crop. Each crop runs in a fresh subprocess so that the peak
memory (RSS on CPU, max allocated on CUDA) belongs to that crop alone. With ``--fit`` a
last object fits iteration seconds (and peak memory) against pixels per step: does the
cost of a step grow linearly with the crop's pixels?

    python benchmarks/search_step.py                 # crops 64, 128, 224, paper settings
    python benchmarks/search_step.py --crop 128      # one crop
    python benchmarks/search_step.py --crop 32 --crop 64 --crop 96 --crop 128 --fit
    python benchmarks/search_step.py --crop 64 --partial-channels 4 --amp bf16 --compile

See benchmarks/README.md for every field.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from autodeeplab.engine.device import peak_memory_mib
from autodeeplab.space import SearchNetwork
from autodeeplab.space.memory import (
    device_memory_bytes,
    estimate_search_memory,
    resolve_checkpoint_cells,
)
from autodeeplab.trellis import SupernetSpec

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Raise TimeoutError in the main thread after ``seconds`` (0: no limit; POSIX only)."""
    if seconds <= 0 or not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum, frame):  # noqa: ARG001 - signal handler signature
        raise TimeoutError(f"did not finish within {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def top_ops(prof, n: int) -> list[dict]:
    """The ``n`` operators with the most self CPU time, with their share of the total."""
    events = list(prof.key_averages())
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [
        {
            "op": e.key,
            "self_cpu_s": round(e.self_cpu_time_total / 1e6, 4),
            "share": round(e.self_cpu_time_total / total, 4),
            "calls": e.count,
        }
        for e in events[:n]
    ]


def live_tensor_bytes(tensors: list[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views share a storage)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def tensor_peak_mib(run: Callable[[], object], live: list[torch.Tensor]) -> tuple[float, float]:
    """Peak tensor memory of ``run()`` on CPU, in MiB, and the net change over it.

    The profiler's memory events record every allocation and free of PyTorch's CPU
    allocator in order; their running sum peaks where the step's tensors do. ``live`` are
    the tensors alive before (weights, buffers, optimiser states, the batches). This is the
    quantity ``torch.cuda.max_memory_allocated`` measures on a GPU, without the Python
    process, the allocator's cached free blocks and the libraries' own buffers that a peak
    RSS includes. (cuDNN workspaces would add to it on a GPU.)
    """
    from torch.profiler import ProfilerActivity, profile

    before = live_tensor_bytes(live)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    running = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        running += event.nbytes()
        peak = max(peak, running)
    return (before + peak) / 2**20, running / 2**20


def supernet_spec(args: argparse.Namespace) -> SupernetSpec:
    """The supernet the flags describe."""
    return SupernetSpec(
        num_layers=args.layers,
        num_blocks=args.blocks,
        filter_multiplier=args.filter_multiplier,
        partial_channels=args.partial_channels,
    )


def memory_model_args(args: argparse.Namespace) -> dict:
    """The flags as arguments of the memory model (space/memory.py), checkpointing aside."""
    return {
        "crop": args.crop,
        "batch_size": args.batch_size,
        "num_classes": args.classes,
        "spec": supernet_spec(args),
        "amp": args.amp,
        "device": torch.device(args.device).type,
    }


def resolved_checkpoint_cells(args: argparse.Namespace) -> bool:
    """``--checkpoint-cells`` as the search engine would resolve it (``auto``: the estimate)."""
    if args.checkpoint_cells != "auto":
        return args.checkpoint_cells == "on"
    kwargs = memory_model_args(args)
    return resolve_checkpoint_cells(
        **kwargs, checkpoint_cells="auto", available=device_memory_bytes(kwargs["device"])
    )


def measure(args: argparse.Namespace) -> dict:
    """Build the supernet, run warm-up and timed iterations, and return the JSON record."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    record: dict = {
        "benchmark": "search_step",
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "crop": args.crop,
        "batch_size": args.batch_size,
        "num_layers": args.layers,
        "num_blocks": args.blocks,
        "filter_multiplier": args.filter_multiplier,
        "partial_channels": args.partial_channels,
        "amp": args.amp,
        "compile": args.compile_backend if args.compile else False,
        "channels_last": args.channels_last,
        "freeze_other_params": args.freeze,
        "stale_grads": args.stale_grads,
        "checkpoint_cells_mode": args.checkpoint_cells,
        "checkpoint_cells": resolved_checkpoint_cells(args),
    }
    # The estimate the engine weighs (space/memory.py), beside the measured peak, so one run
    # on a device checks the memory model there. On CUDA it counts the context, which
    # max_memory_allocated does not: the allocator's share is the comparable figure.
    est = estimate_search_memory(
        **memory_model_args(args), checkpoint_cells=record["checkpoint_cells"]
    )
    record["estimated_peak_mib"] = round(est.total / 2**20, 1)
    record["estimated_allocator_mib"] = round((est.total - est.fixed) / 2**20, 1)
    net = SearchNetwork(
        args.classes, spec=supernet_spec(args), checkpoint_cells=record["checkpoint_cells"]
    ).to(device)
    if args.channels_last:
        net = net.to(memory_format=torch.channels_last)
    weights, arch = net.weight_parameters(), net.arch_parameters()
    record["weight_params"] = sum(p.numel() for p in weights)
    w_opt = torch.optim.SGD(weights, lr=0.025, momentum=0.9, weight_decay=3e-4)
    a_opt = torch.optim.Adam(arch, lr=3e-3, betas=(0.5, 0.999), weight_decay=1e-3)
    model: Callable[[torch.Tensor], torch.Tensor] = net
    if args.compile:
        model = torch.compile(net, backend=args.compile_backend)

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(args.batch_size, 3, args.crop, args.crop, device=device)
        if args.channels_last:
            x = x.to(memory_format=torch.channels_last)
        y = torch.randint(0, args.classes, (args.batch_size, args.crop, args.crop), device=device)
        return x, y

    (xa, ya), (xb, yb) = batch(), batch()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    # The engine may gain its own AMP switch; the benchmark autocasts its own step so that
    # it measures the same thing either way. fp16 would need a GradScaler: bf16 does not.
    def autocast() -> contextlib.AbstractContextManager:
        if args.amp == "off":
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=AMP_DTYPES[args.amp])

    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")

    def step(x, y, params, frozen, opt) -> None:
        # As the engine does: free the gradients before the forward and after the update, so
        # that none sits beside the activations (--stale-grads: keep them, as before).
        if not args.stale_grads:
            opt.zero_grad(set_to_none=True)
        if args.freeze:
            for p in frozen:
                p.requires_grad_(False)
        with autocast():
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward(inputs=params)
        scaler.step(opt)
        scaler.update()
        if not args.stale_grads:
            opt.zero_grad(set_to_none=True)
        if args.freeze:
            for p in frozen:
                p.requires_grad_(True)

    def iteration() -> tuple[float, float]:
        t0 = time.perf_counter()
        step(xa, ya, weights, arch, w_opt)
        sync()
        t1 = time.perf_counter()
        step(xb, yb, arch, weights, a_opt)
        sync()
        return t1 - t0, time.perf_counter() - t1

    if args.compile:
        # The first iteration compiles both steps (the frozen set differs, so each step
        # gets its own graph); report it apart from the steady state.
        t0 = time.perf_counter()
        try:
            with time_limit(args.compile_timeout):
                iteration()
        except Exception as exc:  # noqa: BLE001 - report any compile failure in the JSON
            elapsed = time.perf_counter() - t0
            record["compile_s"] = round(elapsed, 2)
            record["error"] = f"{type(exc).__name__}: {exc}"[:2000]
            if args.compile_timeout and elapsed >= args.compile_timeout:
                # Inductor re-raises the alarm's TimeoutError as its own error: say so.
                record["error"] = (
                    f"compile timed out after {args.compile_timeout} s; " + (record["error"])
                )
            record["error_where"] = traceback.format_exc().splitlines()[-3:]
            record["peak_memory_mib"] = round(peak_memory_mib(device), 1)
            return record
        record["compile_s"] = round(time.perf_counter() - t0, 2)
    for _ in range(args.warmup):
        iteration()
    if args.profile:
        from torch.profiler import profile

        with profile() as prof:
            iteration()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile)
        print(table, file=sys.stderr)
        record["profile_top"] = top_ops(prof, args.profile)
    times = [iteration() for _ in range(args.iters)]
    w = [t[0] for t in times]
    a = [t[1] for t in times]
    record.update(
        {
            "weight_step_s": round(statistics.median(w), 4),
            "arch_step_s": round(statistics.median(a), 4),
            "iteration_s": round(statistics.median([x + y for x, y in times]), 4),
            "peak_memory_mib": round(peak_memory_mib(device), 1),
            "iters": args.iters,
        }
    )
    if args.tensor_peak and device.type == "cpu":  # after the timings: the profiler costs time
        states = [v for o in (w_opt, a_opt) for st in o.state.values() for v in st.values()]
        live = [*net.parameters(), *net.buffers(), *states, xa, ya, xb, yb]
        live = [t for t in live if isinstance(t, torch.Tensor)]
        peak, net_change = tensor_peak_mib(iteration, live)
        record["peak_tensor_mib"] = round(peak, 1)
        record["tensor_net_change_mib"] = round(net_change, 1)
    return record


def linear_fit(xs: list[float], ys: list[float]) -> dict:
    """Least-squares y = slope * x + intercept, with R^2."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx if sxx else float("nan")
    intercept = my - slope * mx
    ss_res = sum((y - slope * x - intercept) ** 2 for x, y in zip(xs, ys, strict=True))
    ss_tot = sum((y - my) ** 2 for y in ys)
    r2 = 1.0 - ss_res / ss_tot if ss_tot else float("nan")
    return {"slope": slope, "intercept": intercept, "r2": r2}


def scaling_record(records: list[dict]) -> dict:
    """Fit iteration seconds and peak memory against pixels per step (crop^2 x batch)."""
    ok = [r for r in records if "iteration_s" in r]
    pixels = [r["crop"] ** 2 * r["batch_size"] for r in ok]
    out: dict = {
        "benchmark": "search_step_scaling",
        "crops": [r["crop"] for r in ok],
        "pixels": pixels,
        "iteration_s": [r["iteration_s"] for r in ok],
        "peak_memory_mib": [r["peak_memory_mib"] for r in ok],
    }
    if len(ok) < 3:
        out["error"] = "need at least 3 crops that ran for a fit"
        return out
    t = linear_fit([p / 1e6 for p in pixels], out["iteration_s"])
    m = linear_fit([p / 1e6 for p in pixels], out["peak_memory_mib"])
    out.update(
        {
            "seconds_per_mpixel": round(t["slope"], 4),
            "seconds_intercept": round(t["intercept"], 4),
            "seconds_r2": round(t["r2"], 5),
            "mib_per_mpixel": round(m["slope"], 1),
            "mib_intercept": round(m["intercept"], 1),
            "mib_r2": round(m["r2"], 5),
            # The fraction of the largest crop's time that the per-pixel term explains.
            "pixel_share_at_largest": round(
                t["slope"] * max(pixels) / 1e6 / max(out["iteration_s"]), 3
            ),
        }
    )
    return out


def main() -> None:
    """Parse the flags; one crop runs here, several each in a subprocess."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--crop", type=int, action="append", help="crop size (repeatable)")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--blocks", type=int, default=5)
    p.add_argument("--filter-multiplier", type=int, default=8)
    p.add_argument("--classes", type=int, default=19)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument(
        "--checkpoint-cells",
        choices=("auto", "on", "off"),
        default="auto",
        help="activation checkpointing per cell; auto: as the engine decides (the default)",
    )
    p.add_argument(
        "--partial-channels", type=int, default=1, metavar="K", help="PC-DARTS K (1 = off)"
    )
    p.add_argument("--amp", choices=("off", *AMP_DTYPES), default="off", help="autocast dtype")
    p.add_argument("--compile", action="store_true", help="torch.compile the supernet")
    p.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile backend (aot_eager: trace only, no code generation)",
    )
    p.add_argument(
        "--compile-timeout",
        type=int,
        default=600,
        metavar="S",
        help="give up compiling after S seconds and report it (0: no limit)",
    )
    p.add_argument(
        "--no-freeze",
        dest="freeze",
        action="store_false",
        help="leave the other parameter set in autograd (the engine takes it out)",
    )
    p.add_argument(
        "--stale-grads",
        action="store_true",
        help="keep each step's gradients until the next backward (the engine frees them)",
    )
    p.add_argument("--profile", type=int, default=0, metavar="N", help="print the top N ops")
    p.add_argument(
        "--tensor-peak",
        action="store_true",
        help="CPU: profile one more iteration for its peak tensor memory (peak_tensor_mib)",
    )
    p.add_argument("--fit", action="store_true", help="fit seconds against pixels over crops")
    p.add_argument("--inline", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    crops = args.crop or [64, 128, 224]
    if args.inline or (len(crops) == 1 and not args.fit):
        args.crop = crops[0]
        record = measure(args)
        print(json.dumps(record), flush=True)
        if "error" in record:
            # A timed-out compile leaves Inductor's compile workers busy, and the interpreter
            # would wait for them at exit: the record is out, so leave at once.
            sys.stderr.flush()
            os._exit(0)
        return
    records = []
    for crop in crops:
        cmd = [sys.executable, __file__, "--inline", "--crop", str(crop)]
        for flag in (
            "batch_size",
            "layers",
            "blocks",
            "filter_multiplier",
            "classes",
            "iters",
            "warmup",
            "partial_channels",
            "compile_timeout",
            "profile",
        ):
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        cmd += ["--device", args.device, "--amp", args.amp]
        cmd += ["--compile-backend", args.compile_backend]
        cmd += ["--checkpoint-cells", args.checkpoint_cells]
        for flag in ("channels_last", "compile", "stale_grads", "tensor_peak"):
            if getattr(args, flag):
                cmd.append(f"--{flag.replace('_', '-')}")
        if not args.freeze:
            cmd.append("--no-freeze")
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        if proc.returncode == 0:
            record = json.loads(proc.stdout.strip().splitlines()[-1])
        else:  # e.g. killed by the OOM killer (-9): report it and go on with the next crop
            record = {"benchmark": "search_step", "crop": crop, "error": f"exit {proc.returncode}"}
        records.append(record)
        print(json.dumps(record), flush=True)
    if args.fit:
        print(json.dumps(scaling_record(records)), flush=True)


if __name__ == "__main__":
    main()

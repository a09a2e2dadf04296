"""Seconds and peak memory of one search iteration of each registered search strategy.

One iteration is what the search engine does per step, driven through the strategy registry
(``engine/search/strategies``, ``search.strategy``): for ``darts`` a weight step on a trainA
batch and an architecture step on a trainB batch; for ``spos`` one sampled sub-network's
weight step. Prints one JSON object per (strategy, crop), each measured in a fresh subprocess
so that the peak memory (RSS on CPU, max allocated on CUDA) is its own, then one
``search_step_ratio`` object: each strategy's iteration time and peak memory over the first
strategy's, per crop. With ``--fit`` a last object per strategy fits iteration seconds (and
peak memory) against pixels per step.

    python benchmarks/search_step.py                 # every strategy at crops 64 and 128
    python benchmarks/search_step.py --strategy darts --crop 128
    python benchmarks/search_step.py --crop 32 --crop 64 --crop 96 --crop 128 --fit
    python benchmarks/search_step.py --crop 64 --partial-channels 4 --amp bf16

See benchmarks/README.md for every field.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from autodeeplab.config import SearchLoopConfig
from autodeeplab.engine.device import peak_memory_mib
from autodeeplab.engine.guards import NonFiniteGuard
from autodeeplab.engine.search.strategies import STRATEGIES, StrategyContext
from autodeeplab.space import SearchNetwork
from autodeeplab.space.memory import device_memory_bytes
from autodeeplab.trellis import SupernetSpec

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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
    """The flags as arguments of the strategy's memory model, checkpointing aside."""
    return {
        "crop": args.crop,
        "batch_size": args.batch_size,
        "num_classes": args.classes,
        "spec": supernet_spec(args),
        "amp": args.amp,
        "device": torch.device(args.device).type,
    }


def measure(args: argparse.Namespace) -> dict:
    """Build the supernet and the strategy, run warm-up and timed iterations; the record."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    factory = STRATEGIES[args.strategy]
    # The strategy's own memory model decides ``auto`` as the engine would.
    mode = {"auto": "auto", "on": True, "off": False}[args.checkpoint_cells]
    available = device_memory_bytes(device.type) if mode == "auto" else None
    est = factory.estimate_memory(
        **memory_model_args(args), checkpoint_cells=mode, available=available
    )
    record: dict = {
        "benchmark": "search_step",
        "strategy": args.strategy,
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
        "checkpoint_cells_mode": args.checkpoint_cells,
        "checkpoint_cells": est.checkpoint_cells,
        # The estimate the engine weighs, beside the measured peak; on CUDA it counts the
        # context, which max_memory_allocated does not: the allocator's share compares.
        "estimated_peak_mib": round(est.total / 2**20, 1),
        "estimated_allocator_mib": round((est.total - est.fixed) / 2**20, 1),
    }
    net = SearchNetwork(
        args.classes, spec=supernet_spec(args), checkpoint_cells=est.checkpoint_cells
    ).to(device)
    # The search config's defaults (lr, momentum, arch lr, betas, clipping), with the
    # architecture updates on from the first epoch.
    loop = replace(SearchLoopConfig(), strategy=args.strategy, arch_start_epoch=0, seed=0)
    amp_dtype = AMP_DTYPES.get(args.amp)
    guard = NonFiniteGuard("stop", 0, device, "search")
    strategy = factory(net, loop, StrategyContext(device, amp_dtype, guard))
    wants_b = strategy.start_epoch(0, args.warmup + args.iters, False)
    record["weight_params"] = sum(p.numel() for p in net.weight_parameters())
    record["trainB_batches"] = wants_b

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(args.batch_size, 3, args.crop, args.crop, device=device)
        y = torch.randint(0, args.classes, (args.batch_size, args.crop, args.crop), device=device)
        return x, y

    batch_a, batch_b = batch(), batch()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def iteration() -> float:
        t0 = time.perf_counter()
        strategy.step(batch_a, batch_b if wants_b else None, "a benchmark step")
        sync()
        return time.perf_counter() - t0

    for _ in range(args.warmup):
        iteration()
    if args.profile:
        from torch.profiler import profile

        with profile() as prof:
            iteration()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile)
        print(table, file=sys.stderr)
        record["profile_top"] = top_ops(prof, args.profile)
    # At least --iters iterations and --min-seconds of them: a sampled sub-network's cost
    # depends on its path, so a cheap step is averaged over many samples.
    times: list[float] = []
    while len(times) < args.iters or (sum(times) < args.min_seconds and len(times) < 1000):
        times.append(iteration())
    record.update(
        {
            # A sampled sub-network's cost depends on its path: the mean is the throughput.
            "iteration_s": round(statistics.median(times), 4),
            "iteration_mean_s": round(statistics.fmean(times), 4),
            "iteration_min_s": round(min(times), 4),
            "iteration_max_s": round(max(times), 4),
            "peak_memory_mib": round(peak_memory_mib(device), 1),
            "iters": len(times),
        }
    )
    if wants_b:  # the weight step alone (the same call without a trainB batch)
        w = []
        for _ in range(args.iters):
            t0 = time.perf_counter()
            strategy.step(batch_a, None, "a benchmark step")
            sync()
            w.append(time.perf_counter() - t0)
        record["weight_step_s"] = round(statistics.median(w), 4)
    if args.tensor_peak and device.type == "cpu":  # after the timings: the profiler costs time
        opt_states = [strategy.w_optimizer] + [getattr(strategy, "arch_optimizer", None)]
        states = [v for o in opt_states if o for st in o.state.values() for v in st.values()]
        live = [*net.parameters(), *net.buffers(), *states, *batch_a, *batch_b]
        live = [t for t in live if isinstance(t, torch.Tensor)]
        peak, net_change = tensor_peak_mib(iteration, live)
        record["peak_tensor_mib"] = round(peak, 1)
        record["tensor_net_change_mib"] = round(net_change, 1)
    return record


def ratio_record(records: list[dict]) -> dict:
    """Per crop, each strategy's mean iteration time and peak memory over the first's."""
    out: dict = {"benchmark": "search_step_ratio", "baseline": records[0].get("strategy")}
    for crop in sorted({r["crop"] for r in records}):
        ok = {r["strategy"]: r for r in records if r["crop"] == crop and "iteration_s" in r}
        base = ok.get(out["baseline"])
        if base is None:
            continue
        out[str(crop)] = {
            name: {
                "iteration_mean_s": r["iteration_mean_s"],
                "time_ratio": round(r["iteration_mean_s"] / base["iteration_mean_s"], 4),
                "peak_memory_ratio": round(r["peak_memory_mib"] / base["peak_memory_mib"], 4),
            }
            for name, r in ok.items()
        }
    return out


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
    """Parse the flags; one (strategy, crop) runs here, several each in a subprocess."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--strategy",
        action="append",
        choices=sorted(STRATEGIES),
        help="a registered search strategy (repeatable; default: all, darts first)",
    )
    p.add_argument("--crop", type=int, action="append", help="crop size (repeatable)")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--blocks", type=int, default=5)
    p.add_argument("--filter-multiplier", type=int, default=8)
    p.add_argument("--classes", type=int, default=19)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument(
        "--min-seconds",
        type=float,
        default=10.0,
        help="time iterations until at least this many seconds (and --iters) have run",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--checkpoint-cells",
        choices=("auto", "on", "off"),
        default="auto",
        help="activation checkpointing per cell; auto: as the engine decides (the default)",
    )
    p.add_argument(
        "--partial-channels", type=int, default=1, metavar="K", help="PC-DARTS K (1 = off)"
    )
    p.add_argument("--amp", choices=("off", *AMP_DTYPES), default="off", help="search.amp")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="print the top N ops")
    p.add_argument(
        "--tensor-peak",
        action="store_true",
        help="CPU: profile one more iteration for its peak tensor memory (peak_tensor_mib)",
    )
    p.add_argument("--fit", action="store_true", help="fit seconds against pixels over crops")
    p.add_argument("--inline", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    crops = args.crop or [64, 128]
    strategies = args.strategy or sorted(STRATEGIES)
    if args.inline:
        args.crop, args.strategy = crops[0], strategies[0]
        print(json.dumps(measure(args)), flush=True)
        return
    records = []
    for crop in crops:
        for name in strategies:
            cmd = [sys.executable, __file__, "--inline", "--crop", str(crop), "--strategy", name]
            for flag in (
                "batch_size", "layers", "blocks", "filter_multiplier", "classes", "iters",
                "warmup", "min_seconds", "partial_channels", "profile",
            ):  # fmt: skip
                cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
            cmd += ["--device", args.device, "--amp", args.amp]
            cmd += ["--checkpoint-cells", args.checkpoint_cells]
            if args.tensor_peak:
                cmd.append("--tensor-peak")
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
            if proc.returncode == 0:
                record = json.loads(proc.stdout.strip().splitlines()[-1])
            else:  # e.g. killed by the OOM killer (-9): report it and go on
                record = {
                    "benchmark": "search_step",
                    "strategy": name,
                    "crop": crop,
                    "error": f"exit {proc.returncode}",
                }
            records.append(record)
            print(json.dumps(record), flush=True)
    print(json.dumps(ratio_record(records)), flush=True)
    if args.fit:
        for name in strategies:
            fit = scaling_record([r for r in records if r.get("strategy") == name])
            print(json.dumps({**fit, "strategy": name}), flush=True)


if __name__ == "__main__":
    main()

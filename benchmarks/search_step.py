"""Seconds and peak memory of one search iteration (w step on trainA + alpha/beta step on trainB).

Prints one JSON object per crop. Each crop runs in a fresh subprocess so that the peak
memory (RSS on CPU, max allocated on CUDA) belongs to that crop alone.

    python benchmarks/search_step.py                 # crops 64, 128, 224, paper settings
    python benchmarks/search_step.py --crop 128      # one crop
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from autodeeplab.search import SearchNetwork


def measure(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    device = torch.device(args.device)
    net = SearchNetwork(
        args.classes,
        num_layers=args.layers,
        num_blocks=args.blocks,
        filter_multiplier=args.filter_multiplier,
        checkpoint_cells=args.checkpoint_cells,
    ).to(device)
    if args.channels_last:
        net = net.to(memory_format=torch.channels_last)
    weights, arch = net.weight_parameters(), net.arch_parameters()
    w_opt = torch.optim.SGD(weights, lr=0.025, momentum=0.9, weight_decay=3e-4)
    a_opt = torch.optim.Adam(arch, lr=3e-3, betas=(0.5, 0.999), weight_decay=1e-3)

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

    def step(x, y, params, frozen, opt) -> None:
        if args.freeze:
            for p in frozen:
                p.requires_grad_(False)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward(inputs=params)
        opt.step()
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

    for _ in range(args.warmup):
        iteration()
    if args.profile:
        from torch.profiler import profile

        with profile() as prof:
            iteration()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile)
        print(table, file=sys.stderr)
    times = [iteration() for _ in range(args.iters)]
    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    w = [t[0] for t in times]
    a = [t[1] for t in times]
    return {
        "benchmark": "search_step",
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "crop": args.crop,
        "batch_size": args.batch_size,
        "num_layers": args.layers,
        "num_blocks": args.blocks,
        "filter_multiplier": args.filter_multiplier,
        "channels_last": args.channels_last,
        "freeze_other_params": args.freeze,
        "checkpoint_cells": args.checkpoint_cells,
        "weight_params": sum(p.numel() for p in weights),
        "weight_step_s": round(statistics.median(w), 4),
        "arch_step_s": round(statistics.median(a), 4),
        "iteration_s": round(statistics.median([x + y for x, y in times]), 4),
        "peak_memory_mib": round(peak_mib, 1),
        "iters": args.iters,
    }


def main() -> None:
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
    p.add_argument("--checkpoint-cells", action="store_true", help="activation checkpointing")
    p.add_argument(
        "--no-freeze",
        dest="freeze",
        action="store_false",
        help="leave the other parameter set in autograd (the engine takes it out)",
    )
    p.add_argument("--profile", type=int, default=0, metavar="N", help="print the top N ops")
    p.add_argument("--inline", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    crops = args.crop or [64, 128, 224]
    if args.inline or len(crops) == 1:
        args.crop = crops[0]
        print(json.dumps(measure(args)), flush=True)
        return
    for crop in crops:
        cmd = [sys.executable, __file__, "--inline", "--crop", str(crop)]
        for flag in ("batch_size", "layers", "blocks", "filter_multiplier", "classes", "iters"):
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        cmd += ["--warmup", str(args.warmup), "--device", args.device]
        if not args.freeze:
            cmd.append("--no-freeze")
        if args.checkpoint_cells:
            cmd.append("--checkpoint-cells")
        if args.channels_last:
            cmd.append("--channels-last")
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()

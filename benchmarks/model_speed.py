"""Inference and training speed of the paper's networks, and how much of the device they use.

For each model (auto-deeplab-s/m/l, 19 classes) and input size it prints one JSON object:
inference images/s (eval, no_grad, batch 1), seconds per training iteration (forward,
backward and an SGD step), and the GFLOP/s both achieve, also as a fraction of a large
fp32 matmul's GFLOP/s measured on the same device in the same run (the device's practical
peak). A first object reports that matmul. Each (model, size) runs in a fresh subprocess,
so an out-of-memory kill is reported and the next configuration still runs.

FLOP convention: 2 x Multi-Adds of one image's forward (``count_multiply_adds``: conv and
matmul multiply-accumulates; BN, ReLU, pooling and resizing count nothing). A training
iteration counts 3 x the forward FLOPs per image (backward ~ 2 x forward: the gradients of
the inputs and of the weights), times the batch.

    python benchmarks/model_speed.py                                  # S/M/L at 1024x2048, 512x1024
    python benchmarks/model_speed.py --models auto-deeplab-s --sizes 64x128 --iters 1 --warmup 0

See benchmarks/README.md for every field.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from autodeeplab.engine.device import peak_memory_mib

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
NUM_CLASSES = 19


def parse_size(text: str) -> tuple[int, int]:
    """'1024x2048' -> (1024, 2048)."""
    h, _, w = text.lower().partition("x")
    return int(h), int(w)


def sync(device: torch.device) -> None:
    """Wait for the device, so that wall-clock times cover the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, warmup: int, iters: int) -> list[float]:
    """Seconds of each of ``iters`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def is_oom(exc: BaseException) -> bool:
    """Out of memory, on CUDA or from the CPU allocator."""
    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def matmul_gflops(device: torch.device, n: int, repeats: int) -> dict:
    """Best-of-``repeats`` fp32 GFLOP/s of an n x n @ n x n matmul (2 n^3 FLOPs)."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    torch.matmul(a, b)  # warm-up: library initialisation, allocation
    sync(device)
    best = min(timed(lambda: torch.matmul(a, b), device, 0, repeats))
    return {
        "benchmark": "matmul_fp32",
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "size": n,
        "best_s": round(best, 5),
        "gflops": round(2 * n**3 / best / 1e9, 1),
    }


def measure(args: argparse.Namespace, model_name: str, size: tuple[int, int]) -> dict:
    """Inference and (optionally) training speed of one model at one size."""
    from autodeeplab.model import build_model
    from autodeeplab.model.complexity import count_multiply_adds

    torch.manual_seed(0)
    device = torch.device(args.device)
    record: dict = {
        "benchmark": "model_speed",
        "model": model_name,
        "size": f"{size[0]}x{size[1]}",
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "amp": args.amp,
        "channels_last": args.channels_last,
        "compile": args.compile or False,
        "matmul_gflops": args.matmul_gflops,
    }
    model = build_model(model_name, num_classes=NUM_CLASSES)
    madds = count_multiply_adds(model, size)  # on 'meta': shapes only, before any allocation
    record["params"] = sum(p.numel() for p in model.parameters())
    record["madds_per_image"] = madds
    fwd_flops = 2 * madds
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    # The eager module keeps its parameters; calls go through the compiled one (its first
    # call in each mode compiles: that time is reported apart, as *_compile_s).
    net = torch.compile(model, backend=args.compile) if args.compile else model

    def first_call(fn: Callable[[], object]) -> float:
        return round(timed(fn, device, warmup=0, iters=1)[0], 2)

    def autocast() -> contextlib.AbstractContextManager:
        if args.amp == "off":
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=AMP_DTYPES[args.amp])

    def fraction(gflops: float) -> float | None:
        return round(gflops / args.matmul_gflops, 4) if args.matmul_gflops else None

    try:
        x = torch.randn(1, 3, *size, device=device).to(memory_format=memory_format)
        model.eval()

        def infer() -> None:
            with torch.no_grad(), autocast():
                net(x)

        if args.compile:
            record["infer_compile_s"] = first_call(infer)
        times = timed(infer, device, args.warmup, args.iters)
        s = statistics.median(times)
        gflops = fwd_flops / s / 1e9
        record.update(
            {
                "infer_batch": 1,
                "infer_s": round(s, 4),
                "infer_images_per_s": round(1 / s, 3),
                "infer_gflops": round(gflops, 1),
                "infer_fraction_of_matmul": fraction(gflops),
            }
        )
        del x
    except Exception as exc:  # noqa: BLE001 - report, then try training anyway
        if not is_oom(exc):
            raise
        record["infer_error"] = f"out of memory: {type(exc).__name__}: {str(exc)[:300]}"
    if device.type == "cuda":
        torch.cuda.empty_cache()

    if args.train:
        n = args.train_batch
        try:
            x = torch.randn(n, 3, *size, device=device).to(memory_format=memory_format)
            y = torch.randint(0, NUM_CLASSES, (n, *size), device=device)
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=4e-5)
            scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")
            model.train()

            def train_step() -> None:
                with autocast():
                    loss = F.cross_entropy(net(x), y)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()

            if args.compile:
                record["train_compile_s"] = first_call(train_step)
            times = timed(train_step, device, args.warmup, args.iters)
            s = statistics.median(times)
            gflops = 3 * fwd_flops * n / s / 1e9
            record.update(
                {
                    "train_batch": n,
                    "train_iter_s": round(s, 4),
                    "train_images_per_s": round(n / s, 3),
                    "train_gflops": round(gflops, 1),
                    "train_fraction_of_matmul": fraction(gflops),
                }
            )
        except Exception as exc:  # noqa: BLE001
            if not is_oom(exc):
                raise
            record["train_batch"] = n
            record["train_error"] = f"out of memory: {type(exc).__name__}: {str(exc)[:300]}"
    record["peak_memory_mib"] = round(peak_memory_mib(device), 1)
    record["iters"], record["warmup"] = args.iters, args.warmup
    record["flop_convention"] = "2 x Multi-Adds per image forward; training = 3 x forward x batch"
    return record


def main() -> None:
    """Run the matmul reference, then each (model, size) in its own subprocess."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--models", default="auto-deeplab-s,auto-deeplab-m,auto-deeplab-l", help="comma list"
    )
    p.add_argument("--sizes", default="1024x2048,512x1024", help="comma list of HxW")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--amp", choices=("off", *AMP_DTYPES), default="off", help="autocast dtype")
    p.add_argument(
        "--compile",
        nargs="?",
        const="inductor",
        default=None,
        metavar="BACKEND",
        help="torch.compile the model (default backend: inductor); compile time reported apart",
    )
    p.add_argument(
        "--train", action=argparse.BooleanOptionalAction, default=True, help="time training too"
    )
    p.add_argument(
        "--train-batch",
        type=int,
        default=2,
        help="training batch (2: BatchNorm in train mode needs more than one value per channel)",
    )
    p.add_argument("--matmul-size", type=int, default=4096, help="n of the fp32 reference matmul")
    p.add_argument("--matmul-repeats", type=int, default=5)
    p.add_argument("--matmul-gflops", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--inline", nargs=2, metavar=("MODEL", "SIZE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.inline:
        model_name, size = args.inline
        print(json.dumps(measure(args, model_name, parse_size(size))), flush=True)
        return
    device = torch.device(args.device)
    ref = matmul_gflops(device, args.matmul_size, args.matmul_repeats)
    print(json.dumps(ref), flush=True)
    for model_name in args.models.split(","):
        for size in args.sizes.split(","):
            cmd = [sys.executable, __file__, "--inline", model_name, size]
            cmd += ["--iters", str(args.iters), "--warmup", str(args.warmup)]
            cmd += ["--device", args.device, "--amp", args.amp]
            cmd += ["--train-batch", str(args.train_batch), "--matmul-gflops", str(ref["gflops"])]
            cmd.append("--train" if args.train else "--no-train")
            if args.channels_last:
                cmd.append("--channels-last")
            if args.compile:
                cmd += ["--compile", args.compile]
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
            if proc.returncode == 0:
                print(proc.stdout.strip().splitlines()[-1], flush=True)
                continue
            # -9: killed, on CPU most likely by the kernel's out-of-memory killer.
            reason = "killed (signal 9), likely out of memory" if proc.returncode == -9 else ""
            record = {
                "benchmark": "model_speed",
                "model": model_name,
                "size": size,
                "device": args.device,
                "error": f"subprocess exited with {proc.returncode} {reason}".strip(),
            }
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()

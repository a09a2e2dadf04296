"""Graceful stop: SIGTERM/SIGINT finish the step, checkpoint, and the resume is exact."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from autodeeplab.checkpoint import load_checkpoint
from autodeeplab.engine.guards import StopRequest
from autodeeplab.engine.logs import read_jsonl
from autodeeplab.engine.search.loop import find_latest_checkpoint, run_search
from autodeeplab.engine.train.loop import run_train

# The shared tiny search with trainA (8 images, 4 steps an epoch) twice trainB (4 images, 2
# batches a pass), so trainB wraps around in the middle of an epoch.
WRAPPING_TRAIN_B = ("data.train_samples=12", "search.split_fraction=0.67")


@contextlib.contextmanager
def sigterm_at_sgd_step(n: int) -> Iterator[None]:
    """SIGTERM this process from inside the n-th SGD step (the search's w step, train's step)."""
    count = 0

    def hook(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        nonlocal count
        if isinstance(optimizer, torch.optim.SGD):
            count += 1
            if count == n:
                os.kill(os.getpid(), signal.SIGTERM)

    handle = register_optimizer_step_post_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


@pytest.mark.slow
def test_search_stopped_mid_epoch_resumes_bitwise(tmp_path: Path, search_config) -> None:
    cfg = search_config(*WRAPPING_TRAIN_B)
    full = run_search(cfg, tmp_path / "full", progress=False)
    assert not full.stopped and full.epochs == 2

    out = tmp_path / "part"
    before = signal.getsignal(signal.SIGTERM)
    # Step 6 = step 2 of epoch 2: trainB's pass 0 is used up but not yet found exhausted.
    with sigterm_at_sgd_step(6):
        part = run_search(cfg, out, progress=False)
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored
    assert part.stopped and part.epochs == 1
    assert part.checkpoint == out / "checkpoints" / "epoch_0002_step_000002.pt"
    assert not (out / "genotype.json").exists() and not (out / "report_search.md").exists()
    state = load_checkpoint(part.checkpoint, "search")
    assert state["epoch"] == 1 and state["step"] == 6 and state["partial"]["steps"] == 2
    assert find_latest_checkpoint(out) == part.checkpoint  # newer than epoch_0001.pt
    assert [r["epoch"] for r in read_jsonl(out / "search_log.jsonl")] == [1]

    # Resumed, then stopped again one step later: step 3 of epoch 2, in trainB's pass 1.
    with sigterm_at_sgd_step(1):
        again = run_search(cfg, out, resume=True, progress=False)
    assert again.stopped and again.checkpoint.name == "epoch_0002_step_000003.pt"
    assert not part.checkpoint.exists()  # the older stop checkpoint is superseded

    resumed = run_search(cfg, out, resume=True, progress=False)
    assert not resumed.stopped and resumed.genotype == full.genotype
    assert (out / "genotype.json").is_file()
    names = sorted(p.name for p in (out / "checkpoints").glob("*.pt"))
    assert names == ["epoch_0001.pt", "epoch_0002.pt"]  # stop checkpoints pruned
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "epoch_0002.pt", "search")
    b = load_checkpoint(out / "checkpoints" / "epoch_0002.pt", "search")
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:  # weights, alpha, beta and BN statistics
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in ("w_optimizer", "arch_optimizer"):
        for i, sa in a[key]["state"].items():
            for name, value in sa.items():
                assert torch.equal(
                    torch.as_tensor(value), torch.as_tensor(b[key]["state"][i][name])
                )
    assert a["step"] == b["step"] == 8
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    log_a = read_jsonl(tmp_path / "full" / "search_log.jsonl")
    log_b = read_jsonl(out / "search_log.jsonl")
    assert _strip(log_a) == _strip(log_b)  # losses included: the partial sums were kept


def test_sigint_is_handled_like_sigterm_and_second_signal_aborts() -> None:
    # A shell's background job starts with SIGINT ignored, and StopRequest gives back
    # whatever handler it found: start from Python's own, as an interactive run does.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _sigint_then_second_sigint()
    finally:
        signal.signal(signal.SIGINT, before)


def _sigint_then_second_sigint() -> None:
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.signal_name == "SIGINT"
        assert stop.should_stop(torch.device("cpu"))
        # The first signal gave the handlers back: a second Ctrl-C interrupts at once.
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        except KeyboardInterrupt:
            pass
        else:  # pragma: no cover
            raise AssertionError("the second SIGINT did not interrupt")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.slow
def test_train_stop_writes_last_and_resumes_exactly(tmp_path: Path, train_config) -> None:
    cfg = train_config("train.iters=5", "train.log_every=2")  # a stop inside a log window
    run_train(cfg, tmp_path / "straight", progress=False)
    with sigterm_at_sgd_step(3):  # between the evaluations at 2 and 4
        result = run_train(cfg, tmp_path / "split", progress=False)
    assert result.stopped and result.iterations == 3
    assert load_checkpoint(result.last_checkpoint, "train")["iteration"] == 3
    resumed = run_train(cfg, tmp_path / "split", resume=True, progress=False)
    assert not resumed.stopped and resumed.iterations == 5
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    log_a = read_jsonl(tmp_path / "straight" / "train_log.jsonl")
    log_b = read_jsonl(tmp_path / "split" / "train_log.jsonl")
    strip = [{k: v for k, v in r.items() if k != "img_per_s"} for r in log_a]
    assert strip == [{k: v for k, v in r.items() if k != "img_per_s"} for r in log_b]


def _read_until(
    stream: IO[bytes], pattern: re.Pattern[str], timeout: float
) -> tuple[threading.Thread, list[str], bool]:
    """Read ``stream`` in a thread until ``pattern`` shows up: (thread, text chunks, found)."""
    chunks: list[str] = []
    found = threading.Event()

    def pump() -> None:
        while data := stream.read1(4096):  # type: ignore[attr-defined]
            chunks.append(data.decode(errors="replace"))
            if pattern.search("".join(chunks)):
                found.set()

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    found.wait(timeout)
    return thread, chunks, found.is_set()


@pytest.mark.slow
def test_cli_sigterm_exits_0_with_resume_command(tmp_path: Path, tiny_search_overrides) -> None:
    out = tmp_path / "run"
    sets = [a for key in (*tiny_search_overrides, *WRAPPING_TRAIN_B) for a in ("--set", key)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "autodeeplab", "search", "--out", str(out), *sets]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    # tqdm's bar on stderr: "search: ... | 1/8 ..." once the first step pair is done.
    assert proc.stderr is not None
    thread, chunks, seen = _read_until(proc.stderr, re.compile(r"\| *[1-9]\d*/8 "), 120)
    assert seen, "".join(chunks)
    proc.send_signal(signal.SIGTERM)
    proc.wait(120)
    thread.join(10)
    stderr = "".join(chunks)
    assert proc.returncode == 0, stderr
    line = next(x for x in stderr.splitlines() if "stopped early" in x)
    command = line.split("resume with: ", 1)[1].strip()
    assert command == (
        f"autodeeplab search --config {shlex.quote(str(out / 'config.yaml'))} "
        f"--out {shlex.quote(str(out))} --resume"
    )
    assert not (out / "genotype.json").exists()
    assert list((out / "checkpoints").glob("epoch_*.pt"))

    argv = shlex.split(command)[1:]  # the printed command, run as `python -m autodeeplab`
    done = subprocess.run(
        [sys.executable, "-m", "autodeeplab", *argv, "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["path"]
    assert (out / "genotype.json").is_file()
    assert [r["epoch"] for r in read_jsonl(out / "search_log.jsonl")] == [1, 2]

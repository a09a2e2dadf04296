"""Kill safety: SIGKILL a search / a training run at seeded points, resume, get the same bits.

Each run is the real CLI in a subprocess (``python -m autodeeplab ...``) at a tiny size. It
is killed three times: after a seeded random delay once a checkpoint has landed (so during
the next steps), in the middle of a checkpoint write (the test-only pause of
``checkpoint.atomic_write`` holds the temporary file open; the test kills once it appears),
and once more after a random delay. Each time it is restarted with ``--resume`` (or afresh
when no checkpoint is complete yet), and in the end it must equal, bit for bit, a run that
was never interrupted: genotype.json, alpha/beta and every weight, the optimiser states and
the logs. After every kill, every ``*.pt`` in the run must load whole, ``latest.json`` must
name a complete checkpoint, and the torn temporary file must not look like a checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from autodeeplab.checkpoint import PAUSE_ENV, load_checkpoint, read_latest
from autodeeplab.engine.logs import read_jsonl
from autodeeplab.engine.search.loop import find_latest_checkpoint

SEARCH = [
    "search", "--crop", "24", "--epochs", "5", "--batch-size", "2", "--seed", "5",
    "--no-progress", "--set", "model.num_layers=2", "--set", "num_blocks=2",
    "--set", "filter_multiplier=2", "--set", "model.strides=[4,8]",
    "--set", "train_samples=16", "--set", "val_samples=2", "--set", "arch_start_epoch=1",
    "--set", "tensorboard=false", "--set", "search.device=cpu",
]  # fmt: skip

TRAIN = [
    "train", "--model", "auto-deeplab-s", "--iters", "12", "--batch-size", "2",
    "--crop", "32", "--seed", "5", "--no-progress", "--set", "model.filter_multiplier=2",
    "--set", "model.aspp_channels=8", "--set", "model.decoder_channels=8",
    "--set", "data.train_samples=8", "--set", "data.val_samples=2",
    "--set", "train.eval_every=3", "--set", "train.log_every=1",
    "--set", "train.tensorboard=false", "--set", "train.device=cpu", "--set", "eval.batch_size=2",
]  # fmt: skip

TIMEOUT = 60.0  # seconds any one wait may take before the test fails


def _env(pause: float | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != PAUSE_ENV}
    env["OMP_NUM_THREADS"] = "1"  # the same kernels, hence the same bits, in every process
    if pause is not None:
        env[PAUSE_ENV] = str(pause)
    return env


def _start(argv: list[str], out: Path, log: Path, pause: float | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "autodeeplab", *argv, "--out", str(out)]
    with open(log, "ab") as err:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=_env(pause))


def _progress(ckpt_dir: Path) -> int:
    """The epoch / iteration of the newest complete checkpoint (latest.json), 0 if none."""
    try:
        record = json.loads((ckpt_dir / "latest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return 0
    return int(record.get("epoch", record.get("iteration", 0)))


def _wait(proc: subprocess.Popen, ready: Any, what: str, log: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(
                f"run ended (rc {proc.returncode}) before {what}:\n{log.read_text()}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(TIMEOUT) == -signal.SIGKILL, "the run finished before it was killed"


def _temp_files(ckpt_dir: Path) -> list[Path]:
    return sorted(ckpt_dir.glob(".*.tmp*")) if ckpt_dir.is_dir() else []


def _own_temp_files(ckpt_dir: Path, proc: subprocess.Popen) -> list[Path]:
    return [t for t in _temp_files(ckpt_dir) if t.name.endswith(f".tmp{proc.pid}")]


def _check_after_kill(ckpt_dir: Path, kind: str) -> None:
    """What a killed run leaves is safe: whole checkpoints only, and a true latest.json."""
    for path in sorted(ckpt_dir.glob("*.pt")):  # a torn temporary file never matches
        load_checkpoint(path, kind)
    latest = read_latest(ckpt_dir, kind)
    if (ckpt_dir / "latest.json").exists():
        assert latest is not None, "latest.json names a checkpoint that is not there whole"
        assert load_checkpoint(latest, kind)["format_version"] == 1
    for tmp in _temp_files(ckpt_dir):
        assert not tmp.name.endswith(".pt") and tmp.name.startswith(".")


def _resumable(out: Path, kind: str) -> bool:
    """Whether ``--resume`` has something to resume (else the run starts afresh)."""
    if kind == "search":
        return find_latest_checkpoint(out) is not None
    # train resumes from what latest.json names (best.pt if killed before last.pt's write):
    # a start without --resume would now be refused, as the folder holds a run.
    ckpt_dir = out / "checkpoints"
    return read_latest(ckpt_dir, "train") is not None or (ckpt_dir / "last.pt").is_file()


def _kill_and_resume(argv: list[str], out: Path, kind: str, seed: int, log: Path) -> list[str]:
    """Three seeded kills (one in a checkpoint write), then resume to the end; what was hit."""
    rng = random.Random(seed)
    ckpt_dir = out / "checkpoints"
    hits = []
    for plan in ("after_checkpoint", "in_write", "after_checkpoint"):
        resume = ["--resume"] if _resumable(out, kind) else []
        start = _progress(ckpt_dir)
        if plan == "in_write":
            proc = _start([*argv, *resume], out, log, pause=30.0)
            # This process's own temporary file (an earlier kill may have left another).
            _wait(
                proc, lambda p=proc: bool(_own_temp_files(ckpt_dir, p)), "a checkpoint write", log
            )
            torn = _own_temp_files(ckpt_dir, proc)
            _kill(proc)
            assert all(t.exists() for t in torn)  # SIGKILL runs no cleanup
            hits.append(f"in the write of {torn[0].name}")
        else:
            proc = _start([*argv, *resume], out, log)
            _wait(proc, lambda s=start: _progress(ckpt_dir) > s, "a new checkpoint", log)
            delay = rng.uniform(0.01, 0.12)
            time.sleep(delay)
            _kill(proc)
            torn = _own_temp_files(ckpt_dir, proc)
            where = f"in the write of {torn[0].name}" if torn else "in steps or validation"
            hits.append(f"{delay:.3f} s after checkpoint {_progress(ckpt_dir)}: {where}")
        _check_after_kill(ckpt_dir, kind)
        assert _progress(ckpt_dir) >= start  # a kill never takes a complete checkpoint away
    proc = _start([*argv, "--resume"], out, log)
    assert proc.wait(TIMEOUT * 2) == 0, log.read_text()
    assert not _temp_files(ckpt_dir)  # the torn temporary file was cleaned up on resume
    return hits


def _assert_bitwise(a: Any, b: Any, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _assert_bitwise(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_bitwise(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _log(path: Path, drop: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k != drop} for r in read_jsonl(path)]


@pytest.mark.slow
def test_killed_search_resumes_to_the_same_bits(tmp_path: Path) -> None:
    log = tmp_path / "stderr.txt"
    reference = _start(SEARCH, tmp_path / "ref", tmp_path / "ref_stderr.txt")  # runs alongside
    hits = _kill_and_resume(SEARCH, tmp_path / "run", "search", seed=11, log=log)
    assert reference.wait(TIMEOUT * 2) == 0, (tmp_path / "ref_stderr.txt").read_text()
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert (run / "genotype.json").read_bytes() == (ref / "genotype.json").read_bytes()
    a = load_checkpoint(ref / "checkpoints" / "epoch_0005.pt", "search")
    b = load_checkpoint(find_latest_checkpoint(run), "search")
    print("search killed:", "; ".join(hits))  # where the kills landed (pytest -s)
    assert b["epoch"] == 5 and len(hits) == 3
    for key in ("model", "w_optimizer", "arch_optimizer", "w_scheduler", "rng", "split", "step"):
        _assert_bitwise(a[key], b[key], key)
    assert torch.equal(a["model"]["alpha"], b["model"]["alpha"])
    assert torch.equal(a["model"]["beta"], b["model"]["beta"])
    assert _log(ref / "search_log.jsonl", "seconds") == _log(run / "search_log.jsonl", "seconds")
    assert read_latest(run / "checkpoints", "search") == run / "checkpoints" / "epoch_0005.pt"


@pytest.mark.slow
def test_killed_spos_search_resumes_to_the_same_bits(tmp_path: Path) -> None:
    # The single-path strategy: its sub-network of each step comes from (seed, step), whose
    # step count is in the checkpoint, so a killed run draws what the reference drew.
    argv = [*SEARCH, "--set", "search.strategy=spos", "--set", "search.decode_candidates=2"]
    log = tmp_path / "stderr.txt"
    reference = _start(argv, tmp_path / "ref", tmp_path / "ref_stderr.txt")
    hits = _kill_and_resume(argv, tmp_path / "run", "search", seed=13, log=log)
    assert reference.wait(TIMEOUT * 2) == 0, (tmp_path / "ref_stderr.txt").read_text()
    ref, run = tmp_path / "ref", tmp_path / "run"
    for name in ("genotype.json", "candidates.json"):
        assert (run / name).read_bytes() == (ref / name).read_bytes(), name
    a = load_checkpoint(ref / "checkpoints" / "epoch_0005.pt", "search")
    b = load_checkpoint(find_latest_checkpoint(run), "search")
    print("spos search killed:", "; ".join(hits))
    assert b["epoch"] == 5 and len(hits) == 3 and "arch_optimizer" not in b
    for key in ("model", "w_optimizer", "w_scheduler", "spos", "rng", "split", "step"):
        _assert_bitwise(a[key], b[key], key)
    assert _log(ref / "search_log.jsonl", "seconds") == _log(run / "search_log.jsonl", "seconds")


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_bits(tmp_path: Path) -> None:
    log = tmp_path / "stderr.txt"
    reference = _start(TRAIN, tmp_path / "ref", tmp_path / "ref_stderr.txt")
    hits = _kill_and_resume(TRAIN, tmp_path / "run", "train", seed=12, log=log)
    assert reference.wait(TIMEOUT * 2) == 0, (tmp_path / "ref_stderr.txt").read_text()
    ref, run = tmp_path / "ref", tmp_path / "run"
    print("training killed:", "; ".join(hits))
    assert len(hits) == 3
    assert (run / "genotype.json").read_bytes() == (ref / "genotype.json").read_bytes()
    for name in ("last.pt", "best.pt"):
        a = load_checkpoint(ref / "checkpoints" / name, "train")
        b = load_checkpoint(run / "checkpoints" / name, "train")
        for key in ("iteration", "best_miou", "best_iter", "model", "optimizer", "scheduler"):
            _assert_bitwise(a[key], b[key], f"{name}:{key}")
        _assert_bitwise(a["rng"], b["rng"], f"{name}:rng")
    assert load_checkpoint(run / "checkpoints" / "last.pt")["iteration"] == 12
    assert _log(ref / "train_log.jsonl", "img_per_s") == _log(run / "train_log.jsonl", "img_per_s")

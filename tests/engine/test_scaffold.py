"""The run scaffold both loops stand on: batch sharing, RNG restore, the log, checkpoints."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from autodeeplab.checkpoint import load_checkpoint, read_latest
from autodeeplab.engine.guards import NonFiniteError, NonFiniteGuard, StopRequest
from autodeeplab.engine.logs import read_jsonl
from autodeeplab.engine.rng import rng_state
from autodeeplab.engine.scaffold import Run


def _run(tmp_path: Path, **fields) -> Run:
    run = Run.start(tmp_path, "search", "cpu", StopRequest(), "log.jsonl")
    return dataclasses.replace(run, **fields)


def test_one_process_is_rank_0_of_1_and_writes(tmp_path: Path) -> None:
    run = _run(tmp_path)
    assert (run.world, run.rank, run.main) == (1, 0, True)
    assert run.device == torch.device("cpu") and run.ckpt_dir == tmp_path / "checkpoints"
    assert not run.should_stop()


def test_a_batch_the_ranks_cannot_share_is_refused_by_key(tmp_path: Path) -> None:
    assert _run(tmp_path, world=2).share_batch(4) == 2
    with pytest.raises(ValueError, match=r"search\.batch_size=3 cannot be shared by 2 processes"):
        _run(tmp_path, world=2).share_batch(3)


def test_restore_rng_takes_this_ranks_stream_only_from_a_run_of_as_many_ranks(tmp_path) -> None:
    torch.manual_seed(1)
    rank0, from_rank0 = rng_state(), torch.rand(3)
    torch.manual_seed(2)
    rank1, from_rank1 = rng_state(), torch.rand(3)
    state = {"rng": rank0, "rng_ranks": [rank0, rank1]}
    assert _run(tmp_path, world=2, rank=1).restore_rng(state)
    assert torch.equal(torch.rand(3), from_rank1)
    # Three ranks now, two saved: every rank takes rank 0's stream.
    assert not _run(tmp_path, world=3, rank=1).restore_rng(state)
    assert torch.equal(torch.rand(3), from_rank0)
    assert not _run(tmp_path).restore_rng({"rng": rank1})  # a search checkpoint: one stream
    assert torch.equal(torch.rand(3), from_rank1)


def test_restart_log_cuts_back_to_the_checkpoint_or_starts_empty(tmp_path: Path) -> None:
    run = _run(tmp_path)
    for epoch in (1, 2, 3):
        run.log({"epoch": epoch}, epoch, {})
    run.restart_log(lambda r: r["epoch"] <= 2)
    assert read_jsonl(run.log_path) == [{"epoch": 1}, {"epoch": 2}]
    run.restart_log(None)
    assert not run.log_path.exists()
    _run(tmp_path, main=False).log({"epoch": 1}, 1, {})  # only rank 0 writes
    assert not run.log_path.exists()


def test_restart_log_leaves_a_log_with_nothing_to_cut_and_cuts_a_torn_line(tmp_path) -> None:
    run = _run(tmp_path)
    for epoch in (1, 2):
        run.log({"epoch": epoch}, epoch, {})
    stamp = run.log_path.stat().st_mtime_ns
    run.restart_log(lambda r: r["epoch"] <= 2)  # a resume of a finished run
    assert run.log_path.stat().st_mtime_ns == stamp
    with open(run.log_path, "a", encoding="utf-8") as f:
        f.write('{"epoch": 3, "tr')  # killed mid-line
    run.restart_log(lambda r: r["epoch"] <= 2)
    assert run.log_path.read_text() == '{"epoch": 1}\n{"epoch": 2}\n'


def test_log_sends_the_finite_tagged_values_to_tensorboard(tmp_path: Path) -> None:
    scalars: list[tuple[str, float, int]] = []

    class Writer:
        def add_scalar(self, tag: str, value: float, step: int) -> None:
            scalars.append((tag, value, step))

        def flush(self) -> None:
            pass

    run = _run(tmp_path, writer=Writer())
    record = {"loss": 0.5, "lr": math.nan, "miou": None, "untagged": 1.0}
    run.log(record, 7, {"loss": "t/loss", "lr": "t/lr", "miou": "t/miou"})
    assert scalars == [("t/loss", 0.5, 7)]
    logged = read_jsonl(run.log_path)
    assert len(logged) == 1 and logged[0]["untagged"] == 1.0 and math.isnan(logged[0]["lr"])


def test_save_writes_atomically_after_the_finite_check(tmp_path: Path) -> None:
    run = _run(tmp_path)
    guard = NonFiniteGuard("stop", 0, run.device, "search")
    path = run.ckpt_dir / "a.pt"
    payload = {"model": {"w": torch.ones(2)}, "step": 3}
    run.save(path, payload, "search", guard, payload["model"], "the test state")
    assert load_checkpoint(path, "search")["step"] == 3
    assert read_latest(run.ckpt_dir, "search") == path
    bad = {"model": {"w": torch.tensor([1.0, math.inf])}, "step": 4}
    with pytest.raises(NonFiniteError, match="the test state"):
        run.save(run.ckpt_dir / "b.pt", bad, "search", guard, bad["model"], "the test state")
    assert not (run.ckpt_dir / "b.pt").exists()
    _run(tmp_path, main=False).save(run.ckpt_dir / "c.pt", payload, "search", guard, {}, "")
    assert not (run.ckpt_dir / "c.pt").exists()  # only rank 0 writes

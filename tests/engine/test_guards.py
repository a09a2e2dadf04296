"""Numerical guards (search.nonfinite / train.nonfinite) and the search's mixed precision."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch.nn.modules.module import register_module_forward_pre_hook
from torch.optim.optimizer import register_optimizer_step_post_hook

from autodeeplab.checkpoint import load_checkpoint
from autodeeplab.engine.guards import NonFiniteError, NonFiniteGuard, resolve_amp
from autodeeplab.engine.logs import read_jsonl
from autodeeplab.engine.search.loop import run_search
from autodeeplab.engine.train.loop import run_train
from autodeeplab.model import AutoDeepLab
from autodeeplab.space import SearchNetwork


@contextlib.contextmanager
def inf_images(cls: type, calls: set[int]) -> Iterator[None]:
    """Feed all-inf images to the ``calls``-th training forward passes of ``cls`` (1-based).

    In the search, epoch 1 runs forwards 1, 2 (w steps); epoch 2 runs 3 (w), 4 (arch),
    5 (w), 6 (arch). Inf images also poison the BatchNorm statistics of that forward.
    Validation (no autograd; in the search in training mode, for batch statistics) is not
    counted.
    """
    count = 0

    def hook(module: torch.nn.Module, args: tuple) -> tuple | None:
        nonlocal count
        if not isinstance(module, cls) or not module.training or not torch.is_grad_enabled():
            return None
        count += 1
        if count in calls:
            return (torch.full_like(args[0], float("inf")), *args[1:])
        return None

    handle = register_module_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _all_finite(state: object) -> bool:
    if isinstance(state, torch.Tensor):
        return not state.is_floating_point() or bool(torch.isfinite(state).all())
    if isinstance(state, dict):
        return all(_all_finite(v) for v in state.values())
    if isinstance(state, list | tuple):
        return all(_all_finite(v) for v in state)
    return True


def _checkpoints_finite(folder: Path) -> list[str]:
    names = sorted(p.name for p in folder.glob("*.pt"))
    for name in names:
        state = load_checkpoint(folder / name)
        assert _all_finite({k: v for k, v in state.items() if k != "rng"}), name
    return names


@pytest.mark.slow
def test_search_stops_on_a_nan_loss_naming_step_and_checkpoint(
    tmp_path: Path, search_config
) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with inf_images(SearchNetwork, {4}), pytest.raises(NonFiniteError) as err:
        run_search(search_config(), tmp_path, progress=False)
    assert signal.getsignal(signal.SIGTERM) is before  # the stop handler is gone on errors too
    message = str(err.value)
    assert "the architecture step of epoch 2, step 1 (iteration 3)" in message
    assert f"the last good checkpoint is {tmp_path / 'checkpoints' / 'epoch_0001.pt'}" in message
    assert "search.nonfinite=skip" in message
    assert _checkpoints_finite(tmp_path / "checkpoints") == ["epoch_0001.pt"]
    assert not (tmp_path / "genotype.json").exists()


@pytest.mark.slow
def test_search_nan_before_any_checkpoint(tmp_path: Path, search_config) -> None:
    with inf_images(SearchNetwork, {1}), pytest.raises(NonFiniteError) as err:
        run_search(search_config(), tmp_path, progress=False)
    assert "the weight step of epoch 1, step 1 (iteration 1)" in str(err.value)
    assert "no checkpoint was written before it" in str(err.value)
    assert not list((tmp_path / "checkpoints").glob("*.pt"))


@pytest.mark.slow
def test_search_stops_on_nonfinite_alpha_even_in_skip_mode(tmp_path: Path, search_config) -> None:
    # The loss and gradients are finite, and the Adam step leaves alpha at inf.
    def hook(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        if isinstance(optimizer, torch.optim.Adam):
            optimizer.param_groups[0]["params"][0].data.fill_(float("inf"))

    handle = register_optimizer_step_post_hook(hook)
    cfg = search_config("search.nonfinite=skip")
    try:
        with pytest.raises(NonFiniteError, match=r"alpha/beta after the architecture step of "):
            run_search(cfg, tmp_path, progress=False)
    finally:
        handle.remove()
    assert _checkpoints_finite(tmp_path / "checkpoints") == ["epoch_0001.pt"]


@pytest.mark.slow
def test_search_skip_drops_and_counts_bad_batches(tmp_path: Path, search_config) -> None:
    cfg = search_config("search.nonfinite=skip", "search.max_skipped=0.5")
    with inf_images(SearchNetwork, {2, 4}):  # epoch 1's second w step, epoch 2's first arch step
        result = run_search(cfg, tmp_path, progress=False)
    assert result.skipped == 2 and not result.stopped
    records = read_jsonl(tmp_path / "search_log.jsonl")
    assert [(r["skipped_steps"], r["skipped_arch_steps"]) for r in records] == [(1, 0), (0, 1)]
    assert all(r["train_loss"] is not None and r["arch_loss"] is not None for r in records[1:])
    # The BN statistics the inf images poisoned were put back: every checkpoint is finite.
    assert _checkpoints_finite(tmp_path / "checkpoints") == ["epoch_0001.pt", "epoch_0002.pt"]
    assert load_checkpoint(tmp_path / "checkpoints" / "epoch_0002.pt")["skipped"] == 2
    assert (tmp_path / "genotype.json").is_file()


@pytest.mark.slow
def test_search_skip_stops_past_max_skipped(tmp_path: Path, search_config) -> None:
    cfg = search_config("search.nonfinite=skip", "search.max_skipped=0.1")  # 6 updates: 0 allowed
    with inf_images(SearchNetwork, {2}), pytest.raises(NonFiniteError) as err:
        run_search(cfg, tmp_path, progress=False)
    expected = "skipped updates: 1, more than the 0 that search.max_skipped allows in this run"
    assert expected in str(err.value)
    assert "epoch 1, step 2" in str(err.value)


@pytest.mark.slow
def test_train_stops_on_a_nan_loss(tmp_path: Path, train_config) -> None:
    with inf_images(AutoDeepLab, {3}), pytest.raises(NonFiniteError) as err:
        run_train(train_config(), tmp_path, progress=False)
    last = tmp_path / "checkpoints" / "last.pt"
    assert "iteration 3" in str(err.value) and f"last good checkpoint is {last}" in str(err.value)
    assert _checkpoints_finite(tmp_path / "checkpoints") == ["best.pt", "last.pt"]
    assert load_checkpoint(last)["iteration"] == 2


@pytest.mark.slow
def test_train_skip_finishes_and_reports(tmp_path: Path, train_config) -> None:
    cfg = train_config("train.nonfinite=skip", "train.max_skipped=0.25")
    with inf_images(AutoDeepLab, {2}):
        result = run_train(cfg, tmp_path, progress=False)
    assert result.skipped == 1 and result.iterations == 4
    train = [r for r in read_jsonl(tmp_path / "train_log.jsonl") if r["event"] == "train"]
    assert [r["skipped"] for r in train] == [0, 1, 0, 0]
    assert train[1]["loss"] is None and all(r["loss"] is not None for r in train[2:])
    _checkpoints_finite(tmp_path / "checkpoints")


def test_lazy_guard_names_the_first_bad_step() -> None:
    # The CUDA path (flags kept on the device, read at check()), run on CPU tensors.
    guard = NonFiniteGuard("stop", 0, torch.device("cpu"), "search")
    guard.lazy = True
    for label, ok in (("a", True), ("b", False), ("c", False)):
        guard.watch(torch.tensor(ok), label)
    with pytest.raises(NonFiniteError, match=r"in b; no checkpoint"):
        guard.check()
    guard.watch(torch.tensor(True), "d")
    guard.check()  # the flags were reset


def test_check_state_reads_every_tensor() -> None:
    guard = NonFiniteGuard("stop", 0, torch.device("cpu"), "search")
    good = {"w": torch.ones(2), "opt": {"state": {0: {"step": torch.tensor(3.0)}}}}
    guard.check_state(good, "the checkpoint")
    bad = {"w": torch.ones(2), "opt": {"state": {0: {"step": torch.tensor(float("nan"))}}}}
    with pytest.raises(NonFiniteError, match="the checkpoint"):
        guard.check_state(bad, "the checkpoint")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_check_state_on_a_state_that_mixes_devices() -> None:
    # On CUDA, Adam keeps its step counters on the CPU beside the weights on the GPU: a state
    # stacked as one device's tensors failed at the first checkpoint of every GPU run.
    guard = NonFiniteGuard("stop", 0, torch.device("cuda"), "search")
    w = torch.ones(2, device="cuda")
    guard.check_state({"w": w, "step": torch.tensor(3.0)}, "the checkpoint")
    with pytest.raises(NonFiniteError):
        guard.check_state({"w": w, "step": torch.tensor(float("inf"))}, "the checkpoint")
    with pytest.raises(NonFiniteError):
        guard.check_state({"w": w / 0 * 0, "step": torch.tensor(3.0)}, "the checkpoint")


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("search.amp", "fp8", "search.amp='fp8'"),
        ("search.amp", "fp16", "search.amp=fp16 needs CUDA"),
        ("search.nonfinite", "ignore", "search.nonfinite='ignore'"),
        ("search.max_skipped", "1.5", "search.max_skipped=1.5"),
    ],
)
def test_search_loop_options_are_checked(
    tmp_path: Path, key: str, value: str, match: str, search_config
) -> None:
    with pytest.raises(ValueError, match=match):
        run_search(search_config(f"{key}={value}"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # refused before the run folder is written


def test_train_loop_options_are_checked(tmp_path: Path, train_config) -> None:
    with pytest.raises(ValueError, match="train.nonfinite='never'"):
        run_train(train_config("train.nonfinite=never"), tmp_path, progress=False)


def test_amp_resolution_on_cpu() -> None:
    cpu = torch.device("cpu")
    assert resolve_amp("bf16", cpu) == torch.bfloat16  # asked for by name: honoured
    assert resolve_amp("auto", cpu) is None  # auto is off on CPU
    assert resolve_amp("off", cpu) is None
    with pytest.raises(ValueError, match="search.amp=fp16 needs CUDA; on cpu use bf16 or off"):
        resolve_amp("fp16", cpu, "search.amp")  # not silently fp32


@pytest.mark.slow
def test_bf16_search_on_cpu(tmp_path: Path, search_config, output_dtypes) -> None:
    cfg = search_config("search.amp=bf16", "search.epochs=2")
    with output_dtypes(SearchNetwork) as seen:
        run_search(cfg, tmp_path, progress=False)
    assert seen and set(seen) == {torch.bfloat16}  # training and validation autocast
    records = read_jsonl(tmp_path / "search_log.jsonl")
    assert records[-1]["arch_loss"] is not None
    assert all(r["train_loss"] > 0 and r["val_loss"] > 0 for r in records)
    state = load_checkpoint(tmp_path / "checkpoints" / "epoch_0002.pt", "search")
    assert "w_scaler" in state and "arch_scaler" in state  # empty unless fp16
    assert state["model"]["alpha"].dtype == torch.float32  # parameters stay fp32

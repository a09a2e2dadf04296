"""The retrain loop: poly schedule, data order, exact resume, checkpoints and errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autodeeplab.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from autodeeplab.config import ConfigError, TrainConfig, config_from_dict
from autodeeplab.data import dataset_info
from autodeeplab.engine.logs import read_jsonl
from autodeeplab.engine.train.loop import BatchSchedule, poly_lr, resolve_amp, run_train
from autodeeplab.genotype import PAPER_GENOTYPE, Genotype, save_genotype
from autodeeplab.model import AutoDeepLab, build_model, load_trained_model


def test_poly_lr_values() -> None:
    assert poly_lr(0.05, 0, 100) == 0.05
    assert poly_lr(0.05, 50, 100) == pytest.approx(0.05 * 0.5**0.9)
    assert poly_lr(0.05, 99, 100, power=1.0) == pytest.approx(0.05 / 100)
    assert poly_lr(0.05, 100, 100) == 0.0
    assert poly_lr(0.05, 150, 100) == 0.0  # past the end it stays at zero


@pytest.mark.slow
def test_logged_learning_rates_follow_poly(trained_run: Path) -> None:
    records = [r for r in read_jsonl(trained_run / "train_log.jsonl") if r["event"] == "train"]
    assert [r["iter"] for r in records] == [1, 2, 3, 4]
    for r in records:  # iteration t (1-based) used the lr of step t - 1
        assert r["lr"] == pytest.approx(0.05 * (1 - (r["iter"] - 1) / 4) ** 0.9)


def test_batch_schedule_is_a_function_of_seed_and_iteration() -> None:
    full = list(BatchSchedule(7, 2, seed=5, start=0, total=9))
    assert list(BatchSchedule(7, 2, seed=5, start=4, total=9)) == full[4:]
    assert full != list(BatchSchedule(7, 2, seed=6, start=0, total=9))
    # Three batches per epoch (one image left out), distinct images within an epoch.
    for epoch in range(3):
        indices = [i for batch in full[3 * epoch : 3 * epoch + 3] for i, _ in batch]
        assert len(set(indices)) == 6
    keys = [k for batch in full for _, k in batch]
    assert keys == list(range(18))  # every draw has its own augmentation key
    with pytest.raises(ValueError, match="fewer than the batch size"):
        BatchSchedule(1, 2, seed=0, start=0, total=1)


@pytest.mark.slow
def test_channels_last_changes_the_layout_not_the_math(tmp_path: Path, train_config) -> None:
    runs, first_loss = {}, {}
    for on in (True, False):
        # No dropout: its masks are drawn in memory order, so they differ between layouts.
        # Crop 64, not 32: at 32 the stride-32 features are 1x1, and BatchNorm over two values
        # turns the layouts' different rounding into differences of 4e-4 in the loss.
        layout = f"train.channels_last={str(on).lower()}"
        cfg = train_config(layout, "model.dropout=0", "data.crop=64")
        run_train(cfg, tmp_path / str(on), progress=False)
        runs[on] = load_checkpoint(tmp_path / str(on) / "checkpoints" / "last.pt")["model"]
        log = read_jsonl(tmp_path / str(on) / "train_log.jsonl")
        first_loss[on] = next(r["loss"] for r in log if r["event"] == "train")
    convs = [k for k, t in runs[True].items() if t.dim() == 4 and min(t.shape[-2:]) > 1]
    assert convs
    for k in convs:
        assert runs[True][k].is_contiguous(memory_format=torch.channels_last), k
        assert runs[False][k].is_contiguous(), k
    # The first loss comes before any update: the two layouts agree to float rounding. (Later
    # steps drift apart: BatchNorm over a handful of values at stride 32 amplifies rounding.)
    assert first_loss[True] == pytest.approx(first_loss[False], rel=1e-5)
    model, _ = load_trained_model(tmp_path / "False" / "checkpoints" / "last.pt")
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)


@pytest.mark.slow
def test_compiled_training_runs_the_same_math(tmp_path: Path, train_config, monkeypatch) -> None:
    # aot_eager traces the graph as Inductor does, without its minutes of code generation.
    compiled = []
    real_compile = torch.compile

    def spy(module: torch.nn.Module, **kwargs: object) -> torch.nn.Module:
        compiled.append(kwargs.get("backend"))
        return real_compile(module, **kwargs)

    monkeypatch.setattr(torch, "compile", spy)
    first_loss, states = {}, {}
    for backend in ("false", "aot_eager"):
        cfg = train_config(f"train.compile={backend}", "model.dropout=0", "data.crop=64")
        run_train(cfg, tmp_path / backend, progress=False)
        log = read_jsonl(tmp_path / backend / "train_log.jsonl")
        first_loss[backend] = next(r["loss"] for r in log if r["event"] == "train")
        states[backend] = load_checkpoint(tmp_path / backend / "checkpoints" / "last.pt")["model"]
    assert compiled == ["aot_eager"]
    # The checkpoint holds the network's own keys (no torch.compile "_orig_mod." prefix).
    assert states["aot_eager"].keys() == states["false"].keys()
    assert first_loss["aot_eager"] == pytest.approx(first_loss["false"], rel=1e-5)


def test_an_unknown_compile_backend_fails_before_the_run(tmp_path: Path, train_config) -> None:
    with pytest.raises(ValueError, match="train.compile='nope' is not a torch.compile backend"):
        run_train(train_config("train.compile=nope"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_resumed_training_equals_uninterrupted(tmp_path: Path, train_config) -> None:
    # Drop path and dropout on, so the restored RNG state matters as well as the data order.
    cfg = train_config("model.drop_path_keep_prob=0.7", "model.dropout=0.5", "train.iters=5")
    run_train(cfg, tmp_path / "straight", progress=False)
    run_train(cfg, tmp_path / "split", progress=False, stop_after=3)
    assert load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")["iteration"] == 3
    run_train(cfg, tmp_path / "split", resume=True, progress=False)

    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")
    assert a["iteration"] == b["iteration"] == 5
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    states_a, states_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert states_a.keys() == states_b.keys()
    for key, sa in states_a.items():
        sb = states_b[key]
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    log_a = read_jsonl(tmp_path / "straight" / "train_log.jsonl")
    log_b = read_jsonl(tmp_path / "split" / "train_log.jsonl")
    strip = [{k: v for k, v in r.items() if k != "img_per_s"} for r in log_a]
    assert strip == [{k: v for k, v in r.items() if k != "img_per_s"} for r in log_b]


@pytest.mark.slow
def test_checkpoint_is_self_describing(trained_run: Path) -> None:
    state = load_checkpoint(trained_run / "checkpoints" / "best.pt", "train")
    info = dataset_info("synthetic")
    assert state["class_names"] == list(info.class_names)
    assert [tuple(c) for c in state["palette"]] == list(info.palette)
    assert Genotype.from_dict(state["genotype"]) == PAPER_GENOTYPE
    cfg = config_from_dict(state["config"], TrainConfig())
    assert cfg.model.filter_multiplier == 2 and cfg.train.iters == 4
    assert state["model_kwargs"]["filter_multiplier"] == 2
    assert {"optimizer", "scheduler", "rng", "iteration", "best_miou"} <= set(state)
    model, _ = load_trained_model(trained_run / "checkpoints" / "best.pt")
    assert model(torch.randn(1, 3, 21, 19)).shape == (1, 8, 21, 19)
    assert (trained_run / "config.yaml").is_file()
    assert Genotype.from_json((trained_run / "genotype.json").read_text()) == PAPER_GENOTYPE
    evals = [r for r in read_jsonl(trained_run / "train_log.jsonl") if r["event"] == "eval"]
    assert [r["iter"] for r in evals] == [2, 4]
    assert state["best_miou"] == max(r["val_miou"] for r in evals)


@pytest.mark.slow
def test_train_from_a_genotype_file(tmp_path: Path, train_config) -> None:
    genotype = Genotype(cell=((("sep_conv_3x3", 0), ("skip_connect", 1)),), path=(0, 1, 1, 0))
    save_genotype(genotype, tmp_path / "g.json")
    cfg = train_config("model.name=null", f"model.genotype={tmp_path / 'g.json'}", "train.iters=1")
    result = run_train(cfg, tmp_path / "run", progress=False)
    model, state = load_trained_model(result.best_checkpoint)
    assert model.genotype == genotype
    assert state["iteration"] == 1


def test_config_errors(tmp_path: Path, train_config) -> None:
    with pytest.raises(ValueError, match="exactly one of --model"):
        run_train(train_config("model.genotype=g.json"), tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="exactly one of --model"):
        run_train(train_config("model.name=null"), tmp_path / "b", progress=False)
    missing = tmp_path / "missing.json"
    cfg = train_config("model.name=null", f"model.genotype={missing}")
    with pytest.raises(FileNotFoundError, match="missing.json: genotype file not found"):
        run_train(cfg, tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match="unknown model"):
        run_train(train_config("model.name=auto-deeplab-xl"), tmp_path / "d", progress=False)


def test_resume_errors(tmp_path: Path, train_config) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume"):
        run_train(train_config(), tmp_path / "empty", resume=True, progress=False)
    search_ckpt = tmp_path / "epoch_0001.pt"
    save_checkpoint(search_ckpt, {"epoch": 1}, "search")
    with pytest.raises(CheckpointError, match="'search' checkpoint"):
        run_train(train_config(), tmp_path / "e", resume=search_ckpt, progress=False)
    partial = tmp_path / "last.pt"
    save_checkpoint(partial, {"iteration": 1, "model": {}}, "train")
    with pytest.raises(CheckpointError, match="last.pt: incomplete checkpoint, it has no "):
        run_train(train_config(), tmp_path / "f", resume=partial, progress=False)


@pytest.mark.slow
def test_resume_with_another_model_config_is_refused(trained_run: Path, train_config, tmp_path):
    cfg = train_config("model.filter_multiplier=4")
    with pytest.raises(CheckpointError, match="made with model.filter_multiplier=.*, not 4"):
        run_train(cfg, tmp_path, resume=trained_run / "checkpoints" / "last.pt", progress=False)


@pytest.mark.slow
def test_amp_is_off_on_cpu_unless_bf16_is_named(
    tmp_path: Path, train_config, output_dtypes
) -> None:
    assert resolve_amp("auto", torch.device("cpu")) is None
    with pytest.raises(ValueError, match="train.amp='fp8': use one of auto, bf16, fp16, off"):
        resolve_amp("fp8", torch.device("cpu"), "train.amp")
    with pytest.raises(ValueError, match="train.amp=fp16 needs CUDA"):
        run_train(train_config("train.amp=fp16"), tmp_path / "fp16", progress=False)
    assert not (tmp_path / "fp16").exists()
    with output_dtypes(AutoDeepLab) as seen:
        run_train(train_config("train.amp=bf16"), tmp_path / "bf16", progress=False)
    assert seen and set(seen) <= {torch.bfloat16}  # the training steps autocast
    state = load_checkpoint(tmp_path / "bf16" / "checkpoints" / "last.pt")
    assert all(t.dtype != torch.bfloat16 for t in state["model"].values())  # weights stay fp32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_amp_training_on_cuda(tmp_path: Path, train_config) -> None:
    cfg = train_config("train.device=cuda", "train.amp=fp16", "train.iters=2")
    result = run_train(cfg, tmp_path, progress=False)
    state = load_checkpoint(result.last_checkpoint)
    assert state["scaler"]  # the fp16 GradScaler state travels with the checkpoint
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def test_aspp_gamma_init(train_config) -> None:
    from autodeeplab.engine.train.loop import build_train_model

    model = build_train_model(train_config("model.aspp_gamma_init=0.05"), 8)
    assert torch.equal(model.aspp.project[1].weight, torch.full((8,), 0.05))
    default = build_train_model(train_config(), 8)
    assert torch.equal(default.aspp.project[1].weight, torch.ones(8))  # TF's init
    with pytest.raises(ConfigError, match="aspp_gamma_init.*out of range"):
        train_config("model.aspp_gamma_init=0.0")
    with pytest.raises(ValueError, match="projection_gamma must be positive"):
        build_model("auto-deeplab-s", 8, filter_multiplier=4, aspp_gamma_init=0.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_on_cuda_stops_and_resumes(tmp_path: Path, train_config) -> None:
    cfg = train_config("train.device=cuda", "train.amp=off", "train.iters=4")
    run_train(cfg, tmp_path, progress=False, stop_after=2)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["iteration"] == 2
    run_train(cfg, tmp_path, resume=True, progress=False)
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["iteration"] == 4
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())

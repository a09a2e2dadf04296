"""The train / eval / predict / info / run subcommands, end to end at tiny sizes, in-process."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch.optim.optimizer import register_optimizer_step_post_hook

from autodeeplab.checkpoint import load_checkpoint, save_checkpoint
from autodeeplab.cli import main
from autodeeplab.config import (
    CPU_TRAIN_PRESET,
    SearchConfig,
    TrainConfig,
    config_from_dict,
    load_config,
)
from autodeeplab.genotype import PAPER_GENOTYPE, save_genotype

REPO = Path(__file__).resolve().parents[2]

TINY_MODEL = [
    "--set", "model.filter_multiplier=2",
    "--set", "model.aspp_channels=8",
    "--set", "model.decoder_channels=8",
    "--set", "data.train_samples=4",
    "--set", "data.val_samples=2",
    "--set", "train.eval_every=2",
    "--set", "train.tensorboard=false",
    "--set", "train.device=cpu",
]  # fmt: skip

TINY_SEARCH = {
    "model": {"num_layers": 3, "num_blocks": 2, "filter_multiplier": 2, "strides": [4, 8]},
    "data": {"crop": 32, "train_samples": 4, "val_samples": 2},
    "search": {"epochs": 1, "arch_start_epoch": 0, "tensorboard": False, "device": "cpu"},
}
TINY_TRAIN = {
    "model": {"filter_multiplier": 2, "aspp_channels": 8, "decoder_channels": 8},
    "data": {"crop": 32, "scale": [0.75, 1.25], "train_samples": 4, "val_samples": 2},
    "train": {"iters": 2, "batch_size": 2, "eval_every": 1, "tensorboard": False},
    "eval": {"batch_size": 2},
}


def _one_line_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith(f"autodeeplab {command}: error: "), err
    return err[-1]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-iteration ``autodeeplab train`` run of auto-deeplab-s at F=2."""
    out = tmp_path_factory.mktemp("cli_train")
    argv = ["train", "--model", "auto-deeplab-s", "--data", "synthetic", "--out", str(out),
            "--iters", "2", "--batch-size", "2", "--crop", "32", "--seed", "1",
            *TINY_MODEL, "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    return out


@pytest.mark.slow
def test_train_writes_checkpoints_and_resolved_config(cli_run: Path) -> None:
    assert (cli_run / "checkpoints" / "best.pt").is_file()
    assert (cli_run / "checkpoints" / "last.pt").is_file()
    cfg = load_config(cli_run / "config.yaml", base=TrainConfig())
    assert (cfg.train.iters, cfg.train.batch_size, cfg.data.crop, cfg.train.seed) == (2, 2, 32, 1)
    assert cfg.model.name == "auto-deeplab-s" and cfg.model.genotype is None


@pytest.mark.slow
def test_train_resume_of_a_finished_run_is_a_no_op(cli_run: Path) -> None:
    argv = ["train", "--model", "auto-deeplab-s", "--out", str(cli_run), "--iters", "2",
            "--batch-size", "2", "--crop", "32", "--seed", "1", *TINY_MODEL,
            "--resume", "--no-progress"]  # fmt: skip
    assert main(argv) == 0


@pytest.mark.slow
def test_train_stopped_by_sigterm_prints_a_resume_command_that_finishes(
    tmp_path: Path, capsys
) -> None:
    out = tmp_path / "stopped"
    argv = ["train", "--model", "auto-deeplab-s", "--out", str(out), "--iters", "3",
            "--batch-size", "2", "--crop", "32", *TINY_MODEL, "--no-progress"]  # fmt: skip

    def hook(optimizer: Any, args: Any, kwargs: Any) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # during the first step: the run stops after it

    handle = register_optimizer_step_post_hook(hook)
    try:
        assert main(argv) == 0
    finally:
        handle.remove()
    line = next(x for x in capsys.readouterr().err.splitlines() if "stopped early" in x)
    assert "at iteration 1" in line
    command = line.split("resume with: ", 1)[1].split()
    assert command[:2] == ["autodeeplab", "train"] and command[-1] == "--resume"
    assert command[command.index("--config") + 1] == str(out / "config.yaml")
    assert main([*command[1:], "--no-progress"]) == 0
    assert load_checkpoint(out / "checkpoints" / "last.pt")["iteration"] == 3


@pytest.mark.slow
def test_eval_prints_table_and_writes_metrics(cli_run: Path, capsys, tmp_path: Path) -> None:
    ckpt = cli_run / "checkpoints" / "best.pt"
    assert main(["eval", str(ckpt), "--data", "synthetic", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "checkerboard" in out and "mIoU" in out
    metrics = json.loads((cli_run / "checkpoints" / "metrics.json").read_text())
    assert metrics["mode"] == "whole" and metrics["scales"] == [1.0]
    argv = ["eval", str(ckpt), "--mode", "slide", "--window", "24", "--scales", "0.75,1",
            "--flip", "--out", str(tmp_path / "ms.json"), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    ms = json.loads((tmp_path / "ms.json").read_text())
    assert (ms["mode"], ms["scales"], ms["flip"], ms["window"]) == ("slide", [0.75, 1.0], True, 24)
    assert 0.0 <= ms["miou"] <= 1.0


@pytest.mark.slow
def test_predict_writes_pngs_and_reports_bad_images(cli_run: Path, tmp_path: Path, capsys):
    Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"garbage")
    ckpt = str(cli_run / "checkpoints" / "best.pt")
    argv = ["predict", ckpt, str(tmp_path / "a.png"), "--out", str(tmp_path / "p"),
            "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert (tmp_path / "p" / "a_mask.png").is_file()
    assert (tmp_path / "p" / "a_overlay.png").is_file()
    argv = ["predict", ckpt, str(tmp_path / "b.png"), "--out", str(tmp_path / "p")]
    assert main(argv) == 2
    line = _one_line_error(capsys, "predict")
    assert "b.png: cannot read image" in line


@pytest.mark.slow
def test_info_matches_the_parameter_oracle(capsys) -> None:
    assert main(["info", "auto-deeplab-s", "--json", "--size", "65x65"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == 10_147_427  # paper Table 2: 10.15M, 19 classes
    assert info["strides"] == [4, 4, 4, 8, 16, 8, 16, 16, 32, 32, 16, 8]
    assert info["output_stride"] == 8 and info["size"] == [65, 65]
    assert info["multiply_adds"] > 0
    assert info["cell"][0] == [["dil_conv_5x5", 0], ["sep_conv_3x3", 1]]
    assert main(["info", "auto-deeplab-m", "--size", "33x33"]) == 0
    table = capsys.readouterr().out
    assert "21,622,451" in table and "cell block 4" in table


@pytest.mark.slow
def test_info_of_a_genotype_file(tmp_path: Path, capsys) -> None:
    save_genotype(PAPER_GENOTYPE, tmp_path / "g.json")
    argv = ["info", str(tmp_path / "g.json"), "--json", "--classes", "19", "--size", "33",
            "--filter-multiplier", "20"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["parameters"] == 10_147_427


@pytest.mark.parametrize(
    ("argv", "command", "expected"),
    [
        (["train", "--genotype", "{tmp}/missing.json", "--out", "{tmp}/r"], "train",
         "missing.json: genotype file not found"),
        (["eval", "{tmp}/search.pt"], "eval", "'search' checkpoint, not a trained network"),
        (["predict", "{tmp}/search.pt", "x.png", "--out", "{tmp}/p"], "predict",
         "'search' checkpoint"),
        (["info", "auto-deeplab-xl"], "info", "neither a model"),
        (["info", "{tmp}/nope.json"], "info", "nope.json: genotype file not found"),
        (["run", "--out", "{tmp}/r", "--set", "epochs=2"], "run", "prefix the key with its stage"),
        (["train", "--model", "auto-deeplab-s", "--set", "train.warmup=5"], "train",
         "unknown key 'train.warmup'"),
    ],
)  # fmt: skip
def test_user_errors_are_one_line(tmp_path: Path, capsys, argv, command, expected) -> None:
    save_checkpoint(tmp_path / "search.pt", {"epoch": 1}, "search")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    assert expected in _one_line_error(capsys, command)


def test_train_preset_file_equals_the_built_in_one() -> None:
    cfg = load_config(REPO / "configs" / "train" / "synthetic.yaml", base=TrainConfig())
    assert cfg == config_from_dict(CPU_TRAIN_PRESET, TrainConfig())
    assert cfg.data.spec == "synthetic"
    assert cfg.model.name is None and cfg.model.genotype is None  # `run` fills in the genotype


@pytest.mark.slow
def test_run_end_to_end_writes_the_report(tmp_path: Path, capsys) -> None:
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(TINY_SEARCH))
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(TINY_TRAIN))
    load_config(tmp_path / "search.yaml", base=SearchConfig())  # the presets are valid
    out = tmp_path / "run"
    argv = ["run", "--out", str(out), "--search-config", str(tmp_path / "search.yaml"),
            "--train-config", str(tmp_path / "train.yaml"), "--set", "train.train.seed=3",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "chance" in err
    assert "estimated peak memory (RSS)" in err  # the search stage's estimate, as `search` prints
    report = (out / "report.md").read_text()
    for section in ("## Result", "## Per-class IoU", "## Found architecture",
                    "## Retrained network", "## Training curves", "## Predictions"):  # fmt: skip
        assert section in report
    for figure in ("search/genotype_path.png", "search/genotype_cell.png",
                   "training_curves.png", "predictions/val_00.png"):  # fmt: skip
        assert f"]({figure})" in report
        assert (out / figure).is_file()
    assert "chance mIoU" in report and "Multi-Adds" in report and "parameters" in report
    trained = load_config(out / "train" / "config.yaml", base=TrainConfig())
    assert trained.train.seed == 3  # the train.* override reached the training stage
    assert trained.model.genotype == str(out / "search" / "genotype.json")
    assert (out / "train" / "metrics.json").is_file()


@pytest.mark.slow
def test_run_stopped_by_sigterm_resumes_to_the_same_result(tmp_path: Path, capsys) -> None:
    """SIGTERM in the search, then in the retraining; each --resume continues exactly."""
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(TINY_SEARCH))
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(TINY_TRAIN))

    def argv(out: Path, *extra: str) -> list[str]:
        return ["run", "--out", str(out), "--search-config", str(tmp_path / "search.yaml"),
                "--train-config", str(tmp_path / "train.yaml"), "--no-progress",
                "--set", "search.search.epochs=2", *extra]  # fmt: skip

    def stop_at(step: int) -> Any:
        calls = {"n": 0}

        def hook(optimizer: Any, args: Any, kwargs: Any) -> None:
            calls["n"] += 1
            if calls["n"] == step:
                os.kill(os.getpid(), signal.SIGTERM)

        return register_optimizer_step_post_hook(hook)

    straight = tmp_path / "straight"
    assert main(argv(straight)) == 0
    split = tmp_path / "split"
    handle = stop_at(1)  # the first w step of the search
    try:
        assert main(argv(split)) == 0
    finally:
        handle.remove()
    assert "stopped early in the search stage" in capsys.readouterr().err
    assert not (split / "search" / "genotype.json").exists()
    assert not (split / "report.md").exists()
    # Resumed: epoch 2 of the search (a w and an arch step), then training iteration 1 of 2.
    handle = stop_at(3)
    try:
        assert main(argv(split, "--resume")) == 0
    finally:
        handle.remove()
    assert "stopped early in the train stage" in capsys.readouterr().err
    assert (split / "search" / "genotype.json").read_text() == (
        straight / "search" / "genotype.json"
    ).read_text()
    assert main(argv(split, "--resume")) == 0
    assert (split / "report.md").is_file()
    a = load_checkpoint(straight / "train" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(split / "train" / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

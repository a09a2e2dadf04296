"""The train / eval / predict subcommands, end to end at tiny sizes, in-process."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from torch.optim.optimizer import register_optimizer_step_post_hook

from autodeeplab.checkpoint import load_checkpoint, save_checkpoint
from autodeeplab.cli import main
from autodeeplab.config import (
    CPU_TRAIN_PRESET,
    TrainConfig,
    config_from_dict,
    load_config,
)
from conftest import TINY_TRAIN_ARGV, tiny_train_argv

REPO = Path(__file__).resolve().parents[2]


def _one_line_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith(f"autodeeplab {command}: error: "), err
    return err[-1]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``train`` with :data:`TINY_TRAIN_ARGV` (its own: the eval test writes next to it)."""
    out = tmp_path_factory.mktemp("cli_train")
    assert main(["train", "--out", str(out), *TINY_TRAIN_ARGV]) == 0
    return out


@pytest.mark.slow
def test_train_writes_checkpoints_and_resolved_config(cli_run: Path) -> None:
    assert (cli_run / "checkpoints" / "best.pt").is_file()
    assert (cli_run / "checkpoints" / "last.pt").is_file()
    cfg = load_config(cli_run / "config.yaml", base=TrainConfig())
    assert (cfg.train.iters, cfg.train.batch_size, cfg.data.crop, cfg.train.seed) == (2, 2, 32, 1)
    assert cfg.model.name == "auto-deeplab-s" and cfg.model.genotype is None


def _files(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root``: its bytes and modification time (ns), by relative path."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
def test_train_resume_of_a_finished_run_is_a_no_op(cli_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(cli_run, out)  # copy2 keeps the mtimes
    before = _files(out)
    assert before, "the fixture run left no files"
    assert main(["train", "--out", str(out), *TINY_TRAIN_ARGV, "--resume"]) == 0
    after = _files(out)
    assert sorted(after) == sorted(before)  # nothing written, nothing removed
    changed = [name for name in before if after[name] != before[name]]
    assert not changed, f"a resume of a finished run rewrote {changed}"


@pytest.mark.slow
def test_train_stopped_by_sigterm_prints_a_resume_command_that_finishes(
    tmp_path: Path, capsys
) -> None:
    out = tmp_path / "stopped"
    argv = ["train", "--out", str(out), *tiny_train_argv(iters=3)]

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

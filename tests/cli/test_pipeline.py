"""The run subcommand (search, retrain, evaluate, report), end to end at tiny sizes."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch.optim.optimizer import register_optimizer_step_post_hook

from autodeeplab.checkpoint import load_checkpoint
from autodeeplab.cli import main
from autodeeplab.config import SearchConfig, TrainConfig, load_config
from conftest import TINY_RUN_SEARCH_YAML, TINY_RUN_TRAIN_YAML


@pytest.mark.slow
def test_run_end_to_end_writes_the_report(tmp_path: Path, capsys) -> None:
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(TINY_RUN_SEARCH_YAML))
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(TINY_RUN_TRAIN_YAML))
    load_config(tmp_path / "search.yaml", base=SearchConfig())  # the presets are valid
    out = tmp_path / "run"
    argv = ["run", "--out", str(out), "--search-config", str(tmp_path / "search.yaml"),
            "--train-config", str(tmp_path / "train.yaml"), "--set", "train.seed=3",
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
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(TINY_RUN_SEARCH_YAML))
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(TINY_RUN_TRAIN_YAML))

    def argv(out: Path, *extra: str) -> list[str]:
        return ["run", "--out", str(out), "--search-config", str(tmp_path / "search.yaml"),
                "--train-config", str(tmp_path / "train.yaml"), "--no-progress",
                "--set", "search.epochs=2", *extra]  # fmt: skip

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

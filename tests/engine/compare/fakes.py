"""What the compare tests share: a faked retraining, a copied finished search, file snapshots.

Retraining is faked (:func:`fake_training`) so that a comparison takes a second: everything
around it (the checks, the digests, reuse, the summary) is the real code.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import autodeeplab.engine.compare.compare as compare
from autodeeplab.config import TrainConfig, load_config, save_config
from conftest import TINY_TRAIN_OVERRIDES as TINY_TRAIN

#: The retraining of the compare tests; crop 64 as the paper's genotype reaches stride 32.
COMPARE_TRAIN = (*TINY_TRAIN, "data.crop=64")


def compare_config(*overrides: str) -> TrainConfig:
    """The tiny retraining config of the compare tests, with ``overrides``."""
    return load_config(None, [*COMPARE_TRAIN, *overrides], base=TrainConfig())


def compare_argv(search: Path, out: Path, *extra: str) -> list[str]:
    """``autodeeplab compare`` of one searched seed, one random genotype and the references."""
    sets = [a for kv in COMPARE_TRAIN for a in ("--set", kv)]
    return [
        "compare", str(search), "--out", str(out), "--random", "1", "--searched-seeds", "1",
        "--tolerance", "0.5", "--no-progress", *sets, *extra,
    ]  # fmt: skip


def fake_training(
    monkeypatch: pytest.MonkeyPatch, miou: float = 0.25, mious: Mapping[str, float] | None = None
) -> list[str]:
    """Replace each retraining by its config, a checkpoint file and fixed scores; returns the
    names of the networks trained, in order.

    ``mious``: each network's mIoU by name (every network trained must be there); without
    it, every network scores ``miou``.
    """
    trained: list[str] = []

    def train_and_evaluate(
        cfg: TrainConfig, folder: Path, split: str, progress: bool
    ) -> tuple[dict[str, Any], Path]:
        trained.append(folder.name)
        score = miou if mious is None else mious[folder.name]
        save_config(cfg, folder / "train" / "config.yaml")  # as run_train does
        checkpoint = folder / "train" / "checkpoints" / "best.pt"
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write_bytes(f"{folder.name} seed {cfg.train.seed}".encode())
        scores = {"val_miou": 0.3, "best_iteration": 4, f"{split}_miou": score, "miou": score}
        return scores, checkpoint

    monkeypatch.setattr(compare, "train_and_evaluate", train_and_evaluate)
    return trained


def copy_search(finished: Path, dest: Path) -> Path:
    """A copy of the finished search run ``finished`` at ``dest`` (tests may change it)."""
    shutil.copytree(finished, dest)
    return dest


def snapshot(*folders: Path) -> dict[str, str]:
    """Every file under ``folders`` with the sha256 of its bytes (absent folders: nothing)."""
    files = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")) if folder.exists() else ():
            if path.is_file():
                files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files

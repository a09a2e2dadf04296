"""Tiny retraining configs and a trained checkpoint shared by the train/eval/predict tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from autodeeplab.config import TrainConfig, load_config

#: A network that trains in a fraction of a second per step on CPU: F=2, 8-channel heads.
TINY_TRAIN = (
    "model.name=auto-deeplab-s",
    "model.filter_multiplier=2",
    "model.aspp_channels=8",
    "model.decoder_channels=8",
    "data.crop=32",
    "data.train_samples=8",
    "data.val_samples=4",
    "train.iters=4",
    "train.batch_size=2",
    "train.eval_every=2",
    "train.log_every=1",
    "train.tensorboard=false",
    "train.device=cpu",
    "eval.batch_size=2",
)


def _tiny_train_config(*overrides: str) -> TrainConfig:
    return load_config(None, [*TINY_TRAIN, *overrides], base=TrainConfig())


@pytest.fixture
def train_config() -> Callable[..., TrainConfig]:
    """``train_config(*overrides)``: the tiny config with ``key=value`` overrides."""
    return _tiny_train_config


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 4-iteration training run folder (best.pt, last.pt, log)."""
    from autodeeplab.engine.train import run_train

    out = tmp_path_factory.mktemp("trained")
    run_train(_tiny_train_config(), out, progress=False)
    return out

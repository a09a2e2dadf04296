"""A checkpoint's contents are checked after the safe load (issue 15, class 4).

Missing or extra keys, shapes that do not fit, an impossible class count, constructor
arguments that describe no network, and inf/nan weights: each gives one line naming the
file, through ``eval``, ``predict``, ``export``, ``train --resume``, ``decode`` and
``search --resume``. A checkpoint with inf/nan is never taken as the newest good one.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from autodeeplab.checkpoint import CheckpointError, check_state_dict, load_checkpoint
from autodeeplab.cli import main
from autodeeplab.engine.search.checkpoints import find_latest_checkpoint
from conftest import TINY_TRAIN_ARGV, one_error, tiny_search_argv

TWO_EPOCH_SEARCH_ARGV = [*tiny_search_argv(epochs=2), "--set", "search.keep_checkpoints=2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_train_run: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    assert main(["search", "--out", str(root / "search"), *TWO_EPOCH_SEARCH_ARGV]) == 0
    return {"search": root / "search", "train": tiny_train_run}


def _first_float(model: dict[str, Any]) -> str:
    return next(k for k, v in model.items() if v.is_floating_point() and v.numel() > 1)


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def spoil(state: dict[str, Any]) -> None:
        state[key] = value

    return spoil


def _model(fn: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def spoil(state: dict[str, Any]) -> None:
        fn(state["model"])

    return spoil


def _kwargs(**updates: Any) -> Callable[[dict[str, Any]], None]:
    def spoil(state: dict[str, Any]) -> None:
        state["model_kwargs"] = {**state["model_kwargs"], **updates}

    return spoil


def _poison(value: float) -> Callable[[dict[str, Any]], None]:
    def spoil(model: dict[str, Any]) -> None:
        key = _first_float(model)
        model[key] = model[key].clone()
        model[key][(0,) * (model[key].dim() - 1) + (1,)] = value

    return _model(spoil)


def _reshape(model: dict[str, Any]) -> None:
    key = _first_float(model)
    model[key] = torch.zeros(*model[key].shape[:-1], model[key].shape[-1] + 1)


def _drop(model: dict[str, Any]) -> None:
    del model[next(iter(model))]


def _add(model: dict[str, Any]) -> None:
    model["head.bogus.weight"] = torch.zeros(3)


def _not_tensor(model: dict[str, Any]) -> None:
    model[_first_float(model)] = [1.0, 2.0]


# name: (how the train checkpoint is spoiled, what the one line says)
HOSTILE_TRAIN = {
    "missing_key": (_model(_drop), "does not fit the network (missing"),
    "extra_key": (_model(_add), "does not fit the network (unexpected 'head.bogus.weight'"),
    "wrong_shape": (_model(_reshape), "the network needs"),
    "nan_weight": (_poison(float("nan")), "holds inf/nan"),
    "inf_weight": (_poison(float("inf")), "holds inf/nan"),
    "not_a_tensor": (_model(_not_tensor), "is a list, not a tensor"),
    "model_a_list": (_set("model", [1, 2]), "'model' is a list, not a state dict"),
    "zero_classes": (_kwargs(num_classes=0), "model_kwargs.num_classes=0 is not a class count"),
    "bool_classes": (_kwargs(num_classes=True), "is not a class count"),
    "text_classes": (_kwargs(num_classes="8"), "is not a class count"),
    "huge_classes": (_kwargs(num_classes=10**12), "the network needs"),
    "huge_width": (_kwargs(filter_multiplier=10**9), "model_kwargs do not describe a network"),
    "unknown_kwarg": (_kwargs(bogus=1), "model_kwargs do not describe a network (TypeError"),
    "kwargs_a_list": (_set("model_kwargs", [1]), "model_kwargs is not a dict"),
    "class_names_short": (_set("class_names", ["a"]), "but class_names holds 1"),
    "bad_genotype": (_kwargs(genotype={"cell": []}), "model_kwargs do not describe a network"),
}


def _spoiled(src: Path, tmp: Path, spoil: Callable[[dict[str, Any]], None]) -> Path:
    state = torch.load(src, weights_only=True)
    spoil(state)
    path = tmp / "spoiled.pt"
    torch.save(state, path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HOSTILE_TRAIN))
def test_hostile_train_checkpoint_contents_are_refused_by_eval_and_predict(
    runs: dict[str, Path], tmp_path: Path, capsys, name: str
) -> None:
    spoil, message = HOSTILE_TRAIN[name]
    ckpt = _spoiled(runs["train"] / "checkpoints" / "best.pt", tmp_path, spoil)
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    for argv in (
        ["eval", str(ckpt), "--device", "cpu", "--out", str(tmp_path / "m.json")],
        ["predict", str(ckpt), str(image), "--out", str(tmp_path / "p"), "--device", "cpu"],
        ["export", str(ckpt), "--format", "torchscript", "--out", str(tmp_path / "x.ts")],
    ):
        line = one_error(capsys, argv)
        assert f"{ckpt}: " in line and message in line, (argv[0], line)
        assert len(line) < 400, line
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "p").exists()
    assert not (tmp_path / "x.ts").exists()


@pytest.mark.parametrize(
    "name", ["missing_key", "extra_key", "wrong_shape", "nan_weight", "optimizer_nan"]
)
@pytest.mark.slow
def test_train_resume_refuses_hostile_contents_and_touches_nothing(
    runs: dict[str, Path], tmp_path: Path, capsys, name: str
) -> None:
    out = tmp_path / "t"
    shutil.copytree(runs["train"], out)
    last = out / "checkpoints" / "last.pt"
    if name == "optimizer_nan":

        def spoil(state: dict[str, Any]) -> None:
            buf = next(iter(state["optimizer"]["state"].values()))["momentum_buffer"]
            buf[(0,) * buf.dim()] = float("nan")

        message = "optimizer"
    else:
        spoil, message = HOSTILE_TRAIN[name]
    spoiled = _spoiled(last, tmp_path, spoil)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    line = one_error(
        capsys, ["train", "--out", str(out), *TINY_TRAIN_ARGV, "--resume", str(spoiled)]
    )
    assert f"{spoiled}: " in line and message in line, line
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def _arch(key: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable:
    def spoil(model: dict[str, Any]) -> None:
        model[key] = fn(model[key])

    return _model(spoil)


def _nan_at_0(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t[(0,) * t.dim()] = float("nan")
    return t


HOSTILE_SEARCH = {
    "nan_alpha": (_arch("alpha", _nan_at_0), "model.alpha holds inf/nan"),
    "inf_beta": (_arch("beta", lambda t: torch.full_like(t, float("inf"))), "model.beta holds"),
    "alpha_too_short": (_arch("alpha", lambda t: t[:1]), "do not fit the checkpoint's config"),
    "beta_a_scalar": (_arch("beta", lambda t: t.sum()), "do not fit the checkpoint's config"),
    "no_alpha": (_model(lambda m: m.pop("alpha")), "holds no alpha tensor"),
    "model_a_list": (_set("model", [1]), "holds no alpha tensor"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_SEARCH))
@pytest.mark.slow
def test_hostile_search_checkpoint_contents_are_refused_by_decode(
    runs: dict[str, Path], tmp_path: Path, capsys, name: str
) -> None:
    spoil, message = HOSTILE_SEARCH[name]
    ckpt = _spoiled(runs["search"] / "checkpoints" / "epoch_0002.pt", tmp_path, spoil)
    line = one_error(capsys, ["decode", str(ckpt), "--out", str(tmp_path / "d" / "g.json")])
    assert f"{ckpt}: " in line and message in line, line
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing_key", "does not fit the network (missing"),
        ("extra_key", "unexpected 'head.bogus.weight'"),
        ("wrong_shape", "the network needs"),
        ("nan_weight", "holds inf/nan"),
    ],
)
@pytest.mark.slow
def test_search_resume_refuses_hostile_contents(
    runs: dict[str, Path], tmp_path: Path, capsys, name: str, message: str
) -> None:
    out = tmp_path / "s"
    shutil.copytree(runs["search"], out)
    spoil = HOSTILE_TRAIN[name][0]
    spoiled = _spoiled(out / "checkpoints" / "epoch_0001.pt", tmp_path, spoil)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    line = one_error(
        capsys, ["search", "--out", str(out), *TWO_EPOCH_SEARCH_ARGV, "--resume", str(spoiled)]
    )
    assert f"{spoiled}: " in line and message in line, line
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_a_checkpoint_with_nan_is_never_the_newest_good_one(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "s"
    shutil.copytree(runs["search"], out)
    newest, older = out / "checkpoints" / "epoch_0002.pt", out / "checkpoints" / "epoch_0001.pt"
    assert find_latest_checkpoint(out) == newest
    _spoiled(newest, tmp_path, _poison(float("nan"))).replace(newest)
    assert find_latest_checkpoint(out) == older
    _spoiled(older, tmp_path, _arch("alpha", _nan_at_0)).replace(older)
    assert find_latest_checkpoint(out) is None


@pytest.mark.slow
def test_check_state_dict_accepts_the_network_own_weights(runs: dict[str, Path]) -> None:
    state = load_checkpoint(runs["train"] / "checkpoints" / "best.pt")
    check_state_dict("x.pt", state["model"], state["model"], "model")  # no error
    with pytest.raises(CheckpointError, match=r"^x\.pt: 'model' has keys that are not strings"):
        check_state_dict("x.pt", state["model"], {1: torch.zeros(1)}, "model")

"""Shared tiny fixtures: fixed seeds, a small supernet that runs in milliseconds on CPU, and
tiny CLI runs (argv lists, finished runs made once per session, the one-error-line check).

Test modules in this folder import the plain constants and helpers with ``from conftest
import ...``; the fixtures need no import.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autodeeplab.cli import main
from autodeeplab.config import SearchConfig, TrainConfig, load_config
from autodeeplab.space.network import SearchNetwork

#: A stem much narrower than the paper's 64/64/128, so that supernet tests stay fast.
TINY_STEM = (4, 4, 8)


@pytest.fixture(autouse=True)
def _fixed_seeds() -> None:
    """Every test starts from the same random state."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Run on one intra-op thread: the tensors are tiny, and on a busy 2-core machine
    OpenMP threads contending for cores make a tiny forward pass 10-100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def make_net() -> Callable[..., SearchNetwork]:
    """Factory for a seeded tiny supernet; keyword arguments override the tiny defaults."""

    def make(seed: int = 0, **kwargs) -> SearchNetwork:
        args = {
            "num_classes": 3,
            "num_layers": 4,
            "num_blocks": 2,
            "filter_multiplier": 2,
            "strides": (4, 8, 16, 32),
            "stem_channels": TINY_STEM,
        }
        args.update(kwargs)
        torch.manual_seed(seed)
        return SearchNetwork(**args)

    return make


@pytest.fixture
def tiny_net(make_net: Callable[..., SearchNetwork]) -> SearchNetwork:
    """L=4, B=2, F=2, strides 4..32, 3 classes, seed 0."""
    return make_net()


def _randomize(module: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Fill every parameter and BatchNorm statistic with random values (variances > 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=gen) * 0.5)
    return module


def _single_edge_copy(
    batched: torch.nn.Module, single: torch.nn.Module, edge: int, num_edges: int
) -> torch.nn.Module:
    """Load edge ``edge`` of an edge-batched op into the single-edge op ``single``.

    Every tensor of the batched op stacks its edges along dim 0 (edge-major), so edge e
    is chunk e of dim 0; tensors of equal shape (e.g. ``num_batches_tracked``) are copied.
    """
    src = batched.state_dict()
    state = {}
    for name, t in single.state_dict().items():
        s = src[name]
        if s.shape == t.shape and num_edges == 1 or s.ndim == 0:
            state[name] = s.clone()
        else:
            assert s.shape[0] == num_edges * t.shape[0], (name, s.shape, t.shape)
            assert s.shape[1:] == t.shape[1:], (name, s.shape, t.shape)
            state[name] = s.chunk(num_edges, dim=0)[edge].clone()
    single.load_state_dict(state)
    return single


@pytest.fixture
def randomize() -> Callable[..., torch.nn.Module]:
    """``randomize(module, seed=1)``: random parameters and BN statistics, in place."""
    return _randomize


@pytest.fixture
def single_edge_copy() -> Callable[..., torch.nn.Module]:
    """``single_edge_copy(batched, single, edge, num_edges)``: slice edge weights out."""
    return _single_edge_copy


# -- tiny CLI runs -------------------------------------------------------------------------------


def tiny_search_argv(
    *, epochs: int = 1, samples: bool = True, arch_steps: bool = True
) -> list[str]:
    """``search`` flags for a 2-layer, 2-block, F=2 supernet at crop 32 on the CPU.

    Strides 4 and 8 keep the coarsest level >= 3x3 at crop 32 (crop >= 3 * max stride).
    ``samples`` adds 4 train and 2 val synthetic samples (leave it out for ``--data
    folder:...``); ``arch_steps`` sets ``arch_start_epoch=0`` so alpha and beta are updated.
    Under the CLI's CPU preset (``arch_start_loss=prior``) they then start in epoch 0 only
    because no loss is known yet and the deadline, ``0 + epochs // 2``, forces them; with
    more epochs the start may wait (tests/engine/search/test_loop.py checks both).
    """
    argv = [
        "--crop", "32", "--epochs", str(epochs), "--batch-size", "2", "--seed", "3",
        "--no-progress", "--set", "model.num_layers=2", "--set", "num_blocks=2",
        "--set", "filter_multiplier=2", "--set", "model.strides=[4,8]",
    ]  # fmt: skip
    if samples:
        argv += ["--set", "train_samples=4", "--set", "val_samples=2"]
    if arch_steps:
        argv += ["--set", "arch_start_epoch=0"]
    return [*argv, "--set", "tensorboard=false", "--set", "search.device=cpu"]


def tiny_train_argv(
    *,
    iters: int = 2,
    samples: tuple[int, int] = (4, 2),
    eval_every: int = 2,
    synthetic: bool = True,
) -> list[str]:
    """``train`` flags for auto-deeplab-s at F=2 with 8-channel ASPP and decoder, crop 32, CPU.

    ``synthetic`` trains on ``samples`` (train, val) synthetic samples with seed 1; without it
    there is no ``--data``, ``--seed`` or sample count (the caller gives ``--data folder:...``).
    """
    argv = ["--model", "auto-deeplab-s"]
    if synthetic:
        argv += ["--data", "synthetic"]
    argv += ["--iters", str(iters), "--batch-size", "2", "--crop", "32"]
    if synthetic:
        argv += ["--seed", "1"]
    argv += [
        "--no-progress", "--set", "model.filter_multiplier=2", "--set", "model.aspp_channels=8",
        "--set", "model.decoder_channels=8",
    ]  # fmt: skip
    if synthetic:
        train, val = samples
        argv += ["--set", f"data.train_samples={train}", "--set", f"data.val_samples={val}"]
    return [*argv, "--set", f"train.eval_every={eval_every}",
            "--set", "train.tensorboard=false", "--set", "train.device=cpu"]  # fmt: skip


# -- the tiny configs, each under one name ------------------------------------------------------
# *_ARGV: command-line flags for ``autodeeplab search`` / ``train`` (after the command name);
# *_OVERRIDES: ``key=value`` overrides for ``load_config`` (engine tests call the loops);
# *_YAML: config files' contents for ``autodeeplab run --search-config/--train-config``.

#: A one-epoch tiny CLI search on 4 + 2 synthetic samples, with architecture steps (L=2).
TINY_SEARCH_ARGV = tiny_search_argv()
#: The same without samples, for ``--data folder:...``.
TINY_FOLDER_SEARCH_ARGV = tiny_search_argv(samples=False)
#: The same on synthetic samples, alpha and beta frozen unless a test says when they learn.
TINY_SEARCH_NO_ARCH_ARGV = tiny_search_argv(arch_steps=False)
#: A two-iteration tiny CLI training on 4 + 2 synthetic samples, evaluated after iteration 2.
TINY_TRAIN_ARGV = tiny_train_argv()
#: A one-iteration tiny CLI training on 2 + 1 synthetic samples, evaluated after it.
TINY_TRAIN_ONE_ITER_ARGV = tiny_train_argv(iters=1, samples=(2, 1), eval_every=1)
#: The two-iteration training without data, seed or sample counts, for ``--data folder:...``.
TINY_FOLDER_TRAIN_ARGV = tiny_train_argv(synthetic=False)

#: A supernet search of seconds on CPU: L=3, B=2, F=2 at 32x32; trainA and trainB get 4
#: images each, so an epoch is 2 step pairs; alpha/beta learn from epoch 2 of 2 (no loss
#: condition: the dataclass defaults, not the CLI's CPU preset).
TINY_SEARCH_OVERRIDES = (
    "model.num_layers=3",
    "model.num_blocks=2",
    "model.filter_multiplier=2",
    "model.strides=[4,8]",  # at crop 32 the coarsest level is 4x4 (crop >= 3 x max stride)
    "data.crop=32",
    "data.train_samples=8",
    "data.val_samples=4",
    "search.epochs=2",
    "search.batch_size=2",
    "search.arch_start_epoch=1",
    "search.tensorboard=false",
    "search.device=cpu",
)
#: A network that trains in a fraction of a second per step on CPU: auto-deeplab-s at F=2,
#: 8-channel heads, 4 iterations on 8 + 4 synthetic samples, evaluated every 2.
TINY_TRAIN_OVERRIDES = (
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

#: The tiny stages as YAML configs for ``autodeeplab run`` (--search-config and
#: --train-config): a one-epoch search (L=2), then a two-iteration training.
TINY_RUN_SEARCH_YAML = {
    "model": {"num_layers": 2, "num_blocks": 2, "filter_multiplier": 2, "strides": [4, 8]},
    "data": {"crop": 32, "train_samples": 4, "val_samples": 2},
    "search": {"epochs": 1, "arch_start_epoch": 0, "tensorboard": False, "device": "cpu"},
}
TINY_RUN_TRAIN_YAML = {
    "model": {"filter_multiplier": 2, "aspp_channels": 8, "decoder_channels": 8},
    "data": {"crop": 32, "scale": [0.75, 1.25], "train_samples": 4, "val_samples": 2},
    "train": {"iters": 2, "batch_size": 2, "eval_every": 1, "tensorboard": False},
    "eval": {"batch_size": 2},
}


def set_flags(overrides: Iterable[str]) -> list[str]:
    """``key=value`` overrides as ``--set key=value`` command-line flags."""
    return [arg for kv in overrides for arg in ("--set", kv)]


def tiny_search_config(*overrides: str) -> SearchConfig:
    """:data:`TINY_SEARCH_OVERRIDES` then ``overrides``, loaded as a search config."""
    return load_config(None, [*TINY_SEARCH_OVERRIDES, *overrides])


def tiny_train_config(*overrides: str) -> TrainConfig:
    """:data:`TINY_TRAIN_OVERRIDES` then ``overrides``, loaded as a training config."""
    return load_config(None, [*TINY_TRAIN_OVERRIDES, *overrides], base=TrainConfig())


@pytest.fixture
def search_config() -> Callable[..., SearchConfig]:
    """``search_config(*overrides)``: :func:`tiny_search_config`."""
    return tiny_search_config


@pytest.fixture
def tiny_search_overrides() -> tuple[str, ...]:
    """:data:`TINY_SEARCH_OVERRIDES` (for ``--set`` on a command line)."""
    return TINY_SEARCH_OVERRIDES


@pytest.fixture
def train_config() -> Callable[..., TrainConfig]:
    """``train_config(*overrides)``: :func:`tiny_train_config`."""
    return tiny_train_config


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a torchrun rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_env() -> dict[str, str]:
    """This environment at one torch thread, without the rank variables of an outer launch."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    return env


def run_torchrun(script: str, folder: Path, nproc: int, timeout: int) -> None:
    """``torchrun --nproc-per-node=nproc script folder`` on one machine; asserts it succeeded."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
        "--master-addr=127.0.0.1", f"--master-port={free_port()}", script, str(folder),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=launch_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def error_line(err: str, absent: tuple[str, ...] = ("Traceback",)) -> str:
    """The one ``: error:`` line of stderr ``err``; none of ``absent`` may appear in ``err``."""
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1, err
    for text in absent:
        assert text not in err, err
    return errors[0]


def one_error(
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    code: int = 2,
    *,
    absent: tuple[str, ...] = ("Traceback",),
    argparse_exit: bool = False,
) -> str:
    """Run the CLI: exit code ``code``, exactly one error line (returned) and no traceback.

    ``argparse_exit`` also takes argparse's own refusals (a ``SystemExit``) as the exit code.
    """
    try:
        got = main(argv)
    except SystemExit as exc:
        if not argparse_exit:
            raise
        got = exc.code
    err = capsys.readouterr().err
    assert got == code, (argv, err)
    return error_line(err, absent)


def tiny_folder(root: Path, *, corner: bool = False) -> Path:
    """A ``folder:`` dataset of 4 train and 2 val 40x44 images: background and a box, and a
    third class in a corner with ``corner``."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            label = np.zeros((40, 44), np.uint8)
            label[5:20, 5:20] = 1
            if corner:
                label[25:, :10] = 2
            image = rng.integers(0, 256, (40, 44, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / "images" / split / f"{split}{i}.png")
            Image.fromarray(label).save(root / "labels" / split / f"{split}{i}.png")
    classes = ["bg", "box", "corner"] if corner else ["bg", "box"]
    (root / "classes.json").write_text(json.dumps({"classes": classes}))
    return root


# Finished tiny runs, made once per session: tests only read them (or copy them first).


@pytest.fixture(scope="session")
def tiny_search_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of a finished ``search`` with :data:`TINY_SEARCH_ARGV`."""
    out = tmp_path_factory.mktemp("tiny_search") / "run"
    assert main(["search", "--out", str(out), *TINY_SEARCH_ARGV]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_train_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of a finished ``train`` with :data:`TINY_TRAIN_ARGV`."""
    out = tmp_path_factory.mktemp("tiny_train") / "run"
    assert main(["train", "--out", str(out), *TINY_TRAIN_ARGV]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``best.pt`` of a finished ``train`` with :data:`TINY_TRAIN_ONE_ITER_ARGV`."""
    out = tmp_path_factory.mktemp("tiny_trained") / "t"
    assert main(["train", "--out", str(out), *TINY_TRAIN_ONE_ITER_ARGV]) == 0
    return out / "checkpoints" / "best.pt"

"""A finished run is never lost, and every setting is checked before any work (issue 15, 1-2).

``search``, ``train`` and ``run`` refuse an ``--out`` that holds a run unless ``--resume`` or
``--overwrite`` is given, and touch nothing before refusing; a failed fresh start leaves
nothing a later start would reuse; ``predict`` keeps two same-named images apart; every file
writer removes its temp file on failure. Settings that only the loop used to check (after the
run folder was written, or after the whole search for ``run``) are refused up front.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image
from torch.optim.optimizer import register_optimizer_step_post_hook

from autodeeplab.cli import main
from autodeeplab.data.split import load_split, save_split
from conftest import (
    TINY_RUN_SEARCH_YAML,
    TINY_RUN_TRAIN_YAML,
    TINY_SEARCH_ARGV,
    TINY_TRAIN_ARGV,
    one_error,
)


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` with its bytes and modification time (ns)."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _run_argv(tmp: Path, out: Path, *extra: str) -> list[str]:
    search, train = tmp / "run_search.yaml", tmp / "run_train.yaml"
    search.write_text(yaml.safe_dump(TINY_RUN_SEARCH_YAML))
    train.write_text(yaml.safe_dump(TINY_RUN_TRAIN_YAML))
    return ["run", "--out", str(out), "--search-config", str(search),
            "--train-config", str(train), "--no-progress", *extra]  # fmt: skip


@pytest.fixture
def finished(tiny_search_run: Path, tiny_train_run: Path) -> dict[str, Path]:
    """A finished tiny search and a finished tiny training run (the victims)."""
    return {"search": tiny_search_run, "train": tiny_train_run}


# -- a finished run is never lost ------------------------------------------------------------

# Each argv is a new start into a folder that holds a run: every one must be refused, with
# the folder byte-for-byte unchanged. "late" settings used to pass the config checks and
# fail only after config.yaml was rewritten.
REFUSED_STARTS = {
    "search_plain": ("search", []),
    "search_other_seed": ("search", ["--seed", "9"]),
    "search_dry_run": ("search", ["--dry-run"]),
    "search_late_batch": ("search", ["--batch-size", "64"]),
    "search_bad_key": ("search", ["--set", "model.bogus=1"]),
    "train_plain": ("train", []),
    "train_other_iters": ("train", ["--iters", "3"]),
    "train_late_amp": ("train", ["--set", "train.amp=fp16"]),
    "train_into_search_run": ("train_into_search", []),
    "search_into_train_run": ("search_into_train", []),
}


@pytest.mark.parametrize("name", sorted(REFUSED_STARTS))
@pytest.mark.slow
def test_a_folder_holding_a_run_is_refused_and_untouched(
    finished: dict[str, Path], capsys, name: str
) -> None:
    kind, extra = REFUSED_STARTS[name]
    if kind in ("search", "search_into_train"):
        out = finished["search" if kind == "search" else "train"]
        argv = ["search", "--out", str(out), *TINY_SEARCH_ARGV, *extra]
    else:
        out = finished["train" if kind == "train" else "search"]
        argv = ["train", "--out", str(out), *TINY_TRAIN_ARGV, *extra]
    before = _snapshot(out)
    line = one_error(capsys, argv)
    assert _snapshot(out) == before
    if "late" not in name and "bad_key" not in name:
        assert f"--out {out}: already holds a run" in line
        assert "--resume" in line and "--overwrite" in line and "new --out" in line


def test_run_refuses_a_folder_holding_a_run(tmp_path: Path, capsys) -> None:
    out = tmp_path / "r"
    (out / "search" / "checkpoints").mkdir(parents=True)
    (out / "report.md").write_text("# an old report\n")
    before = _snapshot(out)
    line = one_error(capsys, _run_argv(tmp_path, out))
    assert f"--out {out}: already holds a run (search, report.md)" in line
    assert _snapshot(out) == before


def test_out_that_is_a_file_is_refused(tmp_path: Path, capsys) -> None:
    out = tmp_path / "file"
    out.write_text("mine")
    line = one_error(capsys, ["search", "--out", str(out), *TINY_SEARCH_ARGV])
    assert f"--out {out}: is a file, not a folder" in line and out.read_text() == "mine"


def test_resume_and_overwrite_exclude_each_other(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["search", "--out", str(tmp_path), "--resume", "--overwrite"])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def _stop_at_first_step() -> Any:
    calls = {"n": 0}

    def hook(optimizer: Any, args: Any, kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:  # once: a second signal aborts at once
            os.kill(os.getpid(), signal.SIGTERM)

    return register_optimizer_step_post_hook(hook)


@pytest.mark.slow
def test_a_stopped_overwrite_leaves_nothing_of_the_old_run(
    finished: dict[str, Path], tmp_path: Path, capsys
) -> None:
    out = tmp_path / "s"
    shutil.copytree(finished["search"], out)
    assert (out / "genotype.json").is_file() and (out / "report_search.md").is_file()
    handle = _stop_at_first_step()
    try:
        assert main(["search", "--out", str(out), *TINY_SEARCH_ARGV, "--overwrite"]) == 0
    finally:
        handle.remove()
    assert "stopped early" in capsys.readouterr().err
    old_files = (
        "genotype.json",
        "genotype_path.png",
        "report_search.md",
        "checkpoints/epoch_0001.pt",
    )
    for old in old_files:
        assert not (out / old).exists(), old
    assert list((out / "checkpoints").glob("epoch_0001_step_*.pt"))  # the new run's stop
    # ... and it resumes to a finished run.
    assert main(["search", "--out", str(out), *TINY_SEARCH_ARGV, "--resume"]) == 0
    assert (out / "genotype.json").is_file()


def _fail_at_first_step() -> Any:
    def hook(optimizer: Any, args: Any, kwargs: Any) -> None:
        raise ValueError("x.png: cannot read image; fix it")  # a bad file met mid-epoch

    return register_optimizer_step_post_hook(hook)


@pytest.mark.parametrize("command", ["search", "train", "run"])
@pytest.mark.slow
def test_a_failed_start_leaves_nothing_a_later_start_reuses(
    tmp_path: Path, capsys, command: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # not a run: stays, on failure too
    argv = {
        "search": ["search", "--out", str(out), *TINY_SEARCH_ARGV],
        "train": ["train", "--out", str(out), *TINY_TRAIN_ARGV],
        "run": _run_argv(tmp_path, out),
    }[command]
    handle = _fail_at_first_step()
    try:
        one_error(capsys, argv)
    finally:
        handle.remove()
    assert sorted(os.listdir(out)) == ["notes.txt"]
    if command == "search":  # a later start with another seed draws its own split
        assert main([*argv, "--seed", "5"]) == 0
        assert load_split(out / "split.json")[2]["seed"] == 5


@pytest.mark.slow
def test_a_failed_start_into_a_new_folder_removes_it(tmp_path: Path, capsys) -> None:
    out = tmp_path / "new" / "run"
    handle = _fail_at_first_step()
    try:
        one_error(capsys, ["search", "--out", str(out), *TINY_SEARCH_ARGV])
    finally:
        handle.remove()
    assert not out.exists()


@pytest.mark.slow
def test_a_given_split_keeps_its_own_seed(tmp_path: Path) -> None:
    from autodeeplab.config import SearchConfig, load_config
    from autodeeplab.engine.search.loop import run_search

    out = tmp_path / "s"
    save_split(out / "split.json", [0, 1], [2, 3], seed=77, num_samples=4)
    overrides = [
        "model.num_layers=2", "num_blocks=2", "filter_multiplier=2", "model.strides=[4,8]",
        "train_samples=4", "val_samples=2", "data.crop=32", "search.epochs=1",
        "search.batch_size=2", "search.seed=3", "tensorboard=false", "search.device=cpu",
    ]  # fmt: skip
    run_search(load_config(None, overrides, base=SearchConfig()), out, progress=False)
    train_a, train_b, meta = load_split(out / "split.json")
    assert (train_a, train_b, meta["seed"]) == ([0, 1], [2, 3], 77)


@pytest.mark.slow
def test_predict_writes_both_of_two_same_named_images(
    finished: dict[str, Path], tmp_path: Path, capsys
) -> None:
    images = []
    for i, folder in enumerate(("a", "b", "c")):
        (tmp_path / folder).mkdir()
        image = np.full((20, 30, 3), 60 * i, dtype=np.uint8)
        Image.fromarray(image).save(tmp_path / folder / "img.png")
        images.append(str(tmp_path / folder / "img.png"))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a" / "img_2.png")
    images.append(str(tmp_path / "a" / "img_2.png"))  # the name the second one would take
    out = tmp_path / "p"
    ckpt = str(finished["train"] / "checkpoints" / "best.pt")
    assert main(["predict", ckpt, *images, "--out", str(out), "--device", "cpu"]) == 0
    written = capsys.readouterr().out.split()
    assert len(written) == 8 == len(set(written)) == len(list(out.iterdir()))
    sizes = {Image.open(out / f"{stem}_mask.png").size for stem in ("img", "img_2", "img_3")}
    assert sizes == {(30, 20)} and Image.open(out / "img_2_2_mask.png").size == (8, 8)


# -- every file the CLI writes is atomic, with no temp file left on failure -------------------


def _writers(tmp: Path) -> dict[str, tuple[Path, Callable[[], Any]]]:
    from autodeeplab.checkpoint import atomic_write, save_checkpoint
    from autodeeplab.config import SearchConfig, save_config
    from autodeeplab.engine.infer.predict import save_png
    from autodeeplab.engine.logs import append_jsonl, truncate_jsonl
    from autodeeplab.genotype import PAPER_GENOTYPE, save_genotype
    from autodeeplab.viz import render_genotype

    log, split = tmp / "log.jsonl", tmp / "split.json"
    append_jsonl(log, {"epoch": 1})
    return {
        "genotype": (tmp / "g.json", lambda: save_genotype(PAPER_GENOTYPE, tmp / "g.json")),
        "config": (tmp / "c.yaml", lambda: save_config(SearchConfig(), tmp / "c.yaml")),
        "split": (split, lambda: save_split(split, [0], [1], seed=0, num_samples=2)),
        "png": (tmp / "m.png", lambda: save_png(np.zeros((4, 4, 3), np.uint8), tmp / "m.png")),
        "figures": (tmp / "f_path.png", lambda: render_genotype(PAPER_GENOTYPE, tmp, prefix="f_")),
        "report": (tmp / "r.md", lambda: atomic_write(tmp / "r.md", lambda f: f.write(b"x"))),
        "checkpoint": (tmp / "c.pt", lambda: save_checkpoint(tmp / "c.pt", {"a": 1}, "search")),
        # Cuts the one record (a log left as it is is not rewritten at all).
        "log_rewrite": (log, lambda: truncate_jsonl(log, lambda r: False)),
    }


@pytest.mark.parametrize(
    "name",
    ["genotype", "config", "split", "png", "figures", "report", "checkpoint", "log_rewrite"],
)
def test_a_failed_write_leaves_no_temp_file_and_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    target, write = _writers(tmp_path)[name]
    if not target.exists():
        target.write_bytes(b"old")
    before = target.read_bytes()
    entries = sorted(os.listdir(tmp_path))

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        write()
    assert sorted(os.listdir(tmp_path)) == entries  # no temp file
    assert target.read_bytes() == before


# -- validate before any work ----------------------------------------------------------------

# Settings the config parser accepts but a loop refused only once running: each is refused
# before anything is written, by --dry-run too.
LATE_SEARCH_SETTINGS = {
    "batch_past_split": (["--batch-size", "3"], "fewer than the batch size 3"),
    "fp16_on_cpu": (["--set", "search.amp=fp16"], "search.amp=fp16 needs CUDA"),
    "bad_target": (["--target-madds", "lots"], "lots"),
    "partial_channels": (["--set", "model.partial_channels=3"], "partial_channels"),
}


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize("name", sorted(LATE_SEARCH_SETTINGS))
def test_search_refuses_late_settings_before_writing(
    tmp_path: Path, capsys, name: str, dry_run: bool
) -> None:
    extra, message = LATE_SEARCH_SETTINGS[name]
    out = tmp_path / "s"
    argv = ["search", "--out", str(out), *TINY_SEARCH_ARGV, *extra, *(["--dry-run"] * dry_run)]
    line = one_error(capsys, argv)
    assert message in line and not out.exists()


LATE_TRAIN_SETTINGS = {
    "fp16_on_cpu": ("train.amp=fp16", "train.amp=fp16 needs CUDA"),
    "bad_compile": ("train.compile=nosuch", "is not a torch.compile backend"),
    "sync_bn_data": ("train.data.spec=nosuch", "unknown dataset 'nosuch'"),
    "missing_data": ("train.data.spec=folder:/nonexistent/x", "/nonexistent/x"),
}


@pytest.mark.parametrize("name", sorted(LATE_TRAIN_SETTINGS))
def test_run_checks_the_training_settings_before_the_search(
    tmp_path: Path, capsys, name: str
) -> None:
    override, message = LATE_TRAIN_SETTINGS[name]
    out = tmp_path / "r"
    line = one_error(capsys, _run_argv(tmp_path, out, "--set", override))
    assert message in line and not out.exists()


@pytest.mark.slow
def test_dry_run_accepts_what_the_run_accepts(tmp_path: Path, capsys) -> None:
    out = tmp_path / "s"
    assert main(["search", "--out", str(out), *TINY_SEARCH_ARGV, "--dry-run"]) == 0
    assert not out.exists()
    assert "estimated peak memory" in capsys.readouterr().err
    # ... and the split it checked is the one the run draws.
    assert main(["search", "--out", str(out), *TINY_SEARCH_ARGV]) == 0
    assert json.loads((out / "split.json").read_text())["seed"] == 3


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_is_replaced_with_overwrite(
    tmp_path: Path, capsys
) -> None:
    """SIGKILL runs no cleanup: the folder then holds a config and a split, and no checkpoint."""
    out = tmp_path / "s"
    out.mkdir()
    (out / "config.yaml").write_text("search:\n  epochs: 1\n")
    save_split(out / "split.json", [0, 1], [2, 3], seed=77, num_samples=4)
    line = one_error(capsys, ["search", "--out", str(out), *TINY_SEARCH_ARGV])
    assert "already holds a run" in line
    line = one_error(capsys, ["search", "--out", str(out), *TINY_SEARCH_ARGV, "--resume"])
    assert "no complete search checkpoint to resume" in line and "--overwrite" in line
    assert main(["search", "--out", str(out), *TINY_SEARCH_ARGV, "--overwrite"]) == 0
    assert load_split(out / "split.json")[2]["seed"] == 3  # drawn afresh, not the stale one

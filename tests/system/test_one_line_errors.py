"""One line for every error (issue 15, class 6).

A DataLoader worker's error reads as the same line as with zero workers; OS errors name the
path, the reason and the fix (never a bare ``[Errno N]``); a folder or a FIFO given for a file
is not reported as "not found"; and a message suggests only options its command has.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autodeeplab.checkpoint import save_checkpoint
from autodeeplab.cli import build_parser
from conftest import TINY_FOLDER_SEARCH_ARGV, TINY_FOLDER_TRAIN_ARGV, one_error, tiny_folder

# For --data folder:...: no synthetic sample counts (nor a training seed).


def _options(command: str) -> set[str]:
    """Every --flag the subcommand ``command`` accepts."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {s for a in sub.choices[command]._actions for s in a.option_strings}


def _error(capsys: pytest.CaptureFixture[str], argv: list[str], code: int = 2) -> str:
    """Run the CLI: one error line, no traceback, and every --flag it suggests exists."""
    line = one_error(capsys, argv, code, absent=("Traceback", "[Errno"))
    suggested = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", line))
    assert suggested <= _options(argv[0]), (suggested - _options(argv[0]), line)
    return line


# -- DataLoader workers ------------------------------------------------------------------------

SPOILED = {
    "label_out_of_range": (
        "labels/train/train1.png",
        lambda p: Image.fromarray(np.full((40, 44), 7, np.uint8)).save(p),
        "label values 7 are outside the class set",
    ),
    "label_wrong_size": (
        "labels/train/train2.png",
        lambda p: Image.fromarray(np.zeros((10, 12), np.uint8)).save(p),
        "label is 12x10 but image",
    ),
    "image_not_an_image": (
        "images/train/train3.png",
        lambda p: p.write_text("not an image"),
        "cannot read image",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("command", ["search", "train"])
@pytest.mark.parametrize("name", sorted(SPOILED))
def test_a_worker_error_reads_as_the_same_line_as_without_workers(
    tmp_path: Path, capsys, name: str, command: str
) -> None:
    root = tiny_folder(tmp_path / "data")
    rel, spoil, message = SPOILED[name]
    spoil(root / rel)
    lines = []
    for workers in (0, 2):
        out = tmp_path / f"run{workers}"
        tiny = TINY_FOLDER_SEARCH_ARGV if command == "search" else TINY_FOLDER_TRAIN_ARGV
        argv = [command, "--data", f"folder:{root}", "--out", str(out), *tiny,
                "--set", f"data.num_workers={workers}"]  # fmt: skip
        line = _error(capsys, argv)
        assert not out.exists()  # the failed start left nothing behind
        lines.append(line.replace(str(out), "OUT"))
    assert lines[0] == lines[1], lines
    assert f"{root / rel}: " in lines[1] and message in lines[1]


# -- OS errors -----------------------------------------------------------------------------------

OS_ERRORS = {
    errno.EROFS: "the disk is read-only",
    errno.EACCES: "check its permissions",
    errno.ENOSPC: "free some space",
    errno.ENOTDIR: "a file stands where a folder is needed",
    errno.EISDIR: "a folder stands where a file is needed",
    errno.ENAMETOOLONG: "use a shorter file or folder name",
}


@pytest.mark.parametrize("code", sorted(OS_ERRORS), ids=errno.errorcode.get)
def test_os_errors_name_the_path_and_the_fix(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    import autodeeplab.engine.scaffold as run_scaffold  # the search writes config.yaml through it

    def fail(cfg: object, path: Path) -> None:
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(run_scaffold, "save_config", fail)
    out = tmp_path / "s"
    line = _error(capsys, ["search", "--out", str(out), *TINY_FOLDER_SEARCH_ARGV])
    reason = os.strerror(code).lower()
    assert f"{out / 'config.yaml'}: {reason}; {OS_ERRORS[code]}" in line, line
    assert not out.exists()


# -- a folder or a FIFO is not "not found" -------------------------------------------------------


def _not_a_file(tmp: Path, kind: str) -> Path:
    path = tmp / f"thing.{kind}"
    if kind == "dir":
        path.mkdir()
    else:
        os.mkfifo(path)
    return path


def _argv_for(use: str, path: Path, tmp: Path) -> list[str]:
    p, out = str(path), str(tmp / "out")
    return {
        "decode": ["decode", p],
        "eval": ["eval", p],
        "predict_checkpoint": ["predict", p, p, "--out", out],
        "export": ["export", p],
        "search_resume": ["search", "--out", out, *TINY_FOLDER_SEARCH_ARGV, "--resume", p],
        "train_resume": ["train", "--out", out, *TINY_FOLDER_TRAIN_ARGV, "--resume", p],
        "info": ["info", p],
        "train_genotype": ["train", "--genotype", p, "--out", out, "--no-progress"],
        "search_config": ["search", "--config", p, "--out", out],
        "train_config": ["train", "--config", p, "--out", out],
        "run_search_config": ["run", "--search-config", p, "--out", out],
        "run_train_config": ["run", "--train-config", p, "--out", out],
    }[use]


USES = [
    "decode", "eval", "predict_checkpoint", "export", "search_resume", "train_resume", "info",
    "train_genotype", "search_config", "train_config", "run_search_config", "run_train_config",
]  # fmt: skip


@pytest.mark.parametrize("kind", ["dir", "fifo"])
@pytest.mark.parametrize("use", USES)
def test_a_folder_or_fifo_for_a_file_says_what_it_is(
    tmp_path: Path, capsys, use: str, kind: str
) -> None:
    path = _not_a_file(tmp_path, kind)
    line = _error(capsys, _argv_for(use, path, tmp_path))
    expected = "is a folder, not a" if kind == "dir" else "is not a regular file (a FIFO"
    assert f"{path}: {expected}" in line and "not found" not in line, line
    assert not (tmp_path / "out").exists()


def test_a_folder_given_as_an_image_says_so(tmp_path: Path) -> None:
    from autodeeplab.engine.infer.predict import read_image_file

    (tmp_path / "d.png").mkdir()
    with pytest.raises(ValueError, match=r"d\.png: is a folder, not an image"):
        read_image_file(tmp_path / "d.png")


# -- --out that cannot be a run folder ------------------------------------------------------------


@pytest.mark.parametrize("command", ["search", "train", "run"])
@pytest.mark.parametrize("case", ["under_a_file", "name_too_long"])
def test_an_out_that_cannot_be_made_is_refused_before_work(
    tmp_path: Path, capsys, command: str, case: str
) -> None:
    (tmp_path / "file").write_text("mine")
    out = tmp_path / "file" / "run" if case == "under_a_file" else tmp_path / ("x" * 300)
    argv = [command, "--out", str(out), "--no-progress"]
    if command == "train":
        argv += ["--model", "auto-deeplab-s"]
    line = _error(capsys, argv)
    expected = "is a file, not a folder" if case == "under_a_file" else "more than the 255"
    assert "--out" in line and expected in line, line
    assert (tmp_path / "file").read_text() == "mine"


def test_a_worker_error_of_a_bug_keeps_its_traceback() -> None:
    """Only DataLoader-wrapped errors are shortened: other RuntimeErrors are bugs, not input."""
    from autodeeplab.cli import one_line

    wrapped = RuntimeError(
        "Caught UnicodeDecodeError in DataLoader worker process 1.\nOriginal Traceback (most "
        'recent call last):\n  File "x.py", line 1, in f\n    g()\nUnicodeDecodeError: '
        "'utf-8' codec can't decode byte 0xff"
    )
    assert one_line(wrapped) == "'utf-8' codec can't decode byte 0xff"
    assert one_line(KeyError("x.png: no label")) == "x.png: no label"
    assert one_line(OSError(errno.EROFS, "Read-only file system", "/r/a")) == (
        "/r/a: read-only file system; the disk is read-only; write to a folder on a writable disk"
    )


def test_checkpoint_of_another_kind_still_one_line(tmp_path: Path, capsys) -> None:
    ckpt = tmp_path / "s.pt"
    save_checkpoint(ckpt, {"epoch": 1}, "search")
    line = _error(capsys, ["eval", str(ckpt)])
    assert f"{ckpt}: this is a 'search' checkpoint" in line


# -- a message suggests only options that its command has ---------------------------------------

SUGGESTIONS = {
    # name: (argv, part of the message); _error checks every --flag in it exists
    "eval_cuda": (["eval", "{ckpt}", "--device", "cuda:0"], "use the device cpu or auto"),
    "predict_cuda": (
        ["predict", "{ckpt}", "x.png", "--out", "{tmp}/p", "--device", "cuda:0"],
        "use the device cpu or auto",
    ),
    "run_search_cuda": (
        ["run", "--out", "{tmp}/r", "--set", "search.device=cuda"],
        "use the device cpu or auto",
    ),
    "run_train_cuda": (
        ["run", "--out", "{tmp}/r", "--set", "train.device=cuda"],
        "use the device cpu or auto",
    ),
    "run_train_batch": (
        [
            "run",
            "--out",
            "{tmp}/r",
            "--set",
            "train.data.train_samples=2",
            "--set",
            "train.batch_size=4",
        ],
        "a batch size of at most 2",
    ),  # fmt: skip
    "run_search_batch": (
        [
            "run",
            "--out",
            "{tmp}/r",
            "--set",
            "search.data.train_samples=4",
            "--set",
            "search.batch_size=4",
        ],
        "a batch size of at most 2",
    ),  # fmt: skip
    "train_batch": (
        [
            "train",
            "--model",
            "auto-deeplab-s",
            "--out",
            "{tmp}/t",
            "--batch-size",
            "9",
            "--set",
            "data.train_samples=4",
        ],
        "a batch size of at most 4",
    ),  # fmt: skip
}


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("name", sorted(SUGGESTIONS))
def test_messages_suggest_only_options_of_their_command(tmp_path: Path, capsys, name: str):
    argv, message = SUGGESTIONS[name]
    ckpt = tmp_path / "c.pt"
    save_checkpoint(ckpt, {"epoch": 1}, "train")
    argv = [a.replace("{ckpt}", str(ckpt)).replace("{tmp}", str(tmp_path)) for a in argv]
    line = _error(capsys, argv)
    assert message in line, line
    assert not (tmp_path / "r").exists() and not (tmp_path / "t").exists()

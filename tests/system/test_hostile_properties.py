"""Generated hostile inputs through the CLI, one property per class of issue 15.

Every example asserts the exit code, a single error line on stderr, no traceback, and that
nothing was left behind that looks complete (the run folder untouched, no output file).
The hand-picked cases of each class are in test_run_folder.py, test_bounds.py,
test_checkpoint_contents.py, test_silent_garbage.py and test_one_line_errors.py.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autodeeplab.cli.outdir import RUN_ENTRIES
from conftest import TINY_SEARCH_ARGV, TINY_TRAIN_ONE_ITER_ARGV, one_error

# Few examples each (the suite must stay fast) and no deadline (a CLI call takes ~0.1-1 s);
# capsys is reset by each example's readouterr().
PROPERTY = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _one_error(capsys: pytest.CaptureFixture[str], argv: list[str], code: int = 2) -> str:
    """The CLI's exit code is ``code`` and stderr holds one error line and no traceback."""
    return one_error(capsys, argv, code, absent=("Traceback", "[Errno"), argparse_exit=True)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# -- 1: a folder that holds a run is never touched by a new start --------------------------------

COMMANDS = {
    "search": ["search", *TINY_SEARCH_ARGV],
    "search_dry_run": ["search", *TINY_SEARCH_ARGV, "--dry-run"],
    "train": ["train", *TINY_TRAIN_ONE_ITER_ARGV],
    "run": ["run", "--no-progress", "--set", "search.epochs=1"],
}


@pytest.mark.slow
@PROPERTY
@given(
    entries=st.lists(st.sampled_from(RUN_ENTRIES), min_size=1, max_size=4, unique=True),
    as_dirs=st.lists(st.booleans(), min_size=4, max_size=4),
    content=st.binary(max_size=64),
    command=st.sampled_from(sorted(COMMANDS)),
)
def test_property_a_run_folder_is_refused_and_untouched(
    capsys, entries: list[str], as_dirs: list[bool], content: bytes, command: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        out.mkdir()
        (out / "notes.txt").write_bytes(content)
        for name, as_dir in zip(entries, as_dirs, strict=False):
            if as_dir:
                (out / name).mkdir()
                (out / name / "x.pt").write_bytes(content)
            else:
                (out / name).write_bytes(content)
        before = _snapshot(out)
        line = _one_error(capsys, [*COMMANDS[command], "--out", str(out)])
        assert "already holds a run" in line and "--overwrite" in line
        assert _snapshot(out) == before


# -- 2: a bad setting is refused before any work -------------------------------------------------

LATE_SETTINGS = st.one_of(
    st.tuples(st.just("train.amp"), st.just("fp16")),
    st.tuples(st.just("search.amp"), st.just("fp16")),
    st.tuples(st.just("train.compile"), st.text("abcxyz_", min_size=3, max_size=8)),
    st.tuples(st.just("train.batch_size"), st.integers(5, 10_000).map(str)),
    st.tuples(st.just("search.batch_size"), st.integers(3, 10_000).map(str)),
    st.tuples(st.just("train.data.spec"), st.sampled_from(["nosuch", "folder:/nonexistent"])),
)


@pytest.mark.slow
@PROPERTY
@given(setting=LATE_SETTINGS, dry_run=st.booleans())
def test_property_run_refuses_a_late_setting_before_the_search(
    capsys, setting: tuple[str, str], dry_run: bool
) -> None:
    key, value = setting
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r"
        argv = ["run", "--out", str(out), "--no-progress", "--set", f"{key}={value}",
                "--set", "search.data.train_samples=4", "--set", "train.data.train_samples=4",
                "--set", "search.data.val_samples=2",
                "--set", "train.data.val_samples=2"]  # fmt: skip
        if dry_run:  # search has --dry-run; run checks the same way before its search
            search_key = key.removeprefix("search.")
            if not key.startswith("search."):
                return
            argv = ["search", "--out", str(out), *TINY_SEARCH_ARGV,
                    "--set", f"{search_key}={value}", "--dry-run"]  # fmt: skip
        _one_error(capsys, argv)
        assert not out.exists()


# -- 3: sizes and counts are bounded ------------------------------------------------------------

BAD_FLAGS = st.one_of(
    st.integers(-(10**12), 0).map(lambda n: ["info", "auto-deeplab-s", "--classes", str(n)]),
    st.integers(256, 10**12).map(lambda n: ["info", "auto-deeplab-s", "--classes", str(n)]),
    st.integers(4097, 10**9).map(
        lambda n: ["info", "auto-deeplab-s", "--filter-multiplier", str(n)]
    ),
    st.tuples(st.integers(65537, 10**9), st.integers(1, 10**9)).map(
        lambda s: ["info", "auto-deeplab-s", "--size", f"{s[0]}x{s[1]}"]
    ),
    st.lists(st.floats(0.5, 2.0), min_size=17, max_size=40).map(
        lambda s: ["eval", "x.pt", "--scales", ",".join(map(str, s))]
    ),
    st.one_of(st.floats(100.01, 1e30), st.floats(-1e30, 0.0099), st.just(float("inf"))).map(
        lambda s: ["predict", "x.pt", "i.png", "--out", "o", "--scales", str(s)]
    ),
)


@PROPERTY
@given(argv=BAD_FLAGS)
def test_property_sizes_from_flags_are_bounded(capsys, argv: list[str]) -> None:
    _one_error(capsys, argv)


@PROPERTY
@given(
    blocks=st.integers(65, 500),
    levels=st.lists(st.integers(0, 15), min_size=1, max_size=20),
)
def test_property_genotype_sizes_are_bounded(capsys, blocks: int, levels: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "g.json"
        cell = [[["skip_connect", 0], ["skip_connect", 1]]] * blocks
        f.write_text(json.dumps({"cell": cell, "path": levels}))
        line = _one_error(capsys, ["info", str(f), "--size", "64"])
        assert f"{f}: " in line and len(line) < 400


# -- 4: checkpoint contents ----------------------------------------------------------------------


SPOILS = st.one_of(
    st.tuples(st.just("drop"), st.integers(0, 10**6)),
    st.tuples(st.just("add"), st.text("abcdefgh._", min_size=1, max_size=12)),
    st.tuples(st.just("reshape"), st.integers(0, 10**6)),
    st.tuples(st.just("nonfinite"), st.integers(0, 10**6)),
    st.tuples(
        st.just("kwarg"),
        st.tuples(
            st.sampled_from(["num_classes", "filter_multiplier", "aspp_channels", "dropout"]),
            st.one_of(st.integers(-(10**12), 10**12), st.text(max_size=5), st.none()),
        ),
    ),
)


def _spoil(state: dict[str, Any], how: str, arg: Any) -> bool:
    """Change ``state`` as ``how`` says; False when the change happens to be harmless."""
    model = state["model"]
    keys = list(model)
    if how == "drop":
        del model[keys[arg % len(keys)]]
    elif how == "add":
        if arg in model:
            return False
        model[arg] = torch.zeros(2)
    elif how == "reshape":
        key = keys[arg % len(keys)]
        model[key] = torch.zeros(*model[key].shape, 2)
    elif how == "nonfinite":
        floats = [k for k in keys if model[k].is_floating_point()]
        key = floats[arg % len(floats)]
        model[key] = model[key].clone().contiguous()
        model[key].view(-1)[arg % model[key].numel()] = float("nan") if arg % 2 else float("inf")
    else:
        name, value = arg
        if state["model_kwargs"].get(name) == value:
            return False
        state["model_kwargs"][name] = value
        if name == "dropout" and isinstance(value, int) and 0 <= value <= 1:
            return False  # a valid dropout: the network still fits the weights
    return True


@pytest.mark.slow
@PROPERTY
@given(spoil=SPOILS, command=st.sampled_from(["eval", "predict", "export"]))
def test_property_checkpoint_contents_are_checked(
    tiny_checkpoint: Path, capsys, spoil: tuple[str, Any], command: str
) -> None:
    state = torch.load(tiny_checkpoint, weights_only=True)
    if not _spoil(state, *spoil):
        return
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "spoiled.pt"
        torch.save(state, ckpt)
        out = Path(tmp) / "o"
        argv = {
            "eval": ["eval", str(ckpt), "--device", "cpu", "--out", str(out / "m.json")],
            "predict": ["predict", str(ckpt), str(ckpt), "--out", str(out), "--device", "cpu"],
            "export": ["export", str(ckpt), "--format", "torchscript", "--out", str(out / "x")],
        }[command]
        line = _one_error(capsys, argv)
        assert f"{ckpt}: " in line and len(line) < 500, line
        assert not out.exists()


# -- 5: duplicate keys are errors ----------------------------------------------------------------

CONFIG_KEYS = {
    "search": ["epochs", "lr", "seed", "batch_size"],
    "model": ["num_layers", "num_blocks", "filter_multiplier"],
    "data": ["crop", "train_samples"],
}
SMALL_VALUES = st.one_of(st.integers(1, 9), st.sampled_from([0.1, 0.5, "x", True, [4, 8]]))


@PROPERTY
@given(
    section=st.sampled_from(sorted(CONFIG_KEYS)),
    picks=st.data(),
    first=SMALL_VALUES,
    second=SMALL_VALUES,
)
def test_property_duplicate_yaml_keys_are_errors(
    capsys, section: str, picks: st.DataObject, first: Any, second: Any
) -> None:
    key = picks.draw(st.sampled_from(CONFIG_KEYS[section]))
    others = picks.draw(st.lists(st.sampled_from(CONFIG_KEYS[section]), max_size=2, unique=True))
    lines = [f"  {key}: {json.dumps(first)}"]  # JSON values are YAML
    lines += [f"  {k}: 1" for k in others if k != key]
    lines.insert(picks.draw(st.integers(0, len(lines))), f"  {key}: {json.dumps(second)}")
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "c.yaml"
        f.write_text(f"{section}:\n" + "\n".join(lines) + "\n")
        out = Path(tmp) / "o"
        line = _one_error(capsys, ["search", "--config", str(f), "--out", str(out), "--dry-run"])
        assert f"{f}: not valid YAML (duplicate key '{key}' at line" in line
        assert not out.exists()


@PROPERTY
@given(key=st.sampled_from(["cell", "path", "strides", "format"]), reps=st.integers(2, 4))
def test_property_duplicate_json_keys_are_errors(capsys, key: str, reps: int) -> None:
    good = {"cell": [[["skip_connect", 0], ["sep_conv_3x3", 1]]], "path": [0, 1]}
    value = json.dumps(good.get(key, "x"))
    body = ", ".join(f'"{k}": {json.dumps(v)}' for k, v in good.items() if k != key)
    text = "{" + body + "".join(f', "{key}": {value}' for _ in range(reps)) + "}"
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "g.json"
        f.write_text(text)
        line = _one_error(capsys, ["info", str(f)])
        assert f"{f}: duplicate key '{key}'" in line


# -- 6: one line for every OS error --------------------------------------------------------------


@PROPERTY
@given(
    code=st.sampled_from(
        [
            errno.EROFS,
            errno.EACCES,
            errno.ENOSPC,
            errno.ENOTDIR,
            errno.EISDIR,
            errno.EDQUOT,
            errno.ENAMETOOLONG,
            errno.EIO,
            errno.EEXIST,
        ]  # fmt: skip
    ),
    writer=st.sampled_from(["save_config", "save_split"]),
)
def test_property_os_errors_are_one_line_naming_the_path(capsys, code: int, writer: str) -> None:
    import autodeeplab.engine.scaffold as run_scaffold
    import autodeeplab.engine.search.data as search_data

    # The modules the search writes these files through.
    module = {"save_config": run_scaffold, "save_split": search_data}[writer]

    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError(
            code, os.strerror(code), str(args[-1] if writer == "save_config" else args[0])
        )

    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, writer, fail)
        out = Path(tmp) / "s"
        line = _one_error(capsys, ["search", "--out", str(out), *TINY_SEARCH_ARGV])
        assert f"{out}/" in line and os.strerror(code).lower() in line, line
        assert not out.exists()


@PROPERTY
@given(
    kind=st.sampled_from(["dir", "fifo", "missing", "under_a_file"]),
    use=st.sampled_from(["decode", "eval", "info", "search --config", "train --genotype"]),
)
def test_property_a_path_that_is_no_file_says_what_it_is(capsys, kind: str, use: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "thing.json"  # info takes a .json path as a genotype file
        if kind == "dir":
            path.mkdir()
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "under_a_file":
            (Path(tmp) / "file").write_text("x")
            path = Path(tmp) / "file" / "thing.json"
        out = str(Path(tmp) / "o")
        argv = {
            "decode": ["decode", str(path)],
            "eval": ["eval", str(path)],
            "info": ["info", str(path)],
            "search --config": ["search", "--config", str(path), "--out", out],
            "train --genotype": ["train", "--genotype", str(path), "--out", out],
        }[use]
        line = _one_error(capsys, argv)
        expected = {
            "dir": "is a folder, not a",
            "fifo": "is not a regular file (a FIFO",
            "missing": "not found",
            "under_a_file": "not found (a part of the path is a file, not a folder)",
        }[kind]
        assert expected in line, line
        assert not Path(out).exists()

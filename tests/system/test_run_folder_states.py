"""Generated run-folder histories and hostile commands (issue 24, item 8).

A tiny search or train run folder goes through a generated sequence of states (stopped,
killed, finished, moved, edited), with a hostile command tried on it after each. Every
command must end without a traceback, with exit 0 (it resumed) or 2 and one error line;
a refused command must leave every file of the run as it was (bytes and mtimes).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autodeeplab.cli import main
from conftest import TINY_SEARCH_ARGV, TINY_TRAIN_ARGV, error_line

# Each example runs several CLI commands (seconds each): few examples, no deadline.
STATES = settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: bytes and modification time (ns)."""
    if not folder.is_dir():
        return {}
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# -- transitions: what happens to a run folder between two commands ---------------------------


def stopped(out: Path) -> None:
    """A run stopped by a signal: checkpoints, but no results yet."""
    for name in ("genotype.json", "genotype_path.png", "genotype_cell.png", "metrics.json"):
        (out / name).unlink(missing_ok=True)


def killed(out: Path) -> None:
    """A kill (or a hostile hand) during writes: a torn log line, a truncated newer checkpoint."""
    for log in out.glob("*_log.jsonl"):
        with open(log, "a", encoding="utf-8") as f:
            f.write('{"epoch": 9, "torn')
    ckpts = sorted((out / "checkpoints").glob("*.pt"))
    if ckpts:
        newer = out / "checkpoints" / ("epoch_0009.pt" if "epoch" in ckpts[0].name else "last.pt")
        newer.write_bytes(ckpts[0].read_bytes()[:200])
    (out / "checkpoints" / ".last.pt.tmp999999").write_bytes(b"partial")


def edited(key: str, value: object) -> Callable[[Path], None]:
    """config.yaml edited by hand: ``key`` (section.name) set to ``value``."""

    def edit(out: Path) -> None:
        path = out / "config.yaml"
        if not path.is_file():
            return
        data = yaml.safe_load(path.read_text())
        section, name = key.split(".")
        if isinstance(data, dict) and isinstance(data.get(section), dict):
            data[section][name] = value
            path.write_text(yaml.safe_dump(data, sort_keys=False))

    return edit


def split_edited(out: Path) -> None:
    path = out / "split.json"
    if path.is_file():
        path.write_bytes(path.read_bytes().replace(b'"seed"', b'"seed": 99, "x"', 1))


TRANSITIONS = {
    "stopped": stopped,
    "killed": killed,
    "edited_seed": edited("search.seed", 11),
    "edited_train_seed": edited("train.seed", 11),
    "edited_layers": edited("model.num_layers", 3),
    "edited_split": split_edited,
    "moved": None,  # the folder is renamed (handled by the test: the path changes)
    "finished": None,  # the run's own resume command, run to the end
}

#: Hostile options added to a resume (or a new start) of the folder.
HOSTILE = st.sampled_from(
    [
        ["--resume", "--seed", "5"],
        ["--resume", "--batch-size", "3"],
        ["--resume", "--crop", "40"],
        ["--resume", "--set", "data.train_samples=6"],
        ["--resume", "--set", "model.filter_multiplier=4"],
        ["--resume", "--data", "nosuch"],
        ["--resume", "--set", "data.spec=folder:/nonexistent"],
        ["--resume", "checkpoints/none.pt"],
        ["--resume", "config.yaml"],
        [],  # a new start on a folder that holds a run
        ["--overwrite", "--config", "config.yaml"],  # would remove its own config
        ["--resume", "--set", "bogus=1"],
        ["--resume", "--epochs", "-1"],
        ["--resume", "--iters", "0"],
    ]
)


def _argv(kind: str, out: Path, extra: list[str]) -> list[str]:
    """``kind``'s tiny command on ``out`` with ``extra``; file names in it are under ``out``."""
    extra = [str(out / e) if e in ("config.yaml", "checkpoints/none.pt") else e for e in extra]
    flags = TINY_SEARCH_ARGV if kind == "search" else TINY_TRAIN_ARGV
    other_kinds_flag = "--iters" if kind == "search" else "--epochs"
    if other_kinds_flag in extra:  # not this command's: a new start on the folder instead
        extra = []
    return [kind, "--out", str(out), *flags, *extra]


def _run(capsys: pytest.CaptureFixture[str], argv: list[str], folder: Path) -> int:
    """Run the CLI: no traceback; 0, or 2 with one line and every file of ``folder`` kept."""
    before = snapshot(folder)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own refusal
        code = exc.code if isinstance(exc.code, int) else 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "unexpected" not in err, (argv, err)
    assert code in (0, 2), (argv, err)
    if code:
        if ": error: " in err:
            error_line(err)
        assert snapshot(folder) == before, (argv, err)
    return code


@pytest.mark.slow
@STATES
@given(
    kind=st.sampled_from(["search", "train"]),
    history=st.lists(
        st.tuples(st.sampled_from(sorted(TRANSITIONS)), HOSTILE), min_size=1, max_size=3
    ),
)
def test_property_run_folder_histories(
    tiny_search_run: Path,
    tiny_train_run: Path,
    capsys: pytest.CaptureFixture[str],
    kind: str,
    history: list[tuple[str, list[str]]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run0"
        shutil.copytree(tiny_search_run if kind == "search" else tiny_train_run, out)
        for i, (transition, hostile) in enumerate(history):
            if transition == "moved":
                moved = Path(tmp) / f"run{i + 1}"
                out.rename(moved)
                out = moved
            elif transition == "finished":
                own = [kind, "--config", str(out / "config.yaml"), "--out", str(out)]
                _run(capsys, [*own, "--resume", "--no-progress"], out)
            else:
                TRANSITIONS[transition](out)  # type: ignore[misc]
            _run(capsys, _argv(kind, out, hostile), out)


# -- every command's options against a finished run's files ----------------------------------

#: Files of the two runs a command may be pointed at (S: the search run, T: the train run).
RUN_FILES = [
    "S/checkpoints/epoch_0001.pt", "S/config.yaml", "S/genotype.json", "S/split.json",
    "S/search_log.jsonl", "T/checkpoints/best.pt", "T/checkpoints/last.pt", "T/config.yaml",
    "T/genotype.json", "T/train_log.jsonl", "S", "T",
]  # fmt: skip
FILE = st.sampled_from(RUN_FILES)

COMMANDS = st.one_of(
    st.tuples(FILE, FILE).map(lambda f: ["decode", f[0], "--out", f[1]]),
    st.tuples(FILE, FILE).map(lambda f: ["export", f[0], "--out", f[1], "--no-check"]),
    st.tuples(FILE, FILE).map(lambda f: ["eval", f[0], "--out", f[1], "--num-samples", "1"]),
    st.tuples(FILE, FILE, FILE).map(lambda f: ["predict", f[0], f[1], "--out", f[2]]),
    st.tuples(FILE, st.integers(-5, 0)).map(lambda f: ["eval", f[0], "--num-samples", str(f[1])]),
    FILE.map(lambda f: ["report", f]),
    st.tuples(st.sampled_from(["S", "T"]), st.sampled_from(["search", "train", "run"])).map(
        lambda f: [f[1], "--out", f[0], "--no-progress"]
    ),
    st.tuples(FILE, st.sampled_from(["search", "train"])).map(
        lambda f: [f[1], "--config", f[0], "--out", "S", "--overwrite", "--no-progress"]
    ),
    FILE.map(lambda f: ["compare", "S", "--out", f, "--random", "-1"]),
    FILE.map(lambda f: ["info", f, "--classes", "0"]),
)


@pytest.mark.slow
@STATES
@given(argv=COMMANDS)
def test_property_commands_never_change_a_run_they_refuse(
    tiny_search_run: Path,
    tiny_train_run: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(tiny_search_run, root / "S")
        shutil.copytree(tiny_train_run, root / "T")
        concrete = [str(root / a) if a in ("S", "T") or a[:2] in ("S/", "T/") else a for a in argv]
        before = snapshot(root)
        try:
            code = main(concrete)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "unexpected" not in err, (concrete, err)
        if code:
            assert snapshot(root) == before, (concrete, err)

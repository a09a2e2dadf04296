"""The command line: search and decode end to end, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from autodeeplab.cli import main
from autodeeplab.genotype import Genotype, load_genotype
from conftest import tiny_search_argv

TWO_EPOCH_SEARCH_ARGV = tiny_search_argv(epochs=2)


@pytest.mark.slow
def test_search_and_decode_through_the_cli(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", "--out", str(out), *TWO_EPOCH_SEARCH_ARGV]) == 0
    printed = capsys.readouterr()
    genotype = load_genotype(out / "genotype.json")
    assert json.loads(printed.out)["path"] == list(genotype.path)
    assert "done in" in printed.err
    assert (out / "genotype_path.png").stat().st_size > 1000
    assert (out / "genotype_cell.png").stat().st_size > 1000
    assert len((out / "search_log.jsonl").read_text().splitlines()) == 2

    # The CPU preset decodes by score: genotype.json is the best-scoring candidate, and
    # `decode` (alpha and beta alone) gives the argmax/Viterbi one, which the search recorded
    # as its first candidate, and says so.
    searched = json.loads((out / "genotype.json").read_text())["search"]
    assert searched["decode"] == "score" and searched["candidates"] == 20
    ckpt = out / "checkpoints" / "epoch_0002.pt"
    assert main(["decode", str(ckpt), "--out", str(tmp_path / "dec" / "g.json")]) == 0
    argmax = Genotype.from_dict(searched["argmax_genotype"])
    assert load_genotype(tmp_path / "dec" / "g.json") == argmax
    assert "note: this run decodes by score" in capsys.readouterr().err
    assert (tmp_path / "dec" / "g_path.png").exists() and (tmp_path / "dec" / "g_cell.png").exists()
    # The decode mode and the margin travel with the genotype; the other mode is one flag away.
    assert searched["path_decode"] == "relative" and searched["path_margin"] >= 0
    log = [json.loads(line) for line in (out / "search_log.jsonl").read_text().splitlines()]
    assert log[-1]["path_margin"] == pytest.approx(searched["path_margin"])
    capsys.readouterr()
    literal = tmp_path / "dec" / "literal.json"
    assert main(["decode", str(ckpt), "--out", str(literal), "--path-decode", "literal"]) == 0
    assert "path decode literal: margin" in capsys.readouterr().err
    assert json.loads(literal.read_text())["search"]["path_decode"] == "literal"


@pytest.mark.slow
def test_resume_alone_continues_the_newest_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", "--out", str(out), *TWO_EPOCH_SEARCH_ARGV, "--epochs", "1"]) == 0
    assert (
        main(["search", "--out", str(out), *TWO_EPOCH_SEARCH_ARGV, "--epochs", "1", "--resume"])
        == 0
    )
    capsys.readouterr()
    assert len((out / "search_log.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "--set", "model.bogus=1"], "unknown key 'model.bogus'"),
        (["search", "--set", "search.epochs=many"], "expected an integer"),
        (["search", "--set", "epochs"], "expected key=value"),
        (["search", "--config", "missing.yaml"], "missing.yaml: config file not found"),
        (["search", "--data", "nosuch"], "unknown dataset 'nosuch'"),
        (["search", "--resume"], "no complete search checkpoint"),
        (["decode", "nope.pt"], "nope.pt: checkpoint not found"),
        # docs/design.md §12.12: the coarsest level must be at least 3x3, checked before any write.
        (
            ["search", "--crop", "64", "--set", "model.strides=[4,8,16,32]"],
            "the search needs --crop 96 or more for strides up to 32",
        ),
        (["search", "--crop", "40", "--dry-run"], "--crop 48 or more for strides up to 16"),
        (["search", "--set", "search.arch_lr=fast"], "use a number or auto"),
        (["search", "--set", "search.path_decode=greedy"], "use one of relative, literal"),
    ],
)
def test_bad_input_gives_one_line_error(tmp_path, capsys, argv, message):
    assert main([*argv, *(["--out", str(tmp_path / "o")] if argv[0] == "search" else [])]) == 2
    # At most an informational banner precedes the error, which is one line.
    errors = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and message in errors[0]
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_decode_refuses_a_corrupt_checkpoint(tmp_path, capsys):
    bad = tmp_path / "epoch_0001.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["decode", str(bad)]) == 2
    assert "not a readable autodeeplab checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_console_entry_point_runs():
    done = subprocess.run(
        [sys.executable, "-m", "autodeeplab", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.startswith("autodeeplab ")

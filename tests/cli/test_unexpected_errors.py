"""What ``main`` does with an error nobody foresaw, and decode errors that name the file
(issue 24, item 7)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from autodeeplab.cli import main
from autodeeplab.cli import search as search_cli
from conftest import error_line, one_error, tiny_folder


def test_an_unforeseen_error_is_one_line_exit_1_and_its_traceback_in_a_file(
    monkeypatch, tmp_path: Path, capsys
) -> None:
    monkeypatch.setattr(search_cli, "_cmd_report", lambda args: 1 / 0)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    assert main(["report", str(tmp_path / "missing_run")]) == 1
    line = error_line(capsys.readouterr().err)
    assert "unexpected ZeroDivisionError: division by zero" in line
    assert "please report it" in line
    log = Path(line.split("full traceback in ")[1].split(";")[0])
    assert log.parent == tmp_path and "Traceback" in log.read_text()
    assert "ZeroDivisionError" in log.read_text()


def test_the_traceback_goes_to_the_run_folder_when_there_is_one(
    monkeypatch, tmp_path: Path, capsys
) -> None:
    def bug(args):
        raise TypeError("bad operand")

    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setattr(search_cli, "_cmd_report", bug)
    assert main(["report", str(run)]) == 1
    line = error_line(capsys.readouterr().err)
    assert f"full traceback in {run / 'error.log'}" in line
    assert "(at " in line and "in bug)" not in line  # the test's frame is not autodeeplab's
    assert "TypeError: bad operand" in (run / "error.log").read_text()


def test_interrupts_and_exits_keep_their_meaning(monkeypatch, capsys) -> None:
    def interrupted(args):
        raise KeyboardInterrupt

    def exits(args):
        raise SystemExit(3)

    monkeypatch.setattr(search_cli, "_cmd_report", interrupted)
    assert main(["report", "x"]) == 130
    monkeypatch.setattr(search_cli, "_cmd_report", exits)
    with pytest.raises(SystemExit):
        main(["report", "x"])
    capsys.readouterr()


@pytest.mark.slow
def test_undecodable_split_lists_and_logs_name_the_file(
    tiny_search_run: Path, tmp_path: Path, capsys
) -> None:
    data = tiny_folder(tmp_path / "d")
    (data / "val.txt").write_bytes(b"val0\n\xff\xfeval1\n")
    line = one_error(capsys, ["data", "check", f"folder:{data}", "--split", "val"])
    assert f"{data / 'val.txt'}: not UTF-8 text" in line
    # A search log with undecodable bytes or a non-numeric value, given to report.
    run = tmp_path / "run"
    shutil.copytree(tiny_search_run, run)
    log = run / "search_log.jsonl"
    record = json.loads(log.read_text().splitlines()[0])
    log.write_bytes(b"\xff\xfe garbage\n" + json.dumps({**record, "val_miou": "abc"}).encode())
    line = one_error(capsys, ["report", str(run)])
    assert f"{log}: line 2 (epoch 1): 'val_miou' is 'abc', not a number" in line

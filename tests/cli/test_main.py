"""cli.main maps how a command ended to one line on stderr and an exit status."""

from __future__ import annotations

import argparse

import pytest

from autodeeplab.cli import main, search
from autodeeplab.cli.messages import Stopped
from autodeeplab.engine.guards import NonFiniteError


def _replace_decode(monkeypatch: pytest.MonkeyPatch, result: object) -> None:
    def command(args: argparse.Namespace) -> object:
        if isinstance(result, BaseException):
            raise result
        return result

    monkeypatch.setattr(search, "_cmd_decode", command)


def test_a_diverged_run_exits_1_with_one_line(monkeypatch, capsys) -> None:
    _replace_decode(monkeypatch, NonFiniteError("loss is nan at step 3"))
    assert main(["decode", "any.pt"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "autodeeplab decode: error: loss is nan at step 3"
    ]


def test_a_stopped_run_exits_0_and_says_how_to_resume(monkeypatch, capsys) -> None:
    stop = Stopped(" at iteration 4", "saved out/last.pt", "resume with: autodeeplab x --resume")
    _replace_decode(monkeypatch, stop)
    assert main(["decode", "any.pt"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "autodeeplab decode: stopped early at iteration 4; saved out/last.pt; "
        "resume with: autodeeplab x --resume"
    ]


def test_bad_input_exits_2_and_ctrl_c_130(monkeypatch, capsys) -> None:
    _replace_decode(monkeypatch, ValueError("x.yaml: unknown key 'a'"))
    assert main(["decode", "any.pt"]) == 2
    _replace_decode(monkeypatch, KeyboardInterrupt())
    assert main(["decode", "any.pt"]) == 130
    assert capsys.readouterr().err.splitlines() == [
        "autodeeplab decode: error: x.yaml: unknown key 'a'",
        "autodeeplab decode: interrupted",
    ]

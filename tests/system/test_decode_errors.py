"""Decode errors name the file (issue 24, item 7): a split list with undecodable bytes, a
search log with a value that is not a number, text that is not UTF-8."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from autodeeplab.data import build_dataset
from conftest import one_error, tiny_folder


def test_a_split_list_with_undecodable_bytes_names_the_file(tmp_path: Path, capsys) -> None:
    root = tiny_folder(tmp_path / "data")
    (root / "val.txt").write_bytes(b"val0\nval\xff1\n")
    with pytest.raises(ValueError, match=r"val\.txt: not UTF-8 text \(byte 8\)"):
        build_dataset(f"folder:{root}", "val")


def _log_lines(run: Path) -> list[dict]:
    text = (run / "search_log.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _write_log(run: Path, records: list[dict], extra: bytes = b"") -> None:
    text = "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")
    (run / "search_log.jsonl").write_bytes(extra + text)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("val_miou", "high", "line 1 (epoch 1): 'val_miou' is 'high', not a number"),
        ("epoch", "one", "line 1: 'epoch' is 'one', not a count"),
        ("alpha", [["a", "b"]], "line 1 (epoch 1): 'alpha' is not an array of numbers"),
    ],
)
def test_report_names_the_log_of_a_value_that_is_no_number(
    tmp_path: Path, capsys, tiny_search_run: Path, key: str, value, message: str
) -> None:
    run = shutil.copytree(tiny_search_run, tmp_path / "run")
    records = _log_lines(run)
    records[0][key] = value
    _write_log(run, records)
    line = one_error(capsys, ["report", str(run)])
    assert f"{run / 'search_log.jsonl'}: {message}" in line


def test_report_skips_a_log_line_that_is_not_utf8(tmp_path: Path, capsys, tiny_search_run) -> None:
    from autodeeplab.engine.search.report import read_search_log

    run = shutil.copytree(tiny_search_run, tmp_path / "run")
    _write_log(run, _log_lines(run), extra=b'{"epoch": 0, "x": "\xff"}\n')
    records, skipped = read_search_log(run / "search_log.jsonl")
    assert [r["epoch"] for r in records] == [1] and skipped == 1

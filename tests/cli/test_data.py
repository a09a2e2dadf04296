"""The data check subcommand: counts, sizes, classes and every problem with its file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from autodeeplab.cli import main
from conftest import tiny_folder


def test_data_check_reports_a_size_mismatch_and_fails(tmp_path: Path, capsys) -> None:
    root = tiny_folder(tmp_path / "data", corner=True)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "labels" / "train" / "train2.png")
    assert main(["data", "check", f"folder:{root}"]) == 1
    assert "train2.png" in capsys.readouterr().out


def test_data_check_json_counts_pairs_sizes_and_class_pixels(tmp_path: Path, capsys) -> None:
    root = tiny_folder(tmp_path / "data", corner=True)
    assert main(["data", "check", f"folder:{root}", "--split", "train", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["class_names"] == ["bg", "box", "corner"] and report["problems"] == []
    train = report["splits"]["train"]
    assert train["num_pairs"] == 4 and train["sizes"] == {"40x44": 4}
    # 4 images of 40x44: a 15x15 box and a 15x10 corner each, the rest background.
    assert train["class_pixels"] == [4 * (40 * 44 - 225 - 150), 4 * 225, 4 * 150]

"""The data check subcommand: counts, sizes, classes and every problem with its file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from autodeeplab.cli import main


def _folder(root: Path, n: int = 3) -> Path:
    """A folder dataset of ``n`` train pairs of 3 classes (20x24 images)."""
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            label = np.zeros((20, 24), np.uint8)
            label[4:12, 5:15] = 1
            label[14:, :6] = 2
            Image.fromarray(np.full((20, 24, 3), 40 * i, np.uint8)).save(
                root / "images" / split / f"{split}{i}.png"
            )
            Image.fromarray(label).save(root / "labels" / split / f"{split}{i}.png")
    (root / "classes.json").write_text(json.dumps({"classes": ["bg", "box", "corner"]}))
    return root


def test_data_check_reports_a_size_mismatch_and_fails(tmp_path: Path, capsys) -> None:
    root = _folder(tmp_path / "data")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "labels" / "train" / "train2.png")
    assert main(["data", "check", f"folder:{root}"]) == 1
    assert "train2.png" in capsys.readouterr().out


def test_data_check_json_counts_pairs_sizes_and_class_pixels(tmp_path: Path, capsys) -> None:
    root = _folder(tmp_path / "data")
    assert main(["data", "check", f"folder:{root}", "--split", "train", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["class_names"] == ["bg", "box", "corner"] and report["problems"] == []
    train = report["splits"]["train"]
    assert train["num_pairs"] == 3 and train["sizes"] == {"20x24": 3}
    # 3 images of 20x24: 80 box pixels and 36 corner pixels each, the rest background.
    assert train["class_pixels"] == [3 * (480 - 80 - 36), 240, 108]

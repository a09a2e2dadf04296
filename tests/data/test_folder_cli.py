"""A folder dataset goes through search, train and eval from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autodeeplab.cli import main


def _folder_dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 2)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            label = np.zeros((40, 44), np.uint8)
            label[8:24, 10:30] = 1
            label[28:, :12] = 2
            label[0, :] = 255  # an ignored row
            image = rng.integers(0, 60, (40, 44, 3), dtype=np.uint8)
            image[label == 1] += 150
            image[label == 2, 2] = 250
            Image.fromarray(image).save(root / "images" / split / f"{split}{i}.png")
            Image.fromarray(label).save(root / "labels" / split / f"{split}{i}.png")
    classes = {
        "classes": ["background", "box", "corner"],
        "palette": [[0, 0, 0], [255, 0, 0], [0, 0, 255]],
    }
    (root / "classes.json").write_text(json.dumps(classes))
    return root


@pytest.mark.slow
def test_search_train_eval_on_a_folder_dataset(tmp_path, capsys):
    spec = f"folder:{_folder_dataset(tmp_path / 'data')}"
    search = ["search", "--data", spec, "--out", str(tmp_path / "s"), "--crop", "32",
              "--epochs", "1", "--batch-size", "2", "--no-progress", "--set", "model.num_layers=3",
              "--set", "num_blocks=2", "--set", "filter_multiplier=2",
              "--set", "arch_start_epoch=0", "--set", "tensorboard=false",
              "--set", "model.strides=[4,8]"]  # fmt: skip
    assert main(search) == 0
    genotype = tmp_path / "s" / "genotype.json"
    train = ["train", "--genotype", str(genotype), "--data", spec, "--out", str(tmp_path / "t"),
             "--iters", "2", "--batch-size", "2", "--crop", "32", "--no-progress",
             "--set", "model.filter_multiplier=2", "--set", "model.aspp_channels=8",
             "--set", "model.decoder_channels=8", "--set", "train.eval_every=2",
             "--set", "train.tensorboard=false", "--set", "train.device=cpu"]  # fmt: skip
    assert main(train) == 0
    ckpt = tmp_path / "t" / "last.pt"
    if not ckpt.exists():
        ckpt = next((tmp_path / "t").rglob("last.pt"))
    assert main(["eval", str(ckpt), "--data", spec, "--out", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().out
    assert "box" in out and "corner" in out  # the per-class table names classes.json's classes
    metrics = json.loads(next((tmp_path / "e").rglob("metrics.json")).read_text())
    assert 0.0 <= metrics["miou"] <= 1.0
    assert list(metrics["per_class"]) == ["background", "box", "corner"]

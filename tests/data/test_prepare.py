"""``data prepare msrc21``: the folder layout from a (fake, tiny) MSRC-v2 archive."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from autodeeplab.cli import main
from autodeeplab.data import build_dataset
from autodeeplab.data.prepare import MSRC21_COUNTS, MSRC21_PALETTE, msrc21_split
from conftest import one_error

#: Images per photo group of MSRC-v2 (groups 1-20; stems <group>_<n>_s, n = 1..size).
GROUP_SIZES = [30] * 9 + [32, 30, 34, 30, 30, 24, 30, 30, 30, 30, 21]


def test_the_split_of_the_full_stem_list_is_the_project_split() -> None:
    stems = [f"{g}_{n}_s" for g, k in enumerate(GROUP_SIZES, start=1) for n in range(1, k + 1)]
    split = msrc21_split(stems[::-1])  # the order given does not matter
    assert {k: len(v) for k, v in split.items()} == MSRC21_COUNTS
    # Digests of the split lists the experiments used (train.txt, val.txt, test.txt).
    digests = {k: hashlib.sha256(" ".join(v).encode()).hexdigest()[:16] for k, v in split.items()}
    assert digests == {
        "train": "c8830a9265ba43e7",
        "val": "a92fe17b15e05a6a",
        "test": "313bedeaafb01f0d",
    }
    assert split["train"][:3] == ["1_3_s", "1_6_s", "1_9_s"]


def _bmp(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="BMP")
    return buffer.getvalue()


def _mat(segments: np.ndarray, labels: list[int]) -> bytes:
    buffer = io.BytesIO()
    savemat(buffer, {"newseg": segments, "newlabels": np.array(labels, dtype=np.float64)})
    return buffer.getvalue()


def _archive(path: Path, *, cleaned: bool = True) -> Path:
    """A zip with 2 groups of 10 images: left half one class, right half another."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as z:
        for g in (1, 2):
            for n in range(1, 11):
                stem = f"{g}_{n}_s"
                image = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
                z.writestr(f"MSRC_v2/Images/{stem}.bmp", _bmp(image))
                segments = np.ones((6, 8), np.int64)
                segments[:, 4:] = 2
                segments[0, 0] = 3  # a segment past newlabels' end: unlabelled
                if cleaned:
                    # MSRC-23 (1-based): 6 = sheep, 5 = horse (dropped)
                    labels = [6, 5] if g == 1 else [1, 23]
                    z.writestr(
                        f"MSRC_v2/newsegmentations_mats/{stem}_GT.mat", _mat(segments, labels)
                    )
                else:
                    gt = np.zeros((6, 8, 3), np.uint8)
                    gt[:, :4] = MSRC21_PALETTE[4]  # sheep
                    gt[:, 4:] = (128, 0, 128)  # horse's colour: void in MSRC-21
                    z.writestr(f"MSRC_v2/GroundTruth/{stem}_GT.bmp", _bmp(gt))
    return path


@pytest.mark.parametrize("cleaned", [True, False])
def test_prepare_writes_a_folder_dataset_with_msrc21_labels(tmp_path: Path, cleaned: bool) -> None:
    archive = _archive(tmp_path / "msrc.zip", cleaned=cleaned)
    out = tmp_path / "msrc21"
    assert main(["data", "prepare", "msrc21", str(archive), str(out), "--any-count"]) == 0
    lists = {s: (out / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}
    assert {s: len(v) for s, v in lists.items()} == {"train": 10, "val": 2, "test": 8}
    label = np.asarray(Image.open(out / "labels" / "train" / f"{lists['train'][0]}.png"))
    assert label.dtype == np.uint8 and label.shape == (6, 8)
    assert (label[1:, :4] == 4).all()  # sheep is index 4 of the 21 classes
    assert (label[:, 4:] == 255).all()  # horse: void
    if cleaned:
        assert label[0, 0] == 255  # the unlabelled segment
    group2 = lists["train"][-1]
    assert group2.startswith("2_")
    dataset = build_dataset(f"folder:{out}", "train", size=4, seed=0)
    assert len(dataset) == 10 and dataset.num_classes == 21


def test_prepare_refuses_an_incomplete_archive_and_writes_nothing(tmp_path, capsys) -> None:
    archive = _archive(tmp_path / "msrc.zip")
    out = tmp_path / "msrc21"
    line = one_error(capsys, ["data", "prepare", "msrc21", str(archive), str(out)])
    assert "is the archive complete?" in line and "276" in line
    assert not out.exists()


def test_prepare_refuses_what_is_not_an_archive(tmp_path, capsys) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    line = one_error(capsys, ["data", "prepare", "msrc21", str(text), str(tmp_path / "o")])
    assert "neither a folder nor a zip archive" in line

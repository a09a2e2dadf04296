import numpy as np
import pytest
from PIL import Image

from autodeeplab.data import CamVidDataset, build_dataset, check_dataset, dataset_info

H, W = 18, 24
COUNTS = {"train": 3, "val": 2, "test": 2}


def _write_pair(root, split, stem, values, image_size=(W, H)):
    w, h = image_size
    rng = np.random.default_rng(len(stem))
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
        root / split / f"{stem}.png"
    )
    label = np.resize(np.asarray(values, dtype=np.uint8), H * W).reshape(H, W)
    Image.fromarray(label, mode="L").save(root / f"{split}annot" / f"{stem}.png")


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "CamVid"
    for split, count in COUNTS.items():
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for i in range(count):
            _write_pair(root, split, f"0001TP_{split}_{i:04d}", [0, 3, 10, 11])
    return root


@pytest.mark.parametrize(
    ("split", "count"), [("train", 3), ("val", 2), ("test", 2), ("trainval", 5)]
)
def test_counts_per_split(root, split, count):
    assert len(CamVidDataset(root, split)) == count
    assert len(build_dataset(f"camvid:{root.parent}", split)) == count


def test_unlabelled_11_is_ignored(root):
    _, mask = CamVidDataset(root, "test").raw(1)
    assert mask.reshape(-1)[:4].tolist() == [0, 3, 10, 255]


def test_value_12_names_the_file(root):
    _write_pair(root, "val", "0001TP_val_0001", [12, 11])
    with pytest.raises(ValueError, match=r"0001TP_val_0001.png: label values 12 are outside"):
        CamVidDataset(root, "val")[1]
    report = check_dataset(f"camvid:{root}", ["val"])
    assert len(report.problems) == 1 and "valannot/0001TP_val_0001.png" in report.problems[0]


def test_size_mismatch_names_the_file(root):
    _write_pair(root, "train", "0001TP_train_0000", [1], image_size=(W + 1, H))
    with pytest.raises(ValueError, match=f"train_0000.png: label is {W}x{H} but image"):
        CamVidDataset(root, "train")[0]


def test_missing_split_and_bad_root(root, tmp_path):
    (root / "test").rename(root / "testing")
    (root / "testannot").rename(root / "testing_annot")
    with pytest.raises(ValueError, match=r"CamVid split 'test' not found"):
        CamVidDataset(root, "test")
    with pytest.raises(FileNotFoundError, match="not a CamVid root"):
        CamVidDataset(tmp_path / "CamVid" / "val", "train")


def test_dataset_info(root):
    info = dataset_info(f"camvid:{root}")
    assert info.num_classes == 11
    assert info.class_names[0] == "sky" and info.class_names[10] == "bicyclist"
    assert info.palette[3] == (128, 64, 128)


def test_info_matches_the_built_dataset(root):
    info = dataset_info(f"camvid:{root}")
    dataset = build_dataset(f"camvid:{root}", "train")
    assert tuple(info) == (dataset.num_classes, dataset.class_names, dataset.palette)

import numpy as np
import pytest
from PIL import Image

from autodeeplab.data import ADE20KDataset, build_dataset, check_dataset, dataset_info

H, W = 18, 26
STEMS = {"training": ["ADE_train_00000001", "ADE_train_00000002", "ADE_train_00000003"],
         "validation": ["ADE_val_00000001", "ADE_val_00000002"]}  # fmt: skip


def _write_pair(root, folder, stem, values, image_size=(W, H)):
    w, h = image_size
    rng = np.random.default_rng(len(stem))
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
        root / "images" / folder / f"{stem}.jpg"
    )
    label = np.resize(np.asarray(values, dtype=np.uint8), H * W).reshape(H, W)
    Image.fromarray(label, mode="L").save(root / "annotations" / folder / f"{stem}.png")


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    for folder, stems in STEMS.items():
        (root / "images" / folder).mkdir(parents=True)
        (root / "annotations" / folder).mkdir(parents=True)
        for stem in stems:
            _write_pair(root, folder, stem, [0, 1, 150, 13])
    return root


@pytest.mark.parametrize(("split", "count"), [("train", 3), ("val", 2), ("trainval", 5)])
def test_counts_per_split(root, split, count):
    assert len(ADE20KDataset(root, split)) == count
    assert len(ADE20KDataset(root.parent, split)) == count  # the parent folder works too


def test_zero_is_ignored_and_the_rest_shift_down(root):
    _, mask = ADE20KDataset(root, "val").raw(0)
    assert mask.reshape(-1)[:4].tolist() == [255, 0, 149, 12]


def test_value_above_150_names_the_file(root):
    _write_pair(root, "training", STEMS["training"][2], [0, 151])
    with pytest.raises(ValueError) as info:
        ADE20KDataset(root, "train")[2]
    label = root / "annotations" / "training" / f"{STEMS['training'][2]}.png"
    assert str(info.value).startswith(f"{label}: label values 151 are outside the class set")
    assert "allowed: 0-150" in str(info.value)


def test_size_mismatch_names_the_file(root):
    _write_pair(root, "validation", STEMS["validation"][1], [1], image_size=(W, H - 2))
    with pytest.raises(ValueError, match=f"ADE_val_00000002.png: label is {W}x{H} but image"):
        ADE20KDataset(root, "val")[1]


def test_orphan_annotation_is_a_missing_image(root):
    (root / "images" / "validation" / "ADE_val_00000001.jpg").unlink()
    with pytest.raises(ValueError, match="ADE_val_00000001.jpg: missing image for label"):
        ADE20KDataset(root, "val")
    report = check_dataset(f"ade20k:{root}")
    assert [p.split(":")[0] for p in report.problems] == [
        str(root / "images" / "validation" / "ADE_val_00000001.jpg")
    ]


def test_missing_split_and_bad_root(root, tmp_path):
    with pytest.raises(ValueError, match="unknown split 'test' for dataset 'ade20k'"):
        build_dataset(f"ade20k:{root}", "test")
    for folder in ("images", "annotations"):
        (root / folder / "validation").rename(root / folder / "valid")
    with pytest.raises(ValueError, match=r"ADE20K split 'val' not found \(no images/validation/"):
        ADE20KDataset(root, "val")
    with pytest.raises(FileNotFoundError, match="not an ADE20K root"):
        ADE20KDataset(root / "images", "train")


def test_dataset_info(root):
    info = dataset_info(f"ade20k:{root}")
    assert info.num_classes == 150 and len(info.palette) == 150
    assert info.class_names[0] == "wall" and info.class_names[149] == "flag"
    assert info.class_names[12] == "person"


def test_info_matches_the_built_dataset(root):
    info = dataset_info(f"ade20k:{root}")
    dataset = build_dataset(f"ade20k:{root}", "train")
    assert tuple(info) == (dataset.num_classes, dataset.class_names, dataset.palette)

import numpy as np
import pytest
from PIL import Image

from autodeeplab.data import VOCDataset, build_dataset, check_dataset, dataset_info
from autodeeplab.data.voc import PALETTE

H, W = 20, 28
TRAIN = ["2007_000032", "2007_000039", "2007_000063"]
VAL = ["2007_000033", "2007_000042"]
AUG_ONLY = ["2008_000002", "2008_000003", "2008_000007"]


def _label(values):
    return np.resize(np.asarray(values, dtype=np.uint8), H * W).reshape(H, W)


def _write_pair(voc, stem, values, label_dir="SegmentationClass", image_size=(W, H)):
    w, h = image_size
    rng = np.random.default_rng(len(stem))
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
        voc / "JPEGImages" / f"{stem}.jpg"
    )
    if label_dir == "SegmentationClass":  # a palette PNG, as VOC ships them
        label = Image.fromarray(_label(values), mode="P")
        label.putpalette([v for colour in PALETTE for v in colour])
    else:  # SegmentationClassAug holds grey class-index PNGs
        label = Image.fromarray(_label(values), mode="L")
    label.save(voc / label_dir / f"{stem}.png")


@pytest.fixture
def voc(tmp_path):
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True)
    for stem in TRAIN + VAL:
        _write_pair(voc, stem, [0, 15, 255, 20])
    lists = {"train": TRAIN, "val": VAL, "trainval": TRAIN + VAL}
    for split, stems in lists.items():
        (voc / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(stems) + "\n")
    return voc


def _add_train_aug(voc):
    (voc / "SegmentationClassAug").mkdir()
    (voc / "ImageSets/SegmentationAug").mkdir()
    for stem in TRAIN + VAL + AUG_ONLY:
        if stem in AUG_ONLY:
            _write_pair(voc, stem, [1, 2, 3], label_dir="SegmentationClassAug")
        else:
            _write_pair(voc, stem, [0, 15, 255], label_dir="SegmentationClassAug")
    lines = [f"/JPEGImages/{s}.jpg /SegmentationClassAug/{s}.png" for s in TRAIN + AUG_ONLY]
    (voc / "ImageSets/SegmentationAug/train_aug.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(("split", "count"), [("train", 3), ("val", 2), ("trainval", 5)])
def test_counts_per_split(voc, split, count):
    assert len(VOCDataset(voc, split)) == count


@pytest.mark.parametrize("where", [".", "..", "../.."])
def test_root_may_be_voc2012_vocdevkit_or_above(voc, where):
    assert VOCDataset(voc / where, "val").root.resolve() == voc.resolve()


def test_palette_labels_keep_class_index_and_boundary(voc):
    _, mask = VOCDataset(voc, "val").raw(0)
    assert mask.reshape(-1)[:4].tolist() == [0, 15, 255, 20]  # person = 15, boundary = 255


def test_train_uses_train_aug_when_present(voc):
    _add_train_aug(voc)
    train = VOCDataset(voc, "train")
    assert len(train) == len(TRAIN + AUG_ONLY)
    assert all(label.parent.name == "SegmentationClassAug" for _, label in train.pairs)
    assert train.raw(3)[1].reshape(-1)[:3].tolist() == [1, 2, 3]
    val = VOCDataset(voc, "val")
    assert all(label.parent.name == "SegmentationClass" for _, label in val.pairs)


def test_out_of_range_label_names_the_file(voc):
    _write_pair(voc, VAL[1], [0, 21, 200])
    with pytest.raises(ValueError) as info:
        VOCDataset(voc, "val")[1]
    message = str(info.value)
    assert message.startswith(f"{voc / 'SegmentationClass' / VAL[1]}.png: label values 21, 200")
    assert "allowed: 0-20, 255" in message


def test_size_mismatch_names_the_file(voc):
    _write_pair(voc, VAL[0], [0], image_size=(W, H + 4))
    with pytest.raises(ValueError, match=f"{VAL[0]}.png: label is {W}x{H} but image"):
        VOCDataset(voc, "val")[0]


def test_listed_file_missing(voc):
    (voc / "JPEGImages" / f"{TRAIN[1]}.jpg").unlink()
    with pytest.raises(ValueError, match=f"{TRAIN[1]}.jpg: missing image for label"):
        VOCDataset(voc, "train")
    report = check_dataset(f"voc:{voc}", ["train"])
    assert len(report.problems) == 1 and TRAIN[1] in report.problems[0]


def test_no_test_split_and_missing_list(voc):
    with pytest.raises(ValueError, match="unknown split 'test' for dataset 'voc'"):
        build_dataset(f"voc:{voc}", "test")
    (voc / "ImageSets/Segmentation/val.txt").unlink()
    with pytest.raises(ValueError, match="val.txt: VOC split list not found"):
        VOCDataset(voc, "val")


def test_dataset_info(voc):
    info = dataset_info(f"voc:{voc}")
    assert info.num_classes == 21
    assert info.class_names[15] == "person" and info.class_names[0] == "background"
    assert info.palette[15] == (192, 128, 128) and info.palette[1] == (128, 0, 0)


def test_info_matches_the_built_dataset(voc):
    info = dataset_info(f"voc:{voc}")
    dataset = build_dataset(f"voc:{voc}", "train")
    assert tuple(info) == (dataset.num_classes, dataset.class_names, dataset.palette)

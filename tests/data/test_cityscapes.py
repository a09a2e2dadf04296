import numpy as np
import pytest
import torch
from cityscapesscripts.helpers.labels import labels as CITYSCAPES_LABELS
from PIL import Image

from autodeeplab.data import CityscapesDataset, build_dataset, check_dataset, dataset_info
from autodeeplab.data.cityscapes import cityscapes_label_map

H, W = 24, 32
FILES = {
    "train": [("aachen", "aachen_000000_000019"), ("aachen", "aachen_000001_000019"),
              ("bremen", "bremen_000000_000019")],
    "val": [("frankfurt", "frankfurt_000000_000294"), ("lindau", "lindau_000000_000019")],
}  # fmt: skip


def _write(root, split, city, stem, label_ids, image_size=(W, H)):
    image_dir = root / "leftImg8bit" / split / city
    label_dir = root / "gtFine" / split / city
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(stem))
    w, h = image_size
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
        image_dir / f"{stem}_leftImg8bit.png"
    )
    label = np.asarray(label_ids, dtype=np.uint8).reshape(-1)
    label = np.resize(label, H * W).reshape(H, W)
    Image.fromarray(label, mode="L").save(label_dir / f"{stem}_gtFine_labelIds.png")
    # other gtFine files of the official layout must be ignored
    Image.fromarray(label, mode="L").save(label_dir / f"{stem}_gtFine_instanceIds.png")


@pytest.fixture
def root(tmp_path):
    for split, files in FILES.items():
        for city, stem in files:
            _write(tmp_path, split, city, stem, [26, 7, 0, 24])
    return tmp_path


@pytest.mark.parametrize(("split", "count"), [("train", 3), ("val", 2), ("trainval", 5)])
def test_counts_per_split(root, split, count):
    assert len(CityscapesDataset(root, split)) == count


def test_label_ids_become_train_ids(root):
    image, mask = CityscapesDataset(root, "train").raw(0)
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    # car 26 -> 13, road 7 -> 0, unlabeled 0 -> 255, person 24 -> 11
    assert mask.reshape(-1)[:4].tolist() == [13, 0, 255, 11]


def test_label_map_matches_cityscapesscripts_table():
    lut = cityscapes_label_map()
    for label in CITYSCAPES_LABELS:
        if label.id < 0:
            continue
        expected = label.trainId if 0 <= label.trainId < 255 else 255
        assert lut[label.id] == expected, label.name
    assert (lut[34:] == -1).all()  # no label id above 33: such values are errors


def test_getitem_whole_image_and_default_train_crop(root):
    x, y = CityscapesDataset(root, "val")[1]
    assert x.shape == (3, H, W) and x.dtype == torch.float32
    assert y.shape == (H, W) and y.dtype == torch.int64
    x, y = build_dataset(f"cityscapes:{root}", "train", size=16)[0]
    assert x.shape == (3, 16, 16) and y.shape == (16, 16)
    assert build_dataset(f"cityscapes:{root}", "val", size=16)[0][0].shape == (3, H, W)


def test_dataset_info(root):
    info = dataset_info(f"cityscapes:{root}")
    assert info.num_classes == 19
    assert info.class_names[0] == "road" and info.class_names[13] == "car"
    assert info.palette[0] == (128, 64, 128)


def test_missing_split_and_bad_roots(root, tmp_path):
    with pytest.raises(ValueError, match=r"Cityscapes split 'test' not found"):
        CityscapesDataset(root, "test")
    with pytest.raises(FileNotFoundError, match="not a Cityscapes root"):
        CityscapesDataset(root / "gtFine", "train")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_dataset(f"cityscapes:{tmp_path / 'nope'}", "train")
    with pytest.raises(ValueError, match="needs a path: use 'cityscapes:PATH'"):
        build_dataset("cityscapes", "train")


def test_size_mismatch_names_the_label_file(root):
    _write(root, "val", "lindau", "lindau_000000_000019", [7], image_size=(W + 8, H))
    dataset = CityscapesDataset(root, "val")
    with pytest.raises(ValueError) as info:
        dataset[1]
    label = root / "gtFine/val/lindau/lindau_000000_000019_gtFine_labelIds.png"
    assert str(info.value).startswith(f"{label}: label is {W}x{H} but image ")
    assert f"is {W + 8}x{H}; fix or remove the pair" in str(info.value)
    assert any(p.startswith(str(label)) for p in check_dataset(f"cityscapes:{root}").problems)


def test_missing_label_fails_at_construction(root):
    label = root / "gtFine/train/bremen/bremen_000000_000019_gtFine_labelIds.png"
    label.unlink()
    with pytest.raises(ValueError, match=f"^{label}: missing label for image .*bremen"):
        CityscapesDataset(root, "train")


def test_info_matches_the_built_dataset(root):
    info = dataset_info(f"cityscapes:{root}")
    dataset = build_dataset(f"cityscapes:{root}", "train")
    assert tuple(info) == (dataset.num_classes, dataset.class_names, dataset.palette)

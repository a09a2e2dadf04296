import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from autodeeplab.data import (
    FolderDataset,
    build_dataset,
    dataset_info,
    train_transform,
    val_transform,
)

H, W = 16, 20
CLASSES = {"classes": ["sky", "grass", "cow"], "palette": [[0, 0, 255], [0, 255, 0], [90, 60, 30]]}


def _image(seed, shape=(H, W)):
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def _label(values, shape=(H, W)):
    return np.resize(np.asarray(values, dtype=np.uint8), shape[0] * shape[1]).reshape(shape)


def _write(root, split, stem, values=(0, 1, 2, 255), *, flat=False, suffix=".png", seed=0):
    image_dir = root / "images" if flat else root / "images" / split
    label_dir = root / "labels" if flat else root / "labels" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_image(seed)).save(image_dir / f"{stem}{suffix}")
    Image.fromarray(_label(values), mode="L").save(label_dir / f"{stem}.png")


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "data"
    for split, count in {"train": 4, "val": 2, "test": 1}.items():
        for i in range(count):
            _write(root, split, f"{split}_{i}", seed=i, suffix=".jpg" if i == 1 else ".png")
    (root / "classes.json").write_text(json.dumps(CLASSES))
    return root


@pytest.mark.parametrize(
    ("split", "count"), [("train", 4), ("val", 2), ("test", 1), ("trainval", 6)]
)
def test_counts_per_split(root, split, count):
    assert len(FolderDataset(root, split)) == count


def test_classes_json_and_identity_labels(root):
    info = dataset_info(f"folder:{root}")
    assert info.num_classes == 3 and info.class_names == ("sky", "grass", "cow")
    assert info.palette == ((0, 0, 255), (0, 255, 0), (90, 60, 30))
    dataset = FolderDataset(root, "val")
    assert (dataset.num_classes, dataset.class_names) == (3, ("sky", "grass", "cow"))
    image, mask = dataset.raw(1)
    assert image.shape == (H, W, 3) and mask.reshape(-1)[:4].tolist() == [0, 1, 2, 255]
    x, y = dataset[0]
    assert x.shape == (3, H, W) and y.dtype == torch.int64 and int(y.max()) == 255


def test_split_lists_with_flat_folders(tmp_path):
    for i in range(5):
        _write(tmp_path, "", f"img{i}", flat=True, seed=i)
    (tmp_path / "train.txt").write_text("img0\nimg1.png\n\nimg3\n")
    (tmp_path / "val.txt").write_text("img4\n")
    (tmp_path / "classes.json").write_text(json.dumps(CLASSES))
    train = FolderDataset(tmp_path, "train")
    assert [p.stem for p, _ in train.pairs] == ["img0", "img1", "img3"]
    assert len(FolderDataset(tmp_path, "trainval")) == 4
    with pytest.raises(ValueError, match=r"split 'test' not found \(no test.txt, images/test/"):
        FolderDataset(tmp_path, "test")


def test_split_list_decides_membership_over_split_folder(root):
    (root / "train.txt").write_text("train_2\ntrain_0\n")
    assert [p.stem for p, _ in FolderDataset(root, "train").pairs] == ["train_2", "train_0"]


def test_custom_ignore_value_and_out_of_range_label(root):
    (root / "classes.json").write_text(json.dumps({"classes": ["a", "b", "c"], "ignore_index": 9}))
    _write(root, "test", "test_0", values=[2, 9, 255])
    assert FolderDataset(root, "test").raw(0)[1].reshape(-1)[:3].tolist() == [2, 255, 255]
    _write(root, "test", "test_0", values=[2, 3, 7])
    with pytest.raises(ValueError, match=r"test_0.png: label values 3, 7 are outside the class"):
        FolderDataset(root, "test")[0]


def test_colour_label_is_rejected(root):
    Image.fromarray(_image(5)).save(root / "labels" / "test" / "test_0.png")
    with pytest.raises(ValueError, match="test_0.png: label has mode RGB"):
        FolderDataset(root, "test")[0]


def test_without_classes_json_num_classes_is_inferred(root):
    (root / "classes.json").unlink()
    _write(root, "test", "test_0", values=[0, 5, 255])
    dataset = FolderDataset(root, "train")  # construction does not scan
    assert dataset.raw(0)[1].max() == 255
    info = dataset_info(f"folder:{root}")
    assert info.num_classes == 6 and info.class_names[5] == "class_5" and len(info.palette) == 6
    assert dataset.num_classes == 6


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot read it as JSON"),
        ('["a", "b"]', "must hold a JSON object"),
        ('{"classes": "abc"}', "'classes' must be a list"),
        ('{"classes": ["a", "b"], "num_classes": 3}', "'num_classes' is 3 but 'classes' has 2"),
        ('{"classes": ["a", "b"], "palette": [[0, 0, 0]]}', "'palette' must be 2"),
        ('{"classes": ["a", "b"], "ignore_index": 1}', "'ignore_index' must be an int in 2-255"),
    ],
)
def test_bad_classes_json(root, content, message):
    (root / "classes.json").write_text(content)
    with pytest.raises(ValueError, match=f"classes.json: {message}"):
        dataset_info(f"folder:{root}")
    with pytest.raises(ValueError, match=message):
        FolderDataset(root, "train")


def test_construction_lists_files_only(root, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded an image while constructing")

    monkeypatch.setattr(Image, "open", no_decoding)
    dataset = build_dataset(f"folder:{root}", "train", size=8)
    assert len(dataset) == 4 and dataset.num_classes == 3


def test_num_samples_takes_a_seeded_subset(root):
    a = FolderDataset(root, "train", num_samples=2, seed=1)
    b = FolderDataset(root, "train", num_samples=2, seed=1)
    assert len(a) == 2 and a.pairs == b.pairs
    subsets = {tuple(FolderDataset(root, "train", num_samples=2, seed=s).pairs) for s in range(8)}
    assert len(subsets) > 1
    with pytest.raises(ValueError, match="num_samples=5 but the split has only 4 pairs"):
        FolderDataset(root, "train", num_samples=5)
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        FolderDataset(root, "train", num_samples=0)


def test_build_dataset_transforms(root):
    x, y = build_dataset(f"folder:{root}", "train", size=12)[0]  # default: train_transform
    assert x.shape == (3, 12, 12) and y.shape == (12, 12)
    x, _ = build_dataset(f"folder:{root}", "train", size=12, transform=val_transform())[0]
    assert x.shape == (3, H, W)
    assert build_dataset(f"folder:{root}", "test", size=12)[0][0].shape == (3, H, W)


def test_pickles_and_workers_draw_different_augmentations(tmp_path):
    for i in range(4):  # four identical samples: only the augmentation can tell them apart
        _write(tmp_path, "train", f"same_{i}", seed=0)
    (tmp_path / "classes.json").write_text(json.dumps(CLASSES))
    dataset = FolderDataset(tmp_path, "train", transform=train_transform(8))
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone.pairs == dataset.pairs and clone.class_names == dataset.class_names
    torch.manual_seed(0)
    loader = DataLoader(dataset, batch_size=1, num_workers=2)
    first, second = [x for x, _ in loader][:2]  # sample 0 from worker 0, sample 1 from worker 1
    assert not torch.equal(first, second)


def test_spec_errors(root, tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'folders'; use one of: synthetic, "):
        build_dataset(f"folders:{root}", "train")
    with pytest.raises(FileNotFoundError, match="does not exist or is not a folder"):
        dataset_info(f"folder:{tmp_path / 'missing'}")
    with pytest.raises(ValueError, match="needs a path: use 'folder:PATH'"):
        dataset_info("folder")
    (root / "images" / "val").rename(root / "images" / "validation")
    (root / "labels" / "val").rename(root / "labels" / "validation")
    with pytest.raises(ValueError, match=r"split 'val' not found"):
        build_dataset(f"folder:{root}", "val")


def test_info_matches_the_built_dataset(root):
    info = dataset_info(f"folder:{root}")
    dataset = build_dataset(f"folder:{root}", "train")
    assert tuple(info) == (dataset.num_classes, dataset.class_names, dataset.palette)

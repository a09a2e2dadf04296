import json

import numpy as np
import pytest
from PIL import Image

from autodeeplab.data import DataReport, FolderDataset, check_dataset

H, W = 24, 32
CLASSES = {"classes": ["road", "car", "tree"]}


def _png(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def _pair(root, split, stem, values=(0, 1, 2, 255), image_size=(W, H)):
    w, h = image_size
    image = np.random.default_rng(len(stem)).integers(0, 256, (h, w, 3), dtype=np.uint8)
    _png(root / "images" / split / f"{stem}.png", image)
    label = np.resize(np.asarray(values, dtype=np.uint8), H * W).reshape(H, W)
    _png(root / "labels" / split / f"{stem}.png", label, mode="L")


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "data"
    for i in range(3):
        _pair(root, "train", f"good_{i}")
    _pair(root, "val", "good_v", values=(1,))
    (root / "classes.json").write_text(json.dumps(CLASSES))
    return root


def _missing_label(root):
    (root / "labels/train/good_1.png").unlink()
    return root / "labels/train/good_1.png", "missing label for image"


def _missing_image(root):
    (root / "images/train/good_1.png").unlink()
    return root / "images/train/good_1.png", "missing image for label"


def _size_mismatch(root):
    _pair(root, "train", "good_1", image_size=(W, H + 8))
    return root / "labels/train/good_1.png", f"label is {W}x{H} but image .* is {W}x{H + 8}"


def _truncated_png(root):
    path = root / "images/train/good_1.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path, "cannot read image"


def _not_an_image(root):
    path = root / "labels/train/good_1.png"
    path.write_text("this is not a PNG\n")
    return path, "cannot read label .*UnidentifiedImageError"


def _out_of_range(root):
    _pair(root, "train", "good_1", values=(0, 3, 9))
    return root / "labels/train/good_1.png", "label values 3, 9 are outside the class set"


BAD = [_missing_label, _missing_image, _size_mismatch, _truncated_png, _not_an_image, _out_of_range]


@pytest.mark.parametrize("make_bad", BAD, ids=lambda f: f.__name__.strip("_"))
def test_each_problem_is_named_by_loader_and_checker(root, make_bad):
    path, message = make_bad(root)
    with pytest.raises(ValueError, match=message) as info:
        dataset = FolderDataset(root, "train")  # missing partners fail here
        for i in range(len(dataset)):
            dataset[i]
    assert str(info.value).startswith(f"{path}: ")
    report = check_dataset(f"folder:{root}")
    assert len(report.problems) == 1 and not report.ok
    assert report.problems[0].startswith(f"{path}: ")
    assert report.problems[0].count("\n") == 0
    assert report.splits["train"].num_problems == 1 and report.splits["val"].num_problems == 0


def test_empty_split(root):
    (root / "images" / "test").mkdir()
    with pytest.raises(ValueError, match=r"split 'test' of dataset 'folder' is empty"):
        FolderDataset(root, "test")
    report = check_dataset(f"folder:{root}")
    assert report.problems == [
        f"{root}: split 'test' is empty; add its files or remove its folder/list"
    ]


def test_all_problems_of_a_split_are_listed(root):
    _pair(root, "train", "good_0", values=(7,))
    _missing_image(root)  # good_1
    _pair(root, "train", "good_2", image_size=(W + 1, H))
    report = check_dataset(f"folder:{root}", ["train"])
    assert [p.split(": ")[0].rsplit("/", 2)[-2:] for p in report.problems] == [
        ["train", "good_1.png"],  # listing problems first
        ["train", "good_0.png"],
        ["train", "good_2.png"],
    ]
    assert "label values 7" in report.problems[1] and "label is" in report.problems[2]
    assert report.splits["train"].num_checked == 2  # good_0 and good_2 were decoded


def test_clean_report_counts_sizes_and_class_pixels(root):
    report = check_dataset(f"folder:{root}")
    assert isinstance(report, DataReport) and report.ok and report.problems == []
    assert list(report.splits) == ["train", "val"]  # test does not exist: skipped
    d = report.to_dict()
    assert d["num_classes"] == 3 and d["class_names"] == ["road", "car", "tree"]
    train = d["splits"]["train"]
    quarter = H * W // 4
    assert (train["num_pairs"], train["num_checked"], train["num_problems"]) == (3, 3, 0)
    assert train["class_pixels"] == [3 * quarter] * 3 and train["ignore_pixels"] == 3 * quarter
    assert train["sizes"] == {f"{H}x{W}": 3} and train["height"] == [H, H]
    assert d["splits"]["val"]["class_pixels"] == [0, H * W, 0]
    text = report.format()
    assert f"{'train':<8}{3:>8}{3:>9}{0:>10}  H {H}-{H}, W {W}-{W}: {H}x{W} (3)" in text
    assert "no problems found" in text and "car" in text


def test_max_files_limits_decoding_not_listing(root):
    _missing_label(root)
    report = check_dataset(f"folder:{root}", ["train"], max_files=1)
    assert report.splits["train"].num_pairs == 3
    assert report.splits["train"].num_checked == 1
    assert len(report.problems) == 1  # the missing partner is still found


def test_requested_split_that_is_missing_is_a_problem(root):
    report = check_dataset(f"folder:{root}", ["test"])
    assert len(report.problems) == 1 and "split 'test' not found" in report.problems[0]
    assert f"{len(report.problems)} problem(s):" in report.format()


def test_usage_errors_raise(root, tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        check_dataset("nope:x")
    with pytest.raises(ValueError, match="unknown split 'training'"):
        check_dataset(f"folder:{root}", ["training"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_dataset(f"folder:{tmp_path / 'missing'}")


def test_folder_without_classes_json_infers_names_from_histogram(root):
    (root / "classes.json").unlink()
    report = check_dataset(f"folder:{root}")
    assert report.ok and report.class_names == ("class_0", "class_1", "class_2")


def test_synthetic_is_reported_too():
    report = check_dataset("synthetic", max_files=2)
    assert report.ok and report.num_classes == 8
    assert {s: r.num_pairs for s, r in report.splits.items()} == {
        "train": 64,
        "val": 32,
        "test": 32,
    }
    assert report.splits["val"].num_checked == 2

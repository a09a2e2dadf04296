import json
import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from autodeeplab.data.split import load_split, save_split, split_indices


@settings(max_examples=60, deadline=None)
@given(
    num_samples=st.integers(2, 300),
    seed=st.integers(0, 2**31),
    fraction=st.floats(0.01, 0.99),
)
def test_split_is_a_sorted_disjoint_partition(num_samples, seed, fraction):
    a, b = split_indices(num_samples, seed, fraction)
    assert a == sorted(a) and b == sorted(b)
    assert not set(a) & set(b)
    assert sorted(a + b) == list(range(num_samples))
    assert len(a) == min(max(math.floor(num_samples * fraction), 1), num_samples - 1)
    assert all(isinstance(i, int) for i in a + b)


@pytest.mark.parametrize(
    ("num_samples", "fraction", "size_a"),
    [(10, 0.5, 5), (11, 0.5, 5), (2, 0.5, 1), (10, 0.3, 3), (10, 0.01, 1), (10, 0.99, 9)],
)
def test_sizes(num_samples, fraction, size_a):
    a, b = split_indices(num_samples, seed=0, fraction=fraction)
    assert (len(a), len(b)) == (size_a, num_samples - size_a)


def test_deterministic_per_seed_and_differs_across_seeds():
    assert split_indices(100, 7) == split_indices(100, 7)
    assert split_indices(100, 7) != split_indices(100, 8)


def test_does_not_touch_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    split_indices(50, 3)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((1, 0), "need at least 2"),
        ((0, 0), "need at least 2"),
        ((10, 0, 0.0), "fraction must be strictly between 0 and 1"),
        ((10, 0, 1.0), "fraction must be strictly between 0 and 1"),
        ((10, 1.5), "seed must be an int"),
    ],
)
def test_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        split_indices(*args)


def test_json_round_trip(tmp_path):
    a, b = split_indices(20, seed=5)
    path = tmp_path / "run" / "split.json"
    save_split(path, a, b, seed=5, num_samples=20)
    loaded_a, loaded_b, meta = load_split(path)
    assert (loaded_a, loaded_b) == (a, b)
    assert meta == {"seed": 5, "num_samples": 20}
    text = path.read_text()
    assert f'"train_a": {json.dumps(a)}' in text  # one readable line per half
    assert json.loads(text)["format"] == "autodeeplab-split"
    assert [p.name for p in path.parent.iterdir()] == ["split.json"]  # no temp file left
    assert load_split(path, num_samples=20)[0] == a


def test_save_rejects_a_bad_split(tmp_path):
    path = tmp_path / "split.json"
    with pytest.raises(ValueError, match="appears twice"):
        save_split(path, [0, 1], [1, 2], seed=0, num_samples=3)
    assert not path.exists()


def _valid():
    return {
        "format": "autodeeplab-split",
        "version": 1,
        "seed": 0,
        "num_samples": 4,
        "train_a": [0, 2],
        "train_b": [1, 3],
    }


def _with(**changes):
    data = _valid()
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"seed": 0, "num_samples": 4, "train_a": [0,', "not valid JSON"),
        ("[0, 1]", "expected a JSON object, got list"),
        (_with(format="other"), "'format' is 'other'"),
        (_with(version=2), "split version 2 is not supported"),
        (_with(train_b=None), "missing key 'train_b'"),
        (_with(seed="0"), "'seed' must be an int"),
        (_with(num_samples=4.0), "'num_samples' must be an int"),
        (_with(train_a=[0, 1], train_b=[1, 3]), "index 1 appears twice"),
        (_with(train_a=[0, 4]), "index 4, outside \\[0, 4\\)"),
        (_with(train_a=[-1, 0]), "index -1, outside"),
        (_with(train_a=[0, "2"]), "holds '2'; indices must be integers"),
        (_with(train_a=[0, True]), "holds True; indices must be integers"),
        (_with(train_a=[]), "'train_a' must be a non-empty list"),
        (_with(train_b={"1": 3}), "'train_b' must be a non-empty list"),
    ],
)
def test_malformed_files_name_the_file(tmp_path, text, message):
    path = tmp_path / "split.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        load_split(path)
    assert str(info.value).startswith(str(path))
    assert "delete it to draw a new split" in str(info.value)
    assert "\n" not in str(info.value)


def test_binary_file(tmp_path):
    path = tmp_path / "split.json"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match=re.escape(f"{path}: not a text file")):
        load_split(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError, match=re.escape(f"{path}: split file not found")):
        load_split(path)


def test_num_samples_mismatch(tmp_path):
    path = tmp_path / "split.json"
    path.write_text(_with())
    with pytest.raises(ValueError, match="split made for 4 samples, but the dataset has 10"):
        load_split(path, num_samples=10)

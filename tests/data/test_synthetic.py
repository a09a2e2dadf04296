import numpy as np
import pytest
import torch

from autodeeplab.data import (
    MEAN,
    STD,
    SyntheticDataset,
    build_dataset,
    dataset_info,
    denormalize,
    normalize,
)
from autodeeplab.data.synthetic import CLASS_NAMES, PALETTE, SPLITS
from autodeeplab.metrics import IGNORE_INDEX


def _equal(a, b):
    return torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# --- determinism ----------------------------------------------------------------------------


def test_same_sample_twice_and_across_instances():
    ds = SyntheticDataset("train", size=48, seed=3)
    other = SyntheticDataset("train", size=48, seed=3)
    assert _equal(ds[5], ds[5])
    assert _equal(ds[5], other[5])


def test_independent_of_access_order_and_global_rng():
    forward = SyntheticDataset("val", num_samples=6, size=32, seed=1)
    first = [forward[i] for i in range(6)]
    torch.manual_seed(123)
    np.random.seed(123)
    backward = SyntheticDataset("val", num_samples=6, size=32, seed=1)
    last = [backward[i] for i in reversed(range(6))][::-1]
    assert all(_equal(a, b) for a, b in zip(first, last, strict=True))
    assert _equal(forward[-1], forward[5])


def test_does_not_touch_global_rng():
    torch.manual_seed(0)
    np.random.seed(0)
    expected = (torch.rand(3), np.random.rand(3))
    torch.manual_seed(0)
    np.random.seed(0)
    SyntheticDataset(size=32)[0]
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])


def test_seeds_and_splits_differ():
    a = SyntheticDataset("train", size=32, seed=0)[0]
    b = SyntheticDataset("train", size=32, seed=1)[0]
    c = SyntheticDataset("val", size=32, seed=0)[0]
    d = SyntheticDataset("test", size=32, seed=0)[0]
    assert not torch.equal(a[0], b[0]) and not torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])
    assert not torch.equal(c[0], d[0])


# --- shapes, dtypes, contents ---------------------------------------------------------------


@pytest.mark.parametrize("size", [64, (65, 97), (33, 33), (97, 40), 8])
def test_shapes_and_dtypes(size):
    h, w = (size, size) if isinstance(size, int) else size
    ds = SyntheticDataset("train", num_samples=3, size=size)
    for i in range(3):
        image, mask = ds[i]
        assert image.shape == (3, h, w) and image.dtype == torch.float32
        assert mask.shape == (h, w) and mask.dtype == torch.int64
        assert int(mask.min()) >= 0 and int(mask.max()) < ds.num_classes
        raw_image, raw_mask = ds.raw(i)
        assert raw_image.shape == (h, w, 3) and raw_image.dtype == np.uint8
        assert raw_mask.shape == (h, w)


def test_default_lengths_and_override():
    assert [len(SyntheticDataset(s)) for s in SPLITS] == [64, 32, 32]
    assert len(SyntheticDataset("val", num_samples=5)) == 5
    with pytest.raises(IndexError):
        SyntheticDataset("val", num_samples=5)[5]


def test_metadata():
    ds = SyntheticDataset()
    assert ds.num_classes == len(CLASS_NAMES) == len(PALETTE) == 8
    assert ds.class_names[0] == "background"
    assert len(set(PALETTE)) == len(PALETTE)
    assert ds.ignore_index == IGNORE_INDEX == 255


def test_every_class_appears_and_objects_per_image():
    ds = SyntheticDataset("train", num_samples=64, size=64)
    counts = np.zeros(ds.num_classes, dtype=np.int64)
    for i in range(len(ds)):
        mask = ds.raw(i)[1]
        present = np.unique(mask)
        assert 0 in present and len(present) >= 2  # background + at least one object
        counts += np.bincount(mask.ravel(), minlength=ds.num_classes)
    assert (counts > 0).all()
    foreground = counts[1:] / counts[1:].sum()
    # Roughly balanced: every foreground class holds 1/7 of the pixels within a factor of 2.
    assert foreground.min() > 0.5 / 7 and foreground.max() < 2.0 / 7


def _class_pixels(split, num_samples):
    ds = SyntheticDataset(split, num_samples=num_samples, size=64)
    pixels = {c: [] for c in range(1, ds.num_classes)}
    for i in range(len(ds)):
        image, mask = ds.raw(i)
        for c in pixels:
            pixels[c].append(image[mask == c])
    return {c: np.concatenate(v) for c, v in pixels.items()}


def test_colour_alone_does_not_give_the_class():
    train, val = _class_pixels("train", 64), _class_pixels("val", 32)

    # Every foreground class spans most of the colour range: the mean colours of all classes
    # lie within a small fraction of it (channel values are uniform in [30, 225]).
    means = np.stack([train[c].mean(0) for c in train])
    spread = np.linalg.norm(means[:, None] - means[None], axis=-1).max()
    assert spread < 60

    # A colour-only classifier (per-class histograms over 8x8x8 colour bins) fit on train
    # does no better than chance (1/7) on held-out foreground pixels by much.
    def bins(x):
        return (x // 32).astype(np.int64) @ np.array([64, 8, 1])

    hist = np.zeros((512, 8))
    for c, x in train.items():
        np.add.at(hist[:, c], bins(x), 1.0)
    hist /= hist.sum(0, keepdims=True) + 1e-12
    hits = sum(int((hist[bins(x)].argmax(1) == c).sum()) for c, x in val.items())
    total = sum(len(x) for x in val.values())
    assert hits / total < 0.3


# --- normalisation and transform ------------------------------------------------------------


def test_normalize_round_trip_and_constants():
    image, _ = SyntheticDataset(size=(33, 20)).raw(0)
    x = normalize(image)
    assert x.shape == (3, 33, 20) and x.dtype == torch.float32
    assert np.array_equal(denormalize(x), image)
    expected = (image[5, 7] / 255.0 - np.array(MEAN)) / np.array(STD)
    np.testing.assert_allclose(x[:, 5, 7].numpy(), expected, rtol=1e-5)
    ds = SyntheticDataset(size=(33, 20))
    assert torch.equal(ds[0][0], x)


def test_normalize_rejects_non_uint8():
    with pytest.raises(ValueError, match="uint8"):
        normalize(np.zeros((4, 4, 3), dtype=np.float32))


def test_transform_is_applied_before_normalisation():
    def flip(image, mask):
        return image[:, ::-1], mask[:, ::-1]

    plain = SyntheticDataset(size=(20, 30))
    flipped = SyntheticDataset(size=(20, 30), transform=flip)
    assert torch.equal(flipped[2][0], plain[2][0].flip(-1))
    assert torch.equal(flipped[2][1], plain[2][1].flip(-1))


def test_transform_with_mismatched_mask_raises():
    ds = SyntheticDataset(size=16, transform=lambda im, m: (im, m[:8]))
    with pytest.raises(ValueError, match="transform returned a mask of shape"):
        ds[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": "training"}, "unknown split 'training' for dataset 'synthetic'; use one of: "),
        ({"size": 4}, "size must be"),
        ({"size": (64, 64, 3)}, "size must be"),
        ({"seed": -1}, "seed must be a non-negative int"),
        ({"num_samples": 0}, "num_samples must be a positive int"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SyntheticDataset(**kwargs)


# --- build_dataset / dataset_info -----------------------------------------------------------


def test_build_dataset_synthetic():
    ds = build_dataset("synthetic", "val", size=(40, 24), seed=2, num_samples=3)
    assert isinstance(ds, SyntheticDataset) and len(ds) == 3
    assert ds[0][0].shape == (3, 40, 24)
    assert _equal(ds[1], SyntheticDataset("val", num_samples=3, size=(40, 24), seed=2)[1])


def test_build_dataset_unknown_name():
    with pytest.raises(ValueError) as info:
        build_dataset("foo:bar", "train")
    assert str(info.value).startswith("unknown dataset 'foo'; use one of: synthetic")


def test_build_dataset_bad_split():
    with pytest.raises(ValueError) as info:
        build_dataset("synthetic", "training")
    assert str(info.value) == (
        "unknown split 'training' for dataset 'synthetic'; use one of: train, val, test"
    )


def test_synthetic_takes_no_argument():
    with pytest.raises(ValueError, match="dataset 'synthetic' takes no argument"):
        build_dataset("synthetic:data/x", "train")
    with pytest.raises(ValueError, match="takes no argument"):
        dataset_info("synthetic:")


def test_dataset_info_matches_the_built_dataset():
    # The datasets on disk check the same against their own tiny roots (test_cityscapes.py,
    # test_voc.py, test_camvid.py, test_ade20k.py, test_folder.py); synthetic needs none.
    info = dataset_info("synthetic")
    ds = build_dataset("synthetic", "train")
    assert tuple(info) == (ds.num_classes, ds.class_names, ds.palette)

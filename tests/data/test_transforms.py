import pickle

import numpy as np
import pytest
import torch

from autodeeplab.data.transforms import Pipeline, train_transform, val_transform
from autodeeplab.metrics import IGNORE_INDEX


def _blocks(height, width, seed=0, block=8):
    """Grey image of 8x8 blocks at 30 or 220, and the mask (R > 127) derived from it."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 2, size=(height // block + 1, width // block + 1))
    on = np.kron(cells, np.ones((block, block), dtype=np.int64))[:height, :width].astype(bool)
    image = np.where(on, 220, 30).astype(np.uint8)[:, :, None].repeat(3, axis=2)
    return image, (image[..., 0] > 127).astype(np.uint8)


def _uniform_3x3(mask):
    """Pixels whose 3x3 neighbourhood holds one value: resampling may move a border by 1 px."""
    h, w = mask.shape
    out = np.zeros_like(mask, dtype=bool)
    core = mask[1 : h - 1, 1 : w - 1]
    same = np.ones_like(core, dtype=bool)
    for dy in range(-1, 2):
        for dx in range(-1, 2):
            same &= mask[1 + dy : h - 1 + dy, 1 + dx : w - 1 + dx] == core
    out[1 : h - 1, 1 : w - 1] = same
    return out


@pytest.mark.parametrize("shape", [(48, 80), (20, 24), (130, 70)])
def test_train_transform_keeps_image_and_mask_aligned(shape):
    torch.manual_seed(0)
    transform = train_transform(40)
    image, mask = _blocks(*shape)
    checked = 0
    for _ in range(12):
        out_image, out_mask = transform(image, mask)
        assert out_image.shape == (40, 40, 3) and out_image.dtype == np.uint8
        assert out_mask.shape == (40, 40) and out_mask.dtype == np.uint8
        assert set(np.unique(out_mask).tolist()) <= {0, 1, IGNORE_INDEX}
        derived = (out_image[..., 0] > 127).astype(np.uint8)
        interior = _uniform_3x3(out_mask) & (out_mask != IGNORE_INDEX)
        assert np.array_equal(derived[interior], out_mask[interior])
        checked += int(interior.sum())
    assert checked > 12 * 40 * 40 // 4  # the comparison covered a good share of pixels


def test_train_transform_pads_mask_with_ignore():
    transform = train_transform((24, 32), scale=(1.0, 1.0))
    image = np.full((10, 12, 3), 200, dtype=np.uint8)
    mask = np.ones((10, 12), dtype=np.uint8)
    out_image, out_mask = transform(image, mask)
    assert out_image.shape == (24, 32, 3)
    assert int((out_mask == 1).sum()) == 10 * 12
    assert int((out_mask == IGNORE_INDEX).sum()) == 24 * 32 - 10 * 12
    pad = next(t for t in transform.compose.transforms if type(t).__name__ == "PadIfNeeded")
    assert (pad.fill, pad.fill_mask) == (0, IGNORE_INDEX)


def test_train_transform_scales_within_range():
    torch.manual_seed(0)
    transform = train_transform(8, scale=(0.5, 2.0))
    image, mask = _blocks(64, 64)
    scale = next(t for t in transform.compose.transforms if type(t).__name__ == "RandomScale")
    assert scale.scale_limit == pytest.approx((-0.5, 1.0))
    out_image, out_mask = transform(image, mask)
    assert out_image.shape == (8, 8, 3) and out_mask.shape == (8, 8)


def test_train_transform_is_reproducible_under_torch_seed_and_differs_across_seeds():
    image, mask = _blocks(64, 96)

    def run(seed):
        torch.manual_seed(seed)
        transform = train_transform(32)
        return [transform(image, mask) for _ in range(4)]

    a, b, c = run(0), run(0), run(1)
    assert all(
        np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True)
    )
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(a, c, strict=True))


def test_pipeline_pickles_and_works_after_unpickling():
    transform = pickle.loads(pickle.dumps(train_transform(16)))
    image, mask = _blocks(30, 30)
    out_image, out_mask = transform(image, mask)
    assert out_image.shape == (16, 16, 3) and out_mask.shape == (16, 16)
    assert isinstance(transform, Pipeline)


def test_val_transform_is_identity_or_longest_side_resize():
    image, mask = _blocks(40, 100)
    out_image, out_mask = val_transform()(image, mask)
    assert np.array_equal(out_image, image) and np.array_equal(out_mask, mask)
    out_image, out_mask = val_transform(longest_side=50)(image, mask)
    assert out_image.shape == (20, 50, 3) and out_mask.shape == (20, 50)
    assert set(np.unique(out_mask).tolist()) <= {0, 1}  # nearest for the mask


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: train_transform(0), "crop must be a positive int"),
        (lambda: train_transform((8, 8, 8)), "crop must be a positive int"),
        (lambda: train_transform(8, scale=(2.0, 1.0)), "0 < low <= high"),
        (lambda: train_transform(8, scale=(0.0, 1.0)), "0 < low <= high"),
        (lambda: val_transform(longest_side=0), "longest_side must be a positive int"),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()

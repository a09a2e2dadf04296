import math

import numpy as np
import pytest
import torch
import torch.distributed as dist

from autodeeplab.metrics import IGNORE_INDEX, ConfusionMatrix


def _reference(pred, target, num_classes, ignore_index):
    """Brute-force matrix and mmseg metrics, one pixel at a time in plain python."""
    m = [[0] * num_classes for _ in range(num_classes)]
    for p, t in zip(pred.ravel().tolist(), target.ravel().tolist(), strict=True):
        if t != ignore_index:
            m[t][p] += 1
    iou, acc = [], []
    for c in range(num_classes):
        tp = m[c][c]
        row = sum(m[c])
        col = sum(m[r][c] for r in range(num_classes))
        iou.append(tp / (row + col - tp) if row + col - tp else math.nan)
        acc.append(tp / row if row else math.nan)
    total = sum(map(sum, m))
    correct = sum(m[c][c] for c in range(num_classes))
    return {
        "matrix": m,
        "pixel_acc": correct / total,
        "miou": float(np.nanmean(iou)),
        "mean_acc": float(np.nanmean(acc)),
        "iou": iou,
        "acc": acc,
    }


@pytest.mark.parametrize("case", range(6))
def test_against_brute_force_reference(case):
    rng = np.random.default_rng(case)
    num_classes = int(rng.integers(2, 7))
    cm = ConfusionMatrix(num_classes)
    preds, targets = [], []
    for _ in range(int(rng.integers(1, 4))):  # several updates accumulate
        shape = (int(rng.integers(1, 3)), int(rng.integers(1, 9)), int(rng.integers(1, 9)))
        pred = rng.integers(0, num_classes, shape)
        target = rng.integers(0, num_classes, shape)
        target[rng.random(shape) < 0.2] = IGNORE_INDEX
        cm.update(torch.from_numpy(pred), torch.from_numpy(target).to(torch.uint8))
        preds.append(pred.ravel())
        targets.append(target.ravel())
    ref = _reference(np.concatenate(preds), np.concatenate(targets), num_classes, IGNORE_INDEX)
    assert cm.matrix.dtype == torch.int64
    assert cm.matrix.tolist() == ref["matrix"]
    out = cm.compute()
    for key in ("pixel_acc", "miou", "mean_acc"):
        assert isinstance(out[key], float)
        assert out[key] == pytest.approx(ref[key], nan_ok=True)
    np.testing.assert_allclose(out["iou"], ref["iou"], rtol=1e-12)
    np.testing.assert_allclose(out["acc"], ref["acc"], rtol=1e-12)


def test_hand_computed_three_classes():
    target = torch.tensor([0, 0, 1, 1, 2, 2, IGNORE_INDEX, 0])
    pred = torch.tensor([0, 1, 1, 1, 0, 2, 2, 0])
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    assert cm.matrix.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 1]]
    out = cm.compute()
    assert out["iou"] == pytest.approx([2 / 4, 2 / 3, 1 / 2])
    assert out["acc"] == pytest.approx([2 / 3, 2 / 2, 1 / 2])
    assert out["miou"] == pytest.approx(5 / 9)
    assert out["mean_acc"] == pytest.approx(13 / 18)
    assert out["pixel_acc"] == pytest.approx(5 / 7)


def test_nan_conventions():
    # class 1: only predicted (IoU 0, Acc nan); class 2: only in target (IoU 0, Acc 0);
    # class 3: absent from both (IoU nan, Acc nan, left out of the means).
    target = torch.tensor([0, 0, 2])
    pred = torch.tensor([0, 1, 1])
    cm = ConfusionMatrix(4)
    cm.update(pred, target)
    out = cm.compute()
    assert out["iou"][:3] == pytest.approx([0.5, 0.0, 0.0])
    assert math.isnan(out["iou"][3])
    assert out["acc"][0] == pytest.approx(0.5) and out["acc"][2] == 0.0
    assert math.isnan(out["acc"][1]) and math.isnan(out["acc"][3])
    assert out["miou"] == pytest.approx(0.5 / 3)
    assert out["mean_acc"] == pytest.approx(0.25)


def test_empty_matrix_gives_nan_without_error():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([1, 2]), torch.tensor([IGNORE_INDEX, IGNORE_INDEX]))
    out = cm.compute()
    assert math.isnan(out["miou"]) and math.isnan(out["mean_acc"])
    assert math.isnan(out["pixel_acc"])
    assert all(math.isnan(x) for x in out["iou"] + out["acc"])


def test_reset_and_custom_ignore_index():
    cm = ConfusionMatrix(2, ignore_index=-1)
    cm.update(torch.tensor([[0, 1], [1, 1]]), torch.tensor([[0, -1], [1, 0]]))
    assert cm.matrix.tolist() == [[1, 1], [0, 1]]
    cm.reset()
    assert cm.matrix.tolist() == [[0, 0], [0, 0]]


@pytest.mark.parametrize(
    ("pred", "target", "message"),
    [
        ([0, 1], [0, 3], r"target holds value\(s\) \[3\] outside \[0, 3\)"),
        ([0, 1], [0, -2], r"target holds value\(s\) \[-2\] outside \[0, 3\)"),
        ([0, 7], [0, 1], r"pred holds value\(s\) \[7\] outside \[0, 3\)"),
    ],
)
def test_out_of_range_values(pred, target, message):
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=message):
        cm.update(torch.tensor(pred), torch.tensor(target))
    assert cm.matrix.sum() == 0


def test_pred_at_ignored_pixels_is_not_checked():
    cm = ConfusionMatrix(3)
    target = torch.tensor([0, IGNORE_INDEX])
    cm.update(target.clone(), target)  # pred = target carries 255 where ignored
    assert cm.matrix.tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 0]]


def test_bad_inputs():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"pred shape \(2, 3\) differs from target shape"):
        cm.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="integer class indices"):
        cm.update(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="ignore_index must be an int outside"):
        ConfusionMatrix(3, ignore_index=1)
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        ConfusionMatrix(0)


def test_all_reduce_is_a_noop_without_distributed():
    assert not dist.is_initialized()
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    cm.all_reduce()
    assert cm.matrix.tolist() == [[1, 1], [0, 0]]


# The sum over a live group of two gloo ranks: tests/test_distributed.py (its helpers test).


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_matrix_follows_the_input_device():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 1], device="cuda"), torch.tensor([0, 2], device="cuda"))
    assert cm.matrix.device.type == "cuda"
    assert cm.compute()["pixel_acc"] == pytest.approx(0.5)


def test_format_table():
    cm = ConfusionMatrix(3)
    cm.update(
        torch.tensor([0, 1, 1, 1, 0, 2, 2, 0]), torch.tensor([0, 0, 1, 1, 2, 2, IGNORE_INDEX, 0])
    )
    table = cm.format_table(["road", "sidewalk", "building"])
    lines = table.splitlines()
    assert lines[0].split() == ["Class", "IoU", "Acc"]
    assert lines[2].split() == ["road", "50.00", "66.67"]
    assert lines[3].split() == ["sidewalk", "66.67", "100.00"]
    assert lines[4].split() == ["building", "50.00", "50.00"]
    assert lines[-1].split() == ["aAcc", "71.43", "mIoU", "55.56", "mAcc", "72.22"]
    with pytest.raises(ValueError, match="got 2 class names for 3 classes"):
        cm.format_table(["a", "b"])


def test_format_table_shows_nan():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0]), torch.tensor([0]))
    assert cm.format_table(["a", "b"]).splitlines()[3].split() == ["b", "nan", "nan"]

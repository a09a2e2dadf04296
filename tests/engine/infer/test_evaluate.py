"""Evaluation: metrics against a brute-force reference, slide/whole/TTA inference, chance level."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from autodeeplab.checkpoint import CheckpointError, save_checkpoint
from autodeeplab.engine.infer.evaluate import (
    chance_level,
    evaluate,
    evaluate_checkpoint,
    predict_probabilities,
    slide_logits,
)
from autodeeplab.model import build_model, load_trained_model

K = 5
IGNORE = 255


def _brute_force_iou(pred: torch.Tensor, target: torch.Tensor, k: int) -> list[float]:
    """IoU per class by counting pixel by pixel in Python (nan for an empty union)."""
    tp, fp, fn = [0] * k, [0] * k, [0] * k
    for p, t in zip(pred.flatten().tolist(), target.flatten().tolist(), strict=True):
        if t == IGNORE:
            continue
        if p == t:
            tp[t] += 1
        else:
            fp[p] += 1
            fn[t] += 1
    unions = [tp[c] + fp[c] + fn[c] for c in range(k)]
    return [tp[c] / unions[c] if unions[c] else math.nan for c in range(k)]


def test_evaluate_matches_brute_force_with_ignore_pixels() -> None:
    gen = torch.Generator().manual_seed(3)
    # nn.Identity as the "network": the input is its own logits, so the prediction is known.
    logits = torch.randn(3, K, 9, 11, generator=gen)
    target = torch.randint(0, K, (3, 9, 11), generator=gen)
    target[torch.rand(3, 9, 11, generator=gen) < 0.2] = IGNORE
    target[target == 4] = 3  # class 4 is never a target, only (sometimes) predicted
    batches = [(logits[:2], target[:2]), (logits[2:], target[2:])]

    cm = evaluate(nn.Identity(), batches, K, "cpu")
    result = cm.compute()

    pred = logits.argmax(1)
    expected = _brute_force_iou(pred, target, K)
    assert cm.matrix.dtype == torch.int64
    assert int(cm.matrix.sum()) == int((target != IGNORE).sum())
    for got, want in zip(result["iou"], expected, strict=True):
        assert got == pytest.approx(want, nan_ok=True)
    assert result["miou"] == pytest.approx(sum(expected) / K)  # class 4: IoU 0, counted
    valid = target != IGNORE
    assert result["pixel_acc"] == pytest.approx(float((pred == target)[valid].float().mean()))


def test_evaluate_restores_training_mode() -> None:
    model = nn.Sequential(nn.Conv2d(3, K, 1), nn.BatchNorm2d(K)).train()
    evaluate(model, [(torch.randn(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))], K, "cpu")
    assert model.training


@pytest.fixture
def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    model = build_model(
        "auto-deeplab-s", 3, filter_multiplier=2, aspp_channels=8, decoder_channels=8
    )
    return model.eval()


def test_slide_equals_whole_on_an_input_smaller_than_the_window(tiny_model: nn.Module) -> None:
    x = torch.randn(2, 3, 20, 27)
    with torch.no_grad():
        whole = tiny_model(x)
        slide = slide_logits(tiny_model, x, window=32)
    assert torch.equal(slide, whole)


def test_slide_averages_overlaps_exactly_for_a_pointwise_model() -> None:
    torch.manual_seed(0)
    model = nn.Conv2d(3, K, 1)  # per pixel: every window sees the same value at a pixel
    x = torch.randn(1, 3, 23, 30)
    with torch.no_grad():
        got = slide_logits(model, x, window=8, stride=5)
        want = model(x)
    torch.testing.assert_close(got, want)


def test_single_scale_without_flip_is_the_softmax_of_whole_inference(tiny_model: nn.Module) -> None:
    x = torch.randn(1, 3, 33, 29)
    with torch.no_grad():
        want = torch.softmax(tiny_model(x), 1)
    got = predict_probabilities(tiny_model, x, scales=[1.0], flip=False)
    torch.testing.assert_close(got, want)


def _ramp_image(height: int, width: int) -> torch.Tensor:
    """An image ``(1, 3, H, W)`` whose channels are affine in (row, column), none symmetric.

    Bilinear resizing with align_corners=True reproduces an affine function exactly, so a
    resize down and back gives the image again, while a mirror image differs from it.
    """
    rows = torch.linspace(0, 1, height).view(height, 1)
    cols = torch.linspace(0, 1, width).view(1, width)
    channels = [2 * cols - rows, 0.5 - cols + 0.3 * rows, 3 * cols - 1]
    return torch.stack([c.expand(height, width) for c in channels]).unsqueeze(0)


class _ColumnLogits(nn.Module):
    """Logits that depend on the column only, not on the image: class 0 gets ``r_j``, a ramp
    from 0 on the left to 3 on the right; class 1 gets 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(0, 3, x.shape[-1]).expand(x.shape[0], 1, *x.shape[-2:])
        return torch.cat([ramp, torch.zeros_like(ramp)], dim=1)


def test_flip_averages_the_prediction_and_the_unflipped_mirror_prediction() -> None:
    # Class 0's probability at column j is sigmoid(r_j) unflipped and sigmoid(r_{W-1-j}) for
    # the mirror image flipped back: the average is symmetric although each term is not.
    width = 9
    ramp = torch.linspace(0, 3, width)
    want = (torch.sigmoid(ramp) + torch.sigmoid(ramp.flip(0))) / 2
    got = predict_probabilities(_ColumnLogits(), torch.zeros(1, 3, 4, width), flip=True)
    torch.testing.assert_close(got[0, 0], want.expand(4, width))
    torch.testing.assert_close(got[0, 1], 1 - want.expand(4, width))
    # Without flip, the column ramp stays one-sided.
    plain = predict_probabilities(_ColumnLogits(), torch.zeros(1, 3, 4, width), flip=False)
    torch.testing.assert_close(plain[0, 0], torch.sigmoid(ramp).expand(4, width))


@pytest.mark.parametrize(
    ("scales", "flip"), [((1.0,), True), ((0.5, 0.75, 1.25, 2.0), False), ((0.5, 1.5), True)]
)
def test_flip_and_scales_are_exact_on_an_asymmetric_ramp(scales, flip) -> None:
    # A 1x1 conv commutes with mirroring, and bilinear resizing is exact on an affine image:
    # every flipped-back, resized-back term equals the plain prediction. The image is not
    # mirror-symmetric, so a missing un-flip (or a resize back that shifts or transposes)
    # changes the result.
    torch.manual_seed(0)
    model = nn.Conv2d(3, K, 1)
    x = _ramp_image(17, 21)
    assert not torch.allclose(x, x.flip(-1))
    with torch.no_grad():
        want = torch.softmax(model(x), 1)
    assert not torch.allclose(want, want.flip(-1), atol=1e-3)
    got = predict_probabilities(model, x, scales=scales, flip=flip)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("mode", "scales", "flip"),
    [("whole", (1.0,), False), ("slide", (1.0,), True), ("whole", (0.5, 1.25), True)],
)
def test_output_shape_for_odd_sizes(tiny_model: nn.Module, mode, scales, flip) -> None:
    x = torch.randn(2, 3, 37, 45)
    prob = predict_probabilities(tiny_model, x, mode=mode, scales=scales, flip=flip, window=24)
    assert prob.shape == (2, 3, 37, 45)
    torch.testing.assert_close(prob.sum(1), torch.ones(2, 37, 45))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "tiles"}, "unknown inference mode"),
        ({"scales": [0.0]}, "scales must be positive"),
        ({"mode": "slide", "window": None}, "needs a positive --window"),
    ],
)
def test_bad_inference_options_raise_one_line(tiny_model, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        predict_probabilities(tiny_model, torch.randn(1, 3, 8, 8), **kwargs)


def test_chance_level_by_hand() -> None:
    # 10 valid pixels: class 0 x6, class 1 x3, class 2 x1; two ignored; K = 4 (class 3 absent).
    target = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 1, 1, 2, IGNORE, IGNORE]])
    chance = chance_level([(None, target)], 4)
    assert chance["majority_class"] == 0
    assert chance["majority_miou"] == pytest.approx((6 / 10) / 3)
    # Uniform: TP_k = n_k/4, union_k = n_k + 10/4 - n_k/4.
    ious = [(n / 4) / (n + 2.5 - n / 4) for n in (6, 3, 1, 0)]
    assert chance["uniform_miou"] == pytest.approx(sum(ious) / 4)
    assert chance["chance_miou"] == max(chance["majority_miou"], chance["uniform_miou"])


@pytest.mark.slow
def test_evaluate_checkpoint_writes_metrics_next_to_it(trained_run: Path) -> None:
    ckpt = trained_run / "checkpoints" / "best.pt"
    metrics = evaluate_checkpoint(ckpt, device="cpu")
    written = json.loads((trained_run / "checkpoints" / "metrics.json").read_text())
    assert written["miou"] == metrics["miou"]
    assert written["num_images"] == 4  # the run's val_samples
    assert set(written["per_class"]) == {
        "background",
        "disc",
        "square",
        "triangle",
        "ring",
        "cross",
        "stripes",
        "checkerboard",
    }
    matrix = torch.tensor(written["confusion_matrix"])
    assert int(matrix.sum()) == 4 * 32 * 32
    # The stored best score is what evaluating the stored weights gives.
    model, state = load_trained_model(ckpt)
    assert state["metrics"]["val_miou"] == pytest.approx(metrics["miou"])


def test_evaluating_a_search_checkpoint_names_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "epoch_0001.pt"
    save_checkpoint(path, {"epoch": 1, "model": {}}, "search")
    with pytest.raises(CheckpointError, match=r"'search' checkpoint, not a trained network"):
        evaluate_checkpoint(path)


def test_an_incomplete_train_checkpoint_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"model": {}, "config": {}, "class_names": []}, "train")
    with pytest.raises(CheckpointError, match=r"best.pt: incomplete checkpoint, it has no "):
        load_trained_model(path)

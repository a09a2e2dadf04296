"""The collapse detector on synthetic train curves and confusion matrices."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from autodeeplab.engine.compare.collapse import collapse_reasons, prior_entropy, read_run_health

#: A healthy from-scratch run: about 3.6 falling to about 0.6, with noise.
HEALTHY = [3.0 * math.exp(-k / 5) + 0.6 + 0.05 * (-1) ** k for k in range(60)]


def _confusion(pred_share: list[float], truth: list[float], hit: float) -> list[list[float]]:
    """1000 pixels: ``hit`` of each class right, the rest spread by ``pred_share``."""
    m = [[0.0] * len(truth) for _ in truth]
    for i, t in enumerate(truth):
        right = hit * t * 1000
        m[i][i] += right
        for j, p in enumerate(pred_share):
            m[i][j] += (t * 1000 - right) * p
    return m


def test_a_healthy_run_is_not_collapsed() -> None:
    truth = [0.4, 0.3, 0.2, 0.1]
    cm = _confusion(truth, truth, hit=0.7)
    assert collapse_reasons(HEALTHY, 0.5, cm) == []


def test_a_loss_that_did_not_fall() -> None:
    flat = [3.0 + 0.05 * (-1) ** k for k in range(40)]
    assert collapse_reasons(flat) == ["loss_did_not_fall"]
    assert collapse_reasons([3.0, 3.0, 3.0]) == []  # too short a log to judge


def test_divergence_then_recovery() -> None:
    spiked = HEALTHY[:20] + [4.5, 6.0, 3.5] + HEALTHY[20:]
    assert collapse_reasons(spiked) == ["diverged"]
    # The first window's own noise is not a blow-up: only rises after the first tenth count.
    assert collapse_reasons([3.0, 3.1] + HEALTHY[2:]) == []


def test_all_background_prediction_is_at_chance_and_one_class() -> None:
    truth = [0.3, 0.3, 0.2, 0.2]  # background 30%: the majority class's mIoU is 0.3 / 4
    background = _confusion([1.0, 0.0, 0.0, 0.0], truth, hit=0.0)
    assert collapse_reasons(HEALTHY, 0.3 / 4, background) == ["at_chance", "one_class"]
    # A dataset that is 90% one class: predicting it a lot is no collapse by itself.
    skewed = [0.9, 0.05, 0.05]
    cm = _confusion([0.95, 0.03, 0.02], skewed, hit=0.5)
    assert "one_class" not in collapse_reasons(HEALTHY, 0.5, cm)


def test_run_health_reads_a_run_folder(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    (folder / "train").mkdir(parents=True)
    records = [{"event": "train", "iter": 10 * (k + 1), "loss": 3.0} for k in range(8)]
    records.insert(4, {"event": "eval", "iter": 40, "val_miou": 0.01})
    records.append({"event": "train", "iter": 90, "loss": None})  # every update skipped
    text = "\n".join(json.dumps(r) for r in records) + "\n{cut by a kill"
    (folder / "train" / "train_log.jsonl").write_text(text, encoding="utf-8")
    truth = [0.5, 0.5]
    metrics = {"miou": 0.25, "confusion_matrix": _confusion([1.0, 0.0], truth, hit=0.0)}
    (folder / "metrics_test.json").write_text(json.dumps(metrics), encoding="utf-8")
    health = read_run_health(folder, "test")
    assert health["collapsed"] and health["logged"]
    assert health["reasons"] == ["loss_did_not_fall", "stalled_at_prior", "at_chance", "one_class"]
    assert health["first_loss"] == health["last_loss"] == 3.0
    empty = read_run_health(tmp_path / "nothing", "test")  # a reused run without its files
    assert not empty["collapsed"] and not empty["logged"] and empty["reasons"] == []


def test_a_run_that_sat_at_the_class_prior() -> None:
    """The all-background plateau: the loss of predicting the class frequencies, for long."""
    truth = [0.5, 0.2, 0.2, 0.1]
    prior = prior_entropy(_confusion(truth, truth, hit=0.0))
    assert prior == pytest.approx(-sum(t * math.log(t) for t in truth))
    cm = _confusion(truth, truth, hit=0.7)
    # 25 of 60 windows on the plateau, then learning: stalled, though it ended well.
    late = [3.0] + [prior + 0.02] * 24 + [prior * 0.9**k for k in range(1, 36)]
    assert collapse_reasons(late, 0.5, cm) == ["stalled_at_prior"]
    # The whole run there: below 0.9 of its first window (no "did not fall"), still stalled.
    flat = [3.0] + [prior + 0.01] * 59
    assert prior + 0.01 < 0.9 * 3.0 and collapse_reasons(flat, 0.5, cm) == ["stalled_at_prior"]
    # A plateau of a few windows is how every run starts.
    assert collapse_reasons([3.0] + [prior] * 5 + [prior * 0.8] * 54, 0.5, cm) == []

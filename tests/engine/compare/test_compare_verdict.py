"""``compare``'s verdict (searched minus random and minus hand-made, signed), ``--size``
and a comparison stopped by a signal mid-retraining, resumed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from autodeeplab.cli import main
from autodeeplab.config import CPU_TRAIN_PRESET, TrainConfig, config_from_dict, load_config
from autodeeplab.data import dataset_info
from autodeeplab.engine.compare.compare import plan_compare, run_compare
from autodeeplab.engine.compare.summary import summarise
from autodeeplab.engine.compare.validate import check_search

from .fakes import COMPARE_TRAIN, compare_argv, compare_config, copy_search, fake_training


def test_summary_averages_the_references_over_their_seeds() -> None:
    # Unequal means, so that a sign error or a swapped pair shows: searched 0.24, random
    # 0.19 (best 0.22), hand-made 0.27 (above the searched one), paper 0.11.
    rows = [("searched", 0.25), ("searched", 0.23), ("random", 0.2), ("random", 0.22)]
    rows += [("random", 0.15), ("handmade", 0.28), ("handmade", 0.26)]
    rows += [("paper", 0.1), ("paper", 0.12)]
    summary = summarise([{"kind": k, "miou": m, "split": "test"} for k, m in rows])
    assert summary["split"] == "test" and summary["reference_seeds"] == 2
    assert summary["searched_mean"] == pytest.approx(0.24)
    assert summary["random_mean"] == pytest.approx(0.19)
    # Sample standard deviation by hand: deviations 0.01, 0.03, -0.04 -> 0.0026 / (3 - 1).
    assert summary["random_std"] == pytest.approx(math.sqrt(0.0013))
    assert summary["random_best"] == pytest.approx(0.22)
    assert summary["handmade"] == pytest.approx(0.27) and summary["paper"] == pytest.approx(0.11)
    assert summary["searched_minus_random"] == pytest.approx(0.05)
    assert summary["searched_minus_handmade"] == pytest.approx(-0.03)


def test_compare_verdict_is_searched_minus_random(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_search_run: Path
) -> None:
    """compare.json and compare.md carry searched minus random (and minus hand-made), signed."""
    search = copy_search(tiny_search_run, tmp_path / "search")
    mious = {
        "searched_seed0": 0.30, "searched_seed1": 0.26, "random0": 0.21, "random1": 0.25,
        "handmade": 0.31, "handmade_seed1": 0.29, "paper": 0.2, "paper_seed1": 0.2,
    }  # fmt: skip
    trained = fake_training(monkeypatch, mious=mious)
    out = tmp_path / "cmp"
    result = run_compare(
        search, compare_config(), out, num_random=2, searched_seeds=2, tolerance=0.5,
        progress=False,
    )  # fmt: skip
    assert trained == list(mious)
    # searched 0.28, random 0.23: +5 points; hand-made 0.30: -2 points.
    assert result.summary["searched_minus_random"] == pytest.approx(0.05)
    assert result.summary["searched_minus_handmade"] == pytest.approx(-0.02)
    saved = json.loads((out / "compare.json").read_text())["summary"]
    assert saved["searched_minus_random"] == pytest.approx(0.05)
    assert saved["searched_minus_handmade"] == pytest.approx(-0.02)
    md = (out / "compare.md").read_text()
    assert "- searched minus random mean: +5.00 points" in md
    assert "- searched minus hand-made: -2.00 points" in md
    assert "- random: mean 23.00, std 2.83, best 25.00" in md


@pytest.mark.slow
def test_compare_size_prices_the_networks_at_that_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_search_run: Path
) -> None:
    """``--size HxW``: Multi-Adds (and the random genotypes matched on them) at HxW, not crop."""
    search = copy_search(tiny_search_run, tmp_path / "search")
    trained = fake_training(monkeypatch)
    out = tmp_path / "cmp"
    assert main(compare_argv(search, out, "--size", "48x96", "--no-score")) == 0
    assert trained == ["searched_seed0", "random0", "handmade", "paper"]
    data = json.loads((out / "compare.json").read_text())
    assert data["size"] == [48, 96] and "Multi-Adds at 48x96" in data["header"]
    # The CLI's config: the CPU preset under the --set's.
    preset = config_from_dict(CPU_TRAIN_PRESET, TrainConfig())
    tcfg = load_config(None, list(COMPARE_TRAIN), base=preset)
    run = check_search(search)
    classes = dataset_info(tcfg.data.spec).num_classes
    at_size = plan_compare(run.genotype, run.config, tcfg, classes, (48, 96), 1, 1, 0.5)
    at_crop = plan_compare(run.genotype, run.config, tcfg, classes, (64, 64), 1, 1, 0.5)
    got = [r["madds"] for r in data["results"]]
    assert got == [e.madds for e in at_size]
    assert got != [e.madds for e in at_crop]


@pytest.mark.slow
def test_compare_stopped_by_a_signal_resumes_the_half_retrained_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_search_run: Path
) -> None:
    """A SIGTERM mid-retraining stops compare with the network's last.pt; a rerun resumes it
    from there (not from scratch) and ends with the weights of an uninterrupted retraining."""
    import os
    import signal

    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook

    import autodeeplab.engine.compare.compare as compare
    from autodeeplab.checkpoint import load_checkpoint
    from autodeeplab.engine.compare.results import entry_config
    from autodeeplab.engine.train.loop import run_train

    search = copy_search(tiny_search_run, tmp_path / "search")
    tcfg = compare_config()
    out = tmp_path / "cmp"
    kwargs = {"num_random": 0, "searched_seeds": 1, "tolerance": 0.5, "progress": False}
    resumes: list[tuple[str, bool]] = []

    def spy(cfg, train_dir, *, resume, progress):
        resumes.append((Path(train_dir).parent.name, bool(resume)))
        return run_train(cfg, train_dir, resume=resume, progress=progress)

    monkeypatch.setattr(compare, "run_train", spy)

    def stop(optimizer, args, kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # in the first step: training stops after it

    handle = register_optimizer_step_post_hook(stop)
    try:
        first = run_compare(search, tcfg, out, **kwargs)
    finally:
        handle.remove()
    half = out / "runs" / "searched_seed0"
    assert first.stopped and first.results == []
    assert not (half / "result.json").is_file() and not (out / "compare.json").exists()
    assert load_checkpoint(half / "train" / "checkpoints" / "last.pt")["iteration"] == 1

    again = run_compare(search, tcfg, out, **kwargs)
    assert not again.stopped
    assert [r["name"] for r in again.results] == ["searched_seed0", "handmade", "paper"]
    assert resumes == [("searched_seed0", False), ("searched_seed0", True),
                       ("handmade", False), ("paper", False)]  # fmt: skip
    resumed = load_checkpoint(half / "train" / "checkpoints" / "last.pt")
    assert resumed["iteration"] == tcfg.train.iters
    # The same network retrained in one go: bitwise the same weights (CPU).
    run = check_search(search)
    classes = dataset_info(tcfg.data.spec).num_classes
    entry = plan_compare(run.genotype, run.config, tcfg, classes, (64, 64), 0, 1, 0.5)[0]
    whole = tmp_path / "whole"
    run_train(entry_config(entry, tcfg, whole), whole / "train", progress=False)
    straight = load_checkpoint(whole / "train" / "checkpoints" / "last.pt")
    assert straight["model"].keys() == resumed["model"].keys()
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name

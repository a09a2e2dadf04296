"""``compare``: the plan (random genotypes at the searched cost, references) and a tiny run."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from autodeeplab.cli import main
from autodeeplab.config import SearchConfig, TrainConfig, load_config
from autodeeplab.engine.compare.compare import handmade_path, plan_compare, run_compare
from autodeeplab.genotype import PAPER_GENOTYPE, Genotype, random_genotype, save_genotype
from conftest import TINY_TRAIN_OVERRIDES, set_flags


def test_handmade_path_is_deeplabv3_like() -> None:
    assert handmade_path(12, 4) == (0, 0, 0, 1, 2, 2, 2, 2, 2, 2, 2, 2)
    assert handmade_path(6, 2) == (0, 0, 0, 1, 1, 1)
    assert handmade_path(3, 4) == (0, 0, 0)


def _searched(layers: int = 6, levels: int = 3) -> Genotype:
    import random

    return random_genotype(random.Random(7), layers, 5, levels)


def _tiny_search(tmp_path: Path) -> Path:
    """A finished search's folder: its genotype (L=3, strides 4-8) and its config.yaml."""
    search = tmp_path / "search"
    search.mkdir()
    save_genotype(_searched(layers=3, levels=2), search / "genotype.json")
    (search / "config.yaml").write_text(
        "model:\n  num_layers: 3\n  strides: [4, 8]\n", encoding="utf-8"
    )
    return search


def test_plan_matches_cost_and_is_reproducible() -> None:
    search_cfg = load_config(None, ["model.num_layers=6", "model.strides=[4,8,16]"])
    tcfg = load_config(None, list(TINY_TRAIN_OVERRIDES), base=TrainConfig())
    searched = _searched()
    plan = plan_compare(searched, search_cfg, tcfg, 8, (64, 64), num_random=4, tolerance=0.1)
    kinds = ["searched"] * 2 + ["random"] * 4 + ["handmade"] * 2 + ["paper"] * 2
    assert [e.kind for e in plan] == kinds
    # The references get the searched network's seeds; each random genotype one seed.
    assert [e.seed for e in plan] == [0, 1] + [0] * 4 + [0, 1, 0, 1]
    assert [e.name for e in plan[6:]] == ["handmade", "handmade_seed1", "paper", "paper_seed1"]
    target = plan[0].madds
    for e in plan[2:6]:
        assert abs(e.madds - target) <= 0.1 * target
        assert e.genotype != searched and e.genotype.num_layers == 6 and max(e.genotype.path) <= 2
    for e in plan[6:8]:
        assert e.genotype.cell == searched.cell and e.genotype.path == handmade_path(6, 3)
    assert plan[8].genotype == plan[9].genotype == PAPER_GENOTYPE
    again = plan_compare(searched, search_cfg, tcfg, 8, (64, 64), num_random=4, tolerance=0.1)
    assert again == plan
    one = plan_compare(searched, search_cfg, tcfg, 8, (64, 64), num_random=4, reference_seeds=1)
    assert [e.name for e in one[6:]] == ["handmade", "paper"] and one[:6] == plan[:6]


def test_summary_averages_the_references_over_their_seeds() -> None:
    from autodeeplab.engine.compare.compare import summarise

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


def _fake_trainer(mious: dict[str, float], calls: list[str]):
    """A stand-in for one network's retraining: records its name, returns the given mIoU."""

    def fake_run(entry, tcfg, folder, split, num_classes, progress):
        calls.append(entry.name)
        result = {"name": entry.name, "kind": entry.kind, "seed": entry.seed,
                  "miou": mious[entry.name], "genotype": entry.genotype.to_dict(),
                  "madds": entry.madds, "split": split, "parameters": 1,
                  "val_miou": mious[entry.name]}  # fmt: skip
        (folder / "result.json").write_text(json.dumps(result), encoding="utf-8")
        return result

    return fake_run


def test_compare_verdict_is_searched_minus_random(tmp_path: Path, monkeypatch) -> None:
    """compare.json and compare.md carry searched minus random (and minus hand-made), signed."""
    import autodeeplab.engine.compare.compare as compare

    search = _tiny_search(tmp_path)
    tcfg = load_config(None, [*TINY_TRAIN_OVERRIDES, "data.crop=64"], base=TrainConfig())
    mious = {
        "searched_seed0": 0.30, "searched_seed1": 0.26, "random0": 0.21, "random1": 0.25,
        "handmade": 0.31, "handmade_seed1": 0.29, "paper": 0.2, "paper_seed1": 0.2,
    }  # fmt: skip
    calls: list[str] = []
    monkeypatch.setattr(compare, "_run_entry", _fake_trainer(mious, calls))
    out = tmp_path / "cmp"
    result = run_compare(
        search, tcfg, out, num_random=2, searched_seeds=2, tolerance=0.5, progress=False
    )
    assert calls == list(mious)
    # searched 0.28, random 0.23: +5 points; hand-made 0.30: -2 points.
    assert result.summary["searched_minus_random"] == pytest.approx(0.05)
    assert result.summary["searched_minus_handmade"] == pytest.approx(-0.02)
    saved = json.loads((out / "compare.json").read_text())["summary"]
    assert saved["searched_minus_random"] == pytest.approx(0.05)
    md = (out / "compare.md").read_text()
    assert "- searched minus random mean: +5.00 points" in md
    assert "- searched minus hand-made: -2.00 points" in md
    assert "- random: mean 23.00, std 2.83, best 25.00" in md


def test_plan_says_when_no_random_genotype_fits() -> None:
    search_cfg = load_config(None, ["model.num_layers=6", "model.strides=[4,8,16]"])
    tcfg = load_config(None, list(TINY_TRAIN_OVERRIDES), base=TrainConfig())
    with pytest.raises(ValueError, match="widen --tolerance"):
        plan_compare(_searched(), search_cfg, tcfg, 8, (64, 64), num_random=2, tolerance=1e-9)


@pytest.mark.slow
def test_compare_end_to_end_resumes_and_skips_finished_runs(tmp_path: Path, capsys) -> None:
    search = tmp_path / "search"
    search.mkdir()
    searched = _searched(layers=3, levels=2)
    save_genotype(searched, search / "genotype.json")
    cfg = SearchConfig()
    (search / "config.yaml").write_text(
        "model:\n  num_layers: 3\n  strides: [4, 8]\n", encoding="utf-8"
    )
    assert cfg.model.num_layers == 12  # the run's own config.yaml is what counts
    out = tmp_path / "cmp"
    argv = [
        "compare",
        str(search),
        "--out",
        str(out),
        "--random",
        "1",
        "--searched-seeds",
        "1",
        "--tolerance",
        "0.5",
        "--no-progress",
        *set_flags(TINY_TRAIN_OVERRIDES),
        "--set",
        "data.crop=64",
    ]  # fmt: skip  (the paper's genotype reaches stride 32)
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "compare [1/4] searched_seed0" in captured.err and "[4/4] paper" in captured.err
    data = json.loads((out / "compare.json").read_text())
    kinds = [r["kind"] for r in data["results"]]
    assert kinds == ["searched", "random", "handmade", "paper"]
    assert data["summary"]["split"] == "test"  # the synthetic data has a test split
    assert all(0.0 <= r["miou"] <= 1.0 for r in data["results"])
    assert "| searched_seed0 | searched | 0 |" in (out / "compare.md").read_text()
    assert (out / "compare.png").stat().st_size > 1000
    # A rerun finds every network done: nothing retrains, the same table comes out.
    stamp = (out / "runs" / "paper" / "result.json").stat().st_mtime_ns
    tcfg = load_config(None, [*TINY_TRAIN_OVERRIDES, "data.crop=64"], base=TrainConfig())
    again = run_compare(search, tcfg, out, num_random=1, searched_seeds=1, tolerance=0.5)
    assert (out / "runs" / "paper" / "result.json").stat().st_mtime_ns == stamp
    assert [r["miou"] for r in again.results] == [r["miou"] for r in data["results"]]


@pytest.mark.slow
def test_compare_processes_share_an_out_folder(tmp_path: Path, capsys) -> None:
    """A network locked by another process is skipped, then waited for; a dead one's is taken."""
    import subprocess
    import sys

    search = _tiny_search(tmp_path)
    out = tmp_path / "cmp"
    first = out / "runs" / "searched_seed0"
    first.mkdir(parents=True)
    # Another "compare process": holds the first network's lock until the last network of
    # the plan is done, then exits without finishing it (as a killed process would).
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, pathlib, sys, time\n"
            "f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "while not pathlib.Path(sys.argv[2]).is_file(): time.sleep(0.05)\n",
            str(first / "lock"),
            str(out / "runs" / "paper" / "result.json"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        tcfg = load_config(None, [*TINY_TRAIN_OVERRIDES, "data.crop=64"], base=TrainConfig())
        result = run_compare(
            search, tcfg, out, num_random=1, searched_seeds=1, tolerance=0.5, progress=False
        )
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert "[1/4] searched_seed0: another compare process is retraining it; going on" in err
    # It went on with the others first, then retrained the one the other process left.
    assert err.index("[4/4] paper") < err.index("[1/4] searched_seed0 (searched")
    # The time left divides by the processes retraining now: two while the other holds one.
    lines = {ln.split("] ")[1].split(" ")[0]: ln for ln in err.splitlines() if "time left" in ln}
    assert lines["random0"].endswith("time left: unknown")  # nothing timed yet
    assert lines["handmade"].endswith("(2 processes)")
    assert "processes" not in lines["searched_seed0"]  # the other one had gone
    assert [r["kind"] for r in result.results] == ["searched", "random", "handmade", "paper"]
    assert (first / "result.json").is_file() and not result.stopped


def _finished_compare(out: Path, entries: list, tcfg: TrainConfig) -> None:
    """Fake finished runs of ``entries`` under ``out``/runs, as a compare leaves them."""
    from autodeeplab.config import save_config
    from autodeeplab.engine.compare.compare import _entry_config

    for k, entry in enumerate(entries):
        folder = out / "runs" / f"other_{k}"  # another comparison's names
        cfg = _entry_config(entry, tcfg, folder)
        (folder / "train").mkdir()
        save_config(cfg, folder / "train" / "config.yaml")
        result = {"name": f"other_{k}", "kind": "random", "seed": entry.seed, "madds": 1,
                  "genotype": entry.genotype.to_dict(), "parameters": 10 + k,
                  "val_miou": 0.1 + k / 100, "miou": 0.2 + k / 100, "test_miou": 0.2 + k / 100,
                  "split": "test", "best_iteration": 4, "seconds": 1.0}  # fmt: skip
        (folder / "result.json").write_text(json.dumps(result), encoding="utf-8")
        (folder / "metrics_test.json").write_text('{"miou": 0.5}', encoding="utf-8")


def _earlier_compare(tmp_path: Path) -> tuple[Path, TrainConfig, list, Path]:
    """A tiny search, its retraining config, its plan, and a faked earlier comparison of it."""
    search = _tiny_search(tmp_path)
    tcfg = load_config(None, [*TINY_TRAIN_OVERRIDES, "data.crop=64"], base=TrainConfig())
    search_cfg = load_config(search / "config.yaml")
    entries = plan_compare(_searched(layers=3, levels=2), search_cfg, tcfg, 8, (64, 64), 1, 1, 0.5)
    earlier = tmp_path / "earlier"
    _finished_compare(earlier, entries, tcfg)
    return search, tcfg, entries, earlier


def test_compare_reuses_finished_runs_of_the_same_network_and_config(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """--reuse: a run with the same genotype, seed and training config stands in; no retraining."""
    import autodeeplab.engine.compare.compare as compare
    from autodeeplab.engine.compare.compare import _entry_config, find_reusable, finished_runs

    search, tcfg, entries, earlier = _earlier_compare(tmp_path)

    def no_training(*args, **kwargs):
        raise AssertionError("a reusable network was retrained")

    monkeypatch.setattr(compare, "run_train", no_training)
    result = run_compare(
        search, tcfg, tmp_path / "cmp", num_random=1, searched_seeds=1, tolerance=0.5,
        progress=False, reuse=[earlier],
    )  # fmt: skip
    assert [r["name"] for r in result.results] == [e.name for e in entries]
    # This comparison's names, kinds and costs; the earlier run's scores, and where from.
    for k, (r, e) in enumerate(zip(result.results, entries, strict=True)):
        assert (r["kind"], r["madds"], r["seed"]) == (e.kind, e.madds, e.seed)
        assert r["miou"] == pytest.approx(0.2 + k / 100)
        assert r["reused_from"] == str(earlier / "runs" / f"other_{k}")
        assert (tmp_path / "cmp" / "runs" / e.name / "metrics_test.json").is_file()
    assert "reused " + str(earlier / "runs" / "other_0") in capsys.readouterr().err
    assert "taken from earlier comparisons" in (tmp_path / "cmp" / "compare.md").read_text()
    # Another seed, another schedule, another genotype or another split is another retraining.
    folder = tmp_path / "probe"
    first = entries[0]
    runs = finished_runs([earlier], "test")
    assert find_reusable(first, _entry_config(first, tcfg, folder), runs)
    other_seed = replace(first, seed=5)
    assert find_reusable(other_seed, _entry_config(other_seed, tcfg, folder / "s"), runs) is None
    longer = load_config(
        None, [*TINY_TRAIN_OVERRIDES, "data.crop=64", "train.iters=5"], base=TrainConfig()
    )
    assert find_reusable(first, _entry_config(first, longer, folder / "l"), runs) is None
    assert finished_runs([earlier], "val") == []
    import random

    unseen = replace(first, genotype=random_genotype(random.Random(99), 3, 5, 2))
    assert unseen.genotype not in [e.genotype for e in entries]
    assert find_reusable(unseen, _entry_config(unseen, tcfg, folder / "g"), runs) is None
    with pytest.raises(FileNotFoundError, match="--reuse takes the --out folder"):
        run_compare(search, tcfg, tmp_path / "cmp2", num_random=1, reuse=[tmp_path / "nope"])


def test_compare_reuses_first_and_then_retrains_the_rest(tmp_path: Path, monkeypatch, capsys):
    """Every reusable network is taken before the first retraining: the rest are what is left."""
    import shutil

    import autodeeplab.engine.compare.compare as compare

    search, tcfg, entries, earlier = _earlier_compare(tmp_path)
    shutil.rmtree(earlier / "runs" / "other_1")  # the random network was never run there
    retrained = []

    def fake_run(entry, tcfg, folder, split, num_classes, progress):
        retrained.append(entry.name)
        result = {"name": entry.name, "kind": entry.kind, "seed": entry.seed, "miou": 0.3,
                  "genotype": entry.genotype.to_dict(), "madds": entry.madds, "split": split,
                  "parameters": 1, "val_miou": 0.3}  # fmt: skip
        (folder / "result.json").write_text(json.dumps(result), encoding="utf-8")
        return result

    monkeypatch.setattr(compare, "_run_entry", fake_run)
    result = run_compare(
        search, tcfg, tmp_path / "cmp", num_random=1, searched_seeds=1, tolerance=0.5,
        progress=False, reuse=[earlier],
    )  # fmt: skip
    assert retrained == ["random0"]
    assert [bool(r.get("reused_from")) for r in result.results] == [True, False, True, True]
    err = capsys.readouterr().err
    assert err.index("[4/4] paper: reused") < err.index("[2/4] random0 (random")


@pytest.mark.slow
def test_compare_size_prices_the_networks_at_that_size(tmp_path: Path, monkeypatch) -> None:
    """``--size HxW``: Multi-Adds (and the random genotypes matched on them) at HxW, not crop."""
    import autodeeplab.engine.compare.compare as compare

    search = _tiny_search(tmp_path)
    calls: list[str] = []
    names = ["searched_seed0", "random0", "handmade", "paper"]
    monkeypatch.setattr(compare, "_run_entry", _fake_trainer(dict.fromkeys(names, 0.2), calls))
    out = tmp_path / "cmp"
    argv = ["compare", str(search), "--out", str(out), "--random", "1", "--searched-seeds", "1",
            "--tolerance", "0.5", "--size", "48x96", "--no-progress",
            *set_flags(TINY_TRAIN_OVERRIDES), "--set", "data.crop=64"]  # fmt: skip
    assert main(argv) == 0
    assert calls == names
    data = json.loads((out / "compare.json").read_text())
    assert data["size"] == [48, 96] and "Multi-Adds at 48x96" in data["header"]
    tcfg = load_config(None, [*TINY_TRAIN_OVERRIDES, "data.crop=64"], base=TrainConfig())
    search_cfg = load_config(search / "config.yaml")
    searched = _searched(layers=3, levels=2)
    at_size = plan_compare(searched, search_cfg, tcfg, 8, (48, 96), 1, 1, 0.5)
    at_crop = plan_compare(searched, search_cfg, tcfg, 8, (64, 64), 1, 1, 0.5)
    got = [r["madds"] for r in data["results"]]
    assert got == [e.madds for e in at_size]
    assert got != [e.madds for e in at_crop]


@pytest.mark.slow
def test_compare_stopped_by_a_signal_resumes_the_half_retrained_network(
    tmp_path: Path, monkeypatch
) -> None:
    """A SIGTERM mid-retraining stops compare with the network's last.pt; a rerun resumes it
    from there (not from scratch) and ends with the weights of an uninterrupted retraining."""
    import os
    import signal

    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook

    import autodeeplab.engine.compare.compare as compare
    from autodeeplab.checkpoint import load_checkpoint
    from autodeeplab.engine.compare.compare import _entry_config
    from autodeeplab.engine.train.loop import run_train

    search = _tiny_search(tmp_path)
    tcfg = load_config(None, [*TINY_TRAIN_OVERRIDES, "data.crop=64"], base=TrainConfig())
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
    entry = plan_compare(_searched(layers=3, levels=2), load_config(search / "config.yaml"),
                         tcfg, 8, (64, 64), 0, 1, 0.5)[0]  # fmt: skip
    whole = tmp_path / "whole"
    run_train(_entry_config(entry, tcfg, whole), whole / "train", progress=False)
    straight = load_checkpoint(whole / "train" / "checkpoints" / "last.pt")
    assert straight["model"].keys() == resumed["model"].keys()
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name

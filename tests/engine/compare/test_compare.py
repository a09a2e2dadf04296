"""``compare``: the plan (random genotypes at the searched cost, references) and a tiny run."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from autodeeplab.cli import main
from autodeeplab.config import SearchConfig, TrainConfig, load_config
from autodeeplab.engine.compare.compare import handmade_path, plan_compare, run_compare
from autodeeplab.genotype import PAPER_GENOTYPE, Genotype, load_genotype, random_genotype
from conftest import TINY_TRAIN_OVERRIDES as TINY_TRAIN

from .fakes import compare_config, copy_search, fake_training


def test_handmade_path_is_deeplabv3_like() -> None:
    assert handmade_path(12, 4) == (0, 0, 0, 1, 2, 2, 2, 2, 2, 2, 2, 2)
    assert handmade_path(6, 2) == (0, 0, 0, 1, 1, 1)
    assert handmade_path(3, 4) == (0, 0, 0)


def _searched(layers: int = 6, levels: int = 3) -> Genotype:
    import random

    return random_genotype(random.Random(7), layers, 5, levels)


def test_plan_matches_cost_and_is_reproducible() -> None:
    search_cfg = load_config(None, ["model.num_layers=6", "model.strides=[4,8,16]"])
    tcfg = load_config(None, list(TINY_TRAIN), base=TrainConfig())
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


def test_plan_centred_on_the_typical_network_shares_its_random_cloud() -> None:
    import random

    from autodeeplab.engine.search.evolution import (
        GenotypeSpace,
        compare_pricing,
        typical_genotype,
    )

    search_cfg = load_config(None, ["model.num_layers=6", "model.strides=[4,8,16]"])
    tcfg = load_config(None, list(TINY_TRAIN), base=TrainConfig())
    price = compare_pricing(8, tcfg, (64, 64))
    typical = typical_genotype(
        GenotypeSpace(6, 5, 3), 8, random.Random(0), train_config=tcfg, size=(64, 64)
    )
    a = _searched()
    # b: a searched network off the typical cost, whose own cloud cannot be the same (the
    # tiny config's heads dominate its cost: random networks' costs differ by a few %).
    b = next(
        g
        for g in (random_genotype(random.Random(k), 6, 5, 3) for k in range(1000))
        if abs(price(g) - price(typical)) > 0.02 * price(typical)
    )
    plans = [
        plan_compare(g, search_cfg, tcfg, 8, (64, 64), 4, tolerance=0.005, random_center="typical")
        for g in (a, b)
    ]
    randoms = [[e for e in plan if e.kind == "random"] for plan in plans]
    # Two searches of one space: the same random networks, so --reuse retrains them once.
    assert randoms[0] == randoms[1] and len(randoms[0]) == 4
    for e in randoms[0]:
        assert abs(e.madds - price(typical)) <= 0.005 * price(typical)
    # The searched network keeps its own seeds and price; the default still centres on it.
    assert [e.madds for e in plans[1] if e.kind == "searched"] == [price(b)] * 2
    default = plan_compare(b, search_cfg, tcfg, 8, (64, 64), num_random=4, tolerance=0.005)
    assert [e for e in default if e.kind == "random"] != randoms[1]
    with pytest.raises(ValueError, match="--random-center 'median'"):
        plan_compare(a, search_cfg, tcfg, 8, (64, 64), num_random=1, random_center="median")


def test_plan_says_when_no_random_genotype_fits() -> None:
    search_cfg = load_config(None, ["model.num_layers=6", "model.strides=[4,8,16]"])
    tcfg = load_config(None, list(TINY_TRAIN), base=TrainConfig())
    with pytest.raises(ValueError, match="widen --tolerance"):
        plan_compare(_searched(), search_cfg, tcfg, 8, (64, 64), num_random=2, tolerance=1e-9)


@pytest.mark.slow
def test_compare_end_to_end_resumes_and_skips_finished_runs(
    tmp_path: Path, capsys, tiny_search_run: Path
) -> None:
    search = copy_search(tiny_search_run, tmp_path / "search")
    # The run's own config.yaml (L=2, two levels) is what counts, not the default space.
    assert SearchConfig().model.num_layers == 12
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
        *[a for kv in TINY_TRAIN for a in ("--set", kv)],
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
    from autodeeplab.config import CPU_TRAIN_PRESET, config_from_dict

    # The CLI's config (the CPU preset under the --set's): the manifest refuses any other.
    preset = config_from_dict(CPU_TRAIN_PRESET, TrainConfig())
    tcfg = load_config(None, [*TINY_TRAIN, "data.crop=64"], base=preset)
    again = run_compare(search, tcfg, out, num_random=1, searched_seeds=1, tolerance=0.5)
    assert (out / "runs" / "paper" / "result.json").stat().st_mtime_ns == stamp
    assert [r["miou"] for r in again.results] == [r["miou"] for r in data["results"]]
    # Each result records the digest of what produced it, its best checkpoint included.
    assert all(len(r["digest"]) == 64 and set(r["produced_by"]) == {"genotype", "config",
               "checkpoint"} for r in again.results)  # fmt: skip


@pytest.mark.slow
def test_compare_processes_share_an_out_folder(
    tmp_path: Path, capsys, tiny_search_run: Path
) -> None:
    """A network locked by another process is skipped, then waited for; a dead one's is taken."""
    import subprocess
    import sys

    search = copy_search(tiny_search_run, tmp_path / "search")
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
        tcfg = load_config(None, [*TINY_TRAIN, "data.crop=64"], base=TrainConfig())
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
    from autodeeplab.engine.compare.results import entry_config, seal

    for k, entry in enumerate(entries):
        folder = out / "runs" / f"other_{k}"  # another comparison's names
        cfg = entry_config(entry, tcfg, folder)
        save_config(cfg, folder / "train" / "config.yaml")
        checkpoint = folder / "train" / "checkpoints" / "best.pt"
        checkpoint.parent.mkdir()
        checkpoint.write_bytes(b"weights %d" % k)
        result = {"name": f"other_{k}", "kind": "random", "seed": entry.seed, "madds": 1,
                  "genotype": entry.genotype.to_dict(), "parameters": 10 + k,
                  "val_miou": 0.1 + k / 100, "miou": 0.2 + k / 100, "test_miou": 0.2 + k / 100,
                  "split": "test", "best_iteration": 4, "seconds": 1.0}  # fmt: skip
        seal(result, entry.genotype, cfg, checkpoint)
        (folder / "result.json").write_text(json.dumps(result), encoding="utf-8")
        (folder / "metrics_test.json").write_text('{"miou": 0.5}', encoding="utf-8")


def _earlier_compare(tmp_path: Path, finished: Path) -> tuple[Path, TrainConfig, list, Path]:
    """A tiny search, its retraining config, its plan, and a faked earlier comparison of it."""
    search = copy_search(finished, tmp_path / "search")
    tcfg = compare_config()
    search_cfg = load_config(search / "config.yaml")
    searched = load_genotype(search / "genotype.json")
    entries = plan_compare(searched, search_cfg, tcfg, 8, (64, 64), 1, 1, 0.5)
    earlier = tmp_path / "earlier"
    _finished_compare(earlier, entries, tcfg)
    return search, tcfg, entries, earlier


def test_compare_reuses_finished_runs_of_the_same_network_and_config(
    tmp_path: Path, monkeypatch, capsys, tiny_search_run: Path
) -> None:
    """--reuse: a run with the same genotype, seed and training config stands in; no retraining."""
    import autodeeplab.engine.compare.compare as compare
    from autodeeplab.engine.compare.results import entry_config
    from autodeeplab.engine.compare.reuse import find_reusable, finished_runs

    search, tcfg, entries, earlier = _earlier_compare(tmp_path, tiny_search_run)

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
    assert find_reusable(first, entry_config(first, tcfg, folder), runs)
    other_seed = replace(first, seed=5)
    assert find_reusable(other_seed, entry_config(other_seed, tcfg, folder / "s"), runs) is None
    longer = compare_config("train.iters=5")
    assert find_reusable(first, entry_config(first, longer, folder / "l"), runs) is None
    assert finished_runs([earlier], "val") == []
    import random

    unseen = replace(first, genotype=random_genotype(random.Random(99), 2, 2, 2))
    assert unseen.genotype not in [e.genotype for e in entries]
    assert find_reusable(unseen, entry_config(unseen, tcfg, folder / "g"), runs) is None
    with pytest.raises(FileNotFoundError, match="--reuse takes the --out folder"):
        run_compare(search, tcfg, tmp_path / "cmp2", num_random=1, reuse=[tmp_path / "nope"])


def test_compare_reuses_first_and_then_retrains_the_rest(
    tmp_path: Path, monkeypatch, capsys, tiny_search_run: Path
) -> None:
    """Every reusable network is taken before the first retraining: the rest are what is left."""
    import shutil

    search, tcfg, entries, earlier = _earlier_compare(tmp_path, tiny_search_run)
    shutil.rmtree(earlier / "runs" / "other_1")  # the random network was never run there
    retrained = fake_training(monkeypatch)
    result = run_compare(
        search, tcfg, tmp_path / "cmp", num_random=1, searched_seeds=1, tolerance=0.5,
        progress=False, reuse=[earlier],
    )  # fmt: skip
    assert retrained == ["random0"]
    assert [bool(r.get("reused_from")) for r in result.results] == [True, False, True, True]
    err = capsys.readouterr().err
    assert err.index("[4/4] paper: reused") < err.index("[2/4] random0 (random")

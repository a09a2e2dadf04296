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

from ..conftest import TINY_TRAIN
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


def test_summary_averages_the_references_over_their_seeds() -> None:
    from autodeeplab.engine.compare.compare import summarise

    rows = [("searched", 0.25), ("searched", 0.23), ("random", 0.2), ("random", 0.22)]
    rows += [("handmade", 0.26), ("handmade", 0.22), ("paper", 0.1), ("paper", 0.12)]
    summary = summarise([{"kind": k, "miou": m, "split": "test"} for k, m in rows])
    assert summary["handmade"] == pytest.approx(0.24) and summary["paper"] == pytest.approx(0.11)
    assert summary["reference_seeds"] == 2
    assert summary["searched_minus_handmade"] == pytest.approx(0.0)


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
    tcfg = load_config(None, [*TINY_TRAIN, "data.crop=64"], base=TrainConfig())
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


def test_seed_noise_entries_reseed_the_first_three_random_genotypes() -> None:
    from autodeeplab.engine.compare.plan import seed_noise_entries

    search_cfg = load_config(None, ["model.num_layers=6", "model.strides=[4,8,16]"])
    tcfg = load_config(None, list(TINY_TRAIN), base=TrainConfig())
    plan = plan_compare(_searched(), search_cfg, tcfg, 8, (64, 64), num_random=4, tolerance=0.1)
    extra = seed_noise_entries(plan)
    names = [f"random{k}_seed{s}" for k in range(3) for s in (1, 2)]
    assert [e.name for e in extra] == names and {e.kind for e in extra} == {"seed_noise"}
    randoms = {e.name: e for e in plan if e.kind == "random"}
    for e in extra:
        assert e.genotype == randoms[e.name.split("_")[0]].genotype
    assert seed_noise_entries(plan[:2]) == []  # no random genotype, nothing to reseed


def _quality(genotype: Genotype) -> float:
    """A made-up retrained mIoU that depends on the genotype only (0.10 to 0.395, in steps
    wider than the seeds' 0.002, so that no two genotypes of the tests tie)."""
    import zlib

    from autodeeplab.engine.compare.scores import genotype_key

    return 0.10 + 0.005 * (zlib.crc32(genotype_key(genotype.to_dict()).encode()) % 60)


def _fake_retraining(monkeypatch, collapsed: tuple[str, ...] = ()) -> list[str]:
    """:func:`~.fakes.fake_training` with made-up scores, train logs and confusion matrices.

    Each network scores :func:`_quality` plus 0.002 per seed; those named in ``collapsed``
    keep a flat loss and predict class 0 everywhere. Returns the names retrained, in order.
    """
    import autodeeplab.engine.compare.compare as compare

    retrained = fake_training(monkeypatch)
    checkpoint_and_config = compare.train_and_evaluate

    def train_and_evaluate(cfg: TrainConfig, folder: Path, split: str, progress: bool):
        _, checkpoint = checkpoint_and_config(cfg, folder, split, progress)
        bad = folder.name in collapsed
        genotype = load_genotype(folder / "genotype.json")
        miou = 0.02 if bad else _quality(genotype) + 0.002 * cfg.train.seed
        losses = [3.0] * 20 if bad else [0.5 + 2.5 * 0.7**k for k in range(20)]
        log = [{"event": "train", "iter": 10 * (k + 1), "loss": x} for k, x in enumerate(losses)]
        (folder / "train" / "train_log.jsonl").write_text(
            "\n".join(json.dumps(r) for r in log) + "\n", encoding="utf-8"
        )
        right = [[25.0 if i == j else 0.0 for j in range(4)] for i in range(4)]
        background = [[25.0, 0.0, 0.0, 0.0] for _ in range(4)]
        cm = background if bad else right
        (folder / f"metrics_{split}.json").write_text(
            json.dumps({"miou": miou, "confusion_matrix": cm}), encoding="utf-8"
        )
        scores = {"val_miou": miou - 0.01, "best_iteration": 4, f"{split}_miou": miou}
        return {**scores, "miou": miou}, checkpoint

    monkeypatch.setattr(compare, "train_and_evaluate", train_and_evaluate)
    return retrained


def test_compare_reports_how_the_supernet_ranks(
    tmp_path: Path, monkeypatch, tiny_search_run: Path
) -> None:
    """Injected scores that agree with the retrained mIoU: tau 1; a collapsed run is left out."""
    import struct

    search = copy_search(tiny_search_run, tmp_path / "search")
    tcfg = compare_config()
    retrained = _fake_retraining(monkeypatch, collapsed=("random3",))
    calls: list[int] = []

    def scorer(run_dir: Path, genotypes: list[Genotype]) -> list[dict[str, float]]:
        assert run_dir == search and all(g.num_layers == 2 for g in genotypes)
        calls.append(len(genotypes))
        return [{"val_ce": 3.0 - 5 * _quality(g), "val_miou": _quality(g) / 4} for g in genotypes]

    out = tmp_path / "cmp"
    kwargs = dict(num_random=4, searched_seeds=2, tolerance=0.5, progress=False, seed_noise=True)
    result = run_compare(search, tcfg, out, scorer=scorer, **kwargs)
    assert retrained[-6:] == [f"random{k}_seed{s}" for k in range(3) for s in (1, 2)]
    # One scoring call, each distinct genotype once: searched, 4 random, hand-made; not the
    # paper's, which is outside this 2-layer space.
    assert calls == [6]
    data = json.loads((out / "compare.json").read_text())
    ranking = data["ranking"]
    assert ranking["split"] == "test" and ranking["not_scored"] is None
    everything = ranking["agreement"]["all/val_ce/test"]
    assert everything["n"] == 5  # random3's only run collapsed; the paper's is not scored
    assert everything["kendall_tau"] == pytest.approx(1.0)
    assert everything["spearman_rho"] == pytest.approx(1.0)
    assert everything["kendall_ci"][0] > 0.99 and everything["kendall_p"] < 0.01
    assert ranking["agreement"]["random/val_miou/val"]["n"] == 3
    assert ranking["collapsed"] == [
        {
            "name": "random3",
            "reasons": ["loss_did_not_fall", "stalled_at_prior", "at_chance", "one_class"],
        }
    ]
    # The searched network in the cloud of the three random genotypes that did not collapse.
    searched = [r["miou"] for r in result.results if r["kind"] == "searched"]
    randoms = [
        r["miou"] for r in result.results if r["kind"] == "random" and r["name"] != "random3"
    ]
    st = ranking["standing"]
    assert st["random_n"] == 3
    assert st["difference"] == pytest.approx(sum(searched) / 2 - sum(randoms) / 3)
    # Seed noise: 0.002 a seed, over the reseeded random genotypes and the 2-seed networks.
    noise = ranking["seed_noise"]
    assert {"random0", "random1", "random2", "searched"} <= set(noise["genotypes"])
    assert noise["genotypes"]["random0"]["sd"] == pytest.approx(0.002)
    assert 0 < noise["within_sd"] < 0.0021
    md = (out / "compare.md").read_text()
    for text in (
        "## Does the supernet rank?",
        "| all | -val CE | test mIoU | 5 |",
        "outside the supernet's space: paper (12 layers of 5 blocks, the supernet 2 of 2",
        "| random | supernet val mIoU | val mIoU | 3 |",
        "+1.00 [+1.00, +1.00]",
        "the searched network within the random cloud (test mIoU): percentile",
        "- seed noise: 0.",
        "random3 (loss_did_not_fall, stalled_at_prior, at_chance, one_class)",
        "cannot be told from zero with fewer than 20",
    ):
        assert text in md, text
    png = (out / "compare.png").read_bytes()
    assert struct.unpack(">I", png[16:20])[0] == 1200  # two panels, 12 inches at 100 dpi
    # A rerun finds the scores in supernet_scores.json: no scoring, the same section.
    again = run_compare(search, tcfg, out, scorer=scorer, **kwargs)
    assert calls == [6] and (out / "supernet_scores.json").is_file()
    assert json.loads((out / "compare.json").read_text())["ranking"] == ranking
    assert len(again.results) == len(result.results)


def test_compare_without_a_supernet_still_compares(
    tmp_path: Path, monkeypatch, tiny_search_run: Path
) -> None:
    """No supernet to score on: the comparison and the seed noise, and a line saying why not."""
    search = copy_search(tiny_search_run, tmp_path / "search")
    tcfg = compare_config()
    _fake_retraining(monkeypatch)

    def scorer(run_dir: Path, genotypes: list[Genotype]) -> list[dict[str, float]]:
        raise FileNotFoundError(f"{run_dir}/checkpoints/last.pt: no supernet")

    out = tmp_path / "cmp"
    run_compare(search, tcfg, out, num_random=2, tolerance=0.5, progress=False, scorer=scorer)
    ranking = json.loads((out / "compare.json").read_text())["ranking"]
    assert "no supernet to score on" in ranking["not_scored"]
    assert ranking["agreement"]["all/val_ce/test"]["n"] == 0
    assert ranking["seed_noise"]["within_sd"] is not None  # searched and references: 2 seeds
    md = (out / "compare.md").read_text()
    assert "Scores not measured: the search run has no supernet" in md and "Kendall" not in md
    assert not (out / "supernet_scores.json").exists()
    run_compare(search, tcfg, out / "plain", num_random=2, tolerance=0.5, progress=False)
    assert "(--no-score)" in (out / "plain" / "compare.md").read_text()


def test_scores_are_cached_per_search_run_and_settings(tmp_path: Path) -> None:
    """supernet_scores.json: the same genotypes are not scored twice; other settings score anew."""
    import functools
    import random

    from autodeeplab.engine.compare.scores import genotype_key, score_all

    calls: list[tuple[int, int]] = []

    def fake(run_dir: Path, genotypes: list[Genotype], *, recal_batches: int) -> list[dict]:
        calls.append((recal_batches, len(genotypes)))
        return [{"val_ce": 1.0 + recal_batches, "val_miou": 0.1} for _ in genotypes]

    a, b = _searched(3, 2), random_genotype(random.Random(1), 3, 5, 2)
    run = tmp_path / "search"
    scores = score_all(run, [a, a, b], tmp_path, functools.partial(fake, recal_batches=2))
    assert calls == [(2, 2)] and scores[genotype_key(a.to_dict())]["val_ce"] == 3.0
    score_all(run, [b, a], tmp_path, functools.partial(fake, recal_batches=2))
    assert calls == [(2, 2)]  # both cached
    again = score_all(run, [a], tmp_path, functools.partial(fake, recal_batches=5))
    assert calls[-1] == (5, 1) and again[genotype_key(a.to_dict())]["val_ce"] == 6.0
    score_all(tmp_path / "other", [a], tmp_path, functools.partial(fake, recal_batches=5))
    assert calls[-1] == (5, 1) and len(calls) == 3


def test_outside_space_says_why_a_genotype_cannot_be_scored() -> None:
    from autodeeplab.engine.compare.scores import outside_space

    space = load_config(None, ["model.num_layers=6", "model.strides=[4,8,16]"]).model
    fits = _searched(layers=6, levels=3)
    assert outside_space(fits, space) is None
    assert "12 layers" in outside_space(PAPER_GENOTYPE, space)
    assert "stride 32" in outside_space(Genotype(fits.cell, (0, 1, 2, 3, 2, 1)), space)
    narrow = replace(space, primitives=("sep_conv_3x3", "skip_connect"))
    assert "ops the supernet lacks" in outside_space(fits, narrow)


@pytest.mark.slow
def test_compare_scores_on_a_real_supernet(tiny_search_run: Path, tmp_path: Path, monkeypatch):
    """The default scorer on a finished tiny search: every in-space genotype gets a val CE."""
    from autodeeplab.engine.compare.scores import supernet_scorer

    tcfg = compare_config()
    _fake_retraining(monkeypatch)
    out = tmp_path / "cmp"
    scorer = supernet_scorer(recal_batches=1)
    run_compare(
        tiny_search_run, tcfg, out, num_random=3, searched_seeds=1, tolerance=1.0,
        progress=False, scorer=scorer,
    )  # fmt: skip
    ranking = json.loads((out / "compare.json").read_text())["ranking"]
    scored = [g for g in ranking["networks"] if g["score_val_ce"] is not None]
    assert {g["kind"] for g in scored} == {"searched", "random", "handmade"}
    assert all(g["score_val_ce"] > 0 and 0 <= g["score_val_miou"] <= 1 for g in scored)
    assert [g["name"] for g in ranking["networks"] if g["not_scored"]] == ["paper"]
    assert ranking["agreement"]["all/val_ce/test"]["n"] == len(scored) == 5
    cache = json.loads((out / "supernet_scores.json").read_text())
    assert cache["settings"] == {"recal_batches": 1, "seed": 0}


def test_ranking_section_when_most_retrainings_collapsed() -> None:
    """A schedule too short or unstable: said first, and no table of empty correlations."""
    import random

    from autodeeplab.engine.compare.ranking_report import measure_ranking, ranking_markdown
    from autodeeplab.engine.compare.scores import genotype_key

    rows = [("searched", _searched(3, 2)), ("random0", random_genotype(random.Random(1), 3, 5, 2))]
    results = [
        {"name": n, "kind": n.rstrip("0"), "seed": 0, "genotype": g.to_dict(), "miou": 0.05,
         "val_miou": 0.05, "split": "test"}
        for n, g in rows
    ]  # fmt: skip
    scores = {genotype_key(g.to_dict()): {"val_ce": 2.0, "val_miou": 0.1} for _, g in rows}
    health = {n: {"collapsed": True, "reasons": ["at_chance"]} for n, _ in rows}
    ranking = measure_ranking(results, scores, health)
    md = ranking_markdown(ranking)
    assert "**2 of 2 retrainings collapsed**" in md
    assert "No genotype has both a score and a retraining that did not collapse." in md
    assert "| all |" not in md and ranking["standing"]["percentile"] is None


def test_ranking_section_names_a_genotype_whose_seeds_disagree() -> None:
    """The held-out dataset's paper genotype, 17.2 and 31.4: flagged beside the seed noise."""
    import random

    from autodeeplab.engine.compare.ranking_report import measure_ranking, ranking_markdown

    rng = random.Random(2)
    runs = [("searched", 0, 0.240), ("searched", 1, 0.255), ("paper", 0, 0.172)]
    runs += [("paper", 1, 0.314), ("handmade", 0, 0.25), ("handmade", 1, 0.26)]
    genotypes = {k: random_genotype(rng, 3, 5, 2) for k in ("searched", "paper", "handmade")}
    results = [
        {"name": f"{k}_seed{s}", "kind": k, "seed": s, "genotype": genotypes[k].to_dict(),
         "miou": m, "val_miou": m, "split": "test"}
        for k, s, m in runs
    ]  # fmt: skip
    results += [
        {"name": f"random{i}", "kind": "random", "seed": 0, "miou": m, "val_miou": m,
         "genotype": random_genotype(rng, 3, 5, 2).to_dict(), "split": "test"}
        for i, m in enumerate((0.22, 0.25, 0.21, 0.27))
    ]  # fmt: skip
    ranking = measure_ranking(results, None, {}, not_scored="a test")
    assert ranking["seed_noise"]["unstable"] == ["paper_seed0"]
    assert ranking["standing"]["percentile"] == pytest.approx(50.0)
    md = ranking_markdown(ranking)
    assert "- paper_seed0: its 2 seeds disagree far beyond the seed noise" in md
    assert "Scores not measured: a test." in md and "percentile 50 among 4 random" in md

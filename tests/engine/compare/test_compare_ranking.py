"""``compare``'s ranking: the supernet scores, their cache, tau against the retrained mIoU,
the seed noise and the collapsed retrainings, on a faked retraining."""

from __future__ import annotations

import json
import statistics
from dataclasses import replace
from pathlib import Path

import pytest

from autodeeplab.config import TrainConfig, load_config
from autodeeplab.engine.compare.compare import plan_compare, run_compare
from autodeeplab.genotype import PAPER_GENOTYPE, Genotype, load_genotype, random_genotype
from conftest import TINY_TRAIN_OVERRIDES as TINY_TRAIN

from .fakes import compare_config, copy_search, fake_training


def _searched(layers: int = 6, levels: int = 3) -> Genotype:
    import random

    return random_genotype(random.Random(7), layers, 5, levels)


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
        "random genotypes within 50% of the searched network's.",
    ):
        assert text in md, text
    png = (out / "compare.png").read_bytes()
    assert struct.unpack(">I", png[16:20])[0] == 1200  # two panels, 12 inches at 100 dpi
    # A rerun finds the scores in supernet_scores.json: no scoring, the same section.
    again = run_compare(search, tcfg, out, scorer=scorer, **kwargs)
    assert calls == [6] and (out / "supernet_scores.json").is_file()
    assert json.loads((out / "compare.json").read_text())["ranking"] == ranking
    assert len(again.results) == len(result.results)
    # tools/ranking_table.py reads the same figures back, one row per compare folder.
    table = _ranking_table()
    row = table.row(out)
    random_tau = ranking["agreement"]["random/val_ce/test"]
    assert row["tau"] == random_tau["kendall_tau"] and row["n_random"] == 3
    # The cloud as the ranking counts it (random3 collapsed): the standing's difference.
    assert row["minus_random"] == st["difference"] and row["random_mean"] == pytest.approx(
        sum(randoms) / 3
    )
    assert row["val_test_tau"] == pytest.approx(1.0)  # the fake val mIoU is test's - 0.01
    assert (row["strategy"], row["seed"], row["percentile"]) == (
        "darts",
        3,
        st["percentile"],
    )  # the tiny search's seed
    md_table = table.markdown([row, row])
    assert f"| darts, seed 3 | {random_tau['kendall_tau']:.2f} [" in md_table
    assert "| **darts, mean of 2** |" in md_table


def test_compare_sets_the_ranking_beside_its_controls(
    tmp_path: Path, monkeypatch, tiny_search_run: Path
) -> None:
    """The untrained supernet's scores (cached apart) and the parameter count, on the same
    random genotypes: their tau is scipy's, and the verdict says whether training helped."""
    from scipy import stats

    search = copy_search(tiny_search_run, tmp_path / "search")
    tcfg = compare_config()
    _fake_retraining(monkeypatch)
    control_calls: list[int] = []

    def scorer(run_dir: Path, genotypes: list[Genotype]) -> list[dict[str, float]]:
        return [{"val_ce": 3.0 - 5 * _quality(g), "val_miou": 0.1} for g in genotypes]

    def agrees(run_dir: Path, genotypes: list[Genotype]) -> list[dict[str, float]]:
        control_calls.append(len(genotypes))
        return [{"val_ce": 3.0 - 5 * _quality(g), "val_miou": 0.1} for g in genotypes]

    def disagrees(run_dir: Path, genotypes: list[Genotype]) -> list[dict[str, float]]:
        return [{"val_ce": 3.0 + 5 * _quality(g), "val_miou": 0.1} for g in genotypes]

    kwargs = dict(num_random=5, searched_seeds=1, tolerance=0.5, progress=False)
    out = tmp_path / "cmp"
    run_compare(search, tcfg, out, scorer=scorer, control_scorer=disagrees, **kwargs)
    ranking = json.loads((out / "compare.json").read_text())["ranking"]
    controls = ranking["controls"]
    randoms = [g for g in ranking["networks"] if g["kind"] == "random"]
    assert len(randoms) == 5 and all(g["parameters"] > 0 for g in randoms)
    size = controls["agreement"]["parameters/test"]
    expected = stats.kendalltau([g["parameters"] for g in randoms], [g["miou"] for g in randoms])
    assert size["n"] == 5 and size["kendall_tau"] == pytest.approx(expected.statistic)
    assert controls["agreement"]["untrained/test"]["kendall_tau"] == pytest.approx(-1.0)
    results = {r["name"]: r for r in json.loads((out / "compare.json").read_text())["results"]}
    levels = [statistics.fmean(results[g["name"]]["genotype"]["path"]) for g in randoms]
    level = stats.kendalltau(levels, [g["miou"] for g in randoms]).statistic
    assert controls["agreement"]["resolution/test"]["kendall_tau"] == pytest.approx(level)
    assert [g["path_level"] for g in randoms] == pytest.approx(levels)
    verdict = controls["verdict"]
    assert verdict["trained_tau"] == pytest.approx(1.0)
    assert verdict["training_adds"] == pytest.approx(2.0)
    assert verdict["resolution_tau"] == pytest.approx(level)
    # The trained score is perfect; no control can tie it unless a structural prior does too.
    assert verdict["beats_controls"] is bool(max(abs(expected.statistic), abs(level)) < 1.0)
    md = (out / "compare.md").read_text()
    assert "| untrained supernet, -val CE | test mIoU | 5 | -1.00 [" in md
    assert "| parameter count (more is higher) | val mIoU | 5 |" in md
    assert "| path's mean level, 0 = stride 4 (coarser is higher) | test mIoU | 5 |" in md
    assert "training the supernet adds +2.00" in md
    # tools/ranking_table.py carries the controls' tau into its table.
    row = _ranking_table().row(out)
    assert row["untrained_tau"] == pytest.approx(-1.0)
    assert row["parameters_tau"] == pytest.approx(expected.statistic)
    assert row["resolution_tau"] == pytest.approx(level)
    assert "| untrained tau | parameters tau | path level tau |" in _ranking_table().markdown([row])
    # Another out: the control ranks as well as the trained score, and the verdict says so.
    again = tmp_path / "cmp2"
    run_compare(search, tcfg, again, scorer=scorer, control_scorer=agrees, **kwargs)
    assert control_calls == [7]  # searched, 5 random, hand-made (the paper's is outside)
    verdict = json.loads((again / "compare.json").read_text())["ranking"]["controls"]["verdict"]
    assert verdict["beats_controls"] is False and verdict["training_adds"] == pytest.approx(0.0)
    assert (
        "**The trained supernet ranks no better than a control**"
        in (again / "compare.md").read_text()
    )
    cache = json.loads((again / "supernet_scores_untrained.json").read_text())
    assert cache["search_run"] == str(search) and len(cache["scores"]) == 8
    run_compare(search, tcfg, again, scorer=scorer, control_scorer=agrees, **kwargs)
    assert control_calls == [7]  # cached: a rerun does not score again
    # Without a control scorer (--no-control) there is no controls section.
    plain = tmp_path / "cmp3"
    run_compare(search, tcfg, plain, scorer=scorer, **kwargs)
    assert json.loads((plain / "compare.json").read_text())["ranking"]["controls"] is None
    assert "Controls, on the same random genotypes" not in (plain / "compare.md").read_text()


def _ranking_table():
    """tools/ranking_table.py, loaded as a module (tools/ is not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[3] / "tools" / "ranking_table.py"
    spec = importlib.util.spec_from_file_location("ranking_table", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def test_the_untrained_scorer_scores_a_fresh_supernet(tiny_search_run: Path) -> None:
    """supernet_scorer(untrained=True) equals score_run on the freshly initialised supernet:
    deterministic, and not the trained supernet's scores."""
    from autodeeplab.engine.compare.scores import supernet_scorer
    from autodeeplab.engine.search.score_run import score_run

    g = [load_genotype(tiny_search_run / "genotype.json")]
    control = supernet_scorer(recal_batches=1, untrained=True)
    assert control.keywords == {"recal_batches": 1, "seed": 0, "untrained": True}
    first = control(tiny_search_run, g)
    assert first == control(tiny_search_run, g)
    fresh = score_run(tiny_search_run, g, recal_batches=1, untrained=True)[0]
    assert first[0]["val_ce"] == fresh.val_loss
    trained = supernet_scorer(recal_batches=1)(tiny_search_run, g)
    assert trained[0]["val_ce"] != first[0]["val_ce"]


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


def test_processes_sharing_an_out_score_once(tmp_path: Path) -> None:
    """Two compare processes on one out (threads here: an flock is per open file): the first
    scores while holding the cache's lock, the second waits and reads its cache."""
    import threading
    import time

    from autodeeplab.engine.compare.scores import genotype_key, score_all

    calls: list[int] = []

    def slow(run_dir: Path, genotypes: list[Genotype]) -> list[dict[str, float]]:
        calls.append(len(genotypes))
        time.sleep(0.5)  # long enough for the other thread to reach the lock
        return [{"val_ce": 2.0, "val_miou": 0.1} for _ in genotypes]

    genotypes = [_searched(3, 2)]
    results: list[dict] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(score_all(tmp_path / "search", genotypes, tmp_path, slow))
        )
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [1] and len(results) == 2
    key = genotype_key(genotypes[0].to_dict())
    assert results[0][key] == results[1][key] == {"val_ce": 2.0, "val_miou": 0.1}
    assert (tmp_path / "supernet_scores.json.lock").is_file()

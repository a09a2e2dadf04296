"""``autodeeplab score``: genotypes scored on a finished search's supernet, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from autodeeplab.checkpoint import load_checkpoint
from autodeeplab.cli import main
from autodeeplab.config import CPU_TRAIN_PRESET, TrainConfig, config_from_dict, load_config
from autodeeplab.engine.compare.plan import plan_compare
from autodeeplab.engine.search.score_run import load_scoring_run, score_run
from autodeeplab.genotype import PAPER_GENOTYPE, Genotype, load_genotype, save_genotype
from autodeeplab.space.network import SearchNetwork
from conftest import TINY_SEARCH_ARGV as TINY_SEARCH
from conftest import error_line


def _scores(out: Path) -> list[dict]:
    return json.loads((out / "scores.json").read_text())["scores"]


@pytest.mark.slow
def test_score_ranks_the_run_s_genotype_and_compare_s_random_ones(
    tiny_search_run, tmp_path, capsys
) -> None:
    out = tmp_path / "scores"
    argv = [
        "score",
        str(tiny_search_run),
        "--random",
        "3",
        "--out",
        str(out),
        "--recal-batches",
        "1",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    rows = _scores(out)
    assert [r["name"] for r in rows if r["name"] == "searched"] == ["searched"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    losses = [r["val_loss"] for r in rows]
    assert losses == sorted(losses) and all(x > 0 for x in losses)
    assert all(0 <= r["val_miou"] <= 1 and r["madds"] > 0 for r in rows)
    # The random genotypes are the ones 'compare --random 3' retrains, under the same names.
    cfg = load_config(tiny_search_run / "config.yaml")
    searched = load_genotype(tiny_search_run / "genotype.json")
    tcfg = config_from_dict(CPU_TRAIN_PRESET, TrainConfig())
    plan = plan_compare(searched, cfg, tcfg, 3, (64, 64), num_random=3, searched_seeds=1)
    planned = {e.name: e.genotype for e in plan if e.kind == "random"}
    got = {r["name"]: Genotype.from_dict(r["genotype"]) for r in rows if r["name"] != "searched"}
    assert got == planned
    assert "| rank | name | val CE |" in printed and (out / "scores.md").is_file()
    # Deterministic: the same command gives the same numbers.
    assert main([*argv[:-4], "--out", str(tmp_path / "again"), "--recal-batches", "1"]) == 0
    assert _scores(tmp_path / "again") == rows
    # Centred on the space's typical network, as 'compare --random-center typical' draws.
    typical = tmp_path / "typical"
    assert main([*argv[:-4], "--out", str(typical), "--recal-batches", "1",
                 "--random-center", "typical"]) == 0  # fmt: skip
    plan = plan_compare(searched, cfg, tcfg, 3, (64, 64), 3, 1, random_center="typical")
    planned = {e.name: e.genotype for e in plan if e.kind == "random"}
    got = {r["name"]: Genotype.from_dict(r["genotype"]) for r in _scores(typical)}
    assert {k: v for k, v in got.items() if k != "searched"} == planned


@pytest.mark.slow
def test_score_untrained_is_the_same_supernet_freshly_initialised(tiny_search_run, tmp_path):
    from autodeeplab.engine.rng import seed_everything

    g = load_genotype(tiny_search_run / "genotype.json")
    trained = load_scoring_run(tiny_search_run, recal_batches=1, seed=5)
    fresh = load_scoring_run(tiny_search_run, recal_batches=1, seed=5, untrained=True)
    again = load_scoring_run(tiny_search_run, recal_batches=1, seed=5, untrained=True)
    seed_everything(5)
    init = SearchNetwork(**{**load_checkpoint(trained.checkpoint)["model_kwargs"]}).state_dict()
    keys = [k for k, v in init.items() if v.is_floating_point() and "running" not in k]
    assert keys and all(torch.equal(fresh.model.state_dict()[k], init[k]) for k in keys)
    assert any(
        not torch.equal(trained.model.state_dict()[k], init[k]) for k in keys
    )  # the trained weights are not the initial ones
    assert fresh.score([g])[0].val_loss == again.score([g])[0].val_loss
    assert fresh.score([g])[0].val_loss != trained.score([g])[0].val_loss
    out = tmp_path / "untrained"
    argv = ["score", str(tiny_search_run), str(tiny_search_run / "genotype.json")]
    assert (
        main([*argv, "--untrained", "--seed", "5", "--recal-batches", "1", "--out", str(out)]) == 0
    )
    meta = json.loads((out / "scores.json").read_text())
    assert meta["untrained"] is True
    assert _scores(out)[0]["val_loss"] == fresh.score([g])[0].val_loss


@pytest.mark.slow
def test_score_genotype_files_and_the_api_agree(tiny_search_run, tmp_path) -> None:
    g = load_genotype(tiny_search_run / "genotype.json")
    other = Genotype(g.cell, (1, 0) if g.path != (1, 0) else (0, 0))
    save_genotype(other, tmp_path / "other.json")
    out = tmp_path / "s"
    files = [str(tiny_search_run / "genotype.json"), str(tmp_path / "other.json")]
    assert main(["score", str(tiny_search_run), *files, "--out", str(out)]) == 0
    rows = {r["name"]: r for r in _scores(out)}
    assert set(rows) == {"genotype", "other"}
    api = score_run(tiny_search_run, [g, other], names=["genotype", "other"])
    assert [s.val_loss for s in api] == [rows["genotype"]["val_loss"], rows["other"]["val_loss"]]
    assert json.loads((out / "scores.json").read_text())["prev_prev"] == "trellis"
    # The run folder is left as it was (the split is not rewritten).
    assert not any(p.name.startswith(".") for p in tiny_search_run.iterdir())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "nothing to score: give GENOTYPE_FILE(s) or --random N"),
        (["--random", "-2"], "--random -2: give a number of genotypes >= 0"),
        (["nosuch.json"], "nosuch.json"),
        (["--random", "1", "--tolerance", "0"], "give a fraction"),
        (["--random", "1", "--val-batches", "0"], "--val-batches 0: give a number of batches"),
        (["--random", "1", "--recal-batches", "-1"], "--recal-batches -1: give a number"),
    ],
)
def test_score_refuses_bad_input_in_one_line(tmp_path, capsys, extra, message) -> None:
    run = tmp_path / "run"
    run.mkdir()
    assert main(["score", str(run), *extra]) == 2
    assert message in error_line(capsys.readouterr().err)
    assert not (run / "scores").exists()


@pytest.mark.slow
def test_score_refuses_a_genotype_of_another_space_naming_its_file(
    tiny_search_run, tmp_path, capsys
) -> None:
    save_genotype(PAPER_GENOTYPE, tmp_path / "paper.json")
    assert main(["score", str(tiny_search_run), str(tmp_path / "paper.json")]) == 2
    line = error_line(capsys.readouterr().err)
    assert "paper.json" in line and "12 layers" in line
    assert main(["score", str(tmp_path), "--random", "1"]) == 2
    assert "no complete search checkpoint" in error_line(capsys.readouterr().err)


@pytest.mark.slow
def test_search_decode_score_keeps_the_best_candidate(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    extra = ["--set", "search.decode=score", "--set", "search.decode_candidates=3"]
    extra += ["--set", "model.num_layers=3"]  # a path that changes level needs 3 layers
    assert main(["search", "--out", str(out), *TINY_SEARCH, *extra]) == 0
    candidates = json.loads((out / "candidates.json").read_text())
    rows = candidates["candidates"]
    assert len(rows) == 3 and rows[0]["origin"] == "start"
    best = min(rows, key=lambda r: r["val_loss"])
    assert candidates["best"] == best["name"]
    assert load_genotype(out / "genotype.json") == Genotype.from_dict(best["genotype"])
    provenance = json.loads((out / "genotype.json").read_text())["search"]
    assert provenance["decode"] == "score" and provenance["candidates"] == 3
    assert Genotype.from_dict(provenance["argmax_genotype"]) == Genotype.from_dict(
        rows[0]["genotype"]
    )
    # The same run, as a supernet that trained path edges (spos) would leave its checkpoint:
    # scoring loads them and reads H^{l-2} of level changes through them.
    ckpt = sorted((out / "checkpoints").glob("epoch_*.pt"))[-1]
    state = load_checkpoint(ckpt, "search")
    net = SearchNetwork(**{**state["model_kwargs"], "checkpoint_cells": False})
    net.load_state_dict(state["model"])
    net.add_path_edges(seed=3)
    assert len(net.path_edges) > 0
    state["model"] = net.state_dict()
    torch.save(state, ckpt)
    scoring = load_scoring_run(out)
    for a, b in zip(
        scoring.model.path_edges.parameters(), net.path_edges.parameters(), strict=True
    ):
        assert torch.equal(a, b)
    assert main(["score", str(out), str(out / "genotype.json"), "--out", str(tmp_path / "s")]) == 0
    assert json.loads((tmp_path / "s" / "scores.json").read_text())["prev_prev"] == "path"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("search.decode=best", "use one of argmax, score"),
        ("search.decode_candidates=0", "out of range"),
        ("search.score_recal_batches=0", "out of range"),
    ],
)
def test_decode_settings_are_checked(tmp_path, capsys, setting, message) -> None:
    assert main(["search", "--out", str(tmp_path / "r"), *TINY_SEARCH, "--set", setting]) == 2
    assert message in error_line(capsys.readouterr().err)

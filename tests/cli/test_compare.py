"""``autodeeplab compare``: bad input is refused in one line, before anything is written."""

from __future__ import annotations

import json

import pytest

from autodeeplab.cli import main
from autodeeplab.genotype import PAPER_GENOTYPE, save_genotype
from conftest import one_error
from engine.compare.fakes import compare_argv, copy_search, fake_training, snapshot


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "no genotype; give the --out folder of a finished search"),
        (["--set", "train.iters=0"], "key 'train.iters': 0 is out of range"),
        (["--data", "nosuch"], "unknown dataset 'nosuch'"),
        (["--random", "-1"], "--random -1: must be an integer in 0..1000"),
        (["--tolerance", "0"], "give a fraction, e.g. 0.1"),
        (["--set", "train.amp=fp16"], "train.amp=fp16 needs CUDA"),
        (["--reuse", "nosuch"], "nosuch: no runs/ folder; --reuse takes the --out folder"),
        (["--recal-batches", "0"], "--recal-batches 0: give 1 or more batches"),
    ],
)
def test_compare_refuses_bad_input_before_any_write(tmp_path, capsys, extra, message) -> None:
    search = tmp_path / "search"
    search.mkdir()
    if extra:  # a finished search, so that the flag is what is wrong
        save_genotype(PAPER_GENOTYPE, search / "genotype.json")
    out = tmp_path / "cmp"
    assert main(["compare", str(search), "--out", str(out), *extra]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and message in errors[0], errors
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "seed_noise", "scored", "control"),
    [
        ([], False, True, True),
        (["--seed-noise", "--no-score"], True, False, True),
        (["--no-control"], False, True, False),
    ],
)
def test_compare_passes_its_ranking_switches(
    tmp_path, monkeypatch, extra, seed_noise, scored, control
) -> None:
    """20 random genotypes by default; --seed-noise, --no-score and --no-control reach
    run_compare (the control scorer scores the supernet untrained)."""
    import autodeeplab.engine.compare.compare as compare

    search = tmp_path / "search"
    search.mkdir()
    save_genotype(PAPER_GENOTYPE, search / "genotype.json")
    seen = {}

    def fake_run_compare(search_run, cfg, out, **kwargs):
        seen.update(kwargs)
        out.mkdir(exist_ok=True)  # the CLI made it to hold its shared lock
        (out / "compare.md").write_text("table\n", encoding="utf-8")
        return compare.CompareResult(out, [], {})

    monkeypatch.setattr(compare, "run_compare", fake_run_compare)
    out = tmp_path / "cmp"
    assert main(["compare", str(search), "--out", str(out), *extra]) == 0
    assert seen["num_random"] == 20 and seen["seed_noise"] is seed_noise
    assert (seen["scorer"] is not None) is scored
    assert (seen["control_scorer"] is not None) is control
    if control:
        assert seen["control_scorer"].keywords["untrained"] is True


# -- everything is checked before the first retraining (issue 24, item 1) ---------------------


@pytest.fixture
def search(tmp_path, tiny_search_run):
    """A copy of a finished tiny search (L=2, B=2, strides 4 and 8, one epoch)."""
    return copy_search(tiny_search_run, tmp_path / "search")


def _refused(capsys, argv: list[str], *folders) -> str:
    """The one error line of a refused ``argv``; no file under ``folders`` changed."""
    before = snapshot(*folders)
    line = one_error(capsys, argv)
    assert snapshot(*folders) == before
    return line


def _set_epochs(search, epochs: int) -> None:
    config = search / "config.yaml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("epochs: 1\n", f"epochs: {epochs}\n", 1), encoding="utf-8")


def _other_genotype(search):
    import random

    from autodeeplab.genotype import load_genotype, random_genotype

    mine = load_genotype(search / "genotype.json")
    rng = random.Random(1)
    return next(g for g in (random_genotype(rng, 2, 2, 2) for _ in range(100)) if g != mine)


def test_compare_refuses_an_unfinished_search(search, tmp_path, capsys, monkeypatch) -> None:
    """A resumed extension that was killed: the config wants 2 epochs, the checkpoint has 1."""
    fake_training(monkeypatch)
    _set_epochs(search, 2)
    line = _refused(capsys, compare_argv(search, tmp_path / "cmp"), search)
    assert "epoch_0001.pt: the search has run 1 of its 2 epochs" in line
    assert f"'autodeeplab search --resume --out {search}'" in line
    assert not (tmp_path / "cmp").exists()


def test_compare_refuses_a_search_stopped_mid_epoch(search, tmp_path, capsys) -> None:
    import shutil

    shutil.copyfile(
        search / "checkpoints" / "epoch_0001.pt",
        search / "checkpoints" / "epoch_0002_step_000001.pt",
    )
    _set_epochs(search, 2)
    line = _refused(capsys, compare_argv(search, tmp_path / "cmp"), search)
    assert "epoch_0002_step_000001.pt: the search was stopped during an epoch" in line


def test_compare_refuses_a_genotype_its_checkpoint_does_not_decode_to(
    search, tmp_path, capsys
) -> None:
    from autodeeplab.genotype import save_genotype

    save_genotype(_other_genotype(search), search / "genotype.json")
    line = _refused(capsys, compare_argv(search, tmp_path / "cmp"), search)
    assert "genotype.json: is not the genotype its last checkpoint epoch_0001.pt decodes to" in line
    assert "autodeeplab decode" in line


def test_compare_refuses_a_search_without_its_config(search, tmp_path, capsys) -> None:
    (search / "config.yaml").unlink()
    line = _refused(capsys, compare_argv(search, tmp_path / "cmp"), search)
    assert "config.yaml: missing; compare draws its random genotypes from the search's own" in line


def test_compare_refuses_a_config_of_another_space(search, tmp_path, capsys) -> None:
    config = search / "config.yaml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("num_layers: 2", "num_layers: 3", 1), encoding="utf-8")
    line = _refused(capsys, compare_argv(search, tmp_path / "cmp"), search)
    assert "genotype.json: L=2, B=2" in line and "do not fit the space of" in line


def test_compare_refuses_a_search_without_checkpoints(search, tmp_path, capsys) -> None:
    import shutil

    shutil.rmtree(search / "checkpoints")
    line = _refused(capsys, compare_argv(search, tmp_path / "cmp"), search)
    assert "checkpoints: no search checkpoint that loads" in line


def test_compare_refuses_an_out_made_with_other_settings(
    search, tmp_path, capsys, monkeypatch
) -> None:
    """A rerun with another schedule or data is refused; --overwrite starts afresh."""
    trained = fake_training(monkeypatch)
    out = tmp_path / "cmp"
    assert main(compare_argv(search, out)) == 0
    manifest = json.loads((out / "compare_manifest.json").read_text())
    assert manifest["train_config"]["train"]["iters"] == 4
    capsys.readouterr()
    line = _refused(capsys, compare_argv(search, out, "--set", "train.iters=5"), search, out)
    assert "compare_manifest.json: this --out was made with other settings" in line
    assert "train.iters 4 -> 5" in line and "add --overwrite to start afresh" in line
    line = _refused(capsys, compare_argv(search, out, "--set", "train.seed=7"), search, out)
    assert "train.seed 0 -> 7" in line
    line = _refused(capsys, compare_argv(search, out, "--set", "data.val_samples=3"), search, out)
    assert "data.val_samples 4 -> 3" in line
    assert trained == ["searched_seed0", "random0", "handmade", "paper"]
    assert main(compare_argv(search, out, "--set", "train.iters=5", "--overwrite")) == 0
    assert trained[4:] == trained[:4]  # every network retrained
    manifest = json.loads((out / "compare_manifest.json").read_text())
    assert manifest["train_config"]["train"]["iters"] == 5


def test_compare_refuses_an_out_of_an_older_compare(search, tmp_path, capsys) -> None:
    out = tmp_path / "cmp"
    (out / "runs" / "paper").mkdir(parents=True)
    (out / "runs" / "paper" / "result.json").write_text("{}", encoding="utf-8")
    line = _refused(capsys, compare_argv(search, out), search, out)
    assert "holds runs/paper/result.json but no compare_manifest.json" in line


def test_compare_refuses_an_out_that_is_its_search(search, capsys) -> None:
    line = _refused(capsys, compare_argv(search, search, "--overwrite"), search)
    assert f"is the input {search}; give another --out folder" in line


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r.update(miou=0.99), "its scores do not match its digest"),
        (lambda r: r.pop("digest"), "has no digest (written by an older autodeeplab)"),
        (lambda r: r.update(miou="high"), "'miou' must be a number, got str high"),
        (lambda r: r.pop("seed"), "'seed' must be an integer, got missing"),
        (lambda r: r.update(seed=9), "is {'name': 'paper', 'kind': 'paper', 'seed': 9}"),
        (None, "not valid JSON"),
    ],
)
def test_compare_refuses_a_result_that_does_not_check_out(
    search, tmp_path, capsys, monkeypatch, edit, message
) -> None:
    """An edited, malformed or digest-less result.json in --out: one line, nothing reported."""
    fake_training(monkeypatch)
    out = tmp_path / "cmp"
    assert main(compare_argv(search, out)) == 0
    capsys.readouterr()
    path = out / "runs" / "paper" / "result.json"
    if edit is None:
        path.write_text('{"name": "paper", ', encoding="utf-8")
    else:
        result = json.loads(path.read_text())
        edit(result)
        path.write_text(json.dumps(result), encoding="utf-8")
    line = _refused(capsys, compare_argv(search, out), search, out)
    assert line.split(": error: ")[1].startswith(f"{path}: ") and message in line
    assert f"remove {path.parent} to retrain that network" in line


def test_compare_refuses_a_result_whose_checkpoint_or_genotype_changed(
    search, tmp_path, capsys, monkeypatch
) -> None:
    fake_training(monkeypatch)
    out = tmp_path / "cmp"
    assert main(compare_argv(search, out)) == 0
    capsys.readouterr()
    checkpoint = out / "runs" / "random0" / "train" / "checkpoints" / "best.pt"
    weights = checkpoint.read_bytes()
    checkpoint.write_bytes(b"other")
    line = _refused(capsys, compare_argv(search, out), search, out)
    assert "random0/result.json: its checkpoint" in line and "changed after the result" in line
    checkpoint.write_bytes(weights)
    from autodeeplab.genotype import save_genotype

    save_genotype(_other_genotype(search), out / "runs" / "handmade" / "genotype.json")
    line = _refused(capsys, compare_argv(search, out), search, out)
    assert "handmade/genotype.json: holds another genotype than this comparison's" in line


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--random", "1001"], "--random 1001: must be an integer in 0..1000"),
        (["--searched-seeds", "0"], "--searched-seeds 0: must be an integer in 1..100"),
        (["--reference-seeds", "1000000000"], "--reference-seeds 1000000000: must be an"),
    ],
)
def test_compare_counts_are_bounded(search, tmp_path, capsys, flags, message) -> None:
    argv = compare_argv(search, tmp_path / "cmp")
    line = _refused(capsys, [*argv, *flags], search)
    assert message in line
    assert not (tmp_path / "cmp").exists()


def test_compare_reuse_of_its_own_out_is_refused(search, tmp_path, capsys, monkeypatch) -> None:
    fake_training(monkeypatch)
    out = tmp_path / "cmp"
    assert main(compare_argv(search, out)) == 0
    capsys.readouterr()
    line = _refused(capsys, compare_argv(search, out, "--reuse", str(out)), search, out)
    assert "is --out itself" in line


def test_compare_refuses_a_checkpoint_past_the_configured_epochs(search, tmp_path, capsys) -> None:
    """The last checkpoint is after epoch 2 but config.yaml says 1 (an edited config)."""
    import torch

    path = search / "checkpoints" / "epoch_0001.pt"
    state = torch.load(path, weights_only=True)
    state["epoch"] = 2
    torch.save(state, search / "checkpoints" / "epoch_0002.pt")
    line = _refused(capsys, compare_argv(search, tmp_path / "cmp"), search)
    assert "config.yaml: configures 1 epochs but epoch_0002.pt is after epoch 2" in line

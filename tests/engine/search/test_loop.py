"""The search loop: stored split, exact resume, logs and outputs."""

from __future__ import annotations

import functools
import json

import pytest
import torch

from autodeeplab.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from autodeeplab.data.split import load_split
from autodeeplab.engine.search.loop import decode_checkpoint, find_latest_checkpoint, run_search
from autodeeplab.genotype import load_genotype
from autodeeplab.space import SearchNetwork


@pytest.fixture
def tiny_config(search_config):
    """The shared tiny search over 3 epochs (alpha/beta learn in epochs 2 and 3)."""
    return functools.partial(search_config, "search.epochs=3")


@pytest.mark.slow
def test_search_writes_outputs_and_log(tmp_path, tiny_config):
    result = run_search(tiny_config(), tmp_path, progress=False)
    assert load_genotype(tmp_path / "genotype.json") == result.genotype
    assert result.genotype.num_layers == 3 and result.genotype.num_blocks == 2
    for name in ("genotype_path.png", "genotype_cell.png", "config.yaml", "split.json"):
        assert (tmp_path / name).stat().st_size > 0
    records = [
        json.loads(line) for line in (tmp_path / "search_log.jsonl").read_text().splitlines()
    ]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[0]["arch_loss"] is None and records[1]["arch_loss"] is not None
    alpha = torch.tensor(records[-1]["alpha"])
    assert alpha.shape == (5, 8)  # B=2: 2 + 3 edges, 8 ops
    torch.testing.assert_close(alpha.sum(-1), torch.ones(5), atol=1e-6, rtol=0)
    assert 0.0 <= records[-1]["val_miou"] <= 1.0
    a, b, meta = load_split(tmp_path / "split.json")
    assert len(a) == len(b) == 4 and not set(a) & set(b) and meta["num_samples"] == 8
    # Only the newest keep_checkpoints (2) epochs are kept; decode gives the final genotype.
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt"))
    assert ckpts == ["epoch_0002.pt", "epoch_0003.pt"]
    genotype, meta = decode_checkpoint(tmp_path / "checkpoints" / "epoch_0003.pt")
    assert genotype == result.genotype and meta["epoch"] == 3


@pytest.mark.slow
def test_resumed_search_equals_uninterrupted(tmp_path, tiny_config):
    cfg = tiny_config()
    full = run_search(cfg, tmp_path / "full", progress=False)
    part = run_search(cfg, tmp_path / "part", progress=False, stop_after=1)
    assert part.epochs == 1 and not (tmp_path / "part" / "genotype.json").exists()
    part = run_search(cfg, tmp_path / "part", progress=False, resume=True, stop_after=2)
    resumed = run_search(cfg, tmp_path / "part", progress=False, resume=True)
    assert resumed.genotype == full.genotype
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "epoch_0003.pt", "search")
    b = load_checkpoint(tmp_path / "part" / "checkpoints" / "epoch_0003.pt", "search")
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["step"] == b["step"] == 6
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    log_a = (tmp_path / "full" / "search_log.jsonl").read_text().splitlines()
    log_b = (tmp_path / "part" / "search_log.jsonl").read_text().splitlines()
    strip = lambda rec: {k: v for k, v in json.loads(rec).items() if k != "seconds"}  # noqa: E731
    assert [strip(r) for r in log_a] == [strip(r) for r in log_b]


@pytest.mark.slow
def test_skip_dropout_is_applied_and_resumes_exactly(tmp_path, tiny_config):
    # P-DARTS's skip dropout draws from the run's RNG: it changes the search, and a resumed
    # search still equals the uninterrupted one.
    cfg = tiny_config("search.skip_dropout=0.5", "search.epochs=2")
    run_search(tiny_config("search.epochs=2"), tmp_path / "plain", progress=False)
    full = run_search(cfg, tmp_path / "full", progress=False)
    run_search(cfg, tmp_path / "part", progress=False, stop_after=1)
    run_search(cfg, tmp_path / "part", progress=False, resume=True)
    a, b, c = (
        load_checkpoint(tmp_path / name / "checkpoints" / "epoch_0002.pt", "search")["model"]
        for name in ("full", "part", "plain")
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["alpha"], c["alpha"])
    assert full.genotype == load_genotype(tmp_path / "part" / "genotype.json")


@pytest.mark.slow
def test_skip_dropout_can_wait_for_the_architecture_updates(tmp_path, tiny_config):
    # With skip_dropout_in_warmup=false the warm-up epoch (alpha/beta frozen) trains w
    # exactly as without dropout; the epochs with architecture updates get the dropout.
    def weights(name: str, *overrides: str) -> list[dict[str, torch.Tensor]]:
        run_search(tiny_config("search.epochs=2", *overrides), tmp_path / name, progress=False)
        ckpts = sorted((tmp_path / name / "checkpoints").glob("*.pt"))
        return [load_checkpoint(p, "search")["model"] for p in ckpts]

    plain = weights("plain")
    late = weights("late", "search.skip_dropout=0.5", "search.skip_dropout_in_warmup=false")
    always = weights("always", "search.skip_dropout=0.5")
    assert all(torch.equal(plain[0][k], late[0][k]) for k in plain[0])  # epoch 1: warm-up
    assert not all(torch.equal(plain[0][k], always[0][k]) for k in plain[0])
    assert not torch.equal(plain[1]["alpha"], late[1]["alpha"])  # epoch 2: dropout on


@pytest.mark.slow
def test_cosine_architecture_lr_is_logged_and_resumes_exactly(tmp_path, tiny_config):
    cfg = tiny_config("search.arch_lr=0.01", "search.arch_lr_schedule=cosine")
    run_search(cfg, tmp_path / "full", progress=False)
    run_search(cfg, tmp_path / "part", progress=False, stop_after=2)
    run_search(cfg, tmp_path / "part", progress=False, resume=True)
    records = [
        json.loads(line)
        for line in (tmp_path / "full" / "search_log.jsonl").read_text().splitlines()
    ]
    # Epochs 2 and 3 learn alpha/beta: the k-th of 2 gets 0.01 x (1 + cos(pi k / 2)) / 2.
    assert [r["arch_lr"] for r in records] == [None, 0.01, pytest.approx(0.005)]
    a, b = (
        load_checkpoint(tmp_path / name / "checkpoints" / "epoch_0003.pt", "search")
        for name in ("full", "part")
    )
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    lr = a["arch_optimizer"]["param_groups"][0]["lr"]
    assert lr == b["arch_optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.005)


@pytest.mark.slow
def test_margin_warning_reads_the_base_lr_of_an_annealed_schedule(tmp_path, tiny_config):
    # The cosine schedule's last epoch runs at half the cap here; the lr is still at auto's
    # cap, so the warning must not advise raising it.
    cfg = tiny_config("search.arch_lr=0.03", "search.arch_lr_schedule=cosine")
    run_search(cfg, tmp_path, progress=False)
    last = json.loads((tmp_path / "search_log.jsonl").read_text().splitlines()[-1])
    assert last["arch_lr"] == pytest.approx(0.015)
    assert "already 0.03" in last["warning"] and "raise search.arch_lr" not in last["warning"]


@pytest.mark.slow
def test_checkpointed_cells_change_no_result_and_may_differ_on_resume(tmp_path, tiny_config):
    # Checkpointing only trades time for memory: a run that resumes with it switched on
    # (e.g. after running out of memory) ends where the plain run ends, BN statistics too.
    plain = tiny_config("model.checkpoint_cells=false", "search.epochs=2")
    full = run_search(plain, tmp_path / "full", progress=False)
    run_search(plain, tmp_path / "part", progress=False, stop_after=1)
    ckpt = tiny_config("model.checkpoint_cells=true", "search.epochs=2")
    resumed = run_search(ckpt, tmp_path / "part", progress=False, resume=True)
    assert resumed.genotype == full.genotype
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "epoch_0002.pt", "search")
    b = load_checkpoint(tmp_path / "part" / "checkpoints" / "epoch_0002.pt", "search")
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_resume_drops_log_records_after_the_checkpoint(tmp_path, tiny_config):
    cfg = tiny_config("search.epochs=2")
    run_search(cfg, tmp_path, progress=False, stop_after=1)
    log = tmp_path / "search_log.jsonl"
    # A run killed after logging epoch 2 but before its checkpoint leaves a stray record.
    log.write_text(log.read_text() + json.dumps({"epoch": 2, "stray": True}) + "\n")
    run_search(cfg, tmp_path, progress=False, resume=True)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and "stray" not in records[1]


@pytest.mark.slow
def test_resume_errors(tmp_path, tiny_config):
    with pytest.raises(FileNotFoundError, match="no complete search checkpoint"):
        run_search(tiny_config(), tmp_path, progress=False, resume=True)
    run_search(tiny_config("search.epochs=1"), tmp_path, progress=False)
    ckpt = find_latest_checkpoint(tmp_path)
    assert ckpt is not None and ckpt.name == "epoch_0001.pt"
    with pytest.raises(CheckpointError, match="made with model.num_blocks=2, not 3"):
        run_search(tiny_config("model.num_blocks=3"), tmp_path, progress=False, resume=ckpt)
    # A truncated newest checkpoint is skipped in favour of an older complete one.
    (tmp_path / "checkpoints" / "epoch_0002.pt").write_bytes(ckpt.read_bytes()[:100])
    assert find_latest_checkpoint(tmp_path) == ckpt


def test_batch_larger_than_split_is_refused(tmp_path, tiny_config):
    with pytest.raises(ValueError, match="fewer than the batch size"):
        run_search(tiny_config("search.batch_size=8"), tmp_path, progress=False)


@pytest.mark.slow
def test_cost_target_pulls_the_decoded_network_toward_it(tmp_path, tiny_config):
    from autodeeplab.model import build_model
    from autodeeplab.model.complexity import count_multiply_adds

    # A large arch lr: alpha starts within 1e-3 of uniform, and 6 architecture steps at the
    # default 3e-3 leave the decoded network to float noise (it differed with thread count).
    common = ("search.epochs=3", "search.arch_start_epoch=0", "search.cost_weight=10",
              "search.arch_lr=0.1")  # fmt: skip
    free = run_search(tiny_config(*common), tmp_path / "free", progress=False)
    runs = {}
    for name, target in (("low", "20M@64x64"), ("high", "40G@64x64")):
        cfg = tiny_config(*common, f"search.target_madds={target}")
        runs[name] = run_search(cfg, tmp_path / name, progress=False)
    logs = {
        name: [json.loads(line) for line in (tmp_path / name / "search_log.jsonl").open()]
        for name in runs
    }
    last = {name: log[-1] for name, log in logs.items()}
    assert last["low"]["target_madds"] == 20e6 and last["high"]["target_madds"] == 40e9
    # The expected cost moves toward each target from the same start.
    assert logs["low"][-1]["expected_madds"] < logs["low"][0]["expected_madds"]
    assert logs["high"][-1]["expected_madds"] > logs["high"][0]["expected_madds"]
    # A low budget decodes to a network no dearer than the unconstrained search's, and the two
    # budgets are ordered. (Under the relative path decode an unconstrained search no longer
    # defaults to the dearest, all-stride-4 path, so "much cheaper than free" is not a given.)
    classes = 8  # the synthetic dataset's
    free_madds = count_multiply_adds(build_model(free.genotype, classes, 20), (64, 64))
    assert last["low"]["decoded_madds"] <= free_madds
    assert last["low"]["decoded_madds"] < last["high"]["decoded_madds"]
    counted = count_multiply_adds(build_model(runs["low"].genotype, classes, 20), (64, 64))
    assert last["low"]["decoded_madds"] == counted


@pytest.mark.slow
def test_partial_channel_search_decodes_its_checkpoint_like_the_network(tmp_path, tiny_config):
    """With PC-DARTS edge normalisation the checkpoint decode weighs gamma too."""
    cfg = tiny_config("model.partial_channels=2", "search.epochs=1")
    result = run_search(cfg, tmp_path, progress=False)
    path = tmp_path / "checkpoints" / "epoch_0001.pt"
    assert decode_checkpoint(path)[0] == result.genotype
    # Edge weights that overrule alpha: block 1 (edges 2, 3, 4) must take inputs 1 and 2.
    state = load_checkpoint(path, "search")
    state["model"]["alpha"][2:5] = torch.tensor([[0.0] * 7 + [9.0]] * 3)  # all favour the last op
    state["model"]["alpha"][2, 7] = 12.0  # edge 2 (input 0) has the strongest op weight
    state["model"]["gamma"] = torch.tensor([0.0, 0.0, -20.0, 5.0, 5.0])
    save_checkpoint(path, state, "search")
    net = SearchNetwork(8, 3, 2, 2, strides=(4, 8), partial_channels=2)  # the tiny search
    net.load_state_dict(state["model"])
    genotype = decode_checkpoint(path)[0]
    assert genotype == net.genotype()
    assert sorted(i for _, i in genotype.cell[1]) == [1, 2]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_search_on_cuda_with_amp_and_checkpointed_cells(tmp_path, tiny_config):
    # On CUDA, auto is bf16 (fp16 with its GradScalers where bf16 is unsupported).
    cfg = tiny_config(
        "search.device=cuda", "search.amp=auto", "model.checkpoint_cells=true", "search.epochs=2"
    )
    torch.cuda.reset_peak_memory_stats()
    result = run_search(cfg, tmp_path, progress=False)
    assert torch.cuda.max_memory_allocated() > 0
    log = (tmp_path / "search_log.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in log]
    assert all(r["train_loss"] > 0 and r["val_loss"] > 0 for r in records)
    assert records[-1]["arch_loss"] is not None
    # The checkpoint loads on CPU and decodes to the run's genotype.
    genotype, _ = decode_checkpoint(tmp_path / "checkpoints" / "epoch_0002.pt")
    assert genotype == result.genotype


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_search_on_cuda_stops_and_resumes(tmp_path, tiny_config):
    # A CUDA run's checkpoint holds device tensors beside CPU ones (Adam's step counters, the
    # RNG states): writing it, and resuming from it, must work there as on the CPU.
    cfg = tiny_config("search.device=cuda", "search.amp=off")
    part = run_search(cfg, tmp_path, progress=False, stop_after=1)
    assert part.epochs == 1
    resumed = run_search(cfg, tmp_path, progress=False, resume=True)
    log = (tmp_path / "search_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2, 3]
    state = load_checkpoint(tmp_path / "checkpoints" / "epoch_0003.pt", "search")
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert decode_checkpoint(tmp_path / "checkpoints" / "epoch_0003.pt")[0] == resumed.genotype


@pytest.mark.slow
def test_forced_start_and_auto_lr_as_the_run_picks_them(tmp_path, tiny_config):
    # The loss condition is never met (0.001), so the updates wait for the deadline,
    # arch_start_epoch + (epochs - arch_start_epoch) // 2 = 1 + 2 // 2 = epoch index 2, the
    # third. auto then spreads the budget over the steps left: 1 epoch x 2 steps (4 trainB
    # images, batch 2), so lr = 0.02 / 2 = 0.01, inside ARCH_LR_RANGE.
    cfg = tiny_config(
        "search.arch_start_loss=0.001", "search.arch_lr=auto", "search.arch_logit_budget=0.02"
    )
    run_search(cfg, tmp_path, progress=False)
    records = [
        json.loads(line) for line in (tmp_path / "search_log.jsonl").read_text().splitlines()
    ]
    assert [r["arch_start_forced"] for r in records] == [None, None, True]
    assert [r["arch_lr"] for r in records] == [None, None, pytest.approx(0.01)]
    assert [r["arch_loss"] is None for r in records] == [True, True, False]
    assert [r["arch_start_loss"] for r in records] == [0.001] * 3
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "epoch_0003.pt", "search")
    assert ckpt["arch_optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.01)
    search = json.loads((tmp_path / "genotype.json").read_text())["search"]
    assert search["arch_started_epoch"] == 2


@pytest.mark.slow
def test_the_cli_tiny_search_starts_its_updates_by_the_deadline(tiny_search_run):
    # The CLI's tiny search inherits the CPU preset (arch_start_loss=prior, arch_lr=auto):
    # with arch_start_epoch=0 and one epoch, no loss is known yet when epoch 0 begins, so the
    # updates start only because the deadline (0 + 1 // 2 = 0) forces them; auto's one step
    # (4 samples: 2 trainB, batch 2) asks for the whole budget at once and gets the cap.
    from autodeeplab.engine.search.schedule import ARCH_LR_RANGE

    (record,) = [
        json.loads(line) for line in (tiny_search_run / "search_log.jsonl").read_text().splitlines()
    ]
    assert record["arch_start_forced"] is True and record["arch_loss"] is not None
    assert record["arch_lr"] == ARCH_LR_RANGE[1]

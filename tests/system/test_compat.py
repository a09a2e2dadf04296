"""Run folders written before the layout move still load, resume and evaluate.

tests/fixtures/pre_move holds a tiny search and a tiny training written by commit ac94a17
(its README says how), with what that code computed from them (``expected.json``). Today's
code must read the same files and give the same numbers: the move changed no behaviour.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from autodeeplab.checkpoint import load_checkpoint
from autodeeplab.cli import main
from autodeeplab.engine.search.checkpoints import decode_checkpoint
from autodeeplab.genotype import Genotype, load_genotype
from autodeeplab.model import load_trained_model

PRE_MOVE = Path(__file__).resolve().parents[1] / "fixtures" / "pre_move"
EXPECTED = json.loads((PRE_MOVE / "expected.json").read_text(encoding="utf-8"))
SEARCH_CKPT = PRE_MOVE / "search" / "checkpoints" / "epoch_0002.pt"
TRAIN_CKPT = PRE_MOVE / "train" / "checkpoints" / "best.pt"

#: The flags the fixture's search ran with (its README): a 1-layer, 1-block supernet.
PRE_MOVE_SEARCH_ARGV = [
    "--crop", "32", "--batch-size", "2", "--seed", "3", "--no-progress",
    "--set", "model.num_layers=1", "--set", "num_blocks=1", "--set", "filter_multiplier=2",
    "--set", "model.strides=[4]", "--set", "model.stem_channels=[4,4,8]",
    "--set", "train_samples=4", "--set", "val_samples=2", "--set", "arch_start_epoch=0",
    "--set", "tensorboard=false", "--set", "search.device=cpu",
    "--set", "search.keep_checkpoints=1",
]  # fmt: skip

#: The searched genotype: one cell of one block, one layer at stride 4.
PRE_MOVE_GENOTYPE = Genotype(cell=((("dil_conv_5x5", 0), ("sep_conv_3x3", 1)),), path=(0,))


def test_pre_move_genotype_files_load() -> None:
    searched = load_genotype(PRE_MOVE / "search" / "genotype.json")
    assert searched == PRE_MOVE_GENOTYPE and searched.strides == (4,)
    assert load_genotype(PRE_MOVE / "train" / "genotype.json") == searched
    # The checkpoints carry the same genotype.
    assert Genotype.from_dict(load_checkpoint(SEARCH_CKPT, "search")["genotype"]) == searched
    assert Genotype.from_dict(load_checkpoint(TRAIN_CKPT, "train")["genotype"]) == searched


def test_pre_move_search_checkpoint_decodes() -> None:
    genotype, meta = decode_checkpoint(SEARCH_CKPT)
    assert genotype == PRE_MOVE_GENOTYPE and meta["epoch"] == 2


def test_pre_move_trained_network_is_rebuilt_with_the_same_outputs() -> None:
    model, state = load_trained_model(TRAIN_CKPT, channels_last=False)
    assert state["iteration"] == 2 and len(state["class_names"]) == model.num_classes == 8
    model.eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x).float()
    want = EXPECTED["trained_logits_seed0_1x3x32x32"]
    assert list(logits.shape) == want["shape"]
    torch.testing.assert_close(
        logits.double().sum((0, 2, 3)), torch.tensor(want["class_sums"], dtype=torch.float64)
    )
    # Bitwise: the same network, the same kernels on CPU.
    assert hashlib.sha256(logits.contiguous().numpy().tobytes()).hexdigest() == want["sha256"]


@pytest.mark.slow
def test_pre_move_search_checkpoint_decodes_from_the_cli(tmp_path: Path, capsys) -> None:
    out = tmp_path / "decoded" / "genotype.json"
    assert main(["decode", str(SEARCH_CKPT), "--out", str(out)]) == 0
    assert load_genotype(out) == PRE_MOVE_GENOTYPE
    assert Genotype.from_json(capsys.readouterr().out) == PRE_MOVE_GENOTYPE


@pytest.mark.slow
def test_pre_move_search_run_resumes_for_one_more_epoch(tmp_path: Path) -> None:
    run = tmp_path / "search"
    shutil.copytree(PRE_MOVE / "search", run)
    # The old code decoded by argmax/Viterbi; the CPU preset now decodes by score, and a
    # resume takes its decode from the command line like its epochs.
    assert main(["search", "--out", str(run), *PRE_MOVE_SEARCH_ARGV, "--epochs", "3",
                 "--set", "search.decode=argmax", "--resume"]) == 0  # fmt: skip
    log = [json.loads(line) for line in (run / "search_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    want = EXPECTED["resumed_to_epoch_3"]
    state = load_checkpoint(run / "checkpoints" / "epoch_0003.pt", "search")
    # What the old code's own resume gave: bitwise the same alpha and beta.
    assert torch.equal(state["model"]["alpha"], torch.tensor(want["alpha"]))
    assert torch.equal(state["model"]["beta"], torch.tensor(want["beta"]))
    assert log[-1]["val_miou"] == want["val_miou"]
    assert load_genotype(run / "genotype.json") == Genotype.from_dict(want["genotype"])


@pytest.mark.slow
def test_pre_move_trained_checkpoint_evaluates(tmp_path: Path) -> None:
    ckpt = tmp_path / "best.pt"
    shutil.copy2(TRAIN_CKPT, ckpt)
    out = tmp_path / "metrics.json"
    assert main(["eval", str(ckpt), "--data", "synthetic", "--device", "cpu",
                 "--out", str(out)]) == 0  # fmt: skip
    metrics = json.loads(out.read_text())
    for key, value in EXPECTED["eval_val"].items():
        assert metrics[key] == value, key
    assert (metrics["split"], metrics["num_images"], metrics["iteration"]) == ("val", 2, 2)

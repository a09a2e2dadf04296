"""No output overwrites an input (issue 24, item 5).

Every command that writes a file refuses, in one line and before any work, an output path
that is one of its inputs (the same file after resolving links), or a run folder whose
writes would hit one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from autodeeplab.files import check_outputs_spare_inputs, same_path
from conftest import TINY_SEARCH_ARGV, one_error, tiny_folder, tiny_train_argv


def test_same_path_follows_links_and_paths_not_yet_there(tmp_path: Path) -> None:
    (tmp_path / "a.pt").write_bytes(b"x")
    os.symlink(tmp_path / "a.pt", tmp_path / "link.json")
    assert same_path(tmp_path / "a.pt", tmp_path / "link.json")
    assert same_path(tmp_path / "sub" / ".." / "new", tmp_path / "new")
    assert not same_path(tmp_path / "a.pt", tmp_path / "b.pt")
    with pytest.raises(ValueError, match="would overwrite the checkpoint"):
        outputs = [("--out", tmp_path / "link.json")]
        check_outputs_spare_inputs(outputs, [("checkpoint", tmp_path / "a.pt")])
    # An input inside an output folder (one the command replaces) is hit too.
    with pytest.raises(ValueError, match="config file"):
        check_outputs_spare_inputs([("", tmp_path)], [("config file", tmp_path / "a.pt")])
    check_outputs_spare_inputs([("--out", tmp_path / "b")], [("x", None), ("y", tmp_path / "a.pt")])


def _unchanged(path: Path, argv: list[str], capsys, said: str) -> None:
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    line = one_error(capsys, argv)
    assert said in line, line
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


@pytest.mark.slow
def test_file_outputs_never_name_their_inputs(
    tiny_search_run: Path, tiny_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    search_ckpt = tmp_path / "search.pt"
    shutil.copyfile(next((tiny_search_run / "checkpoints").glob("epoch_*.pt")), search_ckpt)
    os.symlink(search_ckpt, tmp_path / "link.json")
    hit = "would overwrite the checkpoint"
    _unchanged(search_ckpt, ["decode", str(search_ckpt), "--out", str(search_ckpt)], capsys, hit)
    link = str(tmp_path / "link.json")
    _unchanged(search_ckpt, ["decode", str(search_ckpt), "--out", link], capsys, hit)
    # decode's figures beside --out: NAME_path.png
    figure = tmp_path / "g_path.png"
    shutil.copyfile(search_ckpt, figure)
    argv = ["decode", str(figure), "--out", str(tmp_path / "g.json")]
    _unchanged(figure, argv, capsys, hit)

    ckpt = tmp_path / "best.pt"
    shutil.copyfile(tiny_checkpoint, ckpt)
    _unchanged(ckpt, ["export", str(ckpt), "--out", str(ckpt)], capsys, hit)
    onnx_named = tmp_path / "model.onnx"  # export's default output is <stem>.onnx beside it
    shutil.copyfile(tiny_checkpoint, onnx_named)
    _unchanged(onnx_named, ["export", str(onnx_named)], capsys, hit)
    json_named = tmp_path / "metrics.json"
    shutil.copyfile(tiny_checkpoint, json_named)
    _unchanged(json_named, ["eval", str(json_named)], capsys, hit)
    # predict: a.png's mask is a_mask.png, which is an input image here
    image = tmp_path / "a_mask.png"
    shutil.copyfile(tiny_folder(tmp_path / "d") / "images" / "val" / "val0.png", image)
    shutil.copyfile(image, tmp_path / "a.png")
    argv = ["predict", str(ckpt), str(tmp_path / "a.png"), str(image), "--out", str(tmp_path)]
    _unchanged(image, argv, capsys, "would overwrite the image")


@pytest.mark.slow
def test_run_folders_never_write_over_their_inputs(
    tiny_search_run: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "run"
    shutil.copytree(tiny_search_run, out)
    config = out / "config.yaml"
    argv = ["search", "--config", str(config), "--out", str(out), *TINY_SEARCH_ARGV, "--overwrite"]
    _unchanged(config, argv, capsys, "would overwrite the config file")
    # A dataset folder is not a run folder.
    data = tiny_folder(tmp_path / "data")
    argv = ["train", *tiny_train_argv(iters=1, eval_every=1, synthetic=False)]
    line = one_error(capsys, [*argv, "--data", f"folder:{data}", "--out", str(data)])
    assert f"--out {data}: is the dataset this command reads" in line
    assert not (data / "config.yaml").exists()
    # train --genotype OUT/genotype.json --overwrite would remove the genotype it reads.
    train_out = tmp_path / "t"
    train_out.mkdir()
    shutil.copyfile(tiny_search_run / "genotype.json", train_out / "genotype.json")
    argv = ["train", "--genotype", str(train_out / "genotype.json"), "--out", str(train_out),
            "--overwrite", "--data", "synthetic"]  # fmt: skip
    _unchanged(train_out / "genotype.json", argv, capsys, "would overwrite the genotype file")


@pytest.mark.slow
def test_report_never_writes_over_its_log(tiny_search_run: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_search_run, run)
    (run / "report_search.md").unlink()
    os.symlink(run / "search_log.jsonl", run / "report_search.md")
    _unchanged(run / "search_log.jsonl", ["report", str(run)], capsys, "search log")

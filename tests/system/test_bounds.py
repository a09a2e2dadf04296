"""Every size and count from a user file or flag is bounded before memory is allocated
(issue 15, class 3): classes, widths, image sizes, scales, cell blocks, path levels, JSON
nesting; and eval / predict estimate their peak memory and refuse what would not fit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autodeeplab.cli import main
from autodeeplab.engine.infer import memory as inference_memory
from autodeeplab.engine.infer.forward import predict_probabilities
from autodeeplab.engine.infer.memory import _LiveBytes, estimate_inference_bytes
from autodeeplab.model import build_model
from conftest import error_line, one_error


def _error(capsys: pytest.CaptureFixture[str], argv: list[str], code: int = 2) -> str:
    return one_error(capsys, argv, code, absent=("Traceback", "MemoryError"))


def _usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """argparse's refusal of a flag: exit 2, its usage, and one error line."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return error_line(capsys.readouterr().err)


# -- flags -----------------------------------------------------------------------------------------

FLAG_BOUNDS = {
    # name: (argv, message); argparse-level ones exit through SystemExit
    "classes_zero": (["info", "auto-deeplab-s", "--classes", "0"], "--classes 0: give 1 to 255"),
    "classes_huge": (["info", "auto-deeplab-s", "--classes", "1000000000"], "give 1 to 255"),
    "width_huge": (
        ["info", "auto-deeplab-s", "--filter-multiplier", "1000000"],
        "--filter-multiplier 1000000: give 1 to 4096",
    ),
    "size_huge": (["info", "auto-deeplab-s", "--size", "70000x10"], "at most 65536"),
    "scale_huge": (["eval", "x.pt", "--scales", "1000"], "a number in 0.01..100"),
    "scale_tiny": (["predict", "x.pt", "i.png", "--out", "o", "--scales", "0.001"], "0.01..100"),
    "scales_many": (["eval", "x.pt", "--scales", ",".join(["1"] * 17)], "at most 16"),
    "scale_nan": (["eval", "x.pt", "--scales", "nan"], "a number in 0.01..100"),
}


@pytest.mark.parametrize("name", sorted(FLAG_BOUNDS))
def test_flag_sizes_are_bounded(capsys, name: str) -> None:
    argv, message = FLAG_BOUNDS[name]
    if argv[0] == "info" and "--size" not in argv:
        line = _error(capsys, argv)
    else:
        line = _usage_error(capsys, argv)
    assert message in line, line


def test_info_counts_any_allowed_size_without_allocating(capsys) -> None:
    argv = ["info", "auto-deeplab-l", "--size", "65536x65536", "--classes", "255", "--json"]
    assert main(argv) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["size"] == [65536, 65536] and info["multiply_adds"] > 10**14


# -- genotype files ----------------------------------------------------------------------------


def _genotype(tmp: Path, cell: list, path: list) -> Path:
    f = tmp / "g.json"
    f.write_text(json.dumps({"cell": cell, "path": path}))
    return f


def test_a_cell_with_too_many_blocks_is_refused(tmp_path: Path, capsys) -> None:
    blocks = [[["skip_connect", 0], ["skip_connect", 1]] for _ in range(65)]
    f = _genotype(tmp_path, blocks, [0])
    line = _error(capsys, ["info", str(f)])
    assert f"{f}: 'cell' has 65 blocks, at most 64" in line


def test_a_deep_path_is_refused_for_training_before_allocation(tmp_path: Path, capsys) -> None:
    """Level 15 means F * 2**15 channels: petabytes of weights, refused from the meta count."""
    f = _genotype(tmp_path, [[["sep_conv_3x3", 0], ["sep_conv_3x3", 1]]], list(range(16)))
    out = tmp_path / "t"
    line = _error(capsys, ["train", "--genotype", str(f), "--out", str(out), "--no-progress"])
    assert "deepest path level 15, stride 131072" in line and "GiB, more than the" in line
    assert not out.exists()
    assert main(["info", str(f), "--size", "64", "--json"]) == 0  # counting it is free
    assert json.loads(capsys.readouterr().out)["parameters"] > 10**12


# -- JSON nesting and huge numbers in files the CLI reads -------------------------------------


def test_absurd_json_in_a_search_log_gives_one_line(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "search_log.jsonl").write_text("[" * 100_000 + "\n" + '{"epoch": ' + "9" * 5000 + "}\n")
    line = _error(capsys, ["report", str(run)])
    assert "holds no complete epoch record yet" in line


@pytest.mark.parametrize("content", ["[" * 100_000, '{"classes": [' + "9" * 5000 + "]}"])
def test_absurd_classes_json_gives_one_line(tmp_path: Path, capsys, content: str) -> None:
    root = tmp_path / "data"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    (root / "classes.json").write_text(content)
    line = _error(capsys, ["data", "check", f"folder:{root}"])
    assert f"{root / 'classes.json'}: cannot read it as JSON" in line and len(line) < 300


# -- inference memory ----------------------------------------------------------------------------

INFERENCE_OPTIONS = {
    "whole": {"mode": "whole", "scales": (1.0,), "flip": False},
    "multi_scale_flip": {"mode": "whole", "scales": (0.5, 1.0, 1.5), "flip": True},
    "slide": {"mode": "slide", "scales": (1.0,), "flip": False, "window": 24},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(INFERENCE_OPTIONS))
def test_the_estimate_tracks_the_real_peak_of_live_tensors(name: str) -> None:
    """The meta-device estimate against the same count on a real CPU run (same code path)."""
    model = build_model("auto-deeplab-s", 5, filter_multiplier=2, aspp_channels=8).eval()
    options = INFERENCE_OPTIONS[name]
    size = (40, 72)
    x = torch.randn(1, 3, *size)
    with _LiveBytes() as live:
        predict_probabilities(model, x, **options)
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    real = live.peak + x.numel() * 4 + weights
    estimate = estimate_inference_bytes(model, size, **options)
    # Whole-image single-scale runs the same ops (CPU kernels differ by a few KiB of
    # temporaries); the rest probe the largest scale or a few windows (documented).
    low, high = (0.99, 1.01) if name == "whole" else (0.9, 1.6)
    assert low * real <= estimate <= high * real, (estimate, real)


@pytest.mark.slow
def test_predict_and_eval_refuse_what_would_not_fit(
    tiny_checkpoint: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    big, small = tmp_path / "big.png", tmp_path / "small.png"
    Image.fromarray(np.zeros((200, 300, 3), np.uint8)).save(big)
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(small)
    from autodeeplab.model import load_trained_model

    trained = tiny_checkpoint
    model, _ = load_trained_model(trained)
    whole = estimate_inference_bytes(model, (200, 300), mode="whole", scales=(1.0,))
    slide = estimate_inference_bytes(model, (200, 300), mode="slide", window=32, scales=(1.0,))
    assert slide < whole  # a sliding window bounds the network's activations
    limit = (slide + whole) // 2
    monkeypatch.setattr(inference_memory, "device_memory_bytes", lambda kind: limit)
    out = tmp_path / "p"
    argv = ["predict", str(trained), str(big), str(small), "--out", str(out), "--device", "cpu"]
    line = _error(capsys, argv)
    assert f"{big}: inference at 200x300 (scales 1.0) needs about" in line
    assert "--mode slide with a --window" in line
    assert sorted(p.name for p in out.iterdir()) == ["small_mask.png", "small_overlay.png"]
    # A sliding window bounds the peak: the same image then fits.
    argv = [*argv[:3], "--out", str(out), "--device", "cpu", "--mode", "slide", "--window", "32"]
    assert main(argv) == 0
    argv = ["eval", str(trained), "--device", "cpu", "--scales", "16", "--out", str(tmp_path)]
    line = _error(capsys, argv)
    assert "synthetic val batch 0: inference at 32x32 (scales 16.0) needs about" in line
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize("count", ["0", "-3", "10000000000000"])
def test_eval_num_samples_is_bounded_before_the_checkpoint_is_read(capsys, count: str) -> None:
    """A huge --num-samples is one line with the bound, not an endless evaluation."""
    line = _error(capsys, ["eval", "nosuch.pt", "--num-samples", count])
    assert f"--num-samples {count}: give 1 to 1,000,000,000 images" in line

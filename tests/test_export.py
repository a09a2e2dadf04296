"""Export: ONNX and TorchScript parity with eager PyTorch, dynamic shapes, errors and the CLI."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from autodeeplab import export
from autodeeplab.checkpoint import CheckpointError, save_checkpoint
from autodeeplab.cli import main
from autodeeplab.config import TrainConfig, config_to_dict, load_config
from autodeeplab.export import ExportError, export_model, export_network
from autodeeplab.genotype import PAPER_GENOTYPE, Genotype
from autodeeplab.model import AutoDeepLab

#: Every op that resizes or pads: dil_conv in reduction cells (bilinear halving,
#: align_corners=True), strided skip, both pools; the path reaches stride 32 and comes back
#: down twice (bilinear upsampling before a cell), so the decoder resizes too.
TINY_GENOTYPE = Genotype(
    cell=(
        (("dil_conv_3x3", 0), ("sep_conv_5x5", 1)),
        (("avg_pool_3x3", 2), ("skip_connect", 0)),
        (("max_pool_3x3", 1), ("dil_conv_5x5", 3)),
    ),
    path=(0, 1, 2, 3, 2, 1),
)
SIZE = (65, 65)


def _tiny_model(genotype: Genotype = TINY_GENOTYPE, seed: int = 0) -> AutoDeepLab:
    """F=4 network with BN statistics of real activations and logits of order one."""
    torch.manual_seed(seed)
    model = AutoDeepLab(genotype, 3, filter_multiplier=4, aspp_channels=8, decoder_channels=8)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average: the statistics of the batches below
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(seed + 1)))
        model.classifier.weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(seed))
    return model.eval()


def _write_train_checkpoint(path: Path, model: AutoDeepLab, crop: int = 65) -> Path:
    """A checkpoint in the format engine/train/loop.py writes (the keys export reads, and more)."""
    cfg = load_config(None, [f"data.crop={crop}"], base=TrainConfig())
    save_checkpoint(
        path,
        {
            "iteration": 4,
            "best_miou": 0.5,
            "best_iter": 4,
            "model_kwargs": model.model_kwargs,
            "model": model.state_dict(),
            "config": config_to_dict(cfg),
            "genotype": model.genotype.to_dict(),
            "class_names": ["a", "b", "c"],
            "palette": [[0, 0, 0], [255, 0, 0], [0, 255, 0]],
            "metrics": {"miou": 0.5},
        },
        "train",
    )
    return path


@pytest.fixture(scope="module")
def tiny_model() -> AutoDeepLab:
    """The network in ``checkpoint``, for eager reference outputs (never modified)."""
    # Module fixtures run before conftest's one-thread fixture; contended threads are slow.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _tiny_model()
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_model: AutoDeepLab) -> Path:
    folder = tmp_path_factory.mktemp("trained") / "checkpoints"
    return _write_train_checkpoint(folder / "best.pt", tiny_model)


def _eager(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).numpy()


def _onnx_run(path: Path, x: torch.Tensor) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": x.numpy()})[0]


@pytest.mark.slow
def test_onnx_export_matches_pytorch(
    checkpoint: Path, tiny_model: AutoDeepLab, tmp_path: Path
) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    result = export_model(checkpoint, out, format="onnx", size=SIZE)

    assert result.path == out and out.stat().st_size > 10_000
    assert result.checked_shapes == [(1, 3, 65, 65)]
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4
    assert 1.0 < result.max_abs_logit < 100.0  # the check compares logits of real magnitude
    proto = onnx.load(str(out))
    assert max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")) == 17
    # Not dynamic: the traced shape is fixed.
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 65, 65]
    # An independent run of the file agrees with the network that was saved.
    x = torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(7))
    np.testing.assert_allclose(_onnx_run(out, x), _eager(tiny_model, x), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_dynamic_onnx_runs_at_other_sizes(
    checkpoint: Path, tiny_model: AutoDeepLab, tmp_path: Path
) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "dynamic.onnx"
    result = export_model(checkpoint, out, size=SIZE, dynamic=True)

    assert result.checked_shapes == [(1, 3, 65, 65), (2, 3, 49, 35)]
    assert result.max_abs_diff < 1e-4
    assert "also checked at 2x3x49x35" in result.describe()
    for shape in [(1, 3, 97, 129), (3, 3, 40, 72)]:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)))
        got = _onnx_run(out, x)
        assert got.shape == (shape[0], 3, *shape[2:])
        np.testing.assert_allclose(got, _eager(tiny_model, x), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_paper_genotype_exports_with_dynamic_shapes(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    model = _tiny_model(PAPER_GENOTYPE)
    out = tmp_path / "paper.onnx"
    result = export_network(model, out, "onnx", SIZE, dynamic=True)
    assert result.checked_shapes == [(1, 3, 65, 65), (2, 3, 49, 35)]
    # Twelve layers with BN calibrated on four random images amplify rounding: the export
    # must then be as close to a float64 run as float32 PyTorch is (and here it is).
    x = torch.randn(1, 3, 81, 113, generator=torch.Generator().manual_seed(5))
    exact = _eager(copy.deepcopy(model).double(), x.double())
    fp32_error = np.abs(_eager(model, x) - exact).max()
    assert np.abs(_onnx_run(out, x) - exact).max() <= 2 * fp32_error + 1e-4


class _IllConditioned(torch.nn.Module):
    """(x * 1e4 + 0.1) - x * 1e4: 0.1 in float64, off by up to ~2e-3 in float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        big = x * 1e4
        return (big + 0.1) - big


@pytest.mark.parametrize(("offset", "passes"), [(0.0, True), (0.05, False)])
def test_parity_is_judged_against_float64_when_float32_itself_is_inexact(
    offset: float, passes: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    exact = np.full((1, 3, 16, 16), 0.1)
    # An export that computes the exact result (+ offset) differs from eager float32 by more
    # than the plain tolerance either way.
    exported = (exact + offset).astype(np.float32)
    monkeypatch.setattr(export, "_run_exported", lambda path, fmt, inputs: [exported.copy()])
    result = export.ExportResult(Path("m.onnx"), "onnx", (16, 16), False, None, None)
    if passes:
        export._check_parity(_IllConditioned(), Path("m.onnx"), "onnx", [x], result)
        assert result.max_abs_diff > 1e-4 + 1e-5  # the plain tolerance alone would fail it
        assert result.export_fp64_error < 1e-6
        assert result.torch_fp32_error == pytest.approx(result.max_abs_diff)
        assert "within float32 rounding" in result.describe()
    else:
        with pytest.raises(ExportError, match=r"vs float64 torch: export 5\.0e-02"):
            export._check_parity(_IllConditioned(), Path("m.onnx"), "onnx", [x], result)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
@pytest.mark.slow
def test_torchscript_export_matches_pytorch(
    checkpoint: Path, tiny_model: AutoDeepLab, tmp_path: Path
) -> None:
    out = tmp_path / "model.torchscript.pt"
    result = export_model(checkpoint, out, format="torchscript", size=SIZE, dynamic=True)

    assert result.format == "torchscript" and result.opset is None
    assert result.checked_shapes == [(1, 3, 65, 65), (2, 3, 49, 35)]
    assert result.max_abs_diff < 1e-5
    loaded = torch.jit.load(str(out))
    x = torch.randn(1, 3, 81, 47, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), _eager(tiny_model, x), atol=1e-5)


@pytest.mark.parametrize("format", ["onnx", "torchscript"])
@pytest.mark.slow
def test_parity_failure_raises_and_writes_nothing(
    format: str, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if format == "onnx":
        pytest.importorskip("onnxruntime")
    run_exported = export._run_exported

    def corrupted(path: Path, fmt: str, inputs: list[torch.Tensor]) -> list[np.ndarray]:
        outputs = run_exported(path, fmt, inputs)
        outputs[0][0, 1, 10, 20] += 0.01  # one wrong logit
        return outputs

    monkeypatch.setattr(export, "_run_exported", corrupted)
    out = tmp_path / "bad.onnx"
    with pytest.raises(
        ExportError, match=r"does not match PyTorch: max \|.* - torch\| = 1\.00e-02"
    ):
        export_model(checkpoint, out, format=format, size=SIZE)
    assert list(tmp_path.iterdir()) == []  # no file, no temp file

    # Without the check the file is written and no figure is claimed.
    result = export_model(checkpoint, out, format=format, size=SIZE, check=False)
    assert out.is_file() and result.max_abs_diff is None
    assert "not checked" in result.describe()


def test_cli_export_prints_parity_and_uses_checkpoint_defaults(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("onnxruntime")
    assert main(["export", str(checkpoint), "--format", "onnx", "--dynamic"]) == 0
    out = capsys.readouterr().out
    # Default size: the training crop (65) from the checkpoint's config.
    assert out.startswith("max |onnx - torch| = ")
    assert "over 1x3x65x65" in out and "dynamic N,H,W also checked at 2x3x49x35" in out
    assert checkpoint.with_name("best.onnx").is_file()  # default: beside the checkpoint


def test_cli_export_fails_on_parity_error(
    checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def wrong(path: Path, fmt: str, inputs: list[torch.Tensor]) -> list[np.ndarray]:
        return [np.zeros((x.shape[0], 3, *x.shape[2:]), np.float32) for x in inputs]

    monkeypatch.setattr(export, "_run_exported", wrong)
    out = tmp_path / "m.pt"
    argv = ["export", str(checkpoint), "--format", "torchscript", "--size", "65", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("autodeeplab export: error: the torchscript export")
    assert not out.exists()


def test_search_checkpoint_is_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "epoch_0001.pt"
    save_checkpoint(path, {"epoch": 1, "model": {}, "config": {}}, "search")
    with pytest.raises(CheckpointError, match="'search' checkpoint, not a trained network"):
        export_model(path, tmp_path / "m.onnx")
    assert main(["export", str(path), "--format", "torchscript"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "autodeeplab decode" in err[0]


def test_too_small_trace_size_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="at least 33"):
        export_model(checkpoint, tmp_path / "m.pt", format="torchscript", size=(32, 65))
    with pytest.raises(ExportError, match="unknown export format 'tflite'"):
        export_model(checkpoint, tmp_path / "m.tflite", format="tflite")


def test_missing_onnxruntime_says_how_to_install(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    with pytest.raises(ExportError, match=r"needs the 'onnx(runtime)?' package; pip install"):
        export_model(checkpoint, tmp_path / "m.onnx", size=SIZE)
    assert list(tmp_path.iterdir()) == []

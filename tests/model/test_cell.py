"""Discrete cell: wiring against TF's hnasnet encoding, the closed-form parameter count,
reduction, every op, and the scheduled drop path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autodeeplab.genotype import PAPER_GENOTYPE, Genotype
from autodeeplab.model.cell import (
    Cell,
    drop_path,
    layer_keep_prob,
    scheduled_keep_prob,
)
from autodeeplab.ops import PRIMITIVES, DilConv, SepConv

# TF ``hnasnet()`` (docs/design.md §5.2), written down independently of PAPER_GENOTYPE: one op per
# branch (left, right per block) and TF's hidden-state indices, where 0 = H^{l-1},
# 1 = H^{l-2} and k >= 2 = block k-1.
TF_OPERATIONS = [
    "atrous_5x5",
    "separable_3x3_2",
    "separable_3x3_2",
    "atrous_3x3",
    "separable_3x3_2",
    "separable_3x3_2",
    "separable_5x5_2",
    "separable_5x5_2",
    "separable_5x5_2",
    "atrous_5x5",
]
TF_HIDDENSTATE_INDICES = [1, 0, 1, 0, 3, 1, 4, 2, 3, 5]


def _tf_op_matches(name: str, module: nn.Module) -> bool:
    kernel = int(name.split("x")[0][-1])
    if name.startswith("atrous"):
        return isinstance(module, DilConv) and module.conv.kernel_size == (kernel, kernel)
    return isinstance(module, SepConv) and module.dw1.kernel_size == (kernel, kernel)


def _rand_input(c: int, size: int = 9, n: int = 2) -> torch.Tensor:
    return torch.randn(n, c, size, size)


@pytest.mark.parametrize("stride", [1, 2])
def test_paper_cell_matches_tf_wiring(stride: int) -> None:
    torch.manual_seed(0)
    cell = Cell(PAPER_GENOTYPE, channels=4, in_channels=12, prev_channels=6, stride=stride).eval()
    for j, name in enumerate(TF_OPERATIONS):
        assert _tf_op_matches(name, cell.ops[j]), (j, name, cell.ops[j])
    net, prev = _rand_input(12), _rand_input(6, size=17)
    with torch.no_grad():
        out = cell(net, prev)
        # Independent reference: TF's state order, with the cell's own op modules.
        prev_r = nn.functional.interpolate(prev, size=(9, 9), mode="bilinear", align_corners=True)
        hidden = [cell.preprocess(net), cell.preprocess_prev(prev_r)]
        for b in range(5):
            block = 0
            for j in (2 * b, 2 * b + 1):
                block = block + cell.ops[j](hidden[TF_HIDDENSTATE_INDICES[j]])
            hidden.append(block)
        ref = torch.cat(hidden[2:], dim=1)
    torch.testing.assert_close(out, ref)
    size = 9 if stride == 1 else 5
    assert out.shape == (2, 20, size, size)


@pytest.mark.parametrize(("channels", "c1", "c2"), [(20, 128, 64), (40, 100, 100), (80, 200, 100)])
def test_paper_cell_closed_form_parameters(channels: int, c1: int, c2: int) -> None:
    cell = Cell(PAPER_GENOTYPE, channels, in_channels=c1, prev_channels=c2)
    n = sum(p.numel() for p in cell.parameters())
    c = channels
    assert n == (c1 + c2) * c + 4 * c + 73 * c**2 + 256 * c


def test_reduction_strides_only_branches_reading_cell_inputs() -> None:
    cell = Cell(PAPER_GENOTYPE, 4, 8, 8, stride=2)
    for op, inp in zip(cell.ops, cell.inputs, strict=True):
        stride = op.dw1.stride[0] if isinstance(op, SepConv) else op.stride
        assert stride == (2 if inp < 2 else 1)


def test_prev_projection_only_when_channels_differ() -> None:
    assert Cell(PAPER_GENOTYPE, 8, 16, 8).preprocess_prev is None
    assert Cell(PAPER_GENOTYPE, 8, 16, 16).preprocess_prev is not None


def test_missing_prev_layer_uses_net() -> None:
    torch.manual_seed(0)
    cell = Cell(PAPER_GENOTYPE, 4, in_channels=6, prev_channels=None).eval()
    net = _rand_input(6)
    with torch.no_grad():
        torch.testing.assert_close(cell(net), cell(net, net))


@pytest.mark.parametrize("op", [p for p in PRIMITIVES if p != "none"])
@pytest.mark.parametrize("stride", [1, 2])
def test_every_op_in_a_cell(op: str, stride: int) -> None:
    genotype = Genotype(cell=(((op, 0), (op, 1)), ((op, 2), (op, 0))), path=(0,))
    cell = Cell(genotype, 4, in_channels=8, prev_channels=6, stride=stride)
    net = _rand_input(8, size=11).requires_grad_()
    out = cell(net, _rand_input(6, size=21))
    size = 11 if stride == 1 else 6
    assert out.shape == (2, 8, size, size)
    out.square().mean().backward()
    assert net.grad is not None and net.grad.abs().sum() > 0


def test_cell_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="stride"):
        Cell(PAPER_GENOTYPE, 4, 4, 4, stride=3)
    with pytest.raises(ValueError, match="drop_path_keep_prob"):
        Cell(PAPER_GENOTYPE, 4, 4, 4, drop_path_keep_prob=0.0)


# --- scheduled drop path ---------------------------------------------------------------


def test_keep_prob_schedule_formula() -> None:
    # kp = 0.7, L = 12: kp_l = 1 - ((i + 1) / 12) * 0.3.
    assert layer_keep_prob(0.7, 0, 12) == pytest.approx(0.975)
    assert layer_keep_prob(0.7, 5, 12) == pytest.approx(0.85)
    assert layer_keep_prob(0.7, 11, 12) == pytest.approx(0.7)
    # kp_t = 1 - min(1, step / total) * (1 - kp_l).
    assert scheduled_keep_prob(0.7, 0, 1000) == 1.0
    assert scheduled_keep_prob(0.7, 250, 1000) == pytest.approx(0.925)
    assert scheduled_keep_prob(0.7, 1000, 1000) == pytest.approx(0.7)
    assert scheduled_keep_prob(0.7, 5000, 1000) == pytest.approx(0.7)


def test_drop_path_masks_whole_samples_and_rescales() -> None:
    torch.manual_seed(0)
    x = torch.ones(4000, 2, 3, 3)
    y = drop_path(x, 0.75)
    per_sample = y.flatten(1)
    # Each sample is all zeros or all 1/kp.
    assert torch.all(per_sample.amin(1) == per_sample.amax(1))
    values = per_sample[:, 0].unique()
    torch.testing.assert_close(values, torch.tensor([0.0, 1 / 0.75]))
    kept = (per_sample[:, 0] > 0).float().mean().item()
    assert kept == pytest.approx(0.75, abs=0.03)
    assert y.mean().item() == pytest.approx(1.0, abs=0.05)


def _twin_cells(genotype: Genotype, keep: float) -> tuple[Cell, Cell]:
    torch.manual_seed(0)
    plain = Cell(genotype, 4, 8, 8)
    dropping = Cell(genotype, 4, 8, 8, drop_path_keep_prob=keep)
    dropping.load_state_dict(plain.state_dict())
    return plain, dropping


def test_drop_path_only_in_training() -> None:
    plain, dropping = _twin_cells(PAPER_GENOTYPE, 0.5)
    net, prev = _rand_input(8, n=16), _rand_input(8, n=16)
    plain.eval(), dropping.eval()
    with torch.no_grad():
        torch.testing.assert_close(dropping(net, prev, 1.0), plain(net, prev, 1.0))
    plain.train(), dropping.train()
    torch.manual_seed(1)
    assert not torch.allclose(dropping(net, prev, 1.0), plain(net, prev, 1.0))
    # At the start of training (progress 0) kp_t = 1: identity.
    torch.testing.assert_close(dropping(net, prev, 0.0), plain(net, prev, 0.0))


def test_drop_path_spares_skip_connect() -> None:
    # TF never drops its identity op ('none' there, skip_connect here).
    genotype = Genotype(cell=((("skip_connect", 0), ("skip_connect", 1)),), path=(0,))
    plain, dropping = _twin_cells(genotype, 0.1)
    net, prev = _rand_input(8, n=8), _rand_input(8, n=8)
    torch.testing.assert_close(dropping(net, prev, 1.0), plain(net, prev, 1.0))

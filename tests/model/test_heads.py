"""ASPP and DeepLabv3+ decoder: shapes, parameter formulas, and BN on the pooled branch."""

from __future__ import annotations

import torch
from torch import nn

from autodeeplab.model.heads import ASPP, Decoder, PooledBatchNorm2d


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_pooled_batchnorm_with_one_value_uses_running_stats() -> None:
    torch.manual_seed(0)
    bn = PooledBatchNorm2d(4)
    bn.running_mean.copy_(torch.tensor([0.5, -1.0, 0.0, 2.0]))
    bn.running_var.copy_(torch.tensor([4.0, 1.0, 0.25, 9.0]))
    nn.init.uniform_(bn.weight), nn.init.uniform_(bn.bias)
    x = torch.randn(1, 4, 1, 1)
    y = bn.train()(x)
    expected = (x - bn.running_mean.view(1, 4, 1, 1)) / torch.sqrt(
        bn.running_var.view(1, 4, 1, 1) + bn.eps
    ) * bn.weight.view(1, 4, 1, 1) + bn.bias.view(1, 4, 1, 1)
    torch.testing.assert_close(y, expected)
    # One value says nothing about the variance: the running stats stay as they were.
    torch.testing.assert_close(bn.running_var, torch.tensor([4.0, 1.0, 0.25, 9.0]))
    assert int(bn.num_batches_tracked) == 0


def test_pooled_batchnorm_is_batchnorm_otherwise() -> None:
    torch.manual_seed(0)
    pooled, plain = PooledBatchNorm2d(4), nn.BatchNorm2d(4)
    assert pooled.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(3, 4, 1, 1)
    torch.testing.assert_close(pooled.train()(x), plain.train()(x))
    torch.testing.assert_close(pooled.running_mean, plain.running_mean)
    x1 = torch.randn(1, 4, 1, 1)
    torch.testing.assert_close(pooled.eval()(x1), plain.eval()(x1))


def test_aspp_shape_and_parameters() -> None:
    aspp = ASPP(200, rates=(12, 24, 36))
    # docs/design.md §9.2: 7,424 * c + 330,752 for input channels c.
    assert _count(aspp) == 7_424 * 200 + 330_752
    assert [b[0].dilation for b in aspp.branches] == [(1, 1), (12, 12), (24, 24), (36, 36)]
    small = ASPP(6, out_channels=8).train()
    y = small(torch.randn(1, 6, 7, 5))  # batch 1 in training: the pooled branch still works
    assert y.shape == (1, 8, 7, 5)


def test_image_pooling_branch_is_constant_over_space() -> None:
    aspp = ASPP(3, out_channels=4).eval()
    x = torch.randn(2, 3, 6, 9)
    pooled = aspp.pooling(x)
    assert pooled.shape == (2, 4, 6, 9)
    torch.testing.assert_close(pooled, pooled[:, :, :1, :1].expand_as(pooled))


def test_decoder_shape_and_parameters() -> None:
    decoder = Decoder(256, 100)
    # docs/design.md §9.2 without the logits: 48 * c_low + 1,291,360.
    assert _count(decoder) == 48 * 100 + 1_291_360
    small = Decoder(8, 5, low_level_channels=3, channels=6)
    y = small(torch.randn(2, 8, 11, 21), torch.randn(2, 5, 21, 41))
    assert y.shape == (2, 6, 21, 41)

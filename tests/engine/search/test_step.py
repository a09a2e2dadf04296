"""One search step: each step changes only its own parameter set and frees its gradients."""

from __future__ import annotations

import torch

from autodeeplab.engine.search.step import (
    all_finite,
    bn_running_stats,
    search_step,
    validate_supernet,
)
from autodeeplab.space import SearchNetwork


def _net() -> SearchNetwork:
    torch.manual_seed(0)
    return SearchNetwork(3, num_layers=3, num_blocks=2, filter_multiplier=2, strides=(4, 8, 16))


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 32, 32, generator=g), torch.randint(0, 3, (2, 32, 32), generator=g)


def test_weight_step_changes_no_architecture_parameter():
    net = _net()
    weights, arch = net.weight_parameters(), net.arch_parameters()
    before_arch = [p.detach().clone() for p in arch]
    before_w = [p.detach().clone() for p in weights]
    opt = torch.optim.SGD(weights, lr=0.1, momentum=0.9)
    search_step(net, _batch(), weights, arch, opt, 5.0, torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(before_arch, arch, strict=True))
    assert all(p.grad is None for p in arch)
    changed = sum(not torch.equal(a, b) for a, b in zip(before_w, weights, strict=True))
    assert changed > 0.9 * len(weights)
    assert all(p.requires_grad for p in net.parameters())  # restored after the step


def test_architecture_step_changes_no_weight():
    net = _net()
    weights, arch = net.weight_parameters(), net.arch_parameters()
    before_w = [p.detach().clone() for p in weights]
    before_arch = [p.detach().clone() for p in arch]
    opt = torch.optim.Adam(arch, lr=0.01)
    search_step(net, _batch(), arch, weights, opt, None, torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(before_w, weights, strict=True))
    assert all(p.grad is None for p in weights)
    assert all(not torch.equal(a, b) for a, b in zip(before_arch, arch, strict=True))


def test_step_frees_its_gradients_before_the_othersearch_step():
    # Memory: a w step's gradients are as large as the weights, and the architecture step
    # that follows freezes the weights; nothing may keep them alive through it.
    net = _net()
    weights, arch = net.weight_parameters(), net.arch_parameters()
    w_opt = torch.optim.SGD(weights, lr=0.1, momentum=0.9)
    a_opt = torch.optim.Adam(arch, lr=0.01)
    before = [p.detach().clone() for p in weights]
    search_step(net, _batch(), weights, arch, w_opt, 5.0, torch.device("cpu"))
    assert all(p.grad is None for p in net.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, weights, strict=True))
    assert all(len(w_opt.state[p]) > 0 for p in weights if p.requires_grad)  # momentum kept
    search_step(net, _batch(), arch, weights, a_opt, None, torch.device("cpu"))
    assert all(p.grad is None for p in net.parameters())


def test_bn_running_stats_are_every_batchnorms_mean_and_variance():
    net = _net()
    stats = bn_running_stats(net)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(stats) == 2 * len(norms) > 0
    assert stats[0] is norms[0].running_mean and stats[1] is norms[0].running_var


def test_all_finite_sees_one_nan():
    tensors = [torch.zeros(3), torch.ones(2, 2)]
    assert bool(all_finite(tensors))
    tensors[1][0, 1] = float("nan")
    assert not bool(all_finite(tensors))


def test_recalibrate_bn_sets_running_stats_to_the_batches_mean() -> None:
    from autodeeplab.engine.search.step import recalibrate_bn

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4, momentum=0.1))
    net.eval()
    net[1].running_mean.fill_(7.0)
    batches = [torch.randn(2, 3, 5, 5) + k for k in range(3)]
    recalibrate_bn(net, batches, torch.device("cpu"))
    with torch.no_grad():
        means = [net[0](x).mean((0, 2, 3)) for x in batches]
    torch.testing.assert_close(net[1].running_mean, torch.stack(means).mean(0))
    assert net[1].momentum == 0.1 and not net.training  # put back as they were


def test_validation_with_batch_statistics_leaves_the_running_ones_alone() -> None:
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    net = _net()
    data = TensorDataset(torch.randn(4, 3, 32, 32) * 3 + 2, torch.randint(0, 3, (4, 32, 32)))
    loader = DataLoader(data, batch_size=2)
    before = [t.clone() for t in bn_running_stats(net)]
    batch = validate_supernet(net, loader, 3, torch.device("cpu"), batch_stats=True)
    assert all(torch.equal(a, b) for a, b in zip(before, bn_running_stats(net), strict=True))
    running = validate_supernet(net, loader, 3, torch.device("cpu"))
    assert batch["val_loss"] != running["val_loss"]  # the two modes normalise differently
    assert net.training  # the search goes on training after validation

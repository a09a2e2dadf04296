"""Does alpha follow signal or bias? Gradient statistics of the supernet, per variant.

For each variant the supernet (built from one seed) trains its weights for ``--warmup-steps``
SGD steps on synthetic trainA batches, then the gradient of the architecture loss in alpha
is taken on ``--batches`` trainB batches (weights frozen, as in the architecture step).
Printed per variant, one JSON line:

- ``sign_agreement``: the share of alpha entries (edge, op) whose gradient has the same sign
  on every batch. Chance, for independent signs, is 2 / 2**batches (12.5% for 4): a search
  whose gradients agree no more often than that follows noise.
- ``push_param_free`` / ``push_parametric``: the mean over batches and edges of -sign(grad)
  for the parameter-free ops (pools, skip) and for the convolutions: +1 means every batch
  pushes those ops' alpha up. A consistent push on the parameter-free ops, whatever the
  batch, is the bias behind the DARTS collapse.
- ``initial_ce`` and ``initial_grad_norm``: the loss and weight-gradient norm of the first
  batch at initialisation (the search-head classifier init decides these).

Variants: ``default`` (docs/design.md §12.11-12.12: BN after the search pools, small-init heads);
``no-pool-bn`` (pools without BN, as before round 2); ``torch-head-init`` (PyTorch's default
init for the head classifiers, as before round 2); ``aux-skip`` (DARTS-, weight 1);
``partial-channels`` (PC-DARTS, K=4).

    OMP_NUM_THREADS=2 python benchmarks/search_dynamics.py --variant default --variant no-pool-bn

``--checkpoint CKPT`` measures a saved search instead (a synthetic-data run): the gradients
of the architecture loss in alpha and beta on ``--batches`` trainB batches of
``--batch-size`` images, and, for batch sizes of 1, 2 and 4 times that (gradients averaged
over consecutive batches), each entry's signal-to-noise ratio |mean| / std over batches.
Adam moves a logit by about lr x SNR a step on average and by about lr at random, so the
SNR says how many architecture steps a decision needs before its signal outgrows the noise.
One JSON line per (parameter, batch size), after one with beta's mean |gradient| per layer:

    OMP_NUM_THREADS=1 python benchmarks/search_dynamics.py \
        --checkpoint runs/search/checkpoints/epoch_0006.pt --batches 16
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import torch
import torch.nn.functional as F

from autodeeplab.data import build_dataset
from autodeeplab.space.diagnostics import PARAMETER_FREE_OPS
from autodeeplab.space.network import SearchNetwork

VARIANTS = ("default", "no-pool-bn", "torch-head-init", "aux-skip", "partial-channels")


def _batches(split_seed: int, n: int, batch: int, crop: int) -> list[tuple[torch.Tensor, ...]]:
    data = build_dataset("synthetic", "train", size=crop, seed=split_seed, num_samples=n * batch)
    out = []
    for i in range(n):
        items = [data[i * batch + j] for j in range(batch)]
        out.append((torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])))
    return out


def measure(variant: str, args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    kwargs = {}
    if variant == "no-pool-bn":
        kwargs["pool_bn"] = False
    if variant == "partial-channels":
        kwargs["partial_channels"] = 4
    net = SearchNetwork(
        8,
        num_layers=args.layers,
        strides=tuple(args.strides),
        filter_multiplier=8,
        **kwargs,
    )
    if variant == "torch-head-init":
        for head in net.heads:
            head.classifier.reset_parameters()
    if variant == "aux-skip":
        net.set_skip_remedies(aux_skip=1.0)
    arch = net.arch_parameters()
    weights = net.weight_parameters()
    opt = torch.optim.SGD(weights, lr=0.025, momentum=0.9, weight_decay=3e-4)
    train_a = _batches(args.seed, args.warmup_steps, 2, args.crop)
    train_b = _batches(args.seed + 1000, args.batches, 2, args.crop)
    initial: dict[str, float] = {}
    net.train()
    for step, (x, y) in enumerate(train_a):
        for p in arch:
            p.requires_grad_(False)
        loss = F.cross_entropy(net(x), y, ignore_index=255)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(weights, 5.0)
        if step == 0:
            initial = {"initial_ce": float(loss), "initial_grad_norm": float(norm)}
        opt.step()
        for p in arch:
            p.requires_grad_(True)
    grads = []
    for x, y in train_b:
        for p in weights:
            p.requires_grad_(False)
        loss = F.cross_entropy(net(x), y, ignore_index=255)
        (g,) = torch.autograd.grad(loss, [net.alpha])
        grads.append(g)
        for p in weights:
            p.requires_grad_(True)
    signs = torch.stack([g.sign() for g in grads])  # (batches, edges, ops)
    agree = (signs == signs[:1]).all(0) & (signs[0] != 0)
    free = [k for k, name in enumerate(net.primitives) if name in PARAMETER_FREE_OPS]
    free = [k for k in free if net.primitives[k] != "none"]
    convs = [k for k, name in enumerate(net.primitives) if name not in PARAMETER_FREE_OPS]
    push = -signs.mean(0)  # (edges, ops): +1 = every batch raises this op's alpha
    return {
        "benchmark": "search_dynamics",
        "variant": variant,
        "layers": args.layers,
        "strides": args.strides,
        "crop": args.crop,
        "warmup_steps": args.warmup_steps,
        "batches": args.batches,
        "seed": args.seed,
        "train_ce_last": float(loss),
        "sign_agreement": float(agree.double().mean()),
        "sign_agreement_chance": 2.0 / 2**args.batches,
        "push_param_free": float(push[:, free].mean()),
        "push_parametric": float(push[:, convs].mean()),
        "alpha_grad_norm": float(torch.stack([g.norm() for g in grads]).mean()),
        **initial,
    }


def checkpoint_snr(args: argparse.Namespace) -> list[dict]:
    """Per-entry gradient SNR of alpha and beta at a saved search, per architecture batch."""
    from autodeeplab.checkpoint import load_checkpoint

    torch.manual_seed(args.seed)
    state = load_checkpoint(args.checkpoint, "search")
    net = SearchNetwork(**state["model_kwargs"])
    net.load_state_dict(state["model"])
    net.train()  # as in the architecture step: batch statistics, skip dropout off (not set)
    crop = int(state["config"]["data"]["crop"])
    weights = net.weight_parameters()
    for p in weights:
        p.requires_grad_(False)
    grads: dict[str, list[torch.Tensor]] = {"alpha": [], "beta": []}
    for x, y in _batches(args.seed + 1000, args.batches, args.batch_size, crop):
        loss = F.cross_entropy(net(x), y, ignore_index=255)
        ga, gb = torch.autograd.grad(loss, [net.alpha, net.beta])
        grads["alpha"].append(ga.flatten())
        grads["beta"].append(gb.flatten())
    # Where beta's gradient lives: the mean |gradient| per layer. Every node output passes a
    # BatchNorm (the next cell's preprocessing, the heads) before it is used, so its scale
    # is lost: beta's only signal is the ratio of the inputs of nodes with two or more, and
    # a node with one input (each of layer 1's) gives its beta none.
    beta_abs = torch.stack(grads["beta"]).abs().mean(0).view_as(net.beta)
    alpha_abs = float(torch.stack(grads["alpha"]).abs().mean())
    records = [
        {
            "benchmark": "search_dynamics_beta_by_layer",
            "checkpoint": str(args.checkpoint),
            "epoch": state["epoch"],
            "batch_size": args.batch_size,
            "batches": args.batches,
            "alpha_mean_abs_grad": alpha_abs,
            "beta_mean_abs_grad_by_layer": [
                float(layer[net.beta_mask[i]].mean()) for i, layer in enumerate(beta_abs)
            ],
        }
    ]
    for name, gs in grads.items():
        g = torch.stack(gs)
        g = g[:, g.abs().sum(0) > 0]  # beta's impossible transitions have no gradient
        for k in (1, 2, 4):
            n = g.shape[0] // k
            if n < 2:
                continue
            m = g[: n * k].reshape(n, k, -1).mean(1)
            snr = m.mean(0).abs() / m.std(0).clamp_min(1e-12)
            records.append(
                {
                    "benchmark": "search_dynamics_snr",
                    "checkpoint": str(args.checkpoint),
                    "epoch": state["epoch"],
                    "parameter": name,
                    "entries": int(g.shape[1]),
                    "batch_size": args.batch_size * k,
                    "batches": n,
                    "snr_median": round(float(snr.median()), 3),
                    "snr_upper_quartile": round(float(snr.quantile(0.75)), 3),
                }
            )
    return records


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", action="append", choices=VARIANTS)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--strides", type=lambda s: [int(v) for v in s.split(",")], default=[4, 8, 16])
    p.add_argument("--crop", type=int, default=48)
    p.add_argument("--warmup-steps", type=int, default=40)
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", help="a synthetic-data search checkpoint: gradient SNR mode")
    p.add_argument("--batch-size", type=int, default=8, help="--checkpoint mode's batch")
    args = p.parse_args()
    if args.checkpoint:
        for record in checkpoint_snr(args):
            print(json.dumps(record), flush=True)
        return
    for variant in args.variant or ["default", "no-pool-bn", "torch-head-init"]:
        record = measure(variant, args)
        print(json.dumps(record), flush=True)
        print(
            f"{variant}: sign agreement {100 * record['sign_agreement']:.1f}% (chance "
            f"{100 * record['sign_agreement_chance']:.1f}%), push free "
            f"{record['push_param_free']:+.2f} / convs {record['push_parametric']:+.2f}, "
            f"initial CE {record['initial_ce']:.2f} (ln 8 = {math.log(8):.2f}), grad norm "
            f"{record['initial_grad_norm']:.0f}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()

"""Does cost-aware search land near its Multi-Adds target? (issue: beyond the paper)

Runs an unconstrained search on the built-in data and counts the decoded network's
Multi-Adds M0 (at F = --filter-multiplier, 1024x2048, PyTorch's FLOP counter). It then
searches again from the same seed with a low and a high target, retrains each decoded network
briefly (the CPU retrain preset, F=8) and evaluates it. Prints one JSON object per run and
writes a Pareto plot (mIoU against Multi-Adds) and a summary table into --out.

The stem, ASPP and decoder cost the same for every genotype, and at 1024x2048 they are a
large share of the network (216 of 282 GMAdds at L=6, F=20), so "0.5x M0" is often below the
cheapest network of the space. The default targets therefore sit --reach of the way from M0
to the cheapest and to the dearest simple genotype (printed first); --ratios asks for
multiples of M0 instead. Each record says whether its target was feasible, and whether M0
itself would have been within 25% of it (if so, the target proves nothing).

    python benchmarks/cost_aware_search.py --out runs/bench-cost            # CPU preset
    python benchmarks/cost_aware_search.py --quick --out runs/bench-cost    # minutes
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from autodeeplab.config import (
    CPU_SEARCH_PRESET,
    SearchConfig,
    TrainConfig,
    config_from_dict,
    load_config,
)
from autodeeplab.engine.logs import read_jsonl
from autodeeplab.engine.search.loop import run_search
from autodeeplab.engine.train.loop import run_train
from autodeeplab.genotype import save_genotype
from autodeeplab.model import build_model
from autodeeplab.model.complexity import count_multiply_adds

SIZE = (1024, 2048)
ROOT = Path(__file__).resolve().parents[1]


def _extremes(num_layers: int, num_blocks: int, filter_multiplier: int) -> tuple[float, float]:
    """Multi-Adds of the cheapest and the dearest simple genotypes of the search space.

    Cheapest: every block takes two parameter-free ops and the path dives to stride 32 as
    fast as the trellis allows; dearest: sep_conv_5x5 / dil_conv_5x5 everywhere at stride 4.
    The stem, ASPP and decoder cost the same for every genotype, so no budget below the
    first can be met, and none above the second is worth asking for.
    """
    from autodeeplab.genotype import Genotype

    def cost(op: str, path: tuple[int, ...]) -> float:
        cell = tuple(((op, 0), (op, 1)) for _ in range(num_blocks))
        net = build_model(Genotype(cell=cell, path=path), 8, filter_multiplier)
        return float(count_multiply_adds(net, SIZE))

    deep = tuple(min(layer + 1, 3) for layer in range(num_layers))
    shallow = (0,) * num_layers
    low = min(cost(op, deep) for op in ("skip_connect", "max_pool_3x3"))
    high = max(cost(op, shallow) for op in ("sep_conv_5x5", "dil_conv_5x5"))
    return low, high


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench-cost")
    p.add_argument(
        "--reach",
        type=float,
        default=0.75,
        help="targets this far from M0 toward the cheapest and the dearest genotype "
        "(0 = M0, 1 = the extreme); the default when --ratios is not given",
    )
    p.add_argument("--ratios", help="targets as multiples of M0 instead, e.g. 0.5,2.0")
    p.add_argument("--cost-weight", type=float, default=1.0)
    p.add_argument(
        "--filter-multiplier",
        type=int,
        default=48,
        help="F of the network the budget is for (48 = Auto-DeepLab-L, where the cells carry "
        "most of the cost; at F=20 the fixed ASPP and decoder leave a narrow range)",
    )
    p.add_argument("--train-iters", type=int, default=200)
    p.add_argument("--quick", action="store_true", help="L=6, 6 epochs: a few minutes")
    p.add_argument("--set", action="append", default=[], help="extra search overrides")
    args = p.parse_args()
    out = Path(args.out)
    search_set = list(args.set)
    if args.quick:
        search_set += ["model.num_layers=6", "search.epochs=6", "search.arch_start_epoch=2"]
    base = config_from_dict(CPU_SEARCH_PRESET, SearchConfig())
    runs = []
    fm = args.filter_multiplier

    def one(name: str, target: float | None, facts: dict | None = None) -> dict:
        extra = [
            *search_set,
            "search.tensorboard=false",
            f"search.cost_weight={args.cost_weight}",
            f"search.cost_filter_multiplier={fm}",
        ]
        if target is not None:
            extra.append(f"search.target_madds={target / 1e9:.4f}G@{SIZE[0]}x{SIZE[1]}")
        cfg = load_config(None, extra, base=base)
        t0 = time.perf_counter()
        found = run_search(cfg, out / name / "search", progress=False)
        search_s = time.perf_counter() - t0
        if found.stopped:  # SIGINT/SIGTERM: a checkpoint is written, but no genotype
            raise SystemExit(f"stopped during the {name} search; rerun the benchmark")
        madds = count_multiply_adds(build_model(found.genotype, 8, fm), SIZE)
        save_genotype(found.genotype, out / name / "genotype.json")
        train_cfg = load_config(
            ROOT / "configs" / "train" / "synthetic.yaml",
            [
                f"model.genotype={out / name / 'genotype.json'}",
                f"train.iters={args.train_iters}",
                "train.tensorboard=false",
            ],
            base=TrainConfig(),
        )
        trained = run_train(train_cfg, out / name / "train", progress=False)
        if trained.stopped:
            raise SystemExit(f"stopped during the {name} retraining; rerun the benchmark")
        last = read_jsonl(out / name / "search" / "search_log.jsonl")[-1]
        record = {
            "benchmark": "cost_aware_search",
            "run": name,
            "target_madds": target,
            "decoded_madds": madds,
            "expected_madds": last.get("expected_madds"),  # the search's own estimate
            "ratio_to_target": None if target is None else madds / target,
            "within_25pct": None if target is None else abs(madds / target - 1) <= 0.25,
            "val_miou": trained.best_miou,
            "search_s": round(search_s, 1),
            "path": list(found.genotype.path),
            **(facts or {}),
        }
        print(json.dumps(record), flush=True)
        runs.append(record)
        return record

    m0 = one("unconstrained", None)["decoded_madds"]
    cfg = load_config(None, search_set, base=base)
    low, high = _extremes(cfg.model.num_layers, cfg.model.num_blocks, fm)
    print(
        json.dumps(
            {
                "benchmark": "cost_aware_search_range",
                "cheapest_madds": low,
                "dearest_madds": high,
                "unconstrained_madds": m0,
                "filter_multiplier": fm,
                "size": list(SIZE),
            }
        ),
        flush=True,
    )
    if args.ratios:
        targets = {f"target_{r:g}x": float(r) * m0 for r in args.ratios.split(",")}
    else:
        targets = {
            "target_low": m0 - args.reach * (m0 - low),
            "target_high": m0 + args.reach * (high - m0),
        }
    for name, target in targets.items():
        # Would the unconstrained network have passed too? Then the target proves nothing.
        one(name, target, {"unconstrained_within_25pct": abs(m0 / target - 1) <= 0.25,
                           "feasible": low <= target <= high})  # fmt: skip
    _plot(runs, out, (low, high))


def _plot(runs: list[dict], out: Path, extremes: tuple[float, float]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for r in runs:
        ax.scatter(r["decoded_madds"] / 1e9, r["val_miou"], s=40)
        ax.annotate(r["run"], (r["decoded_madds"] / 1e9, r["val_miou"]), fontsize=8)
        if r["target_madds"]:
            ax.axvline(r["target_madds"] / 1e9, color="0.8", linestyle="--", linewidth=0.8)
    for x in extremes:
        ax.axvline(x / 1e9, color="0.5", linestyle=":", linewidth=0.8)
    ax.set_xlabel(f"Multi-Adds of the decoded network (G, {SIZE[0]}x{SIZE[1]})")
    ax.set_ylabel("val mIoU after retraining")
    ax.set_title("cost-aware search: mIoU against Multi-Adds")
    fig.tight_layout()
    fig.savefig(out / "pareto.png")
    lines = ["| run | target (G) | decoded (G) | ratio | val mIoU |", "|---|---|---|---|---|"]
    for r in runs:
        target = "-" if r["target_madds"] is None else f"{r['target_madds'] / 1e9:.1f}"
        ratio = "-" if r["ratio_to_target"] is None else f"{r['ratio_to_target']:.2f}"
        lines.append(
            f"| {r['run']} | {target} | {r['decoded_madds'] / 1e9:.1f} | {ratio} | "
            f"{r['val_miou']:.3f} |"
        )
    (out / "summary.md").write_text("\n".join(lines) + "\n\n![pareto](pareto.png)\n")


if __name__ == "__main__":
    main()

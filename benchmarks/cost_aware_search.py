"""Does cost-aware search land near its Multi-Adds target? (issue: beyond the paper)

Runs an unconstrained search on the built-in data, counts the decoded network's
Multi-Adds M0 (retrain F=20 at 1024x2048, PyTorch's FLOP counter), then searches again with
targets of ``--ratios`` x M0 from the same seed, retrains each decoded network briefly and
evaluates it. Prints one JSON object per run and writes a Pareto plot (mIoU against
Multi-Adds) and a summary table into --out.

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
from autodeeplab.engine.runtime import read_jsonl
from autodeeplab.engine.search import run_search
from autodeeplab.engine.train import run_train
from autodeeplab.genotype import save_genotype
from autodeeplab.model import build_model
from autodeeplab.model.complexity import count_multiply_adds

SIZE = (1024, 2048)
ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench-cost")
    p.add_argument("--ratios", default="0.5,2.0", help="targets as multiples of M0")
    p.add_argument("--cost-weight", type=float, default=1.0)
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

    def one(name: str, target: float | None) -> dict:
        extra = [*search_set, "search.tensorboard=false", f"search.cost_weight={args.cost_weight}"]
        if target is not None:
            extra.append(f"search.target_madds={target / 1e9:.4f}G@{SIZE[0]}x{SIZE[1]}")
        cfg = load_config(None, extra, base=base)
        t0 = time.perf_counter()
        found = run_search(cfg, out / name / "search", progress=False)
        search_s = time.perf_counter() - t0
        if found.stopped:  # SIGINT/SIGTERM: a checkpoint is written, but no genotype
            raise SystemExit(f"stopped during the {name} search; rerun the benchmark")
        madds = count_multiply_adds(build_model(found.genotype, 8, 20), SIZE)
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
        }
        print(json.dumps(record), flush=True)
        runs.append(record)
        return record

    m0 = one("unconstrained", None)["decoded_madds"]
    for ratio in (float(r) for r in args.ratios.split(",")):
        one(f"target_{ratio:g}x", ratio * m0)
    _plot(runs, out)


def _plot(runs: list[dict], out: Path) -> None:
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
    ax.set_xlabel(f"Multi-Adds of the decoded network (G, F=20, {SIZE[0]}x{SIZE[1]})")
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

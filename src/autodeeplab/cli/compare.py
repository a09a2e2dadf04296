"""The ``compare`` subcommand: does the search help? (searched vs random networks)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from autodeeplab.cli.arguments import add_set, for_data, parse_size
from autodeeplab.cli.messages import Stopped
from autodeeplab.cli.outdir import lock_out_dir

__all__ = ["register"]


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="does the search help? retrain the searched network against random ones",
        description="Retrains the searched genotype (several seeds), random genotypes of "
        "about its Multi-Adds, the searched cell on a hand-made path and the paper's genotype, "
        "all under one schedule; chooses each on val, reports test (val where there is no "
        "test split). Writes DIR/compare.md, compare.json, compare.png and one resumable run "
        "folder per network in DIR/runs/: rerun the same command to continue.",
    )
    p.add_argument("search_run", help="the --out folder of a finished 'autodeeplab search'")
    p.add_argument("--data", help="dataset spec (default: the train config's)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--config", help="retraining YAML (default: the built-in CPU train preset)")
    p.add_argument("--random", type=int, default=5, help="random genotypes (default 5)")
    p.add_argument(
        "--searched-seeds", type=int, default=2, help="seeds of the searched one (default 2)"
    )
    p.add_argument(
        "--reference-seeds",
        type=int,
        help="seeds of each reference, the searched one's (default: --searched-seeds)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.1,
        help="random genotypes' Multi-Adds within this fraction of the searched (default 0.1)",
    )
    p.add_argument(
        "--size", type=parse_size, help="HxW at which Multi-Adds are matched (default: the crop)"
    )
    p.add_argument(
        "--reuse",
        action="append",
        default=[],
        metavar="DIR",
        help="an earlier compare's --out (repeatable): a network with the same genotype, "
        "seed and training config takes its finished result instead of retraining",
    )
    add_set(p, "train.iters=2000")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int | Stopped:
    from autodeeplab.config import CPU_TRAIN_PRESET, TrainConfig, config_from_dict, load_config
    from autodeeplab.engine.compare.compare import run_compare
    from autodeeplab.engine.preflight import check_train_settings
    from autodeeplab.genotype import PAPER_GENOTYPE

    if args.random < 0 or args.searched_seeds < 1:
        raise ValueError("--random must be >= 0 and --searched-seeds >= 1")
    ref_seeds = args.searched_seeds if args.reference_seeds is None else args.reference_seeds
    if ref_seeds < 1:
        raise ValueError("--reference-seeds must be >= 1")
    if not 0 < args.tolerance <= 10:
        raise ValueError(f"--tolerance {args.tolerance}: give a fraction, e.g. 0.1 for 10%")
    overrides = [f"data.spec={json.dumps(args.data)}"] if args.data else []
    base = TrainConfig() if args.config else config_from_dict(CPU_TRAIN_PRESET, TrainConfig())
    base = for_data(base, args.data)
    cfg = load_config(args.config, [*overrides, *args.set], base=base)
    # Before the first of the retrainings: the schedule and data, with the largest network
    # of the comparison (the paper's genotype reaches stride 32).
    check_train_settings(cfg, PAPER_GENOTYPE)
    out = Path(args.out)
    print(
        f"compare {args.search_run} on {cfg.data.spec}: {args.searched_seeds} searched seed(s), "
        f"{args.random} random, 2 references x {ref_seeds} seed(s); {cfg.train.iters} "
        f"iterations each -> {out}",
        file=sys.stderr,
    )
    # Shared: compare processes may share an --out (each network has its own lock).
    with lock_out_dir(out, "compare", shared=True):
        result = run_compare(
            args.search_run,
            cfg,
            out,
            num_random=args.random,
            searched_seeds=args.searched_seeds,
            reference_seeds=ref_seeds,
            tolerance=args.tolerance,
            size=args.size,
            progress=not args.no_progress,
            reuse=args.reuse,
        )
    if result.stopped:  # the retraining in progress wrote its checkpoint
        return Stopped("", f"finished runs are in {out / 'runs'}", "rerun the same command")
    print((out / "compare.md").read_text(encoding="utf-8"), end="")
    print(f"wrote {out / 'compare.md'}, compare.json, compare.png", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands."""
    _add_compare(sub)

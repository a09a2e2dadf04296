"""The ``compare`` subcommand: does the search help? (searched vs random networks)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from autodeeplab.cli.arguments import add_command, add_random_center, add_set, for_data, parse_size
from autodeeplab.cli.messages import Stopped
from autodeeplab.cli.outdir import lock_out_dir

# The bounds of the counts (engine/compare/plan.py), here without importing torch at start-up.
MAX_RANDOM, MAX_SEEDS = 1000, 100

__all__ = ["register"]


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "compare", _cmd_compare)
    p.add_argument("search_run", help="the --out folder of a finished 'autodeeplab search'")
    p.add_argument("--data", help="dataset spec (default: the train config's)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--config", help="retraining YAML (default: the built-in CPU train preset)")
    p.add_argument(
        "--random",
        type=int,
        default=20,
        help=f"random genotypes, 0-{MAX_RANDOM} (default 20: with fewer, the supernet's Kendall "
        "tau cannot be told from zero; tau must exceed about 0.36 at 12, 0.27 at 20 for p < 0.05)",
    )
    p.add_argument(
        "--searched-seeds",
        type=int,
        default=2,
        help=f"seeds of the searched one, 1-{MAX_SEEDS} (default 2)",
    )
    p.add_argument(
        "--reference-seeds",
        type=int,
        help=f"seeds of each reference, 1-{MAX_SEEDS} (default: --searched-seeds)",
    )
    p.add_argument(
        "--report-split",
        choices=("auto", "test", "val"),
        default="auto",
        help="the split each network is reported on; auto: test where it exists on disk and "
        "has labels, else val (default auto)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in an --out made with other settings (removes its runs/ and "
        "compare files)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.1,
        help="random genotypes' Multi-Adds within this fraction of the searched (default 0.1)",
    )
    add_random_center(p)
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
    p.add_argument(
        "--seed-noise",
        action="store_true",
        help="also retrain the first 3 random genotypes with 2 more seeds each (3 in all) "
        "and report the seed-to-seed spread against the spread between genotypes",
    )
    p.add_argument(
        "--no-score",
        action="store_true",
        help="do not score the networks on the search run's supernet (no Kendall tau)",
    )
    p.add_argument(
        "--no-control",
        action="store_true",
        help="do not score them on the supernet freshly initialised too (the ranking's "
        "control: what the score reads from structure alone)",
    )
    p.add_argument(
        "--recal-batches",
        type=int,
        default=8,
        help="trainA batches that recalibrate BatchNorm before each supernet score (default "
        "8, as 'autodeeplab score')",
    )
    add_set(p, "train.iters=2000")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _cmd_compare(args: argparse.Namespace) -> int | Stopped:
    """does the search help? retrain the searched network against random ones

    Retrains the searched genotype (several seeds), random genotypes of about its Multi-Adds, the
    searched cell on a hand-made path and the paper's genotype, all under one schedule; chooses each
    on val, reports test (val where there is no labelled test split; see --report-split). Checks
    the search, the data and an existing DIR before the first retraining. Writes DIR/compare.md,
    compare.json, compare.png and one resumable run folder per network in DIR/runs/: rerun the
    same command to continue. Every network is also scored on the search run's supernet:
    compare.md reports how well that score ranks the retrained networks (Kendall tau, Spearman
    rho) beside three controls (the supernet freshly initialised, the parameter count, the
    path's mean level), where the searched one stands in the random cloud, the seed noise
    and any collapsed retraining.
    """
    from autodeeplab.config import CPU_TRAIN_PRESET, TrainConfig, config_from_dict, load_config
    from autodeeplab.engine.compare.compare import run_compare
    from autodeeplab.engine.compare.plan import check_counts
    from autodeeplab.engine.compare.scores import supernet_scorer
    from autodeeplab.engine.preflight import check_train_settings
    from autodeeplab.genotype import PAPER_GENOTYPE

    check_counts(args.random, args.searched_seeds, args.reference_seeds)
    ref_seeds = args.searched_seeds if args.reference_seeds is None else args.reference_seeds
    if args.recal_batches < 1:
        raise ValueError(f"--recal-batches {args.recal_batches}: give 1 or more batches")
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
        f"{args.random} random"
        + (" (3 of them x 3 seeds)" if args.seed_noise else "")
        + f", 2 references x {ref_seeds} seed(s); {cfg.train.iters} iterations each -> {out}",
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
            report_split=args.report_split,
            overwrite=args.overwrite,
            seed_noise=args.seed_noise,
            scorer=None if args.no_score else supernet_scorer(args.recal_batches, cfg.train.seed),
            control_scorer=None
            if args.no_control
            else supernet_scorer(args.recal_batches, cfg.train.seed, untrained=True),
            random_center=args.random_center,
        )
    if result.stopped:  # the retraining in progress wrote its checkpoint
        return Stopped("", f"finished runs are in {out / 'runs'}", "rerun the same command")
    print((out / "compare.md").read_text(encoding="utf-8"), end="")
    print(f"wrote {out / 'compare.md'}, compare.json, compare.png", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands."""
    _add_compare(sub)

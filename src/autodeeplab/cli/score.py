"""The ``score`` subcommand: rank genotypes by their score on a finished search's supernet."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from autodeeplab.cli.arguments import add_command, add_random_center, for_data, parse_size

__all__ = ["register"]


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "score", _cmd_score)
    p.add_argument("search_run", help="the --out folder of an 'autodeeplab search'")
    p.add_argument("genotypes", nargs="*", metavar="GENOTYPE_FILE", help="genotype JSON files")
    p.add_argument(
        "--random",
        type=int,
        default=0,
        metavar="N",
        help="also N random genotypes, drawn as 'compare --random N' draws them (in its "
        "Multi-Adds band around the run's genotype.json, which is scored too)",
    )
    p.add_argument("--out", help="output folder (default: SEARCH_RUN/scores)")
    p.add_argument(
        "--recal-batches",
        type=int,
        default=8,
        metavar="K",
        help="trainA batches to recalibrate BatchNorm on, per genotype (default 8)",
    )
    p.add_argument("--val-batches", type=int, metavar="V", help="score on V val batches (all)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--untrained",
        action="store_true",
        help="score on the run's supernet freshly initialised (from --seed), not trained: "
        "the control of a ranking, what the score says of a genotype's structure alone",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    band = p.add_argument_group("the band of --random, as compare's")
    band.add_argument("--config", help="compare's retraining YAML (default: the CPU preset)")
    band.add_argument("--tolerance", type=float, default=0.1, help="Multi-Adds within (0.1)")
    band.add_argument("--size", type=parse_size, help="HxW of the Multi-Adds (default: crop)")
    add_random_center(band)


def _random_genotypes(args: argparse.Namespace, spec: str) -> tuple[list, list[str], dict]:
    """The run's genotype and ``--random`` genotypes as ``compare`` plans them, and costs."""
    from autodeeplab.config import CPU_TRAIN_PRESET, TrainConfig, config_from_dict, load_config
    from autodeeplab.data import dataset_info
    from autodeeplab.engine.compare.plan import plan_compare
    from autodeeplab.genotype import load_genotype

    run = Path(args.search_run)
    searched = load_genotype(run / "genotype.json")  # one line naming the file if missing
    config_file = run / "config.yaml"
    search_cfg = load_config(config_file if config_file.is_file() else None)
    base = TrainConfig() if args.config else config_from_dict(CPU_TRAIN_PRESET, TrainConfig())
    tcfg = load_config(args.config, [f"data.spec={json.dumps(spec)}"], base=for_data(base, spec))
    size = args.size or (tcfg.data.crop, tcfg.data.crop)
    entries = plan_compare(
        searched,
        search_cfg,
        tcfg,
        dataset_info(spec).num_classes,
        size,
        num_random=args.random,
        searched_seeds=1,
        tolerance=args.tolerance,
        random_center=args.random_center,
    )
    chosen = [e for e in entries if e.kind in ("searched", "random")]
    names = ["searched" if e.kind == "searched" else e.name for e in chosen]
    madds = {n: e.madds for n, e in zip(names, chosen, strict=True)}
    return [e.genotype for e in chosen], names, madds


def _cmd_score(args: argparse.Namespace) -> int:
    """score genotypes on a finished search's supernet (val CE and mIoU of each path)

    Runs each genotype as a single path of the search's supernet (its newest checkpoint; any
    strategy's, alpha and beta ignored), BatchNorm recalibrated on trainA batches, and scores
    it on val. Writes scores.json and scores.md, sorted by val cross-entropy, to --out.
    """
    from autodeeplab.engine.search.score_run import load_scoring_run, write_score_table
    from autodeeplab.genotype import load_genotype
    from autodeeplab.space.single_path import check_genotype

    if args.random < 0:
        raise ValueError(f"--random {args.random}: give a number of genotypes >= 0")
    if not args.genotypes and not args.random:
        raise ValueError("nothing to score: give GENOTYPE_FILE(s) or --random N")
    batches = (("--recal-batches", args.recal_batches), ("--val-batches", args.val_batches))
    for flag, value in batches:
        if value is not None and value < 1:
            raise ValueError(f"{flag} {value}: give a number of batches >= 1")
    if not 0 < args.tolerance <= 10:
        raise ValueError(f"--tolerance {args.tolerance}: give a fraction, e.g. 0.1 for 10%")
    genotypes = [load_genotype(f) for f in args.genotypes]  # bad files fail before loading
    names = [Path(f).stem for f in args.genotypes]
    names = [n if names.count(n) == 1 else f"{n}{i}" for i, n in enumerate(names)]
    run = load_scoring_run(
        args.search_run,
        recal_batches=args.recal_batches,
        val_batches=args.val_batches,
        seed=args.seed,
        device=args.device,
        untrained=args.untrained,
    )
    madds: dict[str, int] = {}
    if args.random:
        more, more_names, madds = _random_genotypes(args, run.cfg.data.spec)
        genotypes, names = genotypes + more, names + more_names
    for f, g in zip(args.genotypes, genotypes, strict=False):
        try:
            check_genotype(run.model, g)
        except ValueError as exc:
            raise ValueError(f"{f}: {exc}") from None
    out = Path(args.out) if args.out else Path(args.search_run) / "scores"
    print(
        f"score {len(genotypes)} genotype(s) on {run.checkpoint}"
        + (" (its supernet freshly initialised: untrained)" if args.untrained else "")
        + f" ({len(run.recal)} recalibration batches each) -> {out}",
        file=sys.stderr,
    )
    scores = run.score(genotypes, names)
    meta = {
        "run": str(args.search_run),
        "checkpoint": str(run.checkpoint),
        "recal_batches": len(run.recal),
        "val_batches": args.val_batches,
        "seed": args.seed,
        "untrained": args.untrained,
        "prev_prev": "path" if run.model.path_edges is not None else "trellis",
    }
    md = write_score_table(out, scores, meta, madds)
    print(md.read_text(encoding="utf-8"), end="")
    print(f"wrote {md}, {out / 'scores.json'}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands."""
    _add_score(sub)

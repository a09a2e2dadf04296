"""The main job's subcommand: run (search, retrain, evaluate, report)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from autodeeplab.cli.arguments import OVERWRITE_HELP, for_data
from autodeeplab.cli.messages import (
    Stopped,
    arch_never_updated,
    pct,
    print_search_memory,
    warn_untrained_genotype,
)
from autodeeplab.cli.outdir import check_out_dir, claim_out_dir, dataset_path

__all__ = ["register"]


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="search, retrain the found network, evaluate it, and write report.md",
        description="The whole method on one folder: OUT/search, OUT/train, OUT/predictions "
        "and OUT/report.md. Defaults: the CPU presets (configs/search/synthetic.yaml and "
        "configs/train/synthetic.yaml), under 15 minutes on 2 cores.",
    )
    p.add_argument("--out", default="runs/run", help="run directory (default: runs/run)")
    p.add_argument("--data", help="dataset spec for both stages (default: the presets')")
    p.add_argument(
        "--search-config", help="search YAML (default: the CPU preset = configs/search/synthetic)"
    )
    p.add_argument(
        "--train-config", help="train YAML (default: the CPU preset = configs/train/synthetic)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="STAGE.KEY=VALUE",
        help="override a key of one stage, e.g. --set search.epochs=2 "
        "--set train.iters=50 --set search.model.num_layers=4 (repeatable)",
    )
    again = p.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="continue each stage from its newest checkpoint in --out (same flags as before)",
    )
    again.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int | Stopped:
    from autodeeplab.config import (
        CPU_SEARCH_PRESET,
        CPU_TRAIN_PRESET,
        SearchConfig,
        TrainConfig,
        config_from_dict,
        load_config,
    )
    from autodeeplab.data import dataset_info
    from autodeeplab.engine.pipeline import run_pipeline, split_overrides
    from autodeeplab.engine.preflight import (
        check_run_resume,
        check_search_settings,
        check_train_settings,
        placeholder_genotype,
    )

    routed = split_overrides(args.set)
    data = [f"data.spec={json.dumps(args.data)}"] if args.data else []
    # A given file replaces the built-in CPU preset (configs/{search,train}/synthetic.yaml).
    search_base = (
        SearchConfig()
        if args.search_config
        else config_from_dict(CPU_SEARCH_PRESET, SearchConfig())
    )
    train_base = (
        TrainConfig() if args.train_config else config_from_dict(CPU_TRAIN_PRESET, TrainConfig())
    )
    search_base = for_data(search_base, args.data)
    train_base = for_data(train_base, args.data)
    search_cfg = load_config(args.search_config, [*data, *routed["search"]], base=search_base)
    train_cfg = load_config(args.train_config, [*data, *routed["train"]], base=train_base)
    num_classes = dataset_info(search_cfg.data.spec).num_classes  # a bad --data fails here
    out = Path(args.out)
    # Both stages' settings before the search starts: a bad training option must not wait
    # for the whole search to fail. The decoded genotype is checked for its size only.
    check_search_settings(search_cfg)
    m = search_cfg.model
    check_train_settings(train_cfg, placeholder_genotype(m.num_layers, m.num_blocks))
    check_out_dir(out, "run", args.resume, args.overwrite)
    print(
        f"run on {search_cfg.data.spec} -> {out}: search "
        f"{args.search_config or 'built-in CPU preset'}, train "
        f"{args.train_config or 'built-in CPU preset'}",
        file=sys.stderr,
    )
    print_search_memory(search_cfg, num_classes)
    resumable = lambda: check_run_resume(search_cfg, train_cfg, out)  # noqa: E731
    inputs = [("search config", args.search_config), ("train config", args.train_config)]
    inputs.append(("dataset", dataset_path(search_cfg.data.spec)))
    with claim_out_dir(out, "run", args.resume, args.overwrite, resumable, inputs=inputs):
        result = run_pipeline(
            search_cfg, train_cfg, out, progress=not args.no_progress, resume=args.resume
        )
    if result.stopped:  # SIGINT/SIGTERM: the stage wrote a checkpoint; say how to go on
        where, saved = f" in the {result.stopped} stage", f"checkpoints are in {out}"
        return Stopped(where, saved, "resume with the same command plus --resume")
    if arch_never_updated(out / "search"):
        warn_untrained_genotype("run", "the retrained network")
    print(
        f"done in {result.seconds:.0f} s; val mIoU {pct(result.miou)} % "
        f"(chance {pct(result.chance_miou)} %); wrote {result.report}",
        file=sys.stderr,
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands."""
    _add_run(sub)

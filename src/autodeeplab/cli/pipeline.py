"""The main job's subcommand: run (search, retrain, evaluate, report)."""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

from autodeeplab.cli.arguments import add_again_options, add_command, add_set
from autodeeplab.cli.messages import Stopped, pct
from autodeeplab.cli.outdir import dataset_path
from autodeeplab.cli.stage import run_stage, stage_config, stage_exit

__all__ = ["register"]


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "run", _cmd_run)
    p.add_argument("--out", default="runs/run", help="run directory (default: runs/run)")
    p.add_argument("--data", help="dataset spec for both stages (default: the presets')")
    p.add_argument(
        "--search-config", help="search YAML (default: the CPU preset = configs/search/synthetic)"
    )
    p.add_argument(
        "--train-config", help="train YAML (default: the CPU preset = configs/train/synthetic)"
    )
    add_set(
        p,
        "search.epochs=2 --set train.iters=50 --set search.model.num_layers=4",
        metavar="STAGE.KEY=VALUE",
        what="a key of one stage",
    )
    add_again_options(
        p, "run", "continue each stage from its newest checkpoint in --out (same flags as before)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _cmd_run(args: argparse.Namespace) -> int | Stopped:
    """search, retrain the found network, evaluate it, and write report.md

    The whole method on one folder: OUT/search, OUT/train, OUT/predictions and OUT/report.md.
    Defaults: the CPU presets (configs/search/synthetic.yaml and configs/train/synthetic.yaml),
    under 15 minutes on 2 cores.
    """
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
    search_cfg = stage_config("search", args.search_config, args.data, [*data, *routed["search"]])
    train_cfg = stage_config("train", args.train_config, args.data, [*data, *routed["train"]])
    num_classes = dataset_info(search_cfg.data.spec).num_classes  # a bad --data fails here
    out = Path(args.out)
    # Both stages' settings before the search starts: a bad training option must not wait
    # for the whole search to fail. The decoded genotype is checked for its size only.
    check_search_settings(search_cfg)
    m = search_cfg.model
    check_train_settings(train_cfg, placeholder_genotype(m.num_layers, m.num_blocks))
    header = (
        f"run on {search_cfg.data.spec} -> {out}: search "
        f"{args.search_config or 'built-in CPU preset'}, train "
        f"{args.train_config or 'built-in CPU preset'}"
    )
    resumable = partial(check_run_resume, search_cfg, train_cfg, out)
    inputs = [("search config", args.search_config), ("train config", args.train_config)]
    inputs.append(("dataset", dataset_path(search_cfg.data.spec)))
    job = partial(run_pipeline, search_cfg, train_cfg)
    memory = (search_cfg, num_classes)
    result = run_stage(args, "run", header, job, memory, check_resume=resumable, inputs=inputs)
    saved, how = f"checkpoints are in {out}", "resume with the same command plus --resume"
    return stage_exit(
        result,
        lambda r: Stopped(f" in the {r.stopped} stage", saved, how),  # the stage's checkpoint
        lambda r: (
            f"done in {r.seconds:.0f} s; val mIoU {pct(r.miou)} % "
            f"(chance {pct(r.chance_miou)} %); wrote {r.report}"
        ),
        (out / "search", "run", "the retrained network"),
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands."""
    _add_run(sub)

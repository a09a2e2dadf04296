"""Subcommands of the search stage: search, decode and report."""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from autodeeplab.cli.arguments import (
    add_again_options,
    add_command,
    add_set,
    add_stage_options,
    flag_overrides,
    stage_overrides,
)
from autodeeplab.cli.messages import Stopped, resume_command, warn_untrained_genotype
from autodeeplab.cli.outdir import dataset_path
from autodeeplab.cli.stage import run_stage, stage_config, stage_exit

if TYPE_CHECKING:
    from autodeeplab.engine.search.loop import SearchResult

__all__ = ["register"]


def _add_search(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "search", _cmd_search)
    add_stage_options(p, "search")
    p.add_argument(
        "--target-madds",
        metavar="BUDGET@HxW",
        help="cost-aware search: pull the found network (at retrain F=20) toward this "
        "Multi-Adds budget, e.g. 50G@1024x2048; with search.strategy=spos, the centre of the "
        "decode's +-10%% Multi-Adds band (default: around the space's median network)",
    )
    add_again_options(p, "search")
    add_set(p, "model.num_layers=8")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved settings and the memory estimate, then exit",
    )


def _add_decode(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "decode", _cmd_decode)
    p.add_argument("checkpoint", help="a checkpoints/epoch_*.pt file of a search run")
    p.add_argument("--out", help="write the genotype JSON here (and the figures beside it)")
    p.add_argument(
        "--path-decode",
        choices=("relative", "literal"),  # search.decode.PATH_DECODES, without torch at start-up
        help="how the Viterbi scores the path (default: the run's search.path_decode)",
    )


def _cmd_search(args: argparse.Namespace) -> int | Stopped:
    """architecture search on a dataset (default: the built-in synthetic data)

    Hierarchical architecture search: writes genotype.json, search_log.jsonl, checkpoints/ and the
    path and cell figures into --out.
    """
    from autodeeplab.data import dataset_info
    from autodeeplab.engine.preflight import check_search_resume, check_search_settings
    from autodeeplab.engine.search.loop import run_search

    madds = flag_overrides(args, (("target_madds", "search.target_madds"),))
    overrides = [*stage_overrides(args, "search"), *madds, *args.set]
    cfg = stage_config("search", args.config, args.data, overrides)
    info = dataset_info(cfg.data.spec)  # a bad --data fails here, before anything is printed
    out = Path(args.out)
    check_search_settings(cfg)  # before any work: every setting the run would refuse
    header = (
        f"searching on {cfg.data.spec} ({args.config or 'built-in CPU preset'}): "
        f"L={cfg.model.num_layers} B={cfg.model.num_blocks} F={cfg.model.filter_multiplier} "
        f"crop={cfg.data.crop} batch={cfg.search.batch_size} epochs={cfg.search.epochs} -> {out}"
    )
    memory = (cfg, info.num_classes)
    resumable = partial(check_search_resume, cfg, out, args.resume)
    inputs = [("config file", args.config), ("dataset", dataset_path(cfg.data.spec))]
    job = partial(run_search, cfg)
    result = run_stage(args, "search", header, job, memory, check_resume=resumable, inputs=inputs)
    how = f"resume with: {resume_command('search', out)}"  # stopped: a checkpoint is written

    def done(result: SearchResult) -> str:
        print(result.genotype.to_json(), end="")
        return (
            f"done in {result.seconds:.0f} s; val mIoU {result.val_miou:.3f}; wrote "
            f"{out / 'genotype.json'}, {out / 'genotype_path.png'}, {out / 'genotype_cell.png'}"
        )

    untrained = (out, "search", str(out / "genotype.json"))
    return stage_exit(result, lambda r: Stopped("", f"saved {r.checkpoint}", how), done, untrained)


def _cmd_decode(args: argparse.Namespace) -> int:
    """decode the genotype of a search checkpoint"""
    from autodeeplab.engine.search.loop import decode_checkpoint
    from autodeeplab.files import check_outputs_spare_inputs
    from autodeeplab.genotype import save_genotype

    if args.out:  # the genotype and its two figures beside it
        out = Path(args.out)
        figures = [out.parent / f"{out.stem}_{name}.png" for name in ("path", "cell")]
        outputs = [("--out", p) for p in (out, *figures)]
        check_outputs_spare_inputs(outputs, [("checkpoint", args.checkpoint)])
    genotype, meta = decode_checkpoint(args.checkpoint, args.path_decode)
    print(genotype.to_json(), end="")
    margin = meta["path_margin"]
    print(f"path decode {meta['path_decode']}: margin {margin:.3f} nats", file=sys.stderr)
    if not meta["arch_updated"]:
        warn_untrained_genotype("decode", f"the genotype of {args.checkpoint}")
    if meta["config"].search.decode == "score":
        # decode reads alpha and beta alone; the score needs the data and the supernet's
        # recalibrated weights, which is the search's own last step, not this command's.
        print(
            "note: this run decodes by score (search.decode=score): its genotype.json is the "
            "best-scoring candidate, and this argmax/Viterbi genotype was only its first",
            file=sys.stderr,
        )
    if args.out:
        from autodeeplab.viz.genotype import render_genotype

        out = Path(args.out)
        provenance = {
            "path_decode": meta["path_decode"],
            "path_margin": margin,
            "epochs": meta["epoch"],
        }
        save_genotype(genotype, out, search=provenance)
        render_genotype(
            genotype, out.parent, beta=meta["beta_weights"].numpy(), prefix=f"{out.stem}_"
        )
        print(f"wrote {out} (epoch {meta['epoch']})", file=sys.stderr)
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "report", _cmd_report)
    p.add_argument("run_dir", help="the --out folder of an 'autodeeplab search' run")


def _cmd_report(args: argparse.Namespace) -> int:
    """report of a search run: alpha, beta, path and curves over the epochs

    Reads RUN_DIR/search_log.jsonl; writes RUN_DIR/report_search.md, report_search.html and the
    figures in RUN_DIR/report_search/.
    """
    from autodeeplab.engine.search.report import render_search_report
    from autodeeplab.files import check_outputs_spare_inputs

    run = Path(args.run_dir)  # a report written over its own log through a link
    outputs = [("", run / name) for name in ("report_search.md", "report_search.html")]
    inputs = [("search log", run / "search_log.jsonl"), ("config", run / "config.yaml")]
    check_outputs_spare_inputs(outputs, inputs)
    print(render_search_report(args.run_dir))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands."""
    _add_search(sub)
    _add_decode(sub)
    _add_report(sub)

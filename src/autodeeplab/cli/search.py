"""Subcommands of the search stage: search, decode and report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autodeeplab.cli.arguments import OVERWRITE_HELP, flag_overrides, for_data
from autodeeplab.cli.messages import (
    Stopped,
    arch_never_updated,
    print_search_memory,
    resume_command,
    warn_untrained_genotype,
)
from autodeeplab.cli.outdir import check_out_dir, claim_out_dir, dataset_path

__all__ = ["register"]


def _add_search(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="architecture search on a dataset (default: the built-in synthetic data)",
        description="Hierarchical architecture search: writes genotype.json, search_log.jsonl, "
        "checkpoints/ and the path and cell figures into --out.",
    )
    p.add_argument("--data", help="dataset spec, e.g. synthetic (default: the config's)")
    p.add_argument("--out", default="runs/search", help="run directory (default: runs/search)")
    p.add_argument("--config", help="YAML preset, e.g. configs/search/paper.yaml")
    p.add_argument("--epochs", type=int, help="search epochs")
    p.add_argument("--batch-size", type=int, help="images per step")
    p.add_argument("--crop", type=int, help="crop (image) size in pixels")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument(
        "--target-madds",
        metavar="BUDGET@HxW",
        help="cost-aware search: pull the found network (at retrain F=20) toward this "
        "Multi-Adds budget, e.g. 50G@1024x2048",
    )
    again = p.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CHECKPOINT",
        help="resume from CHECKPOINT, or alone: the newest complete checkpoint in --out",
    )
    again.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set model.num_layers=8 (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved settings and the memory estimate, then exit",
    )
    p.set_defaults(func=_cmd_search)


def _add_decode(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("decode", help="decode the genotype of a search checkpoint")
    p.add_argument("checkpoint", help="a checkpoints/epoch_*.pt file of a search run")
    p.add_argument("--out", help="write the genotype JSON here (and the figures beside it)")
    p.add_argument(
        "--path-decode",
        choices=("relative", "literal"),  # search.decode.PATH_DECODES, without torch at start-up
        help="how the Viterbi scores the path (default: the run's search.path_decode)",
    )
    p.set_defaults(func=_cmd_decode)


def _cmd_search(args: argparse.Namespace) -> int | Stopped:
    from autodeeplab.config import CPU_SEARCH_PRESET, SearchConfig, config_from_dict, load_config
    from autodeeplab.data import dataset_info
    from autodeeplab.engine.preflight import check_search_resume, check_search_settings
    from autodeeplab.engine.search.loop import run_search

    overrides = flag_overrides(
        args,
        (
            ("data", "data.spec"),
            ("epochs", "search.epochs"),
            ("batch_size", "search.batch_size"),
            ("crop", "data.crop"),
            ("seed", "search.seed"),
            ("target_madds", "search.target_madds"),
        ),
    )
    # Without --config the CPU preset applies, so the bare command finishes on a laptop.
    base = None if args.config else config_from_dict(CPU_SEARCH_PRESET, SearchConfig())
    base = for_data(base, args.data)
    cfg = load_config(args.config, [*overrides, *args.set], base=base)
    info = dataset_info(cfg.data.spec)  # a bad --data fails here, before anything is printed
    out = Path(args.out)
    # Before any work: every setting the run would refuse, and a folder that holds a run.
    check_search_settings(cfg)
    check_out_dir(out, "search", bool(args.resume), args.overwrite)
    config_note = args.config or "built-in CPU preset"
    print(
        f"searching on {cfg.data.spec} ({config_note}): L={cfg.model.num_layers} "
        f"B={cfg.model.num_blocks} F={cfg.model.filter_multiplier} crop={cfg.data.crop} "
        f"batch={cfg.search.batch_size} epochs={cfg.search.epochs} -> {out}",
        file=sys.stderr,
    )
    print_search_memory(cfg, info.num_classes)
    if args.dry_run:
        return 0
    resumable = lambda: check_search_resume(cfg, out, args.resume)  # noqa: E731
    inputs = [("config file", args.config), ("dataset", dataset_path(cfg.data.spec))]
    with claim_out_dir(out, "search", args.resume, args.overwrite, resumable, inputs=inputs):
        result = run_search(cfg, out, resume=args.resume, progress=not args.no_progress)
    if result.stopped:  # SIGINT/SIGTERM: a checkpoint is written; say how to go on
        how = f"resume with: {resume_command('search', out)}"
        return Stopped("", f"saved {result.checkpoint}", how)
    print(result.genotype.to_json(), end="")
    if arch_never_updated(out):
        warn_untrained_genotype("search", str(out / "genotype.json"))
    print(
        f"done in {result.seconds:.0f} s; val mIoU {result.val_miou:.3f}; wrote "
        f"{out / 'genotype.json'}, {out / 'genotype_path.png'}, {out / 'genotype_cell.png'}",
        file=sys.stderr,
    )
    return 0


def _cmd_decode(args: argparse.Namespace) -> int:
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
    p = sub.add_parser(
        "report",
        help="report of a search run: alpha, beta, path and curves over the epochs",
        description="Reads RUN_DIR/search_log.jsonl; writes RUN_DIR/report_search.md, "
        "report_search.html and the figures in RUN_DIR/report_search/.",
    )
    p.add_argument("run_dir", help="the --out folder of an 'autodeeplab search' run")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
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

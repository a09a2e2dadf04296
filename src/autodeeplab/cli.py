"""The ``autodeeplab`` command line: search, decode (and, as they land, train/eval/...).

Every user error ends as one line on stderr and exit status 2; nothing already written
is removed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "build_parser"]


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
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CHECKPOINT",
        help="resume from CHECKPOINT, or alone: the newest complete checkpoint in --out",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set model.num_layers=8 (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_search)


def _add_decode(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("decode", help="decode the genotype of a search checkpoint")
    p.add_argument("checkpoint", help="a checkpoints/epoch_*.pt file of a search run")
    p.add_argument("--out", help="write the genotype JSON here (and the figures beside it)")
    p.set_defaults(func=_cmd_decode)


def _default_search_config() -> str | None:
    """The shipped CPU preset, when run from a checkout."""
    here = Path(__file__).resolve().parents[2] / "configs" / "search" / "synthetic.yaml"
    return str(here) if here.is_file() else None


def _cmd_search(args: argparse.Namespace) -> int:
    from autodeeplab.config import load_config
    from autodeeplab.engine.search import run_search

    overrides = []
    for flag, key in (
        ("data", "data.spec"),
        ("epochs", "search.epochs"),
        ("batch_size", "search.batch_size"),
        ("crop", "data.crop"),
        ("seed", "search.seed"),
    ):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value) if isinstance(value, str) else value}")
    cfg = load_config(args.config, [*overrides, *args.set])
    out = Path(args.out)
    config_note = args.config or "built-in defaults"
    print(
        f"searching on {cfg.data.spec} ({config_note}): L={cfg.model.num_layers} "
        f"B={cfg.model.num_blocks} F={cfg.model.filter_multiplier} crop={cfg.data.crop} "
        f"batch={cfg.search.batch_size} epochs={cfg.search.epochs} -> {out}",
        file=sys.stderr,
    )
    result = run_search(cfg, out, resume=args.resume, progress=not args.no_progress)
    print(result.genotype.to_json(), end="")
    print(
        f"done in {result.seconds:.0f} s; val mIoU {result.val_miou:.3f}; wrote "
        f"{out / 'genotype.json'}, {out / 'genotype_path.png'}, {out / 'genotype_cell.png'}",
        file=sys.stderr,
    )
    return 0


def _cmd_decode(args: argparse.Namespace) -> int:
    from autodeeplab.engine.search import decode_checkpoint
    from autodeeplab.genotype import save_genotype

    genotype, meta = decode_checkpoint(args.checkpoint)
    print(genotype.to_json(), end="")
    if args.out:
        from autodeeplab.viz import render_genotype

        out = Path(args.out)
        save_genotype(genotype, out)
        render_genotype(
            genotype, out.parent, beta=meta["beta_weights"].numpy(), prefix=f"{out.stem}_"
        )
        print(f"wrote {out} (epoch {meta['epoch']})", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from autodeeplab import __version__

    parser = argparse.ArgumentParser(
        prog="autodeeplab",
        description="Auto-DeepLab: hierarchical architecture search for semantic segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"autodeeplab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_search(sub)
    _add_decode(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``autodeeplab`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from autodeeplab.checkpoint import CheckpointError

    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, CheckpointError, OSError) as exc:
        print(f"autodeeplab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"autodeeplab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

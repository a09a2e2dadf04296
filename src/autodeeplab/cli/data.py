"""Dataset tools: data check, data prepare."""

from __future__ import annotations

import argparse
import json

from autodeeplab.cli.arguments import add_command

__all__ = ["register"]


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="dataset tools")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    check = add_command(data_sub, "check", _cmd_data_check)
    check.add_argument("spec", help="dataset spec, e.g. folder:data/msrc21 or cityscapes:PATH")
    check.add_argument("--split", action="append", help="split to check (repeatable; default: all)")
    check.add_argument("--max-files", type=int, help="check at most N pairs per split")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    prepare = add_command(data_sub, "prepare", _cmd_data_prepare)
    prepare.add_argument("dataset", choices=["msrc21"], help="which dataset the archive holds")
    prepare.add_argument("archive", help="the MSRC-v2 zip archive, or its unpacked folder")
    prepare.add_argument("out", help="a new (or empty) folder for the prepared dataset")
    prepare.add_argument(
        "--any-count",
        action="store_true",
        help="prepare an archive that does not give the full 276/58/257 images",
    )


def _cmd_data_check(args: argparse.Namespace) -> int:
    """scan a dataset and report counts, sizes, class histogram and every problem

    Exit status 1 when a problem is found, each reported with its file.
    """
    from autodeeplab.data.check import check_dataset

    report = check_dataset(args.spec, args.split, max_files=args.max_files)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    return 0 if report.ok else 1


def _cmd_data_prepare(args: argparse.Namespace) -> int:
    """build a folder: dataset from a public archive (msrc21)

    Writes OUT/images/{train,val,test}/, labels/, the split lists and classes.json; use it
    as --data folder:OUT.
    """
    import sys

    from autodeeplab.data.prepare import prepare_msrc21

    counts = prepare_msrc21(args.archive, args.out, expect_counts=not args.any_count)
    shown = ", ".join(f"{name} {n}" for name, n in counts.items())
    print(f"wrote {args.out} ({shown}); use --data folder:{args.out}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands."""
    _add_data(sub)

"""Dataset tools: data check."""

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


def _cmd_data_check(args: argparse.Namespace) -> int:
    """scan a dataset and report counts, sizes, class histogram and every problem

    Exit status 1 when a problem is found, each reported with its file.
    """
    from autodeeplab.data.check import check_dataset

    report = check_dataset(args.spec, args.split, max_files=args.max_files)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    return 0 if report.ok else 1


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands."""
    _add_data(sub)

"""``perturbative report PATH``: render a sweep's results as one self-contained HTML file."""

from __future__ import annotations

import argparse
from pathlib import Path

from perturbative.report import write_report


def report_command_parser(subparsers) -> None:
    parser = subparsers.add_parser("report", help="render results to one self-contained HTML file")
    parser.add_argument("path", help="a run directory or its brackets/ results directory")
    parser.add_argument("--out", default=None, help="HTML path (default: beside the results)")
    parser.set_defaults(func=report_command)


def report_command(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if (path / "brackets" / "meta.json").exists():  # a run directory: report beside its checkpoints
        out = write_report(path / "brackets", args.out or path / "report.html")
    else:
        out = write_report(path, args.out)
    print(f"report: {out.resolve()}")
    return 0

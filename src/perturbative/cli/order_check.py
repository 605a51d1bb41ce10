"""``perturbative order-check RUN_DIR``: order predictions against real reordered training."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from perturbative.cli._flags import add_config_flags, read_config_flags
from perturbative.pipeline.config import OrderCheckOptions
from perturbative.pipeline.order_check import order_check, resummarize, summary_lines
from perturbative.pipeline.results import read_order_check_file, write_order_check


def order_check_command_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "order-check", help="test order predictions against real reordered training"
    )
    parser.add_argument("run_dir", help="a run directory made by `perturbative train`")
    parser.add_argument(
        "--celeba", default=None, help="where the run's CelebA data is now, if it has moved"
    )
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="recompute and print the summaries of the check already in RUN/order_check "
        "(or --out-dir) from its stored pairs, without training anything",
    )
    add_config_flags(parser, OrderCheckOptions)
    parser.set_defaults(func=order_check_command)


def order_check_command(args: argparse.Namespace) -> int:
    if args.summary_only:
        folder = Path(args.out_dir) if args.out_dir else Path(args.run_dir) / "order_check"
        result = read_order_check_file(folder)
        return print_summary(write_order_check(folder, resummarize(result)))
    values = read_config_flags(args, OrderCheckOptions)
    return print_summary(
        order_check(args.run_dir, OrderCheckOptions(**values), data_root=args.celeba)
    )


def print_summary(path: Path) -> int:
    """Print the summary of the check written to ``path``."""
    for line in summary_lines(json.loads(path.read_text())):
        print(line)
    print(f"numbers: {path}")
    return 0

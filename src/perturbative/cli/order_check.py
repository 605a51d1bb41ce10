"""``perturbative order-check RUN_DIR``: order predictions against really reordering a run, one
check for every run (``perturbative train``'s and those recorded by ``perturbative.Recorder``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from perturbative.cli._flags import add_config_flags, add_run_flags, read_config_flags
from perturbative.pipeline.config import OrderCheckOptions
from perturbative.pipeline.order_check import order_check
from perturbative.pipeline.order_summary import resummarize, summary_lines
from perturbative.pipeline.results import read_order_check_file, write_order_check


def order_check_command_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "order-check", help="test order predictions against real reordered training"
    )
    parser.add_argument(
        "run_dir",
        help="a run directory made by `perturbative train` or recorded by perturbative.Recorder",
    )
    add_run_flags(parser)
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="recompute and print the summaries of the check already in RUN/order_check "
        "(or --out-dir) from its stored pairs, without training anything",
    )
    add_config_flags(parser, OrderCheckOptions, overrides=True)
    parser.set_defaults(func=order_check_command)


def order_check_command(args: argparse.Namespace) -> int:
    values = read_config_flags(args, OrderCheckOptions)
    if args.summary_only:
        folder = Path(values.get("out_dir") or Path(args.run_dir) / "order_check")
        result = read_order_check_file(folder)
        for gap in result.replay:
            print(gap.line())
        return print_summary(write_order_check(folder, resummarize(result)))
    options = OrderCheckOptions(**values)
    return print_summary(order_check(args.run_dir, options, args.task, data_root=args.celeba))


def print_summary(path: Path) -> int:
    """Print the summary of the check written to ``path``."""
    for line in summary_lines(read_order_check_file(path.parent)):
        print(line)
    print(f"numbers: {path}")
    return 0

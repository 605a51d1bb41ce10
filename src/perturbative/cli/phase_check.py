"""``perturbative phase-check RUN_DIR``: which data first? Phase-order predictions against real
sequential training."""

from __future__ import annotations

import argparse
from pathlib import Path

from perturbative._core.errors import InputError
from perturbative.cli._flags import add_config_flags, add_run_flags, read_config_flags
from perturbative.pipeline.config import is_training_run
from perturbative.pipeline.phase_order import (
    PhaseCheckOptions,
    phase_check,
)
from perturbative.pipeline.phase_summary import summary_lines
from perturbative.pipeline.results import PHASE_CHECK, read_phase_check_file


def phase_check_command_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "phase-check",
        help="test predictions of the order of training phases (A then B, or B then A) "
        "against really training both",
    )
    parser.add_argument(
        "run_dir",
        help="a run made by `perturbative train` (sources: digit classes, CelebA attribute "
        "groups), or recorded by perturbative.Recorder (sources: the task's)",
    )
    add_run_flags(parser)
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="print the summary of the check in RUN/phase_check (or --out-dir) again",
    )
    add_config_flags(parser, PhaseCheckOptions)
    parser.set_defaults(func=phase_check_command)


def phase_check_command(args: argparse.Namespace) -> int:
    values = read_config_flags(args, PhaseCheckOptions)
    if not is_training_run(args.run_dir) and args.celeba is not None:
        raise InputError(
            f"--celeba applies to runs of `perturbative train` only, not to {args.run_dir}: "
            "leave it out"
        )
    folder = Path(values.get("out_dir") or Path(args.run_dir) / "phase_check")
    if not args.summary_only:  # the check prints its replay gaps as it measures them
        phase_check(args.run_dir, PhaseCheckOptions(**values), args.task, data_root=args.celeba)
    check = read_phase_check_file(folder)
    if args.summary_only:
        for gap in check.replay:
            print(gap.line())
    for line in [*summary_lines(check.summary), *check.cost_lines()]:
        print(line)
    print(f"numbers: {folder / PHASE_CHECK}")
    return 0

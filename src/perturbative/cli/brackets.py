"""``perturbative brackets RUN_DIR``: the bracket sweep over a training run's checkpoints."""

from __future__ import annotations

import argparse

from perturbative.cli._flags import add_sweep_flags, sweep_options
from perturbative.pipeline.run import sweep_training_run


def brackets_command_parser(subparsers) -> None:
    parser = subparsers.add_parser("brackets", help="bracket sweep over a run's checkpoints")
    parser.add_argument("run_dir", help="a run directory made by `perturbative train`")
    parser.add_argument(
        "--celeba", default=None, help="where the run's CelebA data is now, if it has moved"
    )
    parser.add_argument("--out", default=None, help="results directory (default RUN/brackets)")
    add_sweep_flags(parser)
    parser.set_defaults(func=brackets_command)


def brackets_command(args: argparse.Namespace) -> int:
    out = sweep_training_run(args.run_dir, sweep_options(args, args.out), args.celeba)
    print(f"results: {out}")
    return 0

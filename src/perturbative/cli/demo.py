"""``perturbative demo``: train -> brackets -> report on the embedded digits, in a few minutes.

Running it again reuses what is there: finished training and swept checkpoints are kept (a
killed demo continues) and the report is rendered anew.
"""

from __future__ import annotations

import argparse

from perturbative.cli._flags import add_sweep_flags, add_train_flags, sweep_options, train_config
from perturbative.cli.run import run_pipeline
from perturbative.pipeline.config import TrainConfig


def demo_command_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="train -> brackets -> report on the embedded digits"
    )
    add_train_flags(parser)
    add_sweep_flags(parser)
    parser.set_defaults(func=demo_command)


def demo_command(args: argparse.Namespace) -> int:
    config = train_config(args, TrainConfig.demo())
    report = run_pipeline(config, sweep_options(args), resume=True)
    print(f"report: {report.resolve()}")
    return 0

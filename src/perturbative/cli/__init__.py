"""Command-line interface: one module per subcommand, each parsing flags into a config dataclass
and calling library code. No math here.

    perturbative demo                          # train -> brackets -> report on embedded digits
    perturbative run --celeba PATH             # the reference experiment on CelebA
    perturbative train [--data digits|celeba] [--celeba PATH] [--resume] [--tilt Smiling=1.5]
    perturbative brackets RUN_DIR              # bracket sweep over a run's checkpoints
    perturbative order-check RUN_DIR           # order predictions against real reordering
    perturbative phase-check RUN_DIR           # which data first: phase orders, predicted and real
    perturbative report RUN_DIR                # self-contained HTML report
    perturbative tilt                          # 2-D diffusion demo of tilted training
    perturbative upgrade RUN_DIR               # a run of `train` made before 0.4, converted

Bad input (:class:`~perturbative._core.errors.InputError`, a missing or existing file) prints one
line and exits with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from perturbative._core.distributed import init_from_environment
from perturbative._core.errors import InputError
from perturbative._core.extras import MissingExtraError
from perturbative._core.threads import idle_cores
from perturbative.cli._flags import add_threads_flag
from perturbative.cli.brackets import brackets_command_parser
from perturbative.cli.demo import demo_command_parser
from perturbative.cli.order_check import order_check_command_parser
from perturbative.cli.phase_check import phase_check_command_parser
from perturbative.cli.report import report_command_parser
from perturbative.cli.run import run_command_parser
from perturbative.cli.tilt import tilt_command_parser
from perturbative.cli.train import train_command_parser
from perturbative.cli.upgrade import upgrade_command_parser

USER_ERRORS = (InputError, MissingExtraError, FileNotFoundError, FileExistsError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perturbative",
        description="Perturbation theory of neural-network training: Lie brackets of training "
        "examples over a real training run, and training toward a tilted distribution.",
    )
    add_threads_flag(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        demo_command_parser,
        run_command_parser,
        train_command_parser,
        brackets_command_parser,
        order_check_command_parser,
        phase_check_command_parser,
        report_command_parser,
        tilt_command_parser,
        upgrade_command_parser,
    ):
        add(sub)
    for command in sub.choices.values():  # --threads also after the subcommand
        add_threads_flag(command, default=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    threads = args.threads
    if threads is not None and threads < 1:
        print("perturbative: error: --threads must be at least 1", file=sys.stderr)
        return 2
    if threads is None and "OMP_NUM_THREADS" not in os.environ:
        threads = idle_cores()  # cores other jobs keep busy would make torch's threads wait
    if threads is not None:
        torch.set_num_threads(threads)
    joined = init_from_environment()  # under torchrun: join its process group
    try:
        return args.func(args)
    except USER_ERRORS as err:
        print(f"perturbative {args.command}: error: {err}", file=sys.stderr)
        return 2
    finally:
        if joined:
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())

"""``perturbative brackets RUN_DIR``: the bracket sweep over a run's checkpoints, one path for
``perturbative train``'s runs and recorded ones
(:func:`perturbative.pipeline.run_sweep.sweep_run`)."""

from __future__ import annotations

import argparse
import dataclasses

from perturbative.cli._flags import add_sweep_flags, sweep_options
from perturbative.pipeline.run_sweep import sweep_run


def brackets_command_parser(subparsers) -> None:
    parser = subparsers.add_parser("brackets", help="bracket sweep over a run's checkpoints")
    parser.add_argument(
        "run_dir", help="a run directory made by `perturbative train` or perturbative.Recorder"
    )
    parser.add_argument(
        "--task", default=None, help="a recorded run's task as module:attribute (default: its own)"
    )
    parser.add_argument(
        "--celeba", default=None, help="where the run's CelebA data is now, if it has moved"
    )
    parser.add_argument("--out", default=None, help="results directory (default RUN/brackets)")
    parser.add_argument(
        "--only-steps",
        type=_steps,
        default=None,
        help="sweep only these checkpoints, comma-separated (e.g. 0,500,5000; default: all); "
        "with --ranking-examples at least the training split's size and --out, this ranks the "
        "whole split at a few checkpoints",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="where the sweep runs (cpu, cuda, cuda:1; default: where the run trained when that "
        "device is here, else the CPU)",
    )
    add_sweep_flags(parser)
    parser.set_defaults(func=brackets_command)


def _steps(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"cannot read {text!r} as steps: write comma-separated integers, e.g. 0,500,5000"
        ) from None


def brackets_command(args: argparse.Namespace) -> int:
    options = dataclasses.replace(sweep_options(args, args.out), device=args.device)
    if args.only_steps is not None:
        options = dataclasses.replace(options, only_steps=args.only_steps)
    out = sweep_run(args.run_dir, options, args.task, args.celeba)
    print(f"results: {out}")
    return 0

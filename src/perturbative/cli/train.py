"""``perturbative train``: train and checkpoint a model (the reference experiment or the demo).

``--resume`` continues a run from its folder alone: the saved ``config.json`` is the default,
and flags given on the command line override only what may change (``--steps``, ``--device``,
``--celeba`` for moved data). A finished run is not extended unless ``--steps`` asks for more.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from perturbative._core.errors import InputError
from perturbative.cli._flags import add_train_flags, train_config
from perturbative.pipeline.checkpoints import list_checkpoints
from perturbative.pipeline.config import TrainConfig, load_run_config
from perturbative.pipeline.train import train


def train_command_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train and checkpoint (Adam lr 5e-3, batch 32)")
    parser.add_argument(
        "--data", choices=["digits", "celeba"], default=None, help="default: digits"
    )
    parser.add_argument("--celeba", default=None, help="folder in CelebA's on-disk layout")
    add_train_flags(parser)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run directory with its saved config (flags override --steps, "
        "--device, --celeba only)",
    )
    parser.set_defaults(func=train_command)


def train_command(args: argparse.Namespace) -> int:
    if args.resume:
        return resume_command(args)
    if (args.data or "digits") == "celeba":
        if args.celeba is None:
            raise InputError("--data celeba needs --celeba PATH (a folder in CelebA's layout)")
        base = TrainConfig.reference(args.celeba)
    else:
        base = TrainConfig.demo()
    run_dir = train(train_config(args, base))
    print(f"run: {run_dir}")
    return 0


def resume_command(args: argparse.Namespace) -> int:
    """``train --resume``: the saved config, with the flags that were given on top."""
    run_dir = Path(args.run_dir or default_run_dir(args))
    if not (run_dir / "config.json").is_file():
        raise InputError(
            f"{run_dir} has no config.json, so there is no run to resume; start it without "
            "--resume (or pass --run-dir with the run's folder)"
        )
    saved = load_run_config(run_dir, args.celeba)
    if args.data is not None and args.data != saved.dataset:
        raise InputError(f"{run_dir} trained on {saved.dataset!r}, not {args.data!r}")
    config = train_config(args, saved)
    reached = max((step for step, _ in list_checkpoints(run_dir)), default=0)
    if args.steps is None and reached >= config.steps:
        print(
            f"{run_dir} already finished its {config.steps} steps; pass --steps N (more than "
            f"{reached}) to train further"
        )
        return 0
    if args.steps is not None and args.steps != saved.steps:
        print(f"training {run_dir} to step {config.steps} (saved config: {saved.steps})")
    run_dir = train(config, resume=True)
    print(f"run: {run_dir}")
    return 0


def default_run_dir(args: argparse.Namespace) -> str:
    """The run folder ``train`` would have made without ``--run-dir``."""
    if (args.data or "digits") == "celeba":
        return TrainConfig.reference(".").run_dir
    return TrainConfig.demo().run_dir

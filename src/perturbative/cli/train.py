"""``perturbative train``: train and checkpoint a model (the reference experiment or the demo)."""

from __future__ import annotations

import argparse

from perturbative._core.errors import InputError
from perturbative.cli._flags import add_train_flags, train_config
from perturbative.pipeline.config import TrainConfig
from perturbative.pipeline.train import train


def train_command_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train and checkpoint (Adam lr 5e-3, batch 32)")
    parser.add_argument("--data", choices=["digits", "celeba"], default="digits")
    parser.add_argument("--celeba", default=None, help="folder in CelebA's on-disk layout")
    add_train_flags(parser)
    parser.add_argument("--resume", action="store_true", help="continue the run directory")
    parser.set_defaults(func=train_command)


def train_command(args: argparse.Namespace) -> int:
    if args.data == "celeba":
        if args.celeba is None:
            raise InputError("--data celeba needs --celeba PATH (a folder in CelebA's layout)")
        base = TrainConfig.reference(args.celeba)
    else:
        base = TrainConfig.demo()
    run_dir = train(train_config(args, base), resume=args.resume)
    print(f"run: {run_dir}")
    return 0

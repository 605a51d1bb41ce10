"""``perturbative upgrade RUN_DIR``: a run of ``train`` made before 0.4 into the recorded form."""

from __future__ import annotations

import argparse

from perturbative.pipeline.train import upgrade_training_run


def upgrade_command_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "upgrade",
        help="convert a run of `perturbative train` made before 0.4 (writes run.json and "
        "order.jsonl from its config; checkpoints untouched)",
    )
    parser.add_argument("run_dir", help="the run folder (config.json and checkpoints/)")
    parser.add_argument(
        "--celeba", default=None, help="where the run's CelebA data is now, if it has moved"
    )
    parser.set_defaults(func=upgrade_command)


def upgrade_command(args: argparse.Namespace) -> int:
    path = upgrade_training_run(args.run_dir, args.celeba)
    print(f"recorded: {path} (and order.jsonl beside it); every check reads the run now")
    return 0

"""``perturbative upgrade RUN_DIR``: a run of ``train`` made before 0.4 into the recorded form."""

from __future__ import annotations

import argparse
from pathlib import Path

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
    kept = _set_aside(Path(args.run_dir) / "brackets")
    if kept is not None:
        print(
            f"kept the sweep made before 0.4 as {kept}: a sweep now ranks with the run's "
            "optimizer and names examples by their positions in the split, so `brackets` (and "
            "`demo`, `run --resume`) sweep the run anew into brackets/"
        )
    return 0


def _set_aside(folder: Path) -> Path | None:
    """Rename a sweep's results folder to a free ``<name>-0.3[-N]`` beside it (nothing is
    deleted); None where there is none."""
    if not (folder / "meta.json").is_file():
        return None
    target, n = folder.with_name(f"{folder.name}-0.3"), 1
    while target.exists():
        n += 1
        target = folder.with_name(f"{folder.name}-0.3-{n}")
    folder.rename(target)
    return target

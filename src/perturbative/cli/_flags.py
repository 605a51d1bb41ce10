"""Flags shared by several subcommands, with defaults read from the config dataclasses."""

from __future__ import annotations

import argparse
from dataclasses import fields

from perturbative._core.engines import ENGINES
from perturbative.pipeline.config import PRECONDITIONERS, SweepOptions, TrainConfig

# TrainConfig fields settable from the command line: flag -> (field, type, help). Their defaults
# are None: a flag given overrides the base config (the reference or the demo), nothing else.
TRAIN_FLAGS = {
    "--run-dir": ("run_dir", str, "where config, metrics and checkpoints go"),
    "--steps": ("steps", int, "optimizer steps"),
    "--batch-size": ("batch_size", int, "examples per step (tilted: target summed weight)"),
    "--lr": ("lr", float, "Adam learning rate"),
    "--image-size": ("image_size", int, "square image side in pixels"),
    "--depth": ("depth", int, "MXResNet depth: 18, 34 or 50"),
    "--width": ("width", float, "MXResNet channel multiplier"),
    "--checkpoint-every": ("checkpoint_every", int, "steps between checkpoints"),
    "--eval-every": ("eval_every", int, "steps between held-out evaluations"),
    "--limit": ("limit", int, "load only the first N CelebA images"),
    "--seed": ("seed", int, "seed of weights and batch order"),
    "--tilt": ("tilt", str, "train tilted, e.g. 'Smiling=1.5,Male=-0.5' (weights exp(sum s*y))"),
    "--device": ("device", str, "auto, cpu or cuda"),
}

SWEEP_HELP = {
    "bracket_examples": "held-out examples bracketed pairwise",
    "test_examples": "held-out examples whose outputs the brackets move",
    "ranking_examples": "training examples ranked by order sensitivity",
    "preconditioner": "fields -g ('none') or Adam's -P g ('adam')",
    "engine": "derivative engine ('auto' picks by device)",
    "save_brackets": "also store the full bracket tensors",
}
SWEEP_CHOICES = {"preconditioner": PRECONDITIONERS, "engine": ENGINES}


def add_threads_flag(parser: argparse.ArgumentParser, default=None) -> None:
    parser.add_argument(
        "--threads",
        type=int,
        default=default,
        help="torch CPU threads (default: the cores no other job keeps busy, sampled at start, "
        "or OMP_NUM_THREADS when set): threads on busy cores make small models tens of times "
        "slower",
    )


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    for flag, (_, kind, text) in TRAIN_FLAGS.items():
        parser.add_argument(flag, type=kind, default=None, help=text)


def add_sweep_flags(parser: argparse.ArgumentParser) -> None:
    for f in fields(SweepOptions):
        if f.name not in SWEEP_HELP:
            continue
        flag = "--" + f.name.replace("_", "-")
        text = f"{SWEEP_HELP[f.name]} (default: {f.default})"
        if f.type in (bool, "bool"):
            parser.add_argument(flag, action="store_true", help=SWEEP_HELP[f.name])
        elif f.name in SWEEP_CHOICES:
            parser.add_argument(flag, choices=SWEEP_CHOICES[f.name], default=f.default, help=text)
        else:
            parser.add_argument(flag, type=int, default=f.default, help=text)


def train_config(args: argparse.Namespace, base: TrainConfig) -> TrainConfig:
    """``base`` with the training flags that were given."""
    overrides = {
        name: getattr(args, flag[2:].replace("-", "_"))
        for flag, (name, _, _) in TRAIN_FLAGS.items()
        if getattr(args, flag[2:].replace("-", "_")) is not None
    }
    return TrainConfig.from_overrides(base, overrides)


def sweep_options(args: argparse.Namespace, out_dir: str | None = None) -> SweepOptions:
    """The sweep flags as :class:`SweepOptions`."""
    values = {name: getattr(args, name) for name in SWEEP_HELP}
    return SweepOptions(**values, out_dir=out_dir)

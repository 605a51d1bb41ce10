"""``perturbative run --celeba PATH``: the reference experiment end to end (train, sweep, report);
also the pipeline that ``perturbative demo`` runs on the embedded digits."""

from __future__ import annotations

import argparse
from pathlib import Path

from perturbative.cli._flags import add_sweep_flags, add_train_flags, sweep_options, train_config
from perturbative.pipeline.config import SweepOptions, TrainConfig
from perturbative.pipeline.run_sweep import sweep_run
from perturbative.pipeline.train import train
from perturbative.report import write_report


def run_command_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "run", help="the reference experiment: MXResNet on CelebA, end to end"
    )
    parser.add_argument("--celeba", required=True, help="folder in CelebA's on-disk layout")
    add_train_flags(parser)
    parser.add_argument("--resume", action="store_true", help="continue the run directory")
    add_sweep_flags(parser)
    parser.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    config = train_config(args, TrainConfig.reference(args.celeba))
    report = run_pipeline(config, sweep_options(args), resume=args.resume)
    print(f"report: {report.resolve()}")
    return 0


def run_pipeline(config: TrainConfig, options: SweepOptions, resume: bool) -> Path:
    """Train -> brackets -> report. Returns the report's path (``<run>/report.html``)."""
    run_dir = train(config, resume=resume, heldout_needed=options.bracket_examples)
    results = sweep_run(run_dir, options)
    return write_report(results, Path(run_dir) / "report.html")

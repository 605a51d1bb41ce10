"""``perturbative order-check RUN_DIR``: order predictions against real reordered training."""

from __future__ import annotations

import argparse
from pathlib import Path

from perturbative._core.errors import InputError
from perturbative.cli._flags import add_config_flags, add_run_flags, read_config_flags
from perturbative.pipeline.config import OrderCheckOptions
from perturbative.pipeline.order_check import order_check
from perturbative.pipeline.order_summary import resummarize, summary_lines
from perturbative.pipeline.recorded import RecordedCheckOptions, check_recorded_run, summary
from perturbative.pipeline.recorder import RUN_FILE
from perturbative.pipeline.results import read_order_check_file, write_order_check

#: the flags of recorded runs alone
RECORDED_ONLY = ("scored_examples", "score_window", "replay_steps", "allow_replay_gap")


def order_check_command_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "order-check", help="test order predictions against real reordered training"
    )
    parser.add_argument(
        "run_dir",
        help="a run directory made by `perturbative train`, or recorded by perturbative.Recorder "
        "(then --checkpoints, --steps, --batch-pairs, --windows, --expansion, --seed, --out-dir, "
        "--scored-examples, --score-window, --replay-steps and --allow-replay-gap apply)",
    )
    add_run_flags(parser)
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="recompute and print the summaries of the check already in RUN/order_check "
        "(or --out-dir) from its stored pairs, without training anything",
    )
    add_config_flags(parser, OrderCheckOptions)
    add_config_flags(parser, RecordedCheckOptions, RECORDED_ONLY)
    parser.set_defaults(func=order_check_command)


def order_check_command(args: argparse.Namespace) -> int:
    if (Path(args.run_dir) / RUN_FILE).is_file():
        return recorded_check_command(args)
    if args.task is not None:
        raise InputError(f"--task applies to recorded runs; {args.run_dir} has no {RUN_FILE}")
    if args.summary_only:
        folder = Path(args.out_dir) if args.out_dir else Path(args.run_dir) / "order_check"
        result = read_order_check_file(folder)
        return print_summary(write_order_check(folder, resummarize(result)))
    values = read_config_flags(args, OrderCheckOptions)
    return print_summary(
        order_check(args.run_dir, OrderCheckOptions(**values), data_root=args.celeba)
    )


def print_summary(path: Path) -> int:
    """Print the summary of the check written to ``path``."""
    for line in summary_lines(read_order_check_file(path.parent)):
        print(line)
    print(f"numbers: {path}")
    return 0


def recorded_check_command(args: argparse.Namespace) -> int:
    """The order check of a run recorded by :class:`perturbative.Recorder`: minibatch pairs and
    windows of three of the run's own batches (the other flags are for runs of ``train``)."""
    values = read_config_flags(args, OrderCheckOptions)
    options = RecordedCheckOptions(
        checkpoints=values["checkpoints"],
        steps=values["steps"],
        pairs=values["batch_pairs"],
        windows=values["windows"],
        **read_config_flags(args, RecordedCheckOptions, RECORDED_ONLY),
        seed=values["seed"],
        expansion=values["expansion"],
    )
    check = check_recorded_run(args.run_dir, args.task, options, values.get("out_dir"))
    numbers = summary(check)
    print(
        f"{check.optimizer}: {numbers['pairs']} minibatch pairs of the run's own batches "
        f"({numbers.get('clipped', 0)} with the gradient clipping active, modelled)"
    )
    rows = {"all": numbers, **numbers.get("by_checkpoint", {})}
    for name, row in rows.items() if numbers["pairs"] else ():
        label = "all checkpoints" if name == "all" else f"step {name}"
        print(
            f"  {label}: sign accuracy {row['sign_accuracy']:.3f} ({row['pairs']} pairs), median "
            f"relative error {row['median_relative_error']:.2g}; baselines: fair coin "
            f"{row['fair_coin']:.2f}, larger gradient first {row['larger_gradient_first']:.2f}, "
            f"plain-SGD bracket {row['plain_sgd_bracket']:.2f}, optimizer-state part alone "
            f"{row['optimizer_state_part']:.2f}"
        )
    if numbers.get("scored_examples"):
        print(
            f"order scores with the run's optimizer ({check.optimizer}): sign of training an "
            f"example in the first rather than the last of {options.score_window} batches right "
            f"for {numbers['scores_predicted']:.3f} of {numbers['scored_examples']} examples; "
            f"the plain-SGD score {numbers['scores_sgd']:.3f}, the optimizer-state part alone "
            f"{numbers['scores_state_part']:.3f}; median relative error "
            f"{numbers['scores_median_relative_error']:.2g}; by checkpoint: "
            + ", ".join(
                f"step {step} {value:.3f}"
                for step, value in numbers["scores_by_checkpoint"].items()
            )
        )
    if numbers["windows"]:
        print(f"best of 3! picked: {numbers['best_of_3_picked']} of {numbers['windows']} windows")
    out = Path(values.get("out_dir") or Path(args.run_dir) / "order_check")
    print(f"numbers: {out / 'recorded.json'}")
    return 0

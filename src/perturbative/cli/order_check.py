"""``perturbative order-check RUN_DIR``: order predictions against real reordered training."""

from __future__ import annotations

import argparse
from pathlib import Path

from perturbative._core.errors import InputError
from perturbative.cli._flags import add_config_flags, add_run_flags, field_help, read_config_flags
from perturbative.pipeline.config import OrderCheckOptions, is_training_run
from perturbative.pipeline.order_check import order_check
from perturbative.pipeline.order_summary import resummarize, summary_lines
from perturbative.pipeline.recorded import RecordedCheckOptions, check_recorded_run
from perturbative.pipeline.recorded_records import (
    RECORDED_CHECK,
    RecordedCheck,
    read_recorded_check_file,
    summary,
)
from perturbative.pipeline.results import (
    read_order_check_file,
    write_order_check,
)

#: the flags of recorded runs alone
RECORDED_ONLY = ("scored_examples", "score_window")
#: the flags both kinds of run take (``batch_pairs`` is a recorded check's ``pairs``)
SHARED = (
    "checkpoints",
    "steps",
    "batch_pairs",
    "windows",
    "seed",
    "expansion",
    "out_dir",
    "replay_steps",
    "allow_replay_gap",
)
#: what a shared flag is called in :class:`RecordedCheckOptions`
RECORDED_NAMES = {"batch_pairs": "pairs"}


def _defaults(name: str) -> str:
    """``--help``'s default of a flag: a `train` run's, and a recorded run's where it differs
    (each is its options class's own default, the same as in Python)."""
    train = getattr(OrderCheckOptions(), name)
    if name not in SHARED:
        return f"{train}; runs of `perturbative train` only"
    recorded = getattr(RecordedCheckOptions(), RECORDED_NAMES.get(name, name), train)
    return f"{train}" if recorded == train else f"{train}; on a recorded run {recorded}"


def order_check_command_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "order-check", help="test order predictions against real reordered training"
    )
    parser.add_argument(
        "run_dir",
        help="a run directory made by `perturbative train`, or recorded by perturbative.Recorder "
        "(then --checkpoints, --steps, --batch-pairs, --windows, --expansion, --seed, --out-dir, "
        "--replay-steps, --allow-replay-gap, --scored-examples and --score-window apply; a flag "
        "that does not apply to the run is refused)",
    )
    add_run_flags(parser)
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="recompute and print the summaries of the check already in RUN/order_check "
        "(or --out-dir) from its stored pairs, without training anything",
    )
    add_config_flags(parser, OrderCheckOptions, overrides=True, default_text=_defaults)
    add_config_flags(
        parser,
        RecordedCheckOptions,
        RECORDED_ONLY,
        overrides=True,
        default_text=lambda n: f"{getattr(RecordedCheckOptions(), n)}; recorded runs only",
    )
    parser.set_defaults(func=order_check_command)


def order_check_command(args: argparse.Namespace) -> int:
    if not is_training_run(args.run_dir):
        if args.celeba is not None:
            raise InputError(
                f"--celeba applies to runs of `perturbative train`, not {args.run_dir}"
            )
        _refuse_flags(args, OrderCheckOptions, set(field_help(OrderCheckOptions)) - set(SHARED),
                      "runs of `perturbative train`")  # fmt: skip
        return recorded_check_command(args)
    if args.task is not None:
        raise InputError(
            f"--task applies to runs recorded by perturbative.Recorder; {args.run_dir} is a run "
            "of `perturbative train`, whose order check uses its own task"
        )
    _refuse_flags(args, RecordedCheckOptions, RECORDED_ONLY, "recorded runs")
    if args.summary_only:
        folder = Path(args.out_dir) if args.out_dir else Path(args.run_dir) / "order_check"
        result = read_order_check_file(folder)
        for gap in result.replay:
            print(gap.line())
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


def _refuse_flags(args: argparse.Namespace, cls: type, names, kind: str) -> None:
    given = sorted(k for k, v in read_config_flags(args, cls, names).items() if v is not False)
    if given:
        flags = ", ".join("--" + n.replace("_", "-") for n in given)
        raise InputError(f"{flags} apply to {kind} only, not to {args.run_dir}: leave them out")


def recorded_check_command(args: argparse.Namespace) -> int:
    """The order check of a run recorded by :class:`perturbative.Recorder`: minibatch pairs and
    windows of three of the run's own batches; flags not given take
    :class:`RecordedCheckOptions`' defaults."""
    values = read_config_flags(args, OrderCheckOptions, SHARED)
    out_dir = values.pop("out_dir", None)
    options = RecordedCheckOptions(
        **{RECORDED_NAMES.get(k, k): v for k, v in values.items()},
        **read_config_flags(args, RecordedCheckOptions, RECORDED_ONLY),
    )
    out = Path(out_dir or Path(args.run_dir) / "order_check")
    if args.summary_only:
        if not (out / RECORDED_CHECK).is_file():
            raise InputError(f"no recorded check in {out}: run the check first")
        saved = read_recorded_check_file(out / RECORDED_CHECK)
        for gap in saved.replay:
            print(gap.line())
        return print_recorded(saved, out)
    return print_recorded(check_recorded_run(args.run_dir, args.task, options, out_dir), out)


def print_recorded(check: RecordedCheck, out: Path) -> int:
    """Print a recorded check's summary."""
    numbers = summary(check)
    clipped = numbers.all.clipped if numbers.all else 0
    print(
        f"{check.optimizer}: {numbers.pairs} minibatch pairs of the run's own batches "
        f"({clipped} with the gradient clipping active, modelled)"
    )
    rows = {"all checkpoints": numbers.all} if numbers.all else {}
    rows |= {f"step {step}": row for step, row in numbers.by_checkpoint.items()}
    for label, row in rows.items():
        print(
            f"  {label}: sign accuracy {row.sign_accuracy:.3f} ({row.pairs} pairs), median "
            f"relative error {row.median_relative_error:.2g}; baselines: fair coin "
            f"{row.fair_coin:.2f}, larger gradient first {row.larger_gradient_first:.2f}, "
            f"plain-SGD bracket {row.plain_sgd_bracket:.2f}, optimizer-state part alone "
            f"{row.optimizer_state_part:.2f}"
        )
    scores = numbers.scores
    if scores is not None:
        print(
            f"order scores with the run's optimizer ({check.optimizer}): sign of training an "
            f"example in the first rather than the last of {check.options.get('score_window')} "
            f"batches right for {scores.predicted:.3f} of {scores.scored_examples} examples; the "
            f"plain-SGD score {scores.sgd:.3f}, the optimizer-state part alone "
            f"{scores.state_part:.3f}; median relative error {scores.median_relative_error:.2g}; "
            "by checkpoint: "
            + ", ".join(f"step {step} {value:.3f}" for step, value in scores.by_checkpoint.items())
        )
    if numbers.windows:
        print(f"best of 3! picked: {numbers.best_of_3_picked} of {numbers.windows} windows")
    print(f"numbers: {out / RECORDED_CHECK}")
    return 0

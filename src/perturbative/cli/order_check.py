"""``perturbative order-check RUN_DIR``: order predictions against real reordered training."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from perturbative.pipeline.config import OrderCheckOptions
from perturbative.pipeline.order_check import order_check, resummarize, summary_lines
from perturbative.pipeline.results import read_order_check_file, write_order_check

HELP = {
    "checkpoints": "checkpoints checked, spread over the run after step 0",
    "steps": "comma-separated checkpoint steps to check instead (overrides --checkpoints)",
    "example_pairs": "random pairs of single examples",
    "batch_pairs": "random pairs of minibatches of the run's batch size",
    "exchanges": "random pairs of examples exchanged between two consecutive minibatches",
    "windows": "random windows of each size k (all k! orders trained)",
    "window_sizes": "comma-separated window sizes k, 2 to 4",
    "horizons": "comma-separated further identical steps after the swap",
    "horizon_pairs": "pairs of each kind followed past h=0",
    "horizon_predictions": "of those, pairs of each kind also predicted past h=0",
    "scaled_pairs": "example pairs at each smaller lr scale (half as many batch pairs)",
    "lr_scales": "comma-separated multiples of the run's lr",
    "heldout_examples": "held-out examples in the observable (their mean loss)",
    "batchnorm_examples": "training examples whose statistics replace the checkpoint's "
    "BatchNorm running statistics (0 keeps them)",
    "batchnorm": "'batch': minibatches use their own BatchNorm statistics, as in training; "
    "'running': eval mode throughout",
    "examples": "'in-batch': a single example is trained inside a minibatch whose other "
    "examples weigh 0, with its BatchNorm statistics, as in training; 'alone': a batch of one in "
    "eval mode",
    "expansion": "each gradient expanded to order 2 or 3 along the predicted path (3 also "
    "records the second-order prediction beside it)",
    "pieces": "'follow': expand each gradient on the piece (max-pool winners, ReLU signs) its "
    "point lies on; 'ignore': on the piece of the checkpoint",
    "dtype": "float64 or float32",
    "floor_pairs": "pairs repeated in float32 to measure its rounding floor",
    "seed": "seed of pairs, windows and held-out examples",
    "out_dir": "output folder (default RUN/order_check)",
}


def order_check_command_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "order-check", help="test order predictions against real reordered training"
    )
    parser.add_argument("run_dir", help="a run directory made by `perturbative train`")
    parser.add_argument(
        "--celeba", default=None, help="where the run's CelebA data is now, if it has moved"
    )
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="recompute and print the summaries of the check already in RUN/order_check "
        "(or --out-dir) from its stored pairs, without training anything",
    )
    for f in fields(OrderCheckOptions):
        default = f.default
        kind = {"int": int, "str": str}.get(str(f.type), str)
        if isinstance(default, tuple):
            default = ",".join(str(v) for v in default)
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=kind,
            default=default,
            help=f"{HELP[f.name]} (default: {default})",
        )
    parser.set_defaults(func=order_check_command)


def order_check_command(args: argparse.Namespace) -> int:
    if args.summary_only:
        folder = Path(args.out_dir) if args.out_dir else Path(args.run_dir) / "order_check"
        result = read_order_check_file(folder)
        return print_summary(write_order_check(folder, resummarize(result)))
    values = {f.name: getattr(args, f.name) for f in fields(OrderCheckOptions)}
    values["horizons"] = tuple(int(v) for v in str(values["horizons"]).split(","))
    values["steps"] = tuple(int(v) for v in str(values["steps"]).split(",") if v.strip())
    values["window_sizes"] = tuple(int(v) for v in str(values["window_sizes"]).split(","))
    values["lr_scales"] = tuple(float(v) for v in str(values["lr_scales"]).split(","))
    return print_summary(
        order_check(args.run_dir, OrderCheckOptions(**values), data_root=args.celeba)
    )


def print_summary(path: Path) -> int:
    """Print the summary of the check written to ``path``."""
    for line in summary_lines(json.loads(path.read_text())):
        print(line)
    print(f"numbers: {path}")
    return 0

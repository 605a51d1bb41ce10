"""Order predictions pooled over several `perturbative order-check` folders, against the targets.

    python benchmarks/order_targets.py runs/demo/order_check_third runs/demo/order_check_350 ...

For each run it pools the third-order checks at the run's own lr and `h = 0` (a pair drawn by
two checks counts once) and prints the sign accuracy of each kind of pair with its binomial
standard error, over all pairs, above the float32 rounding floor and over the settled pairs
(third-order term smaller than the prediction), and how often the predicted best of 3! and 4!
orders was the real best. Targets: sign accuracy 0.98, best of 3! picked 0.90. Only checks
whose predictions followed the pieces (max-pool winners, ReLU signs) their points lie on are
pooled, unless `--pieces ignore` (checks written before that option ignored them).
"""

from __future__ import annotations

import argparse
import os
import sys

from perturbative.pipeline.results import read_order_check_file
from perturbative.report.statistics import pooled_lines, pooled_order_checks

SIGN_TARGET = 0.98
BEST_OF_3_TARGET = 0.90


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="folders holding order_check.json")
    parser.add_argument(
        "--pieces",
        choices=("follow", "ignore"),
        default="follow",
        help="pool the checks made with this `order-check --pieces` (default: follow)",
    )
    args = parser.parse_args(argv)
    checks = [read_order_check_file(folder) for folder in args.folders]
    pooled = {
        _shown(run): numbers for run, numbers in pooled_order_checks(checks, args.pieces).items()
    }
    for line in pooled_lines(pooled, SIGN_TARGET, BEST_OF_3_TARGET):
        print(line)
    return 0


def _shown(run: str) -> str:
    """A run's folder relative to here when it lies below, else as recorded."""
    relative = os.path.relpath(run)
    return run if relative.startswith("..") else relative


if __name__ == "__main__":
    sys.exit(main())

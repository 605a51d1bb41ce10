"""Which attributes' predictions move together when training examples swap, over training.

Reads a sweep's results (``perturbative brackets`` output) and prints, for each checkpoint, the
correlation between two attributes' output shifts over all (bracket, test example) samples, and
its rank by absolute value among all attribute pairs. Mutually exclusive attributes (Black_Hair
and Brown_Hair) moving in opposite directions is the sign that independent per-attribute BCE is
mis-specified for them.

    python examples/attribute_pairs.py RUN_DIR/brackets [--pair Black_Hair Brown_Hair]
"""

from __future__ import annotations

import argparse

import numpy as np

from perturbative.report import load_report_data
from perturbative.report.statistics import attribute_comovement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="a results directory written by perturbative brackets")
    parser.add_argument("--pair", nargs=2, default=["Black_Hair", "Brown_Hair"])
    args = parser.parse_args()
    data = load_report_data(args.results)
    names = data.attribute_names
    missing = [a for a in args.pair if a not in names]
    if missing:
        raise SystemExit(f"unknown attributes {missing}; the results have: {', '.join(names)}")
    a, b = (names.index(n) for n in args.pair)
    correlations = attribute_comovement(data.output_shift)  # (steps, K, K)
    upper = np.triu_indices(len(names), 1)
    print(
        f"{args.pair[0]} / {args.pair[1]}: correlation of output shifts, rank among "
        f"{len(upper[0])} attribute pairs by |correlation|"
    )
    for step, shifts, matrix in zip(data.steps, data.output_shift, correlations, strict=True):
        # the same number straight from the shifts, as a check on the report's computation
        x, y = shifts[..., a].ravel(), shifts[..., b].ravel()
        direct = np.corrcoef(x, y)[0, 1]
        assert abs(direct - matrix[a, b]) < 1e-3, (direct, matrix[a, b])
        rank = int((np.abs(matrix[upper]) > abs(matrix[a, b])).sum()) + 1
        print(f"  step {step:6d}: {matrix[a, b]:+.3f}  rank {rank:4d}")


if __name__ == "__main__":
    main()

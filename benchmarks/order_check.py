"""Order predictions against real reordered training on the digits demo run, end to end.

    python benchmarks/order_check.py                 # trains runs/demo if needed, then checks it
    python benchmarks/order_check.py --run-dir R     # any run made by `perturbative train`

Prints the summary of `perturbative order-check` (sign accuracy, Spearman, calibration slope,
baselines, best-of-k! orders, at every horizon and lr scale) and leaves the numbers in
R/order_check/order_check.json. Extra flags go to `perturbative order-check`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from perturbative.cli import main as cli


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/demo")
    args, rest = parser.parse_known_args(argv)
    run = Path(args.run_dir)
    if not (run / "config.json").is_file():
        code = cli(["train", "--run-dir", str(run)])
        if code:
            return code
    start = time.perf_counter()
    code = cli(["order-check", str(run), *rest])
    print(f"order-check took {time.perf_counter() - start:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())

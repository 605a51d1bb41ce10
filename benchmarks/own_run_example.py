"""The whole GPT-2 example of the own-run recipe, timed: record the run, sweep its brackets,
a small order check, the report, each as a user runs it (one process after the other).

    python benchmarks/own_run_example.py                     # into a temporary folder
    python benchmarks/own_run_example.py --run-dir runs/own_loop

Prints each command's wall time and the total, and the order check's numbers; writes
benchmarks/results/own_run_example.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default=None, help="default: a temporary folder")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/own_run_example.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        run = Path(args.run_dir or Path(scratch) / "own_loop")
        cli = [sys.executable, "-m", "perturbative.cli"]
        commands = {
            "record": [sys.executable, str(ROOT / "examples/own_loop.py"), "--run-dir", str(run)],
            "brackets": [*cli, "brackets", str(run)],
            "order-check": [
                *cli,
                "order-check",
                str(run),
                *("--checkpoints", "3", "--logged-pairs", "10", "--windows", "2"),
                *("--window-sizes", "3", "--scored-examples", "10", "--example-pairs", "0"),
                *("--batch-pairs", "0", "--exchanges", "0", "--horizons", "0"),
                *("--lr-scales", "1", "--floor-pairs", "0"),
            ],
            "report": [*cli, "report", str(run)],
        }
        seconds, printed = {}, {}
        for name, command in commands.items():
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            seconds[name] = round(time.perf_counter() - started, 1)
            if done.returncode != 0:
                sys.exit(f"{name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
            printed[name] = [line for line in done.stdout.splitlines() if line.strip()]
            print(f"{name}: {seconds[name]:.1f} s")
        total = round(sum(seconds.values()), 1)
        print(f"total: {total:.1f} s ({total / 60:.1f} min; target <= 15 min on 2 cores)")
        for line in printed["order-check"]:
            print("  " + line)
        report = run / "report.html"
        print(f"report: {report} ({report.stat().st_size / 1e6:.1f} MB)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {"seconds": seconds, "total_seconds": total, "order_check": printed["order-check"]},
            indent=1,
        )
        + "\n"
    )
    print(f"numbers: {args.out}")


if __name__ == "__main__":
    main()

"""The demo on a quiet machine and with one busy process per core, side by side in one run.

    python benchmarks/busy_machine.py                    # quiet, then busy (threads chosen by
                                                         # the CLI: the idle cores)
    python benchmarks/busy_machine.py --forced-threads   # also busy with one thread per core,
                                                         # torch's default, for contrast

Each variant trains and sweeps the digits demo from scratch in a temporary folder (the same
settings as `perturbative demo`) and prints its wall-clock time and the ratio to the quiet run.
The busy loops are plain Python processes spinning on one core each; they are stopped at the
end. Writes benchmarks/results/busy_machine.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "busy_machine.json"


def run_demo(folder: Path, threads: int | None) -> float:
    cli = "import sys; from perturbative.cli import main; sys.exit(main(sys.argv[1:]))"
    command = [sys.executable, "-c", cli, "demo", "--run-dir", str(folder)]
    if threads is not None:
        command += ["--threads", str(threads)]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    start = time.perf_counter()
    subprocess.run(
        command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.perf_counter() - start


def busy_loops(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forced-threads", action="store_true")
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        quiet = run_demo(Path(tmp) / "quiet", None)
        rows.append({"variant": "quiet, threads chosen by the CLI", "seconds": quiet})
        print(f"quiet: {quiet:.0f} s", flush=True)
        variants = [("busy, threads chosen by the CLI", None)]
        if args.forced_threads:
            variants.append((f"busy, --threads {cores} (torch's default)", cores))
        for n, (name, threads) in enumerate(variants):
            loops = busy_loops(cores)
            try:
                time.sleep(1.0)  # let the loops occupy the cores before the CLI samples them
                seconds = run_demo(Path(tmp) / f"busy{n}", threads)
            finally:
                for loop in loops:
                    loop.kill()
                    loop.wait()
            rows.append({"variant": name, "seconds": seconds, "ratio_to_quiet": seconds / quiet})
            print(f"{name}: {seconds:.0f} s, {seconds / quiet:.2f}x the quiet run", flush=True)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {"command": " ".join(["python", *sys.argv]), "cores": cores, "rows": rows}, indent=1
        )
        + "\n"
    )


if __name__ == "__main__":
    main()

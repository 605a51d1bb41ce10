"""The GPU benchmarks in one script: GPT-2 small recorded and checked on CUDA, the order scores
and the all-pairs bracket matrix, each against its naive loop, with times, peak memory and the
fraction of the GPU's peak.

    python benchmarks/gpu.py                  # on a machine with a CUDA device (about 10 min)
    python benchmarks/gpu.py --device cpu --quick   # the same steps, small, on the CPU

It runs, one after another in fresh processes, and prints what each prints:

1. ``benchmarks/bracket_matrix.py --device cuda``: the engines against the naive per-pair loop,
   achieved FLOP/s and their fraction of the H100's dense peaks (TF32 on and off);
2. ``benchmarks/score_costs.py --device cuda --naive``: the optimizer-aware and plain order
   scores per example against a training step per example, and the optimizer-aware scores with
   per-example gradients stored (the naive engine), on the reference model and on GPT-2 small;
3. ``examples/gpt2_small.py --device cuda`` then ``perturbative order-check`` on that run
   (float32, third order, on CUDA): 24 logged pairs over 2 checkpoints and 32 scored examples
   against really reordering, with the seconds per pair and the peak memory.

Writes benchmarks/results/gpu.json (every step's seconds, exit status and printed lines).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks/results/gpu.json"


def steps(device: str, quick: bool, run_dir: Path) -> dict[str, list[str]]:
    python = [sys.executable]
    check = ["--steps", "4,8" if quick else "40,80", "--dtype", "float32"]
    check += ["--expansion", "2" if quick else "3", "--logged-pairs", "2" if quick else "12"]
    check += ["--scored-examples", "2" if quick else "16", "--score-window", "2"]
    check += ["--floor-pairs", "1" if quick else "2", "--windows", "0", "--example-pairs", "0"]
    check += ["--batch-pairs", "0", "--exchanges", "0", "--horizons", "0", "--lr-scales", "1"]
    train = ["--steps", "12", "--warmup", "2", "--save-every", "4"] if quick else []
    pool = ["--pool", "4"] if quick else ["--pool", "64"]
    # a quick try keeps its numbers beside its run, not over the measured ones
    out = (lambda name: ["--out", str(run_dir.parent / name)]) if quick else (lambda name: [])
    return {
        "bracket_matrix": [
            *python, "benchmarks/bracket_matrix.py", "--device", device,
            *(["--json", str(run_dir.parent / "bracket_matrix_quick.json")] if quick else []),
        ],
        "score_costs reference": [
            *python, "benchmarks/score_costs.py", "--device", device, "--naive", *pool,
            *out("score_costs_quick.json"),
        ],
        "score_costs gpt2-small": [
            *python, "benchmarks/score_costs.py", "--model", "gpt2-small", "--device", device,
            "--naive", "--pool", "4" if quick else "16", *out("score_costs_gpt2_quick.json"),
        ],
        "gpt2_small record": [
            *python, "examples/gpt2_small.py", "--run-dir", str(run_dir), "--device", device,
            *train,
        ],
        "gpt2_small order-check": [
            *python, "-m", "perturbative.cli", "order-check", str(run_dir), "--device", device,
            *check,
        ],
    }  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="small sizes, to try the script")
    parser.add_argument("--run-dir", default="runs/gpt2_small_gpu")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            sys.exit("no CUDA device here: run with --device cpu --quick to try the script")
        print(f"device: {torch.cuda.get_device_name()}")
    run_dir = Path(args.run_dir).resolve()
    if run_dir.exists():
        sys.exit(f"{run_dir} exists: remove it or pass --run-dir")
    results = run_dir.parent / "gpu_quick.json" if args.quick else RESULTS
    out = {}
    for name, command in steps(args.device, args.quick, run_dir).items():
        print(f"== {name}: {' '.join(command[1:])}", flush=True)
        started = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        for line in lines:
            print("  " + line)
        if done.returncode != 0:
            print(f"  failed ({done.returncode}): {done.stderr[-2000:]}")
        print(f"  {seconds:.1f} s", flush=True)
        out[name] = {"seconds": seconds, "returncode": done.returncode, "printed": lines}
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(out, indent=1) + "\n")
    print(f"numbers: {results}")
    return 0 if all(step["returncode"] == 0 for step in out.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

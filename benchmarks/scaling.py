"""How the sweep's cost grows with checkpoints, pool size and processes, side by side in one run.

    python benchmarks/scaling.py                # trains runs/demo first if it is missing

1. The bracket sweep of the demo run (13 checkpoints, a ranking pool of 256), fresh, as one
   process with 2 threads and as 2 processes with 1 thread each (``torchrun`` on loopback,
   checkpoints dealt out over the ranks).
2. ``order_scores`` on the demo's model for pools of 64, 128 and 256 examples (one process):
   time per example, which should not depend on the pool.

Prints the figures and writes benchmarks/results/scaling.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "scaling.json"
CLI = "import sys; from perturbative.cli import main; sys.exit(main(sys.argv[1:]))"


def timed(command: list[str], threads: int) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def main() -> None:
    run = Path("runs/demo")
    if not (run / "config.json").is_file():
        subprocess.run([sys.executable, "-c", CLI, "train", "--run-dir", str(run)], check=True)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        one = [sys.executable, "-c", CLI, "brackets", str(run), "--out", f"{tmp}/one"]
        rows["sweep_1_process_2_threads"] = timed(one, 2)
        two = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        two += ["--nproc-per-node", "2", "-m", "perturbative.cli", "brackets", str(run)]
        rows["sweep_2_processes_1_thread"] = timed([*two, "--out", f"{tmp}/two"], 1)
    print(
        f"bracket sweep of {run} (13 checkpoints): 1 process x 2 threads "
        f"{rows['sweep_1_process_2_threads']:.1f} s, 2 processes x 1 thread "
        f"{rows['sweep_2_processes_1_thread']:.1f} s "
        f"({rows['sweep_1_process_2_threads'] / rows['sweep_2_processes_1_thread']:.2f}x)"
    )

    import torch
    import torch.nn.functional as F

    from perturbative.brackets import mean_gradient, order_scores
    from perturbative.pipeline.checkpoints import list_checkpoints, load_checkpoint
    from perturbative.pipeline.config import load_run_config
    from perturbative.pipeline.train import build_dataset, build_model

    torch.set_num_threads(2)
    config = load_run_config(run)
    dataset = build_dataset(config)
    model = build_model(config, dataset.num_attributes, dataset.num_channels)
    model.load_state_dict(load_checkpoint(list_checkpoints(run)[-1][1])["model"])
    model.eval()
    params = dict(model.named_parameters())

    def loss_fn(outputs, targets):
        return F.binary_cross_entropy_with_logits(outputs, targets)

    u = mean_gradient(model, loss_fn, params, dataset.batch(dataset.heldout_indices[:32]))
    rows["order_scores_ms_per_example"] = {}
    order_scores(model, loss_fn, params, dataset.batch(dataset.train_indices[:8]), u)  # warm-up
    for n in (64, 128, 256):
        pool = dataset.batch(dataset.train_indices[:n])
        start = time.perf_counter()
        order_scores(model, loss_fn, params, pool, u)
        ms = 1e3 * (time.perf_counter() - start) / n
        rows["order_scores_ms_per_example"][n] = ms
        print(f"order_scores, pool {n}: {ms:.1f} ms per example")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"command": "python benchmarks/scaling.py", **rows}, indent=1))


if __name__ == "__main__":
    main()

"""What the order scores with the run's optimizer cost against really moving each example, side
by side in one run, on the GPT-2 of examples/own_loop.py recorded for --steps steps.

    python benchmarks/optimizer_scores.py                  # 64 examples, window of 4 batches
    python benchmarks/optimizer_scores.py --examples 128 --window 8

The prediction (one adjoint pass through the window's AdamW steps, three per-example gradients
per example) against really training the window twice per example in float64, as the order check
does; both in float64 from the recorded checkpoint. Prints seconds per example, the ratio and the
sign agreement; writes benchmarks/results/optimizer_scores.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="steps of the recorded run")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--real", type=int, default=16, help="examples really moved (timed)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/optimizer_scores.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from perturbative.brackets import moved_first_or_last, optimizer_order_scores
    from perturbative.pipeline.recorded_run import open_recorded_checkpoint, run_task
    from perturbative.pipeline.task import as_dtype

    with tempfile.TemporaryDirectory() as scratch:
        run = Path(scratch) / "run"
        subprocess.run(
            [sys.executable, str(ROOT / "examples/own_loop.py"), "--run-dir", str(run),
             "--steps", str(args.steps + args.window + 1), "--save-every", str(args.steps)],
            check=True, capture_output=True,
        )  # fmt: skip
        task = run_task(run)
        at = open_recorded_checkpoint(run, args.steps, task)
        observable = task.build_observable(at.model)
        window = [
            as_dtype(task.batch(r["indices"]), torch.float64) for r in at.next_steps[: args.window]
        ]
        chosen = torch.randperm(len(task.train), generator=torch.Generator().manual_seed(0))
        chosen = chosen[: args.examples].tolist()
        data = as_dtype(task.batch(chosen), torch.float64)
        step = at.training  # the loop's step: its clipping (1.0) and each step's logged lr
        started = time.perf_counter()
        scores = optimizer_order_scores(at.model, task.loss_fn, step, data, observable, window)
        predicted_seconds = time.perf_counter() - started
        started, real = time.perf_counter(), []
        for index in chosen[: args.real]:
            first, last = moved_first_or_last(
                at.model, task.loss_fn, step,
                as_dtype(task.batch([index]), torch.float64), observable, window,
            )  # fmt: skip
            real.append(first - last)
        real_seconds = time.perf_counter() - started
    per_prediction = predicted_seconds / args.examples
    per_real = real_seconds / args.real
    agree = float(np.mean(np.sign(scores.scores[: args.real].numpy()) == np.sign(real)))
    print(
        f"GPT-2 of examples/own_loop.py at step {args.steps}, AdamW, window of {args.window} "
        f"batches of 32, float64, {args.threads} threads"
    )
    print(
        f"optimizer_order_scores, {args.examples} examples: {predicted_seconds:.2f} s "
        f"({1000 * per_prediction:.1f} ms per example)"
    )
    print(
        f"really moving each example, {args.real} examples: {real_seconds:.2f} s "
        f"({1000 * per_real:.1f} ms per example)"
    )
    print(
        f"per example the prediction is {per_real / per_prediction:.1f}x cheaper; signs agree for "
        f"{agree:.3f} of the {args.real} moved"
    )
    Path(args.out).write_text(
        json.dumps(
            {
                "examples": args.examples,
                "window": args.window,
                "step": args.steps,
                "prediction_seconds": predicted_seconds,
                "real_seconds": real_seconds,
                "real_examples": args.real,
                "ratio_per_example": per_real / per_prediction,
                "sign_agreement": agree,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"numbers: {args.out}")


if __name__ == "__main__":
    main()

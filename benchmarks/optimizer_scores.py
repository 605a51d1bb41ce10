"""What the order scores with the run's optimizer cost against really moving each example, side
by side in one run, on the GPT-2 of examples/own_loop.py recorded for --steps steps.

    python benchmarks/optimizer_scores.py                  # 64 examples, window of 4 batches
    python benchmarks/optimizer_scores.py --examples 128 --window 8

The prediction (one adjoint pass through the window's AdamW steps, then each example's products
with the adjoints) against really training the window twice per example in float64, as the
order check does; both in float64 from the recorded checkpoint. The prediction is timed with
each engine at the pool's size and eight times it: the difference is its marginal cost per
example, printed against a training step per example (the window's steps, timed in the same
run).
Prints seconds per example, the ratios and the sign agreement; writes
benchmarks/results/optimizer_scores.json.
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
    from perturbative.brackets import (
        moved_first_or_last,
        optimizer_order_scores,
        parameters_after_steps,
    )
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
        # a training step per example, on the window's batches (one forward and backward pass
        # and the optimizer's update each), beside the scores' cost per example
        started = time.perf_counter()
        for batch in window:
            parameters_after_steps(at.model, task.loss_fn, step, [batch])
        trained = sum(len(r["indices"]) for r in at.next_steps[: args.window])
        train_per_example = (time.perf_counter() - started) / trained
        more = torch.randperm(len(task.train), generator=torch.Generator().manual_seed(1))
        more = more[: 8 * args.examples].tolist()
        both = as_dtype(task.batch(more), torch.float64)  # eight times the pool
        engines = {}
        for engine in ("auto", "per_example"):
            timed, results = [], []
            for pool in (data, both):
                started = time.perf_counter()
                results.append(
                    optimizer_order_scores(
                        at.model, task.loss_fn, step, pool, observable, window, engine=engine
                    )
                )
                timed.append(time.perf_counter() - started)
            engines[engine] = (timed, results)
        scores = engines["auto"][1][0]  # the pool's, whose first examples are really moved
        predicted_seconds = engines["auto"][0][0]
        fast, slow = engines["auto"][1][1].scores, engines["per_example"][1][1].scores
        same = float((fast - slow).abs().max() / slow.abs().max())  # on the larger pool
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
    print(f"a training step: {1000 * train_per_example:.2f} ms per example")
    marginal = {}
    for engine, ((once, twice), _) in engines.items():
        marginal[engine] = (twice - once) / (7 * args.examples)
        print(
            f"optimizer_order_scores (engine={engine!r}): {args.examples} examples {once:.2f} s, "
            f"{8 * args.examples} examples {twice:.2f} s; marginal {1000 * marginal[engine]:.2f} "
            f"ms per example = {marginal[engine] / train_per_example:.1f}x a training step"
        )
    print(f"the two engines' scores differ by at most {same:.1e} of the largest")
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
                "training_step_seconds_per_example": train_per_example,
                "marginal_seconds_per_example": marginal,
                "marginal_over_training_step": {
                    k: v / train_per_example for k, v in marginal.items()
                },
                "engines_max_relative_difference": same,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"numbers: {args.out}")


if __name__ == "__main__":
    main()

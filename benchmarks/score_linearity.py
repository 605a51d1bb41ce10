"""Is an order score the derivative in the moved example's weight, and how far from linear is the
run's own weight? On a recorded run's checkpoint, each example is really moved from the first to
the last of the run's next batches at weights 1/n, 1/4n, 1/16n and 1/64n of its batch of n, and
the real difference divided by the weight (times n) is printed beside the optimizer-aware score.

    python examples/hf_trainer.py
    python benchmarks/score_linearity.py runs/hf_trainer --step 150 --examples 7264 6260 460

Where the column at 1/64n meets the score, the score is right as a derivative; where the column
at 1/n (the run's own weight, what the order check really trains) has another sign, the
example's effect is far from linear in its weight there, which no first-order score follows.
"""

from __future__ import annotations

import argparse

import torch

from perturbative.brackets import moved_first_or_last, optimizer_order_scores
from perturbative.pipeline.order_check import checkpoint_for_check, next_batches
from perturbative.pipeline.order_sampling import cast_batch

FRACTIONS = (1, 4, 16, 64)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a recorded run (e.g. runs/hf_trainer)")
    parser.add_argument("--step", type=int, required=True, help="the checkpoint")
    parser.add_argument("--examples", type=int, nargs="+", required=True, help="training positions")
    parser.add_argument("--window", type=int, default=4, help="the run's batches moved across")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    at = checkpoint_for_check(args.run_dir, args.step)
    at.model.eval()
    batches = next_batches(at.task, at.logged, at.step, args.window, at.batch_size, 0)
    window = [cast_batch(at.task.batch(b), "float64") for b in batches]
    data = cast_batch(at.task.batch(args.examples), "float64")
    scores = optimizer_order_scores(at.model, at.task.loss_fn, at.loop, data, at.observable, window)
    n = len(batches[0])
    print(f"{args.run_dir} step {args.step}: real (first - last) / (w n) at w = 1/n ... 1/64n")
    print(f"{'example':>8} {'score':>11} " + " ".join(f"{f'w=1/{f}n':>11}" for f in FRACTIONS))
    step = (at.model, at.task.loss_fn, at.loop)
    for k, index in enumerate(args.examples):
        example = cast_batch(at.task.batch([index]), "float64")
        row = []
        for fraction in FRACTIONS:
            weight = 1.0 / (fraction * n)
            first, last = moved_first_or_last(*step, example, at.observable, window, weight)
            row.append((first - last) / (weight * n))
        print(
            f"{index:>8} {float(scores.scores[k]):+11.3e} " + " ".join(f"{r:+11.3e}" for r in row)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

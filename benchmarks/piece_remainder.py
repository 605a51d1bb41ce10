"""How well the gradient's expansion along one real Adam step converges, on a run's checkpoint.

    python benchmarks/piece_remainder.py runs/celeba --step 5000

At the checkpoint (model and Adam state restored, float64, BatchNorm in train mode as the run
trained) it takes the run's real Adam step on a random minibatch A, ``d``, and for a second
minibatch B compares the exact gradient ``g_B(theta + s d)`` with its expansion at ``theta`` to
second and third order, for ``s = 1, 1/4, 1/16``. Each expansion is taken twice: on the smooth
piece ``theta`` lies on (plain Taylor), and on the piece ``theta + s d`` lies on (its max-pool
winners and ReLU signs, as the order predictions take it). It prints the remainders relative to
the gradient's change ``|g_B(theta + s d) - g_B(theta)|``, how much each shrinks when the step
shrinks 4x (a smooth function's second-order remainder 16x, third-order 64x), and the share of
pooling windows whose winner the step changes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.func import functional_call

from perturbative.brackets import (
    hvp,
    mean_gradient,
    on_pieces,
    parameters_after_steps,
    record_pieces,
    third_derivative,
    vector_norm,
)
from perturbative.pipeline.config import OrderCheckOptions
from perturbative.pipeline.order_check import checkpoint_for_check
from perturbative.pipeline.order_sampling import sample_pairs
from perturbative.pipeline.train import per_example_bce

SCALES = (1.0, 0.25, 0.0625)


def norm(v: dict) -> float:
    return float(vector_norm(v))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--step", type=int, required=True, help="the checkpoint's step")
    parser.add_argument("--pairs", type=int, default=2, help="minibatch pairs (A, B)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    run = Path(args.run_dir)
    options = OrderCheckOptions(steps=(args.step,), horizons=(0,), heldout_examples=8)
    at = checkpoint_for_check(run, args.step, options)
    model = at.model.train()
    generator = torch.Generator().manual_seed(args.seed)
    pairs = sample_pairs(at.task, at.batch_size, 0, args.pairs, 0, generator, "float64")
    theta = {k: v.detach() for k, v in model.named_parameters()}
    leaves = {k: v.clone().requires_grad_() for k, v in theta.items()}

    def pieces_at(point, batch):
        buffers = {k: v.clone() for k, v in model.named_buffers()}  # train mode writes them
        return record_pieces(lambda: functional_call(model, (point, buffers), (batch[0],)))

    print(f"{run} step {args.step}: remainder of g_B(theta + s d) / |g_B(theta + s d) - g_B|")
    print(f"{'s':>7} {'windows changed':>16}   {'plain 2nd':>9} {'3rd':>9}   piece 2nd       3rd")
    shrink = {key: [] for key in ("plain2", "plain3", "piece2", "piece3")}
    for _, first, second in pairs:
        after = parameters_after_steps(model, per_example_bce, at.optimizer, [first])
        d = {k: after[k].detach() - theta[k] for k in theta}
        start = pieces_at(theta, second)
        g0 = mean_gradient(model, per_example_bce, leaves, second)
        previous = None
        for s in SCALES:
            step = {k: s * d[k] for k in d}
            point = {k: theta[k] + step[k] for k in theta}
            exact = mean_gradient(
                model,
                per_example_bce,
                {k: v.clone().requires_grad_() for k, v in point.items()},
                second,
            )
            change = norm({k: exact[k] - g0[k] for k in g0})
            there = pieces_at(point, second)
            pools = [(a, b) for a, b in zip(start, there, strict=True) if a.kind == "max_pool"]
            changed = sum(int((a.chosen != b.chosen).sum()) for a, b in pools)
            windows = sum(a.chosen.numel() for a, _ in pools)
            row = {}
            for label, selections in (("plain", []), ("piece", there)):
                with on_pieces(selections):
                    g = mean_gradient(model, per_example_bce, leaves, second)
                    h = hvp(model, per_example_bce, leaves, second, step)
                    t = third_derivative(model, per_example_bce, leaves, second, step)
                r2 = {k: exact[k] - g[k] - h[k] for k in g}
                r3 = {k: r2[k] - 0.5 * t[k] for k in g}
                row[label + "2"], row[label + "3"] = norm(r2) / change, norm(r3) / change
            print(
                f"{s:7.4f} {changed / max(windows, 1):15.2%}   {row['plain2']:9.2e} "
                f"{row['plain3']:9.2e}   {row['piece2']:9.2e} {row['piece3']:9.2e}",
                flush=True,
            )
            if previous is not None:
                for key in shrink:  # absolute remainders: relative ones times the change
                    shrink[key].append(previous[key] / (row[key] * change))
            previous = {key: row[key] * change for key in row}
    print("remainder shrinks per 4x smaller step (smooth: 16x at 2nd order, 64x at 3rd):")
    for key, label in (
        ("plain2", "plain, 2nd"),
        ("plain3", "plain, 3rd"),
        ("piece2", "piece, 2nd"),
        ("piece3", "piece, 3rd"),
    ):
        print(f"  {label}: " + ", ".join(f"{v:.1f}x" for v in shrink[key]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

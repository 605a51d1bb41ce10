"""What one real Adam step on one training example does to the held-out loss, alone or in a batch.

    python benchmarks/example_steps.py runs/demo --steps 50,350,600

At each checkpoint (model and Adam state restored, float64, BatchNorm running statistics
recomputed as `order-check` does) it takes the run's own Adam step on each of `--examples`
random training examples, twice:

- alone: a batch of one in eval mode, BatchNorm frozen at the running statistics
  (`order-check --examples alone`);
- in a batch: the example is the first row of a minibatch of the run's batch size whose other
  examples weigh 0, in train mode, BatchNorm normalising by the batch's statistics
  (`order-check --examples in-batch`, the default).

It prints the held-out mean loss after the step over the loss before (each in its own mode: the
held-out batch with running statistics, or with its own), median and largest over the examples,
and the median length of the step. A swap prediction expands the second step's gradient along
the first step; where one step multiplies the loss, no expansion in `lr` can follow it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from perturbative.brackets import parameters_after_steps, vector_norm
from perturbative.pipeline.config import OrderCheckOptions, load_run_config
from perturbative.pipeline.order_check import checkpoint_for_check
from perturbative.pipeline.order_sampling import sample_pairs


def step_effects(at, batches, loss_fn) -> tuple[np.ndarray, np.ndarray]:
    """Held-out loss after / before one Adam step on each batch, and each step's length."""
    model = at.model
    theta = {k: v.detach() for k, v in model.named_parameters()}
    before = at.observable.value(model, theta)
    ratios, lengths = [], []
    for batch in batches:
        after = parameters_after_steps(model, loss_fn, at.optimizer, [batch])
        ratios.append(at.observable.value(model, {**theta, **after}) / before)
        lengths.append(float(vector_norm({k: after[k] - theta[k] for k in theta})))
    return np.array(ratios), np.array(lengths)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", default="runs/demo")
    parser.add_argument("--steps", default="50,350,600", help="comma-separated checkpoint steps")
    parser.add_argument("--examples", type=int, default=20, help="random training examples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    run = Path(args.run_dir)
    options = OrderCheckOptions(horizons=(0,), seed=args.seed)
    lr = load_run_config(run, None).lr
    print(f"{run}: held-out loss after / before one Adam step on one example (lr {lr:g})")
    print(f"{'step':>6}  {'trained':>10}  {'median':>8}  {'largest':>8}  {'median |step|':>13}")
    for step in (int(s) for s in args.steps.split(",")):
        at = checkpoint_for_check(run, step, options)
        generator = torch.Generator().manual_seed(args.seed)
        pairs = sample_pairs(
            at.task, at.batch_size, args.examples, 0, 0, generator, "float64", at.example_batch
        )
        in_batch = [x for _, x, _ in pairs]
        alone = [tuple(t[:1] for t in x[:2]) for x in in_batch]  # the same examples, no weight
        for label, batches, train in (("alone", alone, False), ("in a batch", in_batch, True)):
            at.model.train(train)
            # the task's loss; in a batch, the check's: the weight column multiplied in
            loss_fn = at.loss("example") if train else at.task.loss_fn
            ratios, lengths = step_effects(at, batches, loss_fn)
            print(
                f"{step:6d}  {label:>10}  {np.median(ratios):8.3g}  {ratios.max():8.3g}  "
                f"{np.median(lengths):13.3g}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What training every pair of phases both ways costs, and the anchored methods beside it.

    python benchmarks/phase_pairs.py                       # trains the digits demo run first
    python benchmarks/phase_pairs.py --run-dir runs/demo --sources 6 --ks 5 20

At a checkpoint of the digits run (model and Adam state in float64, BatchNorm on each batch's
own statistics as in training, the run's own step and logged lrs), ``N`` digit classes each give
a phase of ``k`` batches; the held-out mean BCE is the observable. Side by side in one process,
each timed twice (in turn, then back) and the mean printed:

* every pair both ways with each order trained from the checkpoint (``2 N (N - 1) k`` steps);
* the same with each first phase trained once and every second phase branching from its copy
  (``pt.brackets.trained_tournaments``, ``N^2 k`` steps);
* the anchored method (``(3N + 1) k`` steps) and ``alone=True`` (``2 N k``), against the
  mixture of the phases' batches.

Prints, per ``k``, the seconds of each, each against the branched tournament, and the largest
difference between the two real tournaments (0 where branching is exact).
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import tempfile
import time
from pathlib import Path

import torch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default=None, help="a digits run (default: train one)")
    parser.add_argument("--step", type=int, default=350)
    parser.add_argument("--sources", type=int, default=6)
    parser.add_argument("--ks", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from perturbative.pipeline.config import OrderCheckOptions, TrainConfig, load_run_config
    from perturbative.pipeline.train import build_dataset, train

    with tempfile.TemporaryDirectory() as scratch:
        run = Path(args.run_dir) if args.run_dir else Path(scratch) / "demo"
        if not (run / "config.json").is_file():
            train(TrainConfig.demo(run_dir=str(run)), progress=False)
        config = load_run_config(run)
        options = OrderCheckOptions(horizons=(0,), dtype="float64")
        for line in compare(run, config, build_dataset(config), options, args):
            print(line)
    return 0


def compare(run, config, dataset, options, args) -> list[str]:
    from perturbative.pipeline.order_check import checkpoint_for_check
    from perturbative.pipeline.train import per_example_bce

    at = checkpoint_for_check(run, args.step, options)
    model, observable = at.model, at.observable
    model.train()  # BatchNorm meets each batch with its own statistics, as the run trained
    train_split = dataset.train_indices
    classes = [train_split[dataset.targets[train_split, c] > 0.5].tolist() for c in range(10)]
    rng = random.Random(args.seed + args.step)
    chosen = rng.sample(range(10), args.sources)
    n, batch, lines = args.sources, config.batch_size, []
    for k in args.ks:
        phases = [
            [
                tuple(t.to(torch.float64) for t in dataset.batch(rng.sample(classes[c], batch)))
                for _ in range(k)
            ]
            for c in chosen
        ]
        union = [x for c in chosen for x in classes[c]]
        mixture = [
            tuple(t.to(torch.float64) for t in dataset.batch(rng.sample(union, batch)))
            for _ in range(k)
        ]
        seconds, gap = timed(model, per_example_bce, at.loop, phases, mixture, observable)
        base = seconds["branched"]
        lines.append(
            f"k={k}, {n} sources: "
            + ", ".join(f"{m} {s:.1f} s ({s / base:.2f})" for m, s in seconds.items())
            + f"; steps {2 * n * (n - 1) * k} / {n * n * k} / {(3 * n + 1) * k} / {2 * n * k}"
            + f"; largest difference between the two real tournaments {gap:.1e}"
        )
    return lines


def timed(model, loss_fn, step, phases, mixture, observable) -> tuple[dict[str, float], float]:
    """Each way of training or predicting the tournament, timed twice (in turn, then back; the
    mean), and the largest difference between the two real tournaments."""
    from perturbative.brackets import (
        anchored_tournaments,
        trained_tournaments,
        values_along_steps,
    )

    n, k, targets, real = len(phases), len(phases[0]), {"O": observable}, {}

    def from_start():
        values = torch.zeros(n, n, dtype=torch.float64)
        for i, j in itertools.permutations(range(n), 2):
            batches = [*phases[i], *phases[j]]
            values[i, j] = values_along_steps(
                model, loss_fn, step, batches, observable.value, [2 * k]
            )[0]
        real["from the start"] = values - values.T

    def branched():
        got = trained_tournaments(model, loss_fn, step, phases, targets)
        real["branched"] = got["O"].preference

    runs = {
        "from the start": from_start,
        "branched": branched,
        "anchored": lambda: anchored_tournaments(model, loss_fn, step, phases, targets, mixture),
        "anchored-alone": lambda: anchored_tournaments(
            model, loss_fn, step, phases, targets, mixture, alone=True
        ),
    }
    seconds = dict.fromkeys(runs, 0.0)
    for order in (list(runs), list(runs)[::-1]):
        for name in order:
            started = time.perf_counter()
            runs[name]()
            seconds[name] += (time.perf_counter() - started) / 2
    return seconds, float((real["from the start"] - real["branched"]).abs().max())


if __name__ == "__main__":
    sys.exit(main())

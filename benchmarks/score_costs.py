"""What ranking a split by order scores costs per example, against a training step per example,
side by side in one run on the reference model (full-width MXResNet-18, 64x64, 40 attributes,
Adam lr 5e-3 betas (0.8, 0.999), batches of 32, float32).

    python benchmarks/score_costs.py                    # pools of 64 and 256 examples
    python benchmarks/score_costs.py --pool 128 --memory 128,2048

The model takes a few Adam steps on random images first (the optimizer then has a state; the
cost does not depend on the pixels). A training step is timed in train mode as the run trains
(forward, backward, Adam's update on a batch of 32). The optimizer-aware scores
(`optimizer_order_scores`, a window of 4 batches, BatchNorm in eval mode as the sweep ranks) and
the plain `order_scores` are each timed on a pool and on four times it: the difference is their
marginal cost per example. `--memory` scores pools of those sizes (optimizer-aware scores, each in
a fresh process) and prints the peak resident memory of each. Writes
benchmarks/results/score_costs.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks/results/score_costs.json"


def setting(seed: int = 0):
    """The reference model after 3 Adam steps on random images, its optimizer, a window of 4
    batches and a held-out batch of 32 for the observable."""
    from perturbative.pipeline.config import TrainConfig
    from perturbative.pipeline.train import build_model

    torch.manual_seed(seed)
    config = TrainConfig.reference("unused")
    model = build_model(config, 40, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3, betas=(0.8, 0.999))

    def batch(n):
        return torch.randn(n, 3, 64, 64), torch.randint(0, 2, (n, 40)).float()

    for _ in range(3):
        train_step(model, optimizer, batch(32))
    return model, optimizer, [batch(32) for _ in range(4)], batch(32), batch


def train_step(model, optimizer, batch) -> None:
    from perturbative.pipeline.train import attribute_bce

    model.train()
    optimizer.zero_grad()
    attribute_bce(model(batch[0]), batch[1]).mean().backward()
    optimizer.step()


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def memory_child(pool: int) -> None:
    """Score ``pool`` examples with the optimizer-aware scores; print the peak memory."""
    import perturbative as pt
    from perturbative.brackets import optimizer_order_scores
    from perturbative.pipeline.train import per_example_bce

    model, optimizer, window, heldout, batch = setting()
    model.eval()
    observable = pt.Observable.mean_loss(per_example_bce, heldout)
    optimizer_order_scores(model, per_example_bce, optimizer, batch(pool), observable, window)
    print(json.dumps({"pool": pool, "peak_gib": peak_gib()}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=64)
    parser.add_argument("--memory", default="", help="comma-separated pool sizes, e.g. 128,2048")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child is not None:
        memory_child(args.child)
        return 0
    import perturbative as pt
    from perturbative.brackets import optimizer_order_scores, order_scores
    from perturbative.pipeline.train import per_example_bce

    model, optimizer, window, heldout, batch = setting()
    train_step(model, optimizer, batch(32))  # warm
    started = time.perf_counter()
    for b in window:
        train_step(model, optimizer, b)
    train = (time.perf_counter() - started) / (32 * len(window))
    model, optimizer, window, heldout, batch = setting()  # the state before those steps
    model.eval()
    observable = pt.Observable.mean_loss(per_example_bce, heldout)
    params = dict(model.named_parameters())
    u = observable.gradient(model, params)
    pools = (batch(args.pool), batch(4 * args.pool))

    def optimizer_aware(pool):
        optimizer_order_scores(model, per_example_bce, optimizer, pool, observable, window)

    def plain(pool):
        order_scores(model, per_example_bce, params, pool, u)

    print(
        f"full-width MXResNet-18, 64x64, 40 attributes, Adam, float32, {args.threads} threads; "
        f"pools of {args.pool} and {4 * args.pool}"
    )
    print(f"a training step: {1000 * train:.1f} ms per example")
    out = {"training_step_seconds_per_example": train, "pool": args.pool}
    for name, score in (("optimizer_order_scores", optimizer_aware), ("order_scores", plain)):
        score(batch(8))  # first calls pay for setting up kernels and caches: not timed
        seconds = []
        for pool in pools:
            started = time.perf_counter()
            score(pool)
            seconds.append(time.perf_counter() - started)
        marginal = (seconds[1] - seconds[0]) / (3 * args.pool)
        print(
            f"{name}: {seconds[0]:.1f} s and {seconds[1]:.1f} s; marginal "
            f"{1000 * marginal:.1f} ms per example = {marginal / train:.1f}x a training step",
            flush=True,
        )
        out[name] = {"seconds": seconds, "marginal": marginal, "ratio": marginal / train}
    out["memory"] = []
    for size in [int(s) for s in args.memory.split(",") if s.strip()]:
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(size), "--threads", str(args.threads)],
            check=True,
            capture_output=True,
            text=True,
        )
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"optimizer_order_scores of {size} examples: peak {measured['peak_gib']:.2f} GiB")
        out["memory"].append(measured)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(f"numbers: {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

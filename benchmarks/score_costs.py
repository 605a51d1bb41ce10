"""What ranking a split by order scores costs per example, against a training step per example,
side by side in one run: on the reference model (full-width MXResNet-18, 64x64, 40 attributes,
Adam lr 5e-3 betas (0.8, 0.999), batches of 32, float32) or on GPT-2 small
(``examples/gpt2_small.py``: 124M parameters, AdamW, clipping 1.0, batches of 4 sequences of
64 tokens, float32).

    python benchmarks/score_costs.py                    # the reference model, pools of 64, 256
    python benchmarks/score_costs.py --pool 128 --memory 128,2048
    python benchmarks/score_costs.py --model gpt2-small --pool 8 --repeats 2
    python benchmarks/score_costs.py --device cuda --naive   # and the per-example engine

The model takes a few optimizer steps on random data first (the optimizer then has a state; the
cost does not depend on the data). A training step is timed in train mode as the run trains
(forward, backward, the optimizer's update on one batch). The optimizer-aware scores
(`optimizer_order_scores`, a window of 4 batches, 2 on GPT-2 small, BatchNorm in eval mode as the
sweep ranks) and the plain `order_scores` are each timed on a pool and on four times it: the
difference is their marginal cost per example (``--repeats``: each timed that often, the fastest
counts; on GPT-2 small the fixed part, the window's unrolled steps, took 48 s and 70 s in two runs
at 18 GiB resident). The plain scores' first pass (the pool's summed
gradient and HVP) is also timed alone, and the pool's gradient without the HVP: the rest is each
example's nested directional derivative.
`--naive` also times the optimizer-aware scores with per-example gradients stored
(`engine="per_example"`), the reference they are checked against. `--memory` scores pools of those
sizes (optimizer-aware scores, each in a fresh process) and prints the peak memory of each. Writes
benchmarks/results/score_costs[_gpt2-small][_cuda].json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from perturbative._core.memory import PeakMemory

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks/results"
MODELS = ("reference", "gpt2-small")


@dataclass
class Setting:
    """A model after a few optimizer steps, its optimizer, how it trains one batch, a window of
    4 batches, a held-out batch for the observable, and how to draw ``n`` examples."""

    title: str
    model: Any
    optimizer: Any
    train_step: Any
    loss_fn: Any
    window: list
    heldout: tuple
    batch: Any
    batch_size: int


def reference_setting(device: str, seed: int = 0) -> Setting:
    from perturbative.pipeline.config import TrainConfig
    from perturbative.pipeline.train import attribute_bce, build_model, per_example_bce

    torch.manual_seed(seed)
    model = build_model(TrainConfig.reference("unused"), 40, 3).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3, betas=(0.8, 0.999))

    def batch(n):
        images = torch.randn(n, 3, 64, 64, device=device)
        return images, torch.randint(0, 2, (n, 40), device=device).float()

    def train_step(b) -> None:
        model.train()
        optimizer.zero_grad()
        attribute_bce(model(b[0]), b[1]).mean().backward()
        optimizer.step()

    for _ in range(3):
        train_step(batch(32))
    title = "full-width MXResNet-18, 64x64, 40 attributes, Adam, float32"
    window = [batch(32) for _ in range(4)]
    return Setting(
        title, model, optimizer, train_step, per_example_bce, window, batch(32), batch, 32
    )


def gpt2_setting(device: str, seed: int = 0) -> Setting:
    spec = importlib.util.spec_from_file_location("gpt2_small", ROOT / "examples/gpt2_small.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    torch.manual_seed(seed)
    model = example.build_model().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-4, weight_decay=0.1)
    train, _ = example.sequences()

    def batch(n):
        rows = train[torch.randint(len(train), (n,))].to(device)
        return ({"input_ids": rows, "labels": rows},)

    def train_step(b) -> None:
        model.train()
        optimizer.zero_grad()
        model(**b[0]).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    for _ in range(3):
        train_step(batch(4))
    model.eval()
    title = "GPT-2 small (124M), 64-token sequences, AdamW, clipping 1.0, float32, window of 2"
    # a window of 4 unrolled steps with their graphs does not fit in 23 GiB on this model
    window = [batch(4) for _ in range(2)]
    return Setting(
        title, model, optimizer, train_step, example.next_token, window, batch(8), batch, 4
    )


def build(name: str, device: str) -> Setting:
    return (gpt2_setting if name == "gpt2-small" else reference_setting)(device)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def training(setting: Setting):
    """The loop's step with the run's clipping, for the optimizer-aware scores."""
    import perturbative as pt

    clip = 1.0 if "clipping" in setting.title else None
    return pt.TrainingStep(setting.optimizer, clip)


def memory_child(name: str, pool: int, device: str) -> None:
    """Score ``pool`` examples with the optimizer-aware scores; print the peak memory."""
    import perturbative as pt
    from perturbative.brackets import optimizer_order_scores

    s = build(name, device)
    s.model.eval()
    peak = PeakMemory(device)
    observable = pt.Observable.mean_loss(s.loss_fn, s.heldout)
    optimizer_order_scores(s.model, s.loss_fn, training(s), s.batch(pool), observable, s.window)
    print(json.dumps({"pool": pool, "peak_gib": peak.gib()}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="reference")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pool", type=int, default=64)
    parser.add_argument("--memory", default="", help="comma-separated pool sizes, e.g. 128,2048")
    parser.add_argument("--naive", action="store_true", help="also time engine='per_example'")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--repeats", type=int, default=1, help="time each pool this often; the fastest counts"
    )
    parser.add_argument("--out", default=None, help="where the numbers go (default: by model)")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child is not None:
        memory_child(args.model, args.child, args.device)
        return 0
    import perturbative as pt
    from perturbative.brackets import optimizer_order_scores, order_scores

    s = build(args.model, args.device)
    s.train_step(s.batch(s.batch_size))  # warm
    passes = []
    for _ in range(args.repeats):  # the fastest pass over the window counts, as for the scores
        synchronize(args.device)
        started = time.perf_counter()
        for b in s.window:
            s.train_step(b)
        synchronize(args.device)
        passes.append(time.perf_counter() - started)
    train = min(passes) / (s.batch_size * len(s.window))
    s = build(args.model, args.device)  # the state before those steps
    s.model.eval()
    observable = pt.Observable.mean_loss(s.loss_fn, s.heldout)
    params = dict(s.model.named_parameters())
    u = observable.gradient(s.model, params)
    pools = (s.batch(args.pool), s.batch(4 * args.pool))
    step = training(s)

    def optimizer_aware(pool, engine="auto"):
        optimizer_order_scores(s.model, s.loss_fn, step, pool, observable, s.window, engine=engine)

    def plain(pool):
        order_scores(s.model, s.loss_fn, params, pool, u)

    def pool_sums(pool):  # the plain scores' first pass alone: one gradient and HVP per chunk
        from perturbative.brackets._scores import _pool_sums

        _pool_sums(s.model, s.loss_fn, params, pool, u, "forward", 64)

    def pool_gradient(pool):  # what the pool sums cost without their HVP: the gradient alone
        from perturbative._core import calls

        loss = calls.batch_loss(s.model, s.loss_fn, calls.fixed_state(s.model, params))
        for start in range(0, calls.num_examples(pool), 64):
            chunk = calls.take_all(pool, slice(start, start + 64))
            torch.autograd.grad(loss(params, *chunk), list(params.values()))

    scorers = [("optimizer_order_scores", optimizer_aware), ("order_scores", plain)]
    scorers.append(("order_scores: its pool sums alone", pool_sums))
    scorers.append(("the pool's gradient alone (no HVP)", pool_gradient))
    if args.naive:

        def naive(pool):
            optimizer_aware(pool, "per_example")

        scorers.append(("optimizer_order_scores per_example", naive))
    print(
        f"{s.title}, {args.device}, {args.threads} threads; pools of {args.pool} and "
        f"{4 * args.pool}"
    )
    print(f"a training step: {1000 * train:.1f} ms per example")
    out = {"training_step_seconds_per_example": train, "pool": args.pool, "model": args.model}
    out["repeats"] = args.repeats
    out["device"] = args.device
    for name, score in scorers:
        score(s.batch(min(8, args.pool)))  # first calls set up kernels and caches: not timed
        seconds = []
        peak = PeakMemory(args.device)
        for pool in pools:
            times = []
            for _ in range(args.repeats):
                synchronize(args.device)
                started = time.perf_counter()
                score(pool)
                synchronize(args.device)
                times.append(time.perf_counter() - started)
            seconds.append(min(times))
        marginal = (seconds[1] - seconds[0]) / (3 * args.pool)
        print(
            f"{name}: {seconds[0]:.1f} s and {seconds[1]:.1f} s; marginal "
            f"{1000 * marginal:.1f} ms per example = {marginal / train:.1f}x a training step; "
            f"{peak.describe()}",
            flush=True,
        )
        out[name] = {"seconds": seconds, "marginal": marginal, "ratio": marginal / train}
        out[name]["peak_gib"] = peak.gib()
    out["memory"] = []
    for size in [int(s) for s in args.memory.split(",") if s.strip()]:
        child = [sys.executable, __file__, "--child", str(size), "--threads", str(args.threads)]
        child += ["--model", args.model, "--device", args.device]
        done = subprocess.run(child, check=True, capture_output=True, text=True)
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"optimizer_order_scores of {size} examples: peak {measured['peak_gib']:.2f} GiB")
        out["memory"].append(measured)
    suffix = "" if args.model == "reference" else f"_{args.model}"
    suffix += "" if args.device == "cpu" else "_" + args.device.split(":")[0]
    path = Path(args.out) if args.out else RESULTS / f"score_costs{suffix}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"numbers: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

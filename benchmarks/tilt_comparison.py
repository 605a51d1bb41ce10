"""Compare three ways of training on p' ~ p exp(-lambda dH), and time the sampler.

Same data (two moons), model (the 2-D denoiser of perturbative.demos.two_moons), steps, optimiser
and seeds for every scheme; only the batches and the loss differ:

* fixed-size batches with weights: shuffled batches of B, loss sum_j w_j L_j / B;
* resampling: torch.utils.data.WeightedRandomSampler (with replacement), plain mean loss;
* adjusted batch sizes: AdjustedBatchSampler with target B, loss sum_j w_j L_j / B.

Printed per scheme (mean +- std over seeds): the gradient norm's coefficient of variation across
the second half of the steps (std / mean; the first half is dominated by the loss falling), the
standard deviation of the adjusted batch size sum_j w_j, samples drawn, distinct examples drawn,
and the energy distance of the model's samples to exact samples of p' (importance resampling of
the data), next to the distance between two exact samples (the floor).

Then the sampler's overhead: DataLoader(batch_sampler=AdjustedBatchSampler) against a plain
DataLoader(shuffle=True) with the same B, timed alternately in one run, loading only and loading
plus a training step per batch.

Run:  python benchmarks/tilt_comparison.py            (about 3 minutes on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from perturbative.demos.diffusion import (
    Denoiser,
    denoising_losses,
    energy_distance,
    importance_resample,
    sample_denoiser,
    torch_threads,
    train_denoiser,
)
from perturbative.demos.two_moons import demo_dH, two_moons
from perturbative.tilt import AdjustedBatchSampler, tilt_weights, weighted_loss

SCHEMES = {
    "fixed-size batches + weights": "weighted",
    "WeightedRandomSampler resampling": "resample",
    "adjusted batch sizes": "adjusted",
}


def compare(args: argparse.Namespace) -> None:
    data = two_moons(args.num_data, seed=0)
    weights = tilt_weights(demo_dH(data).double(), args.strength).float()
    rows = {name: [] for name in SCHEMES}
    floors = []
    for seed in range(args.seeds):
        gen = torch.Generator().manual_seed(100 + seed)
        exact = importance_resample(data, weights, args.num_samples, gen)
        floors.append(
            energy_distance(importance_resample(data, weights, args.num_samples, gen), exact)
        )
        for name, batching in SCHEMES.items():
            run = train_denoiser(
                data,
                weights,
                batching=batching,
                steps=args.steps,
                batch_size=args.batch_size,
                num_steps=args.diffusion_steps,
                seed=seed,
            )
            half = run.grad_norms[args.steps // 2 :]
            samples = sample_denoiser(run.model, args.num_samples, gen)
            rows[name].append(
                {
                    "grad_cv": half.std() / half.mean(),
                    "size_std": run.adjusted_sizes.std(),
                    "len_std": run.batch_lengths.std(),
                    "seen": int(run.batch_lengths.sum()),
                    "distinct": run.distinct_seen,
                    "distance": energy_distance(samples, exact),
                }
            )

    def fmt(values, spec):
        if len(values) == 1:
            return format(values[0], spec)
        return (
            f"{format(statistics.mean(values), spec)} +- {format(statistics.stdev(values), spec)}"
        )

    print(
        f"two moons N={args.num_data}, dH = x0, lambda={args.strength}, B_avg={args.batch_size}, "
        f"{args.steps} steps, {args.seeds} seed(s); mean +- std over seeds\n"
    )
    header = (
        "| scheme | grad-norm CV (2nd half) | std of sum w per batch | std of batch length "
        "| samples seen | distinct examples | energy distance to p' |"
    )
    print(header)
    print("|" + " --- |" * 7)
    for name, runs in rows.items():
        col = {k: [r[k] for r in runs] for k in runs[0]}
        # Resampled batches are trained with a plain mean loss: their weights play no part.
        size_std = "n/a" if SCHEMES[name] == "resample" else fmt(col["size_std"], ".1f")
        print(
            f"| {name} | {fmt(col['grad_cv'], '.3f')} | {size_std} "
            f"| {fmt(col['len_std'], '.1f')} | {fmt(col['seen'], '.0f')} "
            f"| {fmt(col['distinct'], '.0f')} | {fmt(col['distance'], '.4f')} |"
        )
    print(f"| exact p' vs exact p' (floor) | | | | | | {fmt(floors, '.4f')} |")


def _epoch_seconds(loader: DataLoader, step=None) -> float:
    start = time.perf_counter()
    for batch in loader:
        if step is not None:
            step(batch)
    return time.perf_counter() - start


def overhead(args: argparse.Namespace) -> None:
    data = two_moons(args.overhead_data, seed=0)
    weights = tilt_weights(demo_dH(data).double(), args.strength).float()
    indices = torch.arange(len(data))
    dataset = TensorDataset(data, indices)
    gen = torch.Generator().manual_seed(0)
    plain = DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, drop_last=True, generator=gen
    )
    sampler = AdjustedBatchSampler(weights, args.batch_size, seed=0, drop_last=True)
    adjusted = DataLoader(dataset, batch_sampler=sampler)

    torch.manual_seed(0)
    model = Denoiser(args.diffusion_steps)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    noise = torch.Generator().manual_seed(1)

    def train_step(batch):
        # The same weighted step for both loaders, so that only the batches differ.
        x, idx = batch
        losses = denoising_losses(model, x, noise)
        loss = weighted_loss(losses, weights[idx], args.batch_size)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    results = {}
    for label, with_step in (("loading only", False), ("loading + training step", True)):
        times = {"plain": [], "adjusted": []}
        for _ in range(args.repeats):
            for name, loader in (("plain", plain), ("adjusted", adjusted)):
                step = train_step if with_step else None
                times[name].append(_epoch_seconds(loader, step))
        results[label] = {k: statistics.median(v) for k, v in times.items()}

    print(
        f"\nsampler overhead: N={args.overhead_data}, B={args.batch_size}, "
        f"median of {args.repeats} alternating epochs each\n"
    )
    print("| per epoch | plain DataLoader (s) | AdjustedBatchSampler (s) | overhead |")
    print("| --- | --- | --- | --- |")
    for label, t in results.items():
        over = t["adjusted"] / t["plain"] - 1
        print(f"| {label} | {t['plain']:.4f} | {t['adjusted']:.4f} | {over:+.1%} |")
    start = time.perf_counter()
    for epoch in range(args.repeats):
        sampler.epoch_batches(1000 + epoch)
    per_epoch = (time.perf_counter() - start) / args.repeats
    print(f"\nbatch construction alone: {per_epoch * 1e3:.2f} ms per epoch of {len(data)} examples")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-data", type=int, default=4000)
    parser.add_argument("--strength", type=float, default=1.5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--diffusion-steps", type=int, default=100)
    parser.add_argument("--num-samples", type=int, default=3000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--overhead-data", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with torch_threads(1):
        compare(args)
        overhead(args)


if __name__ == "__main__":
    main()

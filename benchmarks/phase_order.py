"""Which data first? Phases of one digit class each, the order of two of them predicted and
really trained both ways, at checkpoints of the digits demo run.

    python benchmarks/phase_order.py                       # trains the demo run (about 15 s)
    python benchmarks/phase_order.py --run-dir runs/demo --pairs 10 --ks 1 5 20

A source is one digit class of the training split; a phase is ``k`` batches of the run's batch
size drawn from its source with a seed. At each checkpoint (model in float64, BatchNorm on each
batch's own statistics as in training, predicted and real alike), for random pairs of sources and
each ``k``: ``O(A then B) - O(B then A)`` of the held-out mean BCE, really trained on copies of
the model and its Adam state, against the composition method, the expansion at the checkpoint
(``k <= --expansion-up-to``), with ``--exact-state`` the composition with the optimizer state
carried exactly, and the baselines: a fair coin, the phase with the larger gradient
first, the phase with the larger loss first, the plain-SGD bracket ``lr^2 k^2 u . [v_A, v_B]``.
Prints sign accuracy (all pairs, and pairs whose real difference is above 1e-9), median
relative error and seconds per pair of each method against training both orders; writes
benchmarks/results/phase_order.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default=None, help="a digits run (default: train one)")
    parser.add_argument("--steps", type=int, nargs="+", default=[50, 350, 600])
    parser.add_argument("--pairs", type=int, default=8, help="source pairs per k and checkpoint")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--expansion-up-to", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr-scale", type=float, default=1.0, help="the phases' lr / the run's")
    parser.add_argument(
        "--exact-state",
        action="store_true",
        help="also the composition with the optimizer state carried exactly (a diagnostic)",
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/phase_order.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from perturbative.pipeline.config import OrderCheckOptions, TrainConfig, load_run_config
    from perturbative.pipeline.train import build_dataset, train

    with tempfile.TemporaryDirectory() as scratch:
        run = Path(args.run_dir) if args.run_dir else Path(scratch) / "demo"
        if not (run / "config.json").is_file():
            train(TrainConfig.demo(run_dir=str(run)), progress=False)
        config = load_run_config(run)
        dataset = build_dataset(config)
        options = OrderCheckOptions(horizons=(0,), dtype="float64")
        rows = []
        for step in args.steps:
            rows.extend(check_checkpoint(run, step, config, dataset, options, args))
    summary = summarize(rows, args.ks)
    for line in summary["lines"]:
        print(line)
    Path(args.out).write_text(json.dumps({"rows": rows, "summary": summary["numbers"]}, indent=1))
    print(f"numbers: {args.out}")


def sources(dataset) -> list[list[int]]:
    """The training split's indices of each digit class."""
    train = dataset.train_indices
    return [train[dataset.targets[train, c] > 0.5].tolist() for c in range(10)]


def phase(dataset, source: list[int], k: int, batch: int, rng: random.Random):
    """``k`` batches drawn from ``source`` (with replacement across batches), float64."""
    return [
        tuple(t.to(torch.float64) for t in dataset.batch(rng.sample(source, batch)))
        for _ in range(k)
    ]


def check_checkpoint(run, step, config, dataset, options, args) -> list[dict]:
    from perturbative.brackets import (
        TrainingStep,
        hvp,
        mean_gradient,
        predict_phase_order,
        values_along_steps,
        vector_norm,
    )
    from perturbative.pipeline.order_check import checkpoint_for_check
    from perturbative.pipeline.train import per_example_bce

    at = checkpoint_for_check(run, step, options)
    model, optimizer, observable = at.model, at.optimizer, at.observable
    model.train()  # BatchNorm meets each batch with its own statistics, as the run trained
    params = {k: v for k, v in model.named_parameters() if v.requires_grad}
    u = observable.gradient(model, params)
    groups = sources(dataset)
    rng = random.Random(args.seed + step)
    lr = config.lr * args.lr_scale
    # the run's optimizer state at one constant lr for every step of the longest pair of phases
    constant = TrainingStep(optimizer, rates=[lr] * (2 * max(args.ks)))

    def timed(method: str, a, b) -> tuple[float, float]:
        """A prediction of ``O(A then B) - O(B then A)``, and the seconds it took."""
        started = time.perf_counter()
        value = predict_phase_order(
            model, per_example_bce, constant, a, b, observable, method=method
        ).predicted
        return value, time.perf_counter() - started

    rows = []
    for k in args.ks:
        for _ in range(args.pairs):
            a_class, b_class = rng.sample(range(10), 2)
            a = phase(dataset, groups[a_class], k, config.batch_size, rng)
            b = phase(dataset, groups[b_class], k, config.batch_size, rng)
            started = time.perf_counter()
            ab, ba = (
                values_along_steps(
                    model, per_example_bce, constant, order, observable.value, [2 * k]
                )[0]
                for order in ([*a, *b], [*b, *a])
            )
            real_seconds = time.perf_counter() - started
            composition, composition_seconds = timed("composition", a, b)
            exact, exact_seconds = timed("exact-state", a, b) if args.exact_state else (None, None)
            expansion, expansion_seconds = (
                timed("expansion", a, b) if k <= args.expansion_up_to else (None, None)
            )
            # baselines: mean fields of each phase at the checkpoint
            batch_a = tuple(torch.cat(t) for t in zip(*a, strict=True))
            batch_b = tuple(torch.cat(t) for t in zip(*b, strict=True))
            g_a = mean_gradient(model, per_example_bce, params, batch_a)
            g_b = mean_gradient(model, per_example_bce, params, batch_b)
            h_b_g_a = hvp(model, per_example_bce, params, batch_b, g_a)
            h_a_g_b = hvp(model, per_example_bce, params, batch_a, g_b)
            bracket = sum(float((u[n] * (h_b_g_a[n] - h_a_g_b[n])).sum()) for n in u)
            with torch.no_grad():
                loss_a = float(per_example_bce(model(batch_a[0]), batch_a[1])) / len(batch_a[0])
                loss_b = float(per_example_bce(model(batch_b[0]), batch_b[1])) / len(batch_b[0])
            norm, norm_b = float(vector_norm(g_a)), float(vector_norm(g_b))
            rows.append(
                {
                    "step": step,
                    "k": k,
                    "sources": [a_class, b_class],
                    "real": ab - ba,
                    "composition": composition,
                    "expansion": expansion,
                    "exact_state": exact,
                    "sgd_bracket": lr**2 * k**2 * bracket,
                    # a phase first is predicted to lower O when its gradient (loss) is larger
                    "larger_gradient_first": -1.0 if norm > norm_b else 1.0,
                    "larger_loss_first": -1.0 if loss_a > loss_b else 1.0,
                    "coin": rng.choice([-1.0, 1.0]),
                    "seconds": {
                        "real": real_seconds,
                        "composition": composition_seconds,
                        "expansion": expansion_seconds,
                        "exact_state": exact_seconds,
                    },
                }
            )
            print(
                f"step {step} k={k} classes {a_class},{b_class}: real {ab - ba:+.3e} "
                f"composition {composition:+.3e}"
                + (f" expansion {expansion:+.3e}" if expansion is not None else ""),
                flush=True,
            )
    return rows


METHODS = (
    "composition",
    "exact_state",
    "expansion",
    "sgd_bracket",
    "larger_gradient_first",
    "larger_loss_first",
    "coin",
)


def summarize(rows: list[dict], ks: list[int]) -> dict:
    lines, numbers = [], {}
    for k in ks:
        chosen = [r for r in rows if r["k"] == k]
        if not chosen:
            continue
        real = np.array([r["real"] for r in chosen])
        above = np.abs(real) > 1e-9
        numbers[k] = {"pairs": len(chosen), "above_floor": int(above.sum())}
        parts = []
        for method in METHODS:
            have = [r for r in chosen if r[method] is not None]
            if not have:
                continue
            p = np.array([r[method] for r in have])
            rr = np.array([r["real"] for r in have])
            ok = np.abs(rr) > 1e-9
            accuracy = float(np.mean(np.sign(p[ok]) == np.sign(rr[ok]))) if ok.any() else np.nan
            numbers[k][method] = {"sign_accuracy": accuracy, "pairs": int(ok.sum())}
            if method in ("composition", "exact_state", "expansion"):
                error = float(np.median(np.abs(p - rr) / np.abs(rr)))
                numbers[k][method]["median_relative_error"] = error
                seconds = statistics.mean(r["seconds"][method] for r in have)
                numbers[k][method]["seconds"] = seconds
                parts.append(f"{method} {accuracy:.3f} (error {error:.2g}, {seconds:.2f} s)")
            else:
                parts.append(f"{method} {accuracy:.3f}")
        real_seconds = statistics.mean(r["seconds"]["real"] for r in chosen)
        numbers[k]["real_seconds"] = real_seconds
        lines.append(
            f"k={k}: {len(chosen)} pairs ({int(above.sum())} above 1e-9), training both orders "
            f"{real_seconds:.2f} s; sign accuracy: " + ", ".join(parts)
        )
    return {"lines": lines, "numbers": numbers}


if __name__ == "__main__":
    sys.exit(main())

"""Keyword (Hugging Face) batches: one forward pass split by rows against one call per example.

    python benchmarks/keyword_batches.py              # a tiny GPT-2, batches of 32
    python benchmarks/keyword_batches.py --repeats 5

A tiny GPT-2 (random init, built from a config: nothing is downloaded), two minibatches of 32
sequences and a held-out batch of 32, Adam warmed up for a few steps. Times ``predict_swap`` (the
default third-order expansion) and ``mean_gradient`` both ways, side by side in one run, checks
that both ways give the same numbers, and writes benchmarks/results/keyword_batches.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import perturbative as pt
from perturbative._core.calls import one_example_at_a_time


def next_token(outputs, batch):
    return F.cross_entropy(outputs.logits[0, :-1], batch["labels"][0, 1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/keyword_batches.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=50, n_positions=args.length, n_embd=32, n_layer=2, n_head=2)
    model = GPT2LMHeadModel(config).double().eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def batch(seed: int) -> dict:
        ids = torch.randint(
            0, 50, (args.batch, args.length), generator=torch.Generator().manual_seed(seed)
        )
        return {"input_ids": ids, "labels": ids}

    for seed in range(5):  # a few real steps: Adam needs its moments
        optimizer.zero_grad()
        model(**batch(100 + seed)).loss.backward()
        optimizer.step()
    a, b, held = batch(1), batch(2), batch(3)
    observable = pt.Observable.mean_loss(next_token, held)
    params = dict(model.named_parameters())

    def timed(fn):
        best, value = float("inf"), None
        for _ in range(args.repeats):
            start = time.perf_counter()
            value = fn()
            best = min(best, time.perf_counter() - start)
        return best, value

    jobs = {
        "predict_swap": lambda: (
            pt.predict_swap(model, next_token, optimizer, a, b, observable).predicted
        ),
        "mean_gradient": lambda: float(
            pt.vector_norm(pt.mean_gradient(model, next_token, params, a))
        ),
    }
    rows = {}
    for name, job in jobs.items():
        batched, value = timed(job)
        with one_example_at_a_time():
            looped, reference = timed(job)
        rows[name] = {
            "batched_s": round(batched, 4),
            "one_by_one_s": round(looped, 4),
            "speedup": round(looped / batched, 2),
            "relative_difference": abs(value - reference) / abs(reference),
        }
        print(
            f"{name:14s} batched {batched:7.3f} s   one by one {looped:7.3f} s   "
            f"{looped / batched:5.1f}x   values agree to {rows[name]['relative_difference']:.1e}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/keyword_batches.py"
    out.write_text(
        json.dumps({"command": command, "args": vars(args), "rows": rows}, indent=1) + "\n"
    )


if __name__ == "__main__":
    main()

"""Order scores of a pool on the reference model: time per example and peak memory, both engines,
against the projected bracket matrix, in one run.

    python benchmarks/order_scores.py                    # full-width MXResNet-18, 64x64, n=64
    python benchmarks/order_scores.py --n 9000 --engines forward   # a whole CelebA-sized split

Inputs are random (the cost does not depend on the pixels); BatchNorm runs in eval mode with
randomised statistics, as in the sweep. Writes benchmarks/results/order_scores-DEVICE.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from perturbative.brackets import hvp, mean_gradient, order_scores, projected_bracket_matrix
from perturbative.models import mxresnet


def loss_fn(outputs, targets):
    return F.binary_cross_entropy_with_logits(outputs, targets)


class PeakRSS:
    """Resident set size above the start, sampled every 5 ms (Linux /proc)."""

    def __enter__(self):
        self.start, self.peak, self.running = self._rss(), 0, True
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()

    def _poll(self):
        while self.running:
            self.peak = max(self.peak, self._rss() - self.start)
            time.sleep(0.005)

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="pool size")
    parser.add_argument("--size", type=int, default=64, help="image side")
    parser.add_argument("--width", type=float, default=1.0, help="MXResNet width")
    parser.add_argument("--engines", default="forward,double_backward")
    parser.add_argument("--matrix", type=int, default=16, help="also time the matrix at this n")
    parser.add_argument("--chunk", type=int, default=None, help="default: the library's")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = mxresnet(18, num_outputs=40, width=args.width)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.running_var.uniform_(0.5, 2.0)
    model.eval()
    params = dict(model.named_parameters())
    numel = sum(p.numel() for p in params.values())
    pool = (torch.randn(args.n, 3, args.size, args.size), (torch.rand(args.n, 40) < 0.3).float())
    held = (torch.randn(32, 3, args.size, args.size), (torch.rand(32, 40) < 0.3).float())
    u = mean_gradient(model, loss_fn, params, held)
    print(
        f"MXResNet-18 width {args.width}, {numel:,} parameters, {args.size}x{args.size}, "
        f"pool n={args.n}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    rows = []

    def timed(method: str, n: int, run) -> tuple[dict, object]:
        with PeakRSS() as rss:
            start = time.perf_counter()
            value = run()
            seconds = time.perf_counter() - start
        row = dict(
            method=method,
            n=n,
            seconds=seconds,
            per_example_ms=1e3 * seconds / n,
            peak_mib=rss.peak / 2**20,
        )
        rows.append(row)
        print(
            f"{method:<48} n={n:<5} {seconds:7.1f} s  {row['per_example_ms']:7.1f} ms/example  "
            f"peak {row['peak_mib']:6.0f} MiB"
        )
        return row, value

    def pool_sums():  # where the time goes: the pool sums alone, as order_scores takes them
        for first in range(0, args.n, 64):
            chunk = tuple(t[first : first + 64] for t in pool)
            hvp(model, loss_fn, params, chunk, u)  # its gradient comes with it

    timed("pool sums only (HVP with its gradient, chunks of 64)", args.n, pool_sums)
    for engine in args.engines.split(","):
        timed(
            f"order_scores[{engine}]",
            args.n,
            lambda engine=engine: order_scores(
                model, loss_fn, params, pool, u, engine=engine, chunk_size=args.chunk
            ),
        )
    if args.matrix:
        sub = tuple(t[: args.matrix] for t in pool)
        row, matrix = timed(
            "projected_bracket_matrix (memory grows with n)",
            args.matrix,
            lambda: projected_bracket_matrix(model, loss_fn, params, sub, u),
        )
        check = order_scores(model, loss_fn, params, sub, u, chunk_size=args.chunk)
        err = float((check - matrix.sum(1)).abs().max() / matrix.sum(1).abs().max())
        row["max_rel_difference_to_scores"] = err
        print(f"  row sums against scores: max rel. difference {err:.1e} (fp32)")
    out = Path(args.json or Path(__file__).parent / "results" / "order_scores-cpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            dict(
                command="python benchmarks/order_scores.py " + " ".join(argv or sys.argv[1:]),
                params=numel,
                size=args.size,
                width=args.width,
                torch=torch.__version__,
                threads=torch.get_num_threads(),
                rows=rows,
                load_average=os.getloadavg(),
            ),
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

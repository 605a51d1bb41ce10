"""All-pairs bracket matrix: the naive per-pair loop against the engines, in one run.

Prints, for an XResNet-18-style Mish network (``perturbative.models.mxresnet``, 40 outputs,
11.2M parameters) and ``n`` single-example fields: the time of the naive loop (two fresh
double-backward gradients and two HVPs per bracket, :func:`perturbative.reference.
reference_bracket_matrix`), the time of each engine of :func:`perturbative.bracket_matrix`
that makes sense on the device, their ratio, gradient evaluations per bracket, peak memory,
achieved FLOP/s (``torch.utils.flop_counter``: convolutions and matmuls only) and the largest
relative error of a bracket against the same computation in float64.

    python benchmarks/bracket_matrix.py                       # CPU: n=6, 32x32
    python benchmarks/bracket_matrix.py --device cuda         # GPU: n=16, 64x64, TF32 on and off

Timings are the median of ``--repeats`` runs after one warm-up run. BatchNorm runs in eval mode
with randomised affine parameters and running statistics (the zero-initialised last BatchNorm
of each block would otherwise make many second derivatives vanish).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from perturbative.brackets import bracket_matrix
from perturbative.models import mxresnet
from perturbative.reference import reference_bracket_matrix

# Dense peaks of an H100 SXM (NVIDIA datasheet): fp32 on CUDA cores, and TF32 on tensor cores.
H100_FP32_TFLOPS = 67.0
H100_TF32_TFLOPS = 495.0


def make_problem(n: int, size: int, device: str, dtype: torch.dtype, seed: int = 0):
    torch.manual_seed(seed)
    model = mxresnet(depth=18, num_outputs=40)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    model = model.to(device=device, dtype=dtype).eval()
    inputs = torch.randn(n, 3, size, size).to(device=device, dtype=dtype)
    targets = (torch.rand(n, 40) < 0.3).to(device=device, dtype=dtype)
    return model, dict(model.named_parameters()), (inputs, targets)


def loss_fn(outputs, targets):
    return F.binary_cross_entropy_with_logits(outputs, targets)


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class PeakMemory:
    """Peak memory above the level at entry, in bytes.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: resident set size sampled from
    ``/proc/self/statm`` every 2 ms by a background thread (Linux only; ``None`` elsewhere).
    """

    def __init__(self, device: str):
        self.device, self.peak = device, None

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._max = max(self._max, self._rss())
            time.sleep(0.002)

    def __enter__(self):
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        elif os.path.exists("/proc/self/statm"):
            self._base = self._max = self._rss()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self._base
        elif os.path.exists("/proc/self/statm"):
            self._stop.set()
            self._thread.join()
            self.peak = max(self._max, self._rss()) - self._base


def timed(fn, device: str, repeats: int):
    """(median seconds over ``repeats`` after one warm-up, peak memory bytes, last result)."""
    result = fn()
    del result
    times = []
    for _ in range(repeats):
        with PeakMemory(device) as memory:
            synchronize(device)
            start = time.perf_counter()
            result = fn()
            synchronize(device)
            times.append(time.perf_counter() - start)
    return statistics.median(times), memory.peak, result


def max_relative_error(got, reference) -> float:
    """max over pairs (i, j) of ||B_ij - B64_ij|| / ||B64_ij||, norms over all parameters."""
    num = sum((got[k].cpu().double() - reference[k]).flatten(2).pow(2).sum(-1) for k in got)
    den = sum(reference[k].double().flatten(2).pow(2).sum(-1) for k in reference)
    off = ~torch.eye(num.shape[0], dtype=torch.bool, device=num.device)
    return float((num[off] / den[off]).sqrt().max())


def set_tf32(enabled: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def main(argv=None) -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if cuda else "cpu")
    parser.add_argument("--n", type=int, help="examples (default 6 on CPU, 16 on CUDA)")
    parser.add_argument("--size", type=int, help="input height=width (default 32 CPU, 64 CUDA)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--tf32", choices=["on", "off", "both"], default="both", help="CUDA only: TF32 settings"
    )
    parser.add_argument(
        "--engines",
        help="comma-separated (default CPU: double_backward; CUDA: forward,double_backward)",
    )
    parser.add_argument(
        "--peak-tflops", type=float, help="fp32 peak of the GPU (default: H100 SXM)"
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--json",
        default=None,
        help="write the rows here (default benchmarks/results/bracket_matrix-DEVICE.json); "
        "docs/benchmarks.md quotes that file",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    n = args.n or (16 if device == "cuda" else 6)
    size = args.size or (64 if device == "cuda" else 32)
    default_engines = "forward,double_backward" if device == "cuda" else "double_backward"
    engines = (args.engines or default_engines).split(",")
    settings = (
        [None]
        if device == "cpu"
        else {"on": [True], "off": [False], "both": [True, False]}[args.tf32]
    )

    model, params, data = make_problem(n, size, device, torch.float32)
    numel = sum(p.numel() for p in params.values())
    machine = torch.cuda.get_device_name() if device == "cuda" else _cpu_name()
    print(f"n={n}  input={size}x{size}  params={numel:,}  device={device} ({machine})")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; fp32 weights/data")
    pairs = n * (n - 1) // 2
    print(
        f"gradient evaluations per bracket: naive 2 gradients + 2 HVPs; engine "
        f"{n}/{pairs} = {n / pairs:.2f} gradients + 2 HVPs ({n} gradients, {n * (n - 1)} HVPs "
        f"for {pairs} brackets)"
    )
    print(
        "peak memory: "
        + (
            "torch.cuda.max_memory_allocated above the start"
            if device == "cuda"
            else "resident set size above the start, sampled every 2 ms from /proc/self/statm"
        )
    )

    # float64 reference of the same brackets (same engine family, so only rounding differs).
    model64, params64, data64 = make_problem(n, size, device, torch.float64)
    # Kept in host memory: on the GPU an fp64 (n, n, 11.2M) matrix would crowd out the runs.
    reference = bracket_matrix(model64, loss_fn, params64, data64, engine=engines[0])
    reference = {k: v.cpu() for k, v in reference.items()}
    del model64, params64, data64

    peak_fp32 = args.peak_tflops or H100_FP32_TFLOPS
    rows = []
    header = f"{'setting':<10} {'method':<16} {'time s':>8} {'vs naive':>9} {'peak MiB':>9} "
    header += f"{'GFLOP/s':>9} {'%fp32pk':>8} {'max rel err vs fp64':>20}"
    print(header)
    for tf32 in settings:
        label = "fp32" if tf32 is None else ("TF32 on" if tf32 else "TF32 off")
        if tf32 is not None:
            set_tf32(tf32)
        naive_time, naive_mem, naive = timed(
            lambda: reference_bracket_matrix(model, loss_fn, params, data), device, args.repeats
        )
        err = max_relative_error(naive, reference)
        del naive
        print(_row(label, "naive loop", naive_time, None, naive_mem, None, None, err))
        rows.append(
            dict(
                setting=label,
                method="naive loop",
                seconds=naive_time,
                ratio=1.0,
                peak_mib=None if naive_mem is None else naive_mem / 2**20,
                error=err,
            )
        )
        for engine in engines:
            run = lambda engine=engine: bracket_matrix(model, loss_fn, params, data, engine=engine)  # noqa: E731
            seconds, memory, result = timed(run, device, args.repeats)
            err = max_relative_error(result, reference)
            del result
            with FlopCounterMode(display=False) as counter:
                run()
            flops = counter.get_total_flops() / seconds
            fraction = flops / (peak_fp32 * 1e12) if device == "cuda" else None
            print(_row(label, engine, seconds, naive_time / seconds, memory, flops, fraction, err))
            rows.append(
                dict(
                    setting=label,
                    method=engine,
                    seconds=seconds,
                    ratio=naive_time / seconds,
                    gflops=flops / 1e9,
                    peak_mib=None if memory is None else memory / 2**20,
                    error=err,
                )
            )
    out = Path(args.json or Path(__file__).parent / "results" / f"bracket_matrix-{device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            dict(
                command="python benchmarks/bracket_matrix.py " + " ".join(argv or sys.argv[1:]),
                n=n,
                size=size,
                params=numel,
                device=machine,
                torch=torch.__version__,
                threads=torch.get_num_threads(),
                repeats=args.repeats,
                rows=rows,
                load_average=os.getloadavg(),
            ),
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {out}")
    if device == "cuda":
        print(
            f"%fp32pk: achieved FLOP/s (conv + matmul FLOPs counted by FlopCounterMode) over "
            f"{peak_fp32:g} TFLOP/s, the dense fp32 CUDA-core peak; the TF32 tensor-core peak "
            f"of an H100 SXM is {H100_TF32_TFLOPS:g} TFLOP/s"
        )


def _row(label, method, seconds, ratio, memory, flops, fraction, err) -> str:
    ratio_s = f"{ratio:8.2f}x" if ratio is not None else f"{'1.00x':>9}"
    mem_s = f"{memory / 2**20:9.0f}" if memory is not None else f"{'n/a':>9}"
    flops_s = f"{flops / 1e9:9.1f}" if flops is not None else f"{'':>9}"
    frac_s = f"{100 * fraction:7.2f}%" if fraction is not None else f"{'':>8}"
    return (
        f"{label:<10} {method:<16} {seconds:8.3f} {ratio_s} {mem_s} {flops_s} {frac_s} {err:20.2e}"
    )


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{os.cpu_count()} cores"


if __name__ == "__main__":
    main()

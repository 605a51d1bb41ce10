"""What recording costs: ``Recorder.step`` on steps that write nothing, against the step itself,
and a checkpoint write against ``torch.save`` of the same state, side by side in one run.

    python benchmarks/recorder.py                 # the GPT-2 of examples/own_loop.py
    python benchmarks/recorder.py --blocks 10

Training steps alternate in blocks with and without the recorder, so that the machine's drift
falls on both; the overhead is the difference of the medians of the blocks' times per step.
Writes benchmarks/results/recorder.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from own_loop import build_model, sequences  # noqa: E402

import perturbative as pt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=8, help="blocks of steps each way")
    parser.add_argument("--steps", type=int, default=20, help="steps per block")
    parser.add_argument("--writes", type=int, default=5, help="checkpoint writes each way")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/recorder.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    train, _, _ = sequences()
    model = build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    folder = Path(tempfile.mkdtemp(prefix="recorder-benchmark-"))
    recorder = pt.Recorder(folder / "run", model, optimizer, save_at=10**9)
    generator = torch.Generator().manual_seed(1)

    def block(record: bool) -> float:
        start = time.perf_counter()
        for _ in range(args.steps):
            indices = torch.randint(len(train), (32,), generator=generator)
            rows = train[indices]
            loss = model(input_ids=rows, labels=rows).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if record:
                recorder.step(indices)
        return (time.perf_counter() - start) / args.steps

    block(False)  # warm-up
    plain, recorded = [], []
    for _ in range(args.blocks):
        plain.append(block(False))
        recorded.append(block(True))
    step_plain, step_recorded = statistics.median(plain), statistics.median(recorded)

    def timed(write) -> float:
        times = []
        for _ in range(args.writes):
            start = time.perf_counter()
            write()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def torch_save() -> None:
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": torch.get_rng_state(),
        }
        torch.save(state, folder / "torch_save.pt")

    write_torch, write_recorder = [], []
    for _ in range(2):  # alternate, as for the steps
        write_torch.append(timed(torch_save))
        write_recorder.append(timed(recorder.save))
    recorder.close()
    save_torch, save_recorder = min(write_torch), min(write_recorder)
    rows = {
        "step_seconds": round(step_plain, 5),
        "step_seconds_recorded": round(step_recorded, 5),
        "overhead": round(step_recorded / step_plain - 1, 4),
        "torch_save_seconds": round(save_torch, 4),
        "recorder_save_seconds": round(save_recorder, 4),
        "save_ratio": round(save_recorder / save_torch, 3),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    print(
        f"step {step_plain * 1e3:.1f} ms, recorded {step_recorded * 1e3:.1f} ms: overhead "
        f"{rows['overhead']:+.1%} (medians of {args.blocks} blocks of {args.steps} steps)"
    )
    print(
        f"checkpoint: torch.save {save_torch * 1e3:.1f} ms, Recorder.save "
        f"{save_recorder * 1e3:.1f} ms: {rows['save_ratio']:.2f}x"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"command": "python benchmarks/recorder.py", "args": vars(args), **rows}
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Is the order check's "real" reordering the one the user's loop would make? Measured on the
GPT-2 loop of ``examples/own_loop.py`` (AdamW, 50 steps of warm-up then cosine, clipping at 1.0).

At each checkpoint, for minibatch pairs of the run's own later batches, four numbers:

* the loop's own reordering: the example's ``train_step`` (the model's own loss, torch's
  clipping, ``optimizer.step()``, then its ``LambdaLR`` restored from the checkpoint) run on the
  two orders from the restored checkpoint; nothing of the library's step model is used;
* the library's real reordering (``values_along_steps`` with the checkpoint's
  ``TrainingStep``: the logged lr of each step, the recorded clipping);
* the prediction (``predict_swap`` with the same step);
* both again with the schedule frozen at the checkpoint's lr, the library's behaviour before the
  step became one value.

It prints the replay gate's line at each checkpoint first, then the medians, and writes
``benchmarks/results/loop_fidelity.json``. ``docs/results/own-run.md`` quotes it.

    python benchmarks/loop_fidelity.py                 # about 1 min on 2 cores
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import perturbative as pt
from perturbative.pipeline.checkpoints import list_checkpoints, read_checkpoint
from perturbative.pipeline.recorded_run import open_recorded_checkpoint, read_run
from perturbative.pipeline.recorder import read_order_log
from perturbative.pipeline.replay import replay_gap
from perturbative.pipeline.task import as_dtype, load_task

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "own_loop.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default="runs/loop_fidelity")
    parser.add_argument("--steps", type=int, default=200, help="the loop's length (its cosine)")
    parser.add_argument("--checkpoints", default="10,100", help="a warm-up one, then the decay")
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / "loop_fidelity.json")
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    run = Path(args.run_dir)
    steps = [int(s) for s in args.checkpoints.split(",")]
    if not (run / "run.json").is_file():
        subprocess.run(
            [sys.executable, str(EXAMPLE), "--run-dir", str(run), "--steps", str(args.steps),
             "--save-every", "10"],
            check=True,
        )  # fmt: skip
    example = load_task(f"{EXAMPLE}:task")
    module = sys.modules[example.model.__module__]
    log, info = read_order_log(run), read_run(run)
    rng = random.Random(0)
    rows = []
    for step in steps:
        gap = replay_gap(run, step, example, info, log)
        print(gap.line(), flush=True)
        at = open_recorded_checkpoint(run, step, example, log=log)
        observable = example.build_observable(at.model)
        frozen = pt.TrainingStep(at.optimizer, at.training.max_grad_norm)  # the old behaviour
        _, saved = read_checkpoint(dict(list_checkpoints(run))[step])
        later = range(len(at.next_steps))
        drawn = [(0, 1)] + [tuple(rng.sample(later, 2)) for _ in range(args.pairs - 1)]
        for i, j in drawn:
            x, y = (
                as_dtype(example.batch(at.next_steps[p]["indices"]), torch.float64) for p in (i, j)
            )
            started = time.perf_counter()
            loop = [
                loop_value(module, at, saved, o, observable, args.steps) for o in ([x, y], [y, x])
            ]
            real = [_real(at, example, at.training, o, observable) for o in ([x, y], [y, x])]
            stale = [_real(at, example, frozen, o, observable) for o in ([x, y], [y, x])]
            args_ = (at.model, example.loss_fn)
            predicted = pt.predict_swap(*args_, at.training, x, y, observable).predicted
            predicted_frozen = pt.predict_swap(*args_, frozen, x, y, observable).predicted
            rows.append(
                {
                    "step": step,
                    "lrs": [at.training.rates_at(0)[0], at.training.rates_at(1)[0]],
                    "loop": loop[0] - loop[1],
                    "real": real[0] - real[1],
                    "real_frozen": stale[0] - stale[1],
                    "predicted": predicted,
                    "predicted_frozen": predicted_frozen,
                    "seconds": time.perf_counter() - started,
                }
            )
    summary = {str(s): _summary([r for r in rows if r["step"] == s]) for s in steps}
    for step, numbers in summary.items():
        print(f"step {step}: " + ", ".join(f"{k} {v:.3g}" for k, v in numbers.items()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/loop_fidelity.py " + " ".join(sys.argv[1:])
    Path(args.out).write_text(
        json.dumps({"command": command.strip(), "summary": summary, "pairs": rows}, indent=1)
    )
    print(f"numbers: {args.out}")


def loop_value(module, at, saved: dict, order, observable, steps: int) -> float:
    """O after the example's own ``train_step`` trains ``order`` from the checkpoint, with its
    scheduler restored from the checkpoint's saved state."""
    model, optimizer = copy.deepcopy((at.model, at.optimizer))
    schedule = module.warmup_cosine(optimizer, steps)  # (its constructor sets the first lr)
    schedule.load_state_dict(saved["scheduler"])
    for group, lr in zip(optimizer.param_groups, schedule.get_last_lr(), strict=True):
        group["lr"] = lr  # the lr the resumed loop's next step uses, as a resumed loop has it
    model.train()  # dropout 0: as the loop trains
    for batch in order:
        module.train_step(model, optimizer, schedule, batch)
    model.eval()
    return observable.value(model)


def _real(at, example, step, order, observable) -> float:
    return pt.brackets.values_along_steps(
        at.model, example.loss_fn, step, order, observable.value, [2]
    )[0]


def _summary(rows: list[dict]) -> dict[str, float]:
    loop = np.array([r["loop"] for r in rows])

    def relative(key: str) -> np.ndarray:
        return np.abs(np.array([r[key] for r in rows]) - loop) / np.abs(loop)

    def signs(key: str) -> float:
        return float(np.mean(np.sign([r[key] for r in rows]) == np.sign(loop)))

    return {
        "pairs": len(rows),
        "lr_first_over_second": float(np.median([r["lrs"][0] / r["lrs"][1] for r in rows])),
        "real_vs_loop_max": float(relative("real").max()),
        "frozen_real_vs_loop_median": float(np.median(relative("real_frozen"))),
        "frozen_real_vs_loop_max": float(relative("real_frozen").max()),
        "predicted_vs_loop_median": float(np.median(relative("predicted"))),
        "frozen_predicted_vs_loop_median": float(np.median(relative("predicted_frozen"))),
        "predicted_signs": signs("predicted"),
        "frozen_predicted_signs": signs("predicted_frozen"),
        "frozen_real_signs": signs("real_frozen"),
    }


if __name__ == "__main__":
    main()

"""Is the cycle anchor wrong where it lacks a source? At ``k`` below the number of sources the
anchor of ``anchored-cycle`` holds only ``k`` of them; this splits each anchored method's sign
accuracy into the pairs whose two sources the cycle held and the pairs with one it lacked.

    python benchmarks/phase_cycle_sources.py RUN RUN/phase_check [RUN CHECK ...]

The check's draws are replayed from its seed with the check's own function
(``perturbative.pipeline.phase_order.phase_draws``), nothing trained; the sources and triples
replayed are held to those the check recorded. Reads the run's task and the check's JSON.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import fields

import numpy as np

from perturbative.pipeline.order_check import run_batch_size
from perturbative.pipeline.phase_order import PhaseCheckOptions, phase_draws
from perturbative.pipeline.phase_summary import ANCHORED
from perturbative.pipeline.recorded_run import run_task
from perturbative.pipeline.recorder import read_order_log
from perturbative.pipeline.results import read_phase_check_file


def split(run_dir: str, check_dir: str) -> dict[tuple, list[bool]]:
    """``{(target, k, method, "both held" | "one lacked"): [sign right, ...]}`` over the pairs
    above the floor of every tournament whose ``k`` is below its number of sources."""
    task = run_task(run_dir)
    size = run_batch_size(run_dir, read_order_log(run_dir))
    check = read_phase_check_file(check_dir)
    names = {f.name for f in fields(PhaseCheckOptions)}
    options = PhaseCheckOptions(**{k: v for k, v in check.options.items() if k in names})
    out = defaultdict(list)
    for r in check.tournaments:
        if r.k >= len(r.sources) or not all(m in r.predicted for m in ANCHORED):
            continue
        drawn = phase_draws(task.sources, size, r.step, r.k, options)
        if drawn.sources != r.sources or drawn.triples != [t.sources for t in r.triples]:
            raise SystemExit(f"{check_dir}: its draws do not replay (the run has changed)")
        held = [s in drawn.cycle_sources for s in drawn.sources]
        for t in check.targets:
            real = np.asarray(r.real[t])
            for m in ANCHORED:
                predicted = np.asarray(r.predicted[m][t])
                for i, j in zip(*np.triu_indices(len(real), 1), strict=True):
                    if abs(real[i, j]) > r.floor[t]:
                        kind = "both held" if held[i] and held[j] else "one lacked"
                        right = np.sign(predicted[i, j]) == np.sign(real[i, j])
                        out[(t, r.k, m, kind)].append(bool(right))
    return out


def share(hits: list[bool]) -> str:
    return f"{np.mean(hits):.2f}" if hits else "n/a"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", nargs="+", help="a run folder, then a phase check of it; again")
    args = parser.parse_args(argv)
    if len(args.pairs) % 2:
        parser.error("give a run folder and its check, for each run")
    for run_dir, check_dir in zip(args.pairs[::2], args.pairs[1::2], strict=True):
        print(f"{run_dir}:")
        got = split(run_dir, check_dir)
        for t, k in sorted({key[:2] for key in got}):
            parts = []
            for m in ANCHORED:
                both, lacked = got[(t, k, m, "both held")], got[(t, k, m, "one lacked")]
                parts.append(
                    f"{m} {share(both)} of {len(both)} pairs the cycle held both, "
                    f"{share(lacked)} of {len(lacked)} with one it lacked"
                )
            print(f"  {t}, k={k}: " + "; ".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

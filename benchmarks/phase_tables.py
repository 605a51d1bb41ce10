"""The phase checks' summaries as the Markdown tables of docs/results/phases.md.

    python benchmarks/phase_tables.py runs/own_loop/phase_check_anchored [more checks...]

One table per target: a row per ``k`` (checks given together are read in order, a later one
adding its ``k``), each method's sign accuracy over the pairs above the rounding floor, Kendall's
tau of its ranking and its best of ``3!`` where triples were trained, then the seconds of
training every pair both ways (as the check trained them), of the anchored method, of
anchored-alone and of the composition, and each anchored method's share of the first. Reads
only the checks' JSON.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from perturbative.pipeline.phase_summary import METHODS
from perturbative.pipeline.results import read_phase_check_file


def cell(m) -> str:
    if m is None:
        return "not run"
    text = f"{m.sign_accuracy_above_floor:.2f}<br>tau {m.kendall_tau:+.2f}"
    if m.triples and not math.isnan(m.best_of_3):
        text += f"<br>3! {m.best_of_3:.2f}"
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checks", nargs="+", help="phase-check folders (or their JSON files)")
    args = parser.parse_args(argv)
    checks = [read_phase_check_file(Path(c)) for c in args.checks]
    rows: dict[str, dict[int, tuple]] = {}
    for check in checks:
        seconds: dict[int, dict[str, float]] = {}
        for r in check.tournaments:
            got = seconds.setdefault(r.k, {})
            for name, value in r.seconds.items():
                got[name] = got.get(name, 0.0) + value
        for target in check.targets:
            for k, row in check.summary.rows[target].items():
                rows.setdefault(target, {})[k] = (row, seconds[k])
    header = [
        "k",
        "pairs",
        *METHODS,
        "seconds: every order / anchored / anchored-alone / composition",
    ]
    for target, by_k in rows.items():
        about = "sign accuracy over pairs above the rounding floor; Kendall's tau; best of 3!"
        print(f"**{target}** ({about})\n")
        print("| " + " | ".join(header) + " |")
        print("| " + " | ".join("---" for _ in header) + " |")
        for k in sorted(by_k):
            row, seconds = by_k[k]
            real = seconds["real"]
            cost = " / ".join(
                [f"{real:.0f}"]
                + [
                    f"{seconds.get(m, math.nan):.0f} ({seconds.get(m, math.nan) / real:.2f})"
                    for m in ("anchored", "anchored-alone")
                ]
                + [f"{seconds.get('composition', math.nan):.0f}"]
            )
            cells = [cell(row.methods.get(m)) for m in METHODS]
            pairs = f"{row.above_floor}/{row.pairs}"
            print("| " + " | ".join([str(k), pairs, *cells, cost]) + " |")
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

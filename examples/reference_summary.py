"""The headline figures of a run and its sweep, as docs/results/reference-experiment.md has them.

    python examples/reference_summary.py runs/celeba [--full-split runs/celeba/brackets-full]

Prints the run's settings; training and sweep wall times (from the times the checkpoint and
results files were written: the first checkpoint is written before the first step, and the
sweep writes its thumbnails before its first checkpoint); held-out accuracy; the correlation of
bracket norms with gradient-norm products; the Black_Hair / Brown_Hair output-shift correlation
and its rank among all attribute pairs at every checkpoint; and, with ``--full-split`` (a second
sweep ranking the whole training split at a few checkpoints, ``perturbative brackets RUN
--only-steps ... --ranking-examples 100000 --out DIR``), how long each full ranking took (as the
sweep recorded it) and how well the default pool's ranking agrees with it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from perturbative._core.stats import spearman
from perturbative.report import load_report_data
from perturbative.report.statistics import (
    attribute_comovement,
    bracket_gradient_correlation,
    top_attribute_pairs,
)


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def written(folder: Path, pattern: str) -> list[float]:
    return sorted(p.stat().st_mtime for p in folder.glob(pattern))


def training(run: Path) -> None:
    config = json.loads((run / "config.json").read_text())
    print(
        f"run {run}: {config['dataset']}, MXResNet-{config['depth']} width {config['width']}, "
        f"{config['image_size']}x{config['image_size']}, {config['steps']} steps, Adam lr "
        f"{config['lr']} betas ({config['beta1']}, {config['beta2']}), batch "
        f"{config['batch_size']}"
    )
    times = written(run / "checkpoints", "step_*.safetensors")
    print(f"  training: {minutes(times[-1] - times[0])} ({len(times)} checkpoints)")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    evaluated = [r for r in rows if r.get("heldout_accuracy") is not None]
    if evaluated:
        last, best = evaluated[-1], max(evaluated, key=lambda r: r["heldout_accuracy"])
        print(
            f"  held-out mean attribute accuracy: {last['heldout_accuracy']:.4f} at step "
            f"{last['step']} (loss {last['heldout_loss']:.4f}); best {best['heldout_accuracy']:.4f}"
            f" at step {best['step']}"
        )


def sweep(results: Path, pair: list[str]):
    """Prints the sweep's figures; returns its data for :func:`full_split`."""
    data = load_report_data(results)
    times = written(results, "step_*.safetensors")
    start = (results / "thumbnails.safetensors").stat().st_mtime
    print(
        f"  sweep ({results}): {minutes(times[-1] - start)} for {len(data.steps)} checkpoints, "
        f"{len(data.pairs)} brackets each, ranking pool {data.meta['ranking_examples']}"
    )
    fit = bracket_gradient_correlation(data.grad_norm, data.bracket_norm, data.pairs)
    print(
        f"  log bracket norm against log gradient-norm product, {fit.count} (pair, checkpoint) "
        f"points: Pearson r = {fit.pearson:.3f}, Spearman {fit.spearman:.3f}, slope {fit.slope:.2f}"
    )
    names = data.attribute_names
    corr = attribute_comovement(data.output_shift)
    strongest = top_attribute_pairs(corr, 1)[0]
    print(
        f"  strongest co-moving pair over training: {names[strongest[0]]} / "
        f"{names[strongest[1]]} (mean r {corr[:, strongest[0], strongest[1]].mean():+.2f})"
    )
    if not all(name in names for name in pair):
        return data
    a, b = (names.index(n) for n in pair)
    upper = np.triu_indices(len(names), 1)
    ranks = [int((np.abs(m[upper]) > abs(m[a, b])).sum()) + 1 for m in corr]
    print(f"  {pair[0]} / {pair[1]}: output-shift correlation, rank of {len(upper[0])} pairs")
    print("  | step | " + " | ".join(str(int(s)) for s in data.steps) + " |")
    print("  | --- | " + " | ".join("---" for _ in data.steps) + " |")
    print("  | correlation | " + " | ".join(f"{m[a, b]:+.2f}" for m in corr) + " |")
    print("  | rank | " + " | ".join(str(r) for r in ranks) + " |")
    for top in (1, 5):
        leading = [s for s, r in zip(data.steps, ranks, strict=True) if r <= top]
        stays = next(
            (int(s) for i, s in enumerate(data.steps) if all(r <= top for r in ranks[i:])), None
        )
        since = f"from step {stays} to the end" if stays is not None else "not up to the end"
        first = f"first at step {int(leading[0])}" if leading else "never"
        print(
            f"  in the top {top} at {len(leading)} of {len(ranks)} checkpoints ({first}); {since}"
        )
    return data


def full_split(pooled, full: Path) -> None:
    data = load_report_data(full)
    # the sweep records each step's wall time (steps swept by older versions have none)
    timed = {int(s): t for s, t in data.meta.get("seconds", {}).items()}
    took = (
        f"{minutes(np.mean(list(timed.values())))} per checkpoint on average over the "
        f"{len(timed)} checkpoints whose time the sweep recorded (brackets and shifts included; "
        f"longest {minutes(max(timed.values()))}, at step {max(timed, key=timed.get)})"
        if timed
        else "no step times recorded"
    )
    peaks = [g for g in data.meta.get("peak_memory_gib", {}).values() if g is not None]
    if peaks:
        took += f"; peak resident memory {max(peaks):.1f} GiB over {len(peaks)} checkpoints"
    print(
        f"  whole training split ranked ({full}): {data.meta['ranking_examples']} examples at "
        f"{len(data.steps)} checkpoints, steps {[int(s) for s in data.steps]}; {took}"
    )
    for s, step in enumerate(data.steps):
        if step not in pooled.steps:
            continue
        p = int(np.flatnonzero(pooled.steps == step)[0])
        full_score = dict(
            zip(data.ranking_indices[s].tolist(), data.ranking_scores[s].tolist(), strict=True)
        )
        pool = pooled.ranking_indices[p].tolist()
        ours = np.array(pooled.ranking_scores[p])
        theirs = np.array([full_score[i] for i in pool])
        top = set(data.ranking_indices[s][:10].tolist())
        scores = np.abs(data.ranking_scores[s])
        print(
            f"  step {int(step)}: |S| max {scores.max():.3g}, median {np.median(scores):.3g}; "
            f"the {len(pool)}-example pool's scores against the same examples' whole-split "
            f"scores: Spearman {spearman(ours, theirs):.3f}; whole-split top 10 in the pool: "
            f"{len(top & set(pool))}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run directory with a finished sweep")
    parser.add_argument("--results", type=Path, default=None, help="default RUN/brackets")
    parser.add_argument("--full-split", type=Path, default=None, help="a whole-split sweep")
    parser.add_argument("--pair", nargs=2, default=["Black_Hair", "Brown_Hair"])
    args = parser.parse_args()
    results = args.results or args.run / "brackets"
    training(args.run)
    pooled = sweep(results, args.pair)
    if args.full_split is not None:
        full_split(pooled, args.full_split)


if __name__ == "__main__":
    main()

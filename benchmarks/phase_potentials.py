"""How much of a phase check's real tournaments a difference of per-source potentials explains.

    python benchmarks/phase_potentials.py runs/own_loop/phase_check [more checks...]

For each target and ``k`` of a finished ``perturbative phase-check``, fits ``R[i, j] ~ s_i -
s_j`` to every real tournament by least squares (all its pairs: a fit to the answer, not a
prediction) and prints, pooled over the check's checkpoints: the share of the real differences'
squares it explains (R^2, the most any potential explains), the sign accuracy of the fit (not a
bound on a method's signs: least squares weighs the large differences), what an anchor that is
one of the sources would have given (each in turn, read from the real pairs), the three anchored
methods' and the last-phase baseline's sign accuracy and Kendall's tau from the check's summary
(recomputed from its tournaments by this version), beside the most right method's, how closely
each anchor reads the potential (the rank correlation of the potential an anchor gives, its
predicted row means or a source anchor's real pairs with it, with the fitted one, the real row
means; mean over tournaments), and on how many pairs the two anchored methods agree, and how
often they are right there. Reads only the check's JSON.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from perturbative._core.stats import spearman
from perturbative.pipeline.phase_summary import ANCHORED, most_right, summarize
from perturbative.pipeline.results import read_phase_check_file

#: The methods that predict a potential from phases of their own (their row means).
POTENTIALS = (*ANCHORED, "anchored-alone")


def potential_fit(real: np.ndarray) -> np.ndarray:
    """The least-squares ``s_i - s_j`` of an antisymmetric matrix over all its pairs: with
    every pair present it is ``s = `` the row means."""
    s = real.mean(1)
    return s[:, None] - s[None, :]


def source_anchors(real: np.ndarray) -> list[float]:
    """Each source in turn as the anchor, read from the real tournament's own pairs: the sign
    accuracy of ``R[i, a] - R[j, a]`` over the pairs without ``a`` (what the anchored method
    would get with that source's phase as its anchor)."""
    n, out = len(real), []
    for a in range(n):
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if a not in (i, j)]
        if pairs:
            hits = [np.sign(real[i, a] - real[j, a]) == np.sign(real[i, j]) for i, j in pairs]
            out.append(float(np.mean(hits)))
    return out


def anchor_readings(real: np.ndarray, predicted: dict[str, np.ndarray]) -> dict[str, float]:
    """How closely each anchor reads the fitted potential (the real row means): the anchored
    methods' potentials (their predicted row means), and each source as the anchor (the real
    pairs with it; the median over sources)."""
    fitted = real.mean(1)
    out = {name: spearman(matrix.mean(1), fitted) for name, matrix in predicted.items()}
    out["one source"] = float(np.median([spearman(real[:, a], fitted) for a in range(len(real))]))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checks", nargs="+", help="phase-check folders (or their JSON files)")
    args = parser.parse_args(argv)
    for folder in args.checks:
        check = read_phase_check_file(Path(folder))
        print(f"{check.run}:")
        for target in check.targets:
            for k, row in summarize(check.tournaments).rows[target].items():
                chosen = [r for r in check.tournaments if r.k == k]
                residual, right, pairs = 0.0, 0, 0
                total, one_source, readings = 0.0, [], []
                anchored = [n for n in POTENTIALS if all(n in r.predicted for r in chosen)]
                for r in chosen:
                    real = np.asarray(r.real[target])
                    predicted = {n: np.asarray(r.predicted[n][target]) for n in anchored}
                    readings.append(anchor_readings(real, predicted))
                    one_source += source_anchors(real)
                    upper = np.triu_indices(len(real), 1)
                    fit = potential_fit(real)
                    residual += float(((real - fit)[upper] ** 2).sum())
                    total += float((real[upper] ** 2).sum())
                    above = np.abs(real[upper]) > r.floor[target]
                    right += int((np.sign(fit[upper]) == np.sign(real[upper]))[above].sum())
                    pairs += int(above.sum())
                methods = row.methods
                text = (
                    f"  {target}, k={k}: {row.pairs} pairs; a potential explains "
                    f"R^2 {1 - residual / total:.2f}, its signs {right / max(pairs, 1):.2f}; "
                    f"one source as the anchor {np.mean(one_source):.2f} (worst "
                    f"{np.min(one_source):.2f})"
                )
                for name in (*POTENTIALS, "last-phase"):
                    if name in methods:
                        m = methods[name]
                        text += (
                            f"; {name} {m.sign_accuracy_above_floor:.2f} (tau {m.kendall_tau:+.2f})"
                        )
                text += "; the anchors' potentials against the fitted one: " + ", ".join(
                    f"{name} {np.mean([x[name] for x in readings]):+.2f}" for name in readings[0]
                )
                if not np.isnan(row.anchors_agree):
                    text += (
                        f"; the two anchors agree on {row.anchors_agree:.2f} of the pairs, right "
                        f"on {row.right_where_anchors_agree:.2f} of those"
                    )
                best = most_right(methods)
                if best:
                    signs = methods[best[0]].sign_accuracy_above_floor
                    text += f"; most right: {', '.join(best)} {signs:.2f}"
                print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

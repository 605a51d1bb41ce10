"""The phase check's summary (:mod:`perturbative.pipeline.phase_order`), pooled per target,
phase length and method from its records (:mod:`perturbative.pipeline.phase_records`), and the
lines ``perturbative phase-check`` prints."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from perturbative._core.stats import spearman
from perturbative.brackets import kendall_tau
from perturbative.pipeline.order_summary import calibration_slope, sign_accuracy
from perturbative.pipeline.phase_records import (
    MethodSummary,
    PhaseRow,
    PhaseSummary,
    TournamentRecord,
)

#: Methods that predict the value of ``O(A then B) - O(B then A)``.
VALUE_METHODS = (
    "anchored",
    "anchored-cycle",
    "anchored-alone",
    "expansion",
    "composition",
    "last-phase",
    "sgd-bracket",
    "reference-bracket",
)
#: Heuristics that predict only its sign.
SIGN_METHODS = ("larger-gradient-first", "larger-loss-first", "coin")
#: Every method a phase check predicts with, in the order its tables show them.
METHODS = VALUE_METHODS + SIGN_METHODS
#: The two anchored methods, whose agreement on a pair's sign is known before any pair trains.
ANCHORED = ("anchored", "anchored-cycle")


def summarize(records: Sequence[TournamentRecord]) -> PhaseSummary:
    """Per target, ``k`` and method, pooled over checkpoints: sign accuracy over every pair
    (``i < j``) and over pairs whose real difference is above the measured rounding floor,
    Spearman, calibration slope and median relative error of the value methods, Kendall's tau
    of the row-sum ranking against the real tournament's (mean over tournaments), best of
    ``3!`` (share of triples whose predicted best order is the real best, and the share of the
    real best-to-worst gap captured), and seconds (summed) against training every pair both
    ways."""
    out = PhaseSummary()
    targets = list(records[0].real) if records else []
    for target in targets:
        for k in sorted({r.k for r in records}):
            chosen = [r for r in records if r.k == k]
            methods = sorted(  # in the tables' order, any other method after them
                (m for m in chosen[0].predicted if all(m in r.predicted for r in chosen)),
                key=lambda m: METHODS.index(m) if m in METHODS else len(METHODS),
            )
            upper = [np.triu_indices(len(r.sources), 1) for r in chosen]
            real = np.concatenate(
                [np.asarray(r.real[target])[u] for r, u in zip(chosen, upper, strict=True)]
            )
            floor = np.concatenate(
                [np.full(len(u[0]), r.floor[target]) for r, u in zip(chosen, upper, strict=True)]
            )
            above = np.abs(real) > floor
            row = PhaseRow(
                pairs=len(real),
                above_floor=int(above.sum()),
                median_real=float(np.median(np.abs(real))) if len(real) else math.nan,
                tournaments=len(chosen),
                sources=len(chosen[0].sources),
                seconds_real=sum(r.seconds["real"] for r in chosen),
            )
            for method in methods:
                predicted = np.concatenate(
                    [
                        np.asarray(r.predicted[method][target])[u]
                        for r, u in zip(chosen, upper, strict=True)
                    ]
                )
                numbers = {
                    "sign_accuracy": sign_accuracy(predicted, real),
                    "sign_accuracy_above_floor": sign_accuracy(predicted[above], real[above]),
                    "kendall_tau": float(
                        np.mean([_tau(r.predicted[method][target], r.real[target]) for r in chosen])
                    ),
                    **_best_of_three(chosen, method, target),
                }
                if method in VALUE_METHODS:
                    numbers.update(
                        spearman=spearman(predicted, real),
                        calibration_slope=calibration_slope(predicted, real),
                        median_relative_error=float(
                            np.median(np.abs(predicted - real) / np.abs(real))
                        )
                        if len(real)
                        else math.nan,
                        seconds=_total([r.seconds.get(method) for r in chosen]),
                    )
                row.methods[method] = MethodSummary(**numbers)
            if all(m in methods for m in ANCHORED):
                mixture, cycle = (
                    np.sign(
                        np.concatenate(
                            [
                                np.asarray(r.predicted[m][target])[u]
                                for r, u in zip(chosen, upper, strict=True)
                            ]
                        )
                    )
                    for m in ANCHORED
                )
                agreed = mixture == cycle  # over every pair: known before any trains
                right = (mixture == np.sign(real))[agreed & above]
                row.anchors_agree = float(agreed.mean()) if len(agreed) else math.nan
                row.right_where_anchors_agree = float(right.mean()) if len(right) else math.nan
            out.rows.setdefault(target, {})[k] = row
    return out


def _tau(predicted: list[list[float]], real: list[list[float]]) -> float:
    ranking = np.argsort(np.sum(predicted, 1), kind="stable").tolist()
    return kendall_tau(ranking, np.argsort(np.sum(real, 1), kind="stable").tolist())


def _best_of_three(records, method: str, target: str) -> dict[str, Any]:
    hits, captured = [], []
    for r in records:
        preference = np.asarray(r.predicted[method][target])
        for triple in r.triples:
            values = np.asarray(triple.real[target])
            if method in triple.predicted:  # the value of each order, predicted
                got = values[int(np.argmin(triple.predicted[method][target]))]
            else:  # the order of the row sums of the pairwise preferences within the triple
                sub = preference[np.ix_(triple.sources, triple.sources)].sum(1)
                best = [triple.sources[i] for i in np.argsort(sub, kind="stable")]
                mapped = [[triple.sources[i] for i in o] for o in triple.orders]
                got = values[mapped.index(best)]
            hits.append(bool(got == values.min()))
            gap = values.max() - values.min()
            captured.append(float((values.max() - got) / gap) if gap > 0 else 1.0)
    if not hits:
        return {}
    return {
        "triples": len(hits),
        "best_of_3": float(np.mean(hits)),
        "gap_captured": float(np.mean(captured)),
    }


def summary_lines(summary: PhaseSummary) -> list[str]:
    """The summary as printed by ``perturbative phase-check``: per target and ``k``, each
    method's sign accuracy above the floor, Kendall's tau, best of 3! and seconds, the most
    right methods, and where the two anchored methods agree."""
    lines = []
    for target, by_k in summary.rows.items():
        lines.append(f"{target}:")
        for k, row in by_k.items():
            lines.append(
                f"  k={k}: {row.pairs} pairs ({row.above_floor} above the rounding floor, "
                f"median |real| {row.median_real:.2g}) in {row.tournaments} tournaments of "
                f"{row.sources} sources; training every pair both ways "
                f"{row.seconds_real:.0f} s"
            )
            for method, m in row.methods.items():
                text = (
                    f"    {method:22s} signs {_f(m.sign_accuracy_above_floor, '.3f')}, "
                    f"tau {_f(m.kendall_tau, '+.2f')}"
                )
                if m.triples:
                    text += (
                        f", best of 3! {_f(m.best_of_3, '.2f')} of {m.triples} "
                        f"(gap {_f(m.gap_captured, '.2f')})"
                    )
                if method in VALUE_METHODS:
                    text += (
                        f", Spearman {_f(m.spearman, '+.2f')}, slope "
                        f"{_f(m.calibration_slope, '.2g')}, median error "
                        f"{_f(m.median_relative_error, '.2g')}"
                    )
                if m.seconds is not None:
                    text += f", {m.seconds:.0f} s"
                lines.append(text)
            trusted = most_right(row.methods)
            if trusted:
                m = row.methods[trusted[0]]
                lines.append(
                    f"    most right here at k={k}: {', '.join(trusted)} (signs "
                    f"{m.sign_accuracy_above_floor:.3f}, tau {_f(m.kendall_tau, '+.2f')})"
                )
            if not math.isnan(row.anchors_agree):
                lines.append(
                    f"    the two anchored methods agree on {row.anchors_agree:.0%} of the pairs "
                    f"(known before any pair trains), right on "
                    f"{_f(row.right_where_anchors_agree, '.0%')} of those"
                )
    return lines


def most_right(methods: dict[str, MethodSummary]) -> list[str]:
    """The methods with the most signs right above the floor (then the larger tau), every one
    tied at the top named, in :data:`METHODS`' order, the coin aside; empty where no pair is
    above the floor."""

    def rank(m: MethodSummary) -> tuple[float, float]:
        return m.sign_accuracy_above_floor, -math.inf if math.isnan(
            m.kendall_tau
        ) else m.kendall_tau

    ranked = {
        n: rank(m)
        for n, m in methods.items()
        if n != "coin" and not math.isnan(m.sign_accuracy_above_floor)
    }
    if not ranked:
        return []
    top = max(ranked.values())
    order = {n: i for i, n in enumerate(METHODS)}
    return sorted(
        (n for n, r in ranked.items() if r == top), key=lambda n: order.get(n, len(order))
    )


def _total(values: list[float | None]) -> float | None:
    """The sum, or None where a value is missing (a method timed together with another)."""
    return None if any(v is None for v in values) else float(sum(values))


def _f(value: float | None, spec: str) -> str:
    """A number as ``spec``, or "n/a" (None, or NaN: no pairs to measure it on)."""
    return "n/a" if value is None or math.isnan(value) else format(value, spec)

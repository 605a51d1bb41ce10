"""The summary statistics of an order check: sign accuracy over all, settled and above-floor
pairs, Spearman correlation, calibration slope, median errors, the baselines (a fair coin, larger
gradient first, the plain-SGD bracket, the second-order prediction), best-order windows, and the
lines the command prints. Pure functions of the check's records.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from perturbative._core.stats import sign_accuracy as sign_accuracy
from perturbative._core.stats import spearman
from perturbative.pipeline.config import WINDOW_SIZES
from perturbative.pipeline.order_records import (
    Baselines,
    CheckpointRecord,
    HorizonSummary,
    OrderCheckRecord,
    PairRecord,
    ScaleSummary,
    ScoreRecord,
    ScoreSummary,
    WindowRecord,
    WindowSummary,
)
from perturbative.pipeline.order_sampling import PAIR_KINDS
from perturbative.pipeline.results import settled


def summarize(
    records: list[PairRecord],
    horizons: Sequence[int],
    floor: dict | None,
    windows: list[WindowRecord],
    seed: int,
    scores: Sequence[ScoreRecord] = (),
) -> ScaleSummary:
    """Accuracy, Spearman and calibration per kind and horizon, with the baselines; the
    windows' best orders; the scored examples'."""
    coin = np.random.default_rng(seed)
    out = ScaleSummary()
    for kind in (*PAIR_KINDS, "all"):
        chosen = [r for r in records if kind == "all" or r.kind == kind]
        if not chosen:
            continue
        predicted_all = np.array([r.predicted for r in chosen])
        second_all = np.array([r.second_order for r in chosen])
        sgd_all = np.array([r.sgd_bracket for r in chosen])
        norms = np.array([r.gradient_norms for r in chosen])
        heuristic_all = norms[:, 1] - norms[:, 0]  # larger gradient first predicted to lower O
        random_all = coin.choice([-1.0, 1.0], size=len(chosen))
        # the expansion's own error estimate: a pair is settled where the third-order term is
        # smaller than the whole prediction (none is, with --expansion 2: the term is zero)
        estimated = bool(np.any(predicted_all != second_all))
        settled_all = settled(predicted_all, second_all)
        per_h = []
        for n, h in enumerate(horizons):
            has = np.array([h in r.horizons for r in chosen])
            real = np.array([r.real_at(h) for r in chosen if h in r.horizons])
            predicted, second, sgd, heuristic, random_sign = (
                predicted_all[has],
                second_all[has],
                sgd_all[has],
                heuristic_all[has],
                random_all[has],
            )
            above = np.abs(real) > floor_at(floor, n)
            state = np.array([r.state_part for r in chosen])[has]
            # the prediction at this horizon, where one was made (at h = 0 every pair's own)
            carried = predicted
            predicted = np.array([r.predicted_at(h) for r in chosen if h in r.horizons])
            made = np.isfinite(predicted)
            p, r, ab = predicted[made], real[made], above[made]
            trusted = settled_all[has] if h == 0 and estimated else np.zeros(len(real), bool)
            size = np.where(np.abs(r) > 0, np.abs(r), np.nan)
            per_h.append(
                HorizonSummary(
                    horizon=h,
                    # which term dominates: medians over pairs, relative to the real difference
                    relative_error=_median(np.abs(p - r) / size),
                    second_order_relative_error=(
                        _median(np.abs(second - real) / np.where(real != 0, np.abs(real), np.nan))
                        if h == 0
                        else math.nan
                    ),
                    state_share=_median(np.abs(state[made]) / size),
                    curvature_share=_median(np.abs(p - state[made]) / size),
                    pairs=len(real),
                    predicted_pairs=int(made.sum()),
                    above_floor=int(above.sum()),
                    accuracy=sign_accuracy(p, r),
                    accuracy_above_floor=sign_accuracy(p[ab], r[ab]),
                    settled_pairs=int(trusted.sum()) if h == 0 and estimated else None,
                    accuracy_settled=sign_accuracy(predicted[trusted], real[trusted]),
                    spearman=spearman(p, r) if len(p) > 1 else math.nan,
                    calibration_slope=calibration_slope(p, r),
                    clipped=sum(r.clipped for r in chosen if h in r.horizons),
                    baselines=Baselines(
                        random=sign_accuracy(random_sign, real),
                        gradient_norm=sign_accuracy(heuristic, real),
                        # the second-order expansion is recorded for the swap itself (h = 0)
                        second_order=sign_accuracy(second, real) if h == 0 else math.nan,
                        second_order_above_floor=(
                            sign_accuracy(second[above], real[above]) if h == 0 else math.nan
                        ),
                        # does the sign of the swap's own prediction persist?
                        h0_prediction=sign_accuracy(carried, real),
                        sgd_bracket=sign_accuracy(sgd, real),
                        sgd_bracket_above_floor=sign_accuracy(sgd[above], real[above]),
                        state_part=sign_accuracy(state, real) if h == 0 else math.nan,
                    ),
                )
            )
        out.kinds[kind] = per_h
    for k in sorted({w.k for w in windows}):
        chosen = [w for w in windows if w.k == k]
        if chosen:
            out.windows[k] = WindowSummary(
                windows=len(chosen),
                best_picked=float(np.mean([w.best_is_real_best for w in chosen])),
                gap_share=float(np.mean([w.gap_share for w in chosen])),
                second_order_best_picked=float(
                    np.mean([w.second_order_best_is_real_best for w in chosen])
                ),
            )
    out.scores = score_summary(scores)
    return out


def score_summary(scores: Sequence[ScoreRecord]) -> ScoreSummary | None:
    """Sign accuracy of the scores, of their state part and of the plain-SGD score, and their
    median relative error, over examples with a real difference (None without any)."""
    kept = [s for s in scores if s.real == s.real and s.real != 0]
    if not kept:
        return None
    real = np.array([s.real for s in kept])

    def accuracy(name: str) -> float:
        return sign_accuracy(np.array([getattr(s, name) for s in kept]), real)

    predicted = np.array([s.predicted for s in kept])
    return ScoreSummary(
        examples=len(kept),
        accuracy=accuracy("predicted"),
        state_part=accuracy("state_part"),
        sgd=accuracy("sgd"),
        relative_error=float(np.median(np.abs(predicted - real) / np.abs(real))),
    )


def floor_at(floor: dict | None, n: int) -> float:
    """The float32 floor at the ``n``-th horizon (0 where none was measured there)."""
    values = (floor or {}).get("float32") or []
    return float(values[n]) if n < len(values) else 0.0


def _median(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else math.nan


def resummarize(result: OrderCheckRecord) -> OrderCheckRecord:
    """``result`` with every summary recomputed from its stored pairs and windows."""
    seed = result.options.get("seed", 0)
    for entry in result.checkpoints:
        for scale in entry.scales:
            scale.summary = summarize(
                scale.pairs, scale.horizons, scale.floor, scale.windows, seed, scale.scores
            )
    return result


def calibration_slope(predicted: np.ndarray, real: np.ndarray) -> float:
    """Least-squares slope of real on predicted through the origin: 1 when calibrated."""
    denominator = float(predicted @ predicted)
    return float(predicted @ real) / denominator if denominator > 0 else math.nan


def summary_lines(result: OrderCheckRecord) -> list[str]:
    """The check's summary as printable lines: each checkpoint at each lr, then (over several
    checkpoints) every checkpoint's swaps at the run's own lr pooled (:func:`pooled_summary`)."""
    lines = []
    for entry in result.checkpoints:
        for scale in entry.scales:
            lines.append(f"step {entry.step}, lr {scale.lr:.3g} (x{scale.scale:g}):")
            lines.extend(_scale_lines(scale.summary))
            if (scale.floor or {}).get("pairs"):
                lines.append(
                    f"  float32 rounding floor {floor_at(scale.floor, 0):.3g} at h=0 (90th "
                    f"percentile of |D_float32 - D_float64| over {scale.floor['pairs']} "
                    f"{scale.floor.get('kind', 'example')} pairs)"
                )
        lines.extend(_cost_lines(entry))
    pooled = pooled_summary(result)
    if pooled is not None:
        steps = ", ".join(str(entry.step) for entry in result.checkpoints)
        lines.append(f"all checkpoints (steps {steps}) pooled, each at its run's lr (x1):")
        lines.extend(_scale_lines(pooled))
    return lines


def pooled_summary(result: OrderCheckRecord) -> ScaleSummary | None:
    """The swaps, windows and scored examples of every checkpoint at the run's own lr
    (``h = 0`` only; no float32 floor, which is each checkpoint's own), summarized as one; None
    for a check of fewer than two checkpoints."""
    scales = [s for entry in result.checkpoints for s in entry.scales if s.scale == 1.0]
    if len(scales) < 2:
        return None
    pairs = [p for s in scales for p in s.pairs]
    return summarize(
        pairs,
        [0] if pairs else [],
        None,
        [w for s in scales for w in s.windows],
        result.options.get("seed", 0),
        [x for s in scales for x in s.scores],
    )


def _cost_lines(entry: CheckpointRecord) -> list[str]:
    """What one checkpoint's check cost: its seconds and peak memory, and the median seconds
    per pair (per scored example) predicting and really training."""
    if entry.seconds is None:
        return []
    memory = "n/a" if entry.peak_memory_gib is None else f"{entry.peak_memory_gib:.2f} GiB"
    line = f"  step {entry.step} took {entry.seconds:.0f} s, peak memory {memory}"
    pairs = [p.seconds for s in entry.scales for p in s.pairs if p.seconds]
    if pairs:
        predicted, real = np.median(np.asarray(pairs), axis=0)
        line += f"; a pair {predicted:.2f} s predicted, {real:.2f} s really trained (median)"
    scores = [x.seconds for s in entry.scales for x in s.scores if x.seconds]
    if scores:
        scoring = scores[0][0] / len(scores)
        real = float(np.median([x[1] for x in scores]))
        line += f"; a scored example {scoring:.2f} s scored, {real:.2f} s really trained"
    return [line]


def _scale_lines(s: ScaleSummary) -> list[str]:
    lines = []
    for kind in PAIR_KINDS:
        for row in s.rows(kind):
            b = row.baselines
            lines.append(
                f"  {kind:8s} h={row.horizon:<3d} pairs {row.pairs:<4d}"
                + (f"(predicted {row.predicted_pairs}) " if row.horizon > 0 else "")
                + f"sign acc {_f(row.accuracy)} (above fp32 floor "
                f"{_f(row.accuracy_above_floor)}, {row.above_floor})  spearman "
                f"{_f(row.spearman, '+.3f')}  slope {_f(row.calibration_slope)} | "
                f"random {_f(b.random)}  grad-norm {_f(b.gradient_norm)}  "
                f"sgd-bracket {_f(b.sgd_bracket)}  "
                + (
                    f"2nd-order {_f(b.second_order)}"
                    if row.horizon == 0
                    else f"h=0 prediction {_f(b.h0_prediction)}"
                )
            )
            if row.clipped:
                lines.append(
                    f"  {'':8s}        with the loop's clipping active: {row.clipped}; "
                    f"optimizer-state part alone {_f(b.state_part)}"
                )
            if row.settled_pairs is not None:
                lines.append(
                    f"  {'':8s}        settled (3rd-order term < |pred|): "
                    f"{row.settled_pairs} of {row.pairs}, sign acc "
                    f"{_f(row.accuracy_settled)}"
                )
            lines.append(
                f"  {'':8s}        median |pred - real| / |real| "
                f"{_f(row.relative_error)} (2nd order "
                f"{_f(row.second_order_relative_error)}); state part "
                f"{_f(row.state_share)}, curvature part "
                f"{_f(row.curvature_share)} of |real|"
            )
    if s.scores is not None:
        c = s.scores
        lines.append(
            f"  scores   {c.examples} examples moved across the run's next batches: sign "
            f"acc {_f(c.accuracy)}, median |pred - real| / |real| "
            f"{_f(c.relative_error)} | plain-SGD score {_f(c.sgd)}  state part alone "
            f"{_f(c.state_part)}"
        )
    for k in WINDOW_SIZES:
        w = s.windows.get(k)
        if w:
            lines.append(
                f"  k={k} windows: predicted best is the real best in "
                f"{_f(w.best_picked)} of {w.windows}, captures "
                f"{_f(w.gap_share)} of the real best-to-worst gap (2nd order: best in "
                f"{_f(w.second_order_best_picked)})"
            )
    return lines


def _f(value, spec: str = ".3f") -> str:
    """A number for the summary; ``n/a`` where JSON holds null (NaN)."""
    return "n/a" if value is None or value != value else format(value, spec)

"""Summary statistics of a sweep's results, read through :mod:`perturbative.pipeline.results`.

The report never recomputes brackets; what it computes are statistics of the recorded numbers:

* the log-log correlation of bracket norms with gradient norms: Pearson and Spearman correlation
  of ``log |[v_i, v_j]|`` with ``log(|g_i| |g_j|)`` over all pairs and checkpoints, and the slope
  of the least-squares line;
* attribute co-movement: at each checkpoint, the ``K x K`` Pearson correlation between
  attributes of the output shifts ``lr^2 J_f [v_i, v_j]`` taken over (pairs x test examples);
* per-parameter-tensor RMS of the brackets and gradients, and the order-sensitivity ranking.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from perturbative._core.errors import InputError
from perturbative._core.stats import pearson, spearman
from perturbative.pipeline.config import WINDOW_SIZES, examples_in_batch
from perturbative.pipeline.order_records import OrderCheckRecord
from perturbative.pipeline.phase_records import PhaseCheckRecord
from perturbative.pipeline.recorded_records import RecordedCheck
from perturbative.pipeline.results import (
    RERUN,
    load_results,
    load_thumbnails,
    producing_run_metrics,
    read_order_check,
    read_phase_check,
    read_recorded_check,
    results_dir_of,
    settled,
)


@dataclass
class ReportData:
    """The numbers of one results directory, stacked over the ``S`` checkpoint steps.

    Attributes:
        results_dir: the ``brackets/`` directory that was read.
        meta: ``meta.json`` as a dict.
        steps: ``(S,)`` checkpoint steps, ascending.
        attribute_names: ``K`` output names.
        pairs: ``(P, 2)`` bracket pairs ``(i, j)`` with ``i < j``.
        output_shift: ``(S, P, T, K)`` output shifts ``lr^2 J_f [v_i, v_j]``.
        outputs: ``(S, T, K)`` the model's outputs (logits).
        targets: ``(T, K)`` targets of the test batch, or None (keyword batches hold their own).
        grad_norm: ``(S, B)`` gradient norms ``|g_i|``.
        bracket_norm: ``(S, P)`` bracket norms ``|[v_i, v_j]|``.
        cancellation: ``(S, P)`` ``|[v_i, v_j]| / (|H_j g_i| + |H_i g_j|)`` (NaN if absent).
        bracket_layer_rms: ``(S, P, L)`` RMS of each bracket per parameter tensor, or None.
        grad_layer_rms: ``(S, B, L)`` RMS of each gradient per parameter tensor, or None.
        test_indices: ``(T,)`` positions of the test batch in the task's held-out split
            (dataset indices in sweeps before 0.4), or None.
        thumbnails: ``(B', C, H, W)`` images in ``[0, 1]`` of the bracket examples, or None.
        metrics: rows of ``metrics.jsonl`` (dicts with ``step`` and ``train_loss``), or None.
        ranking_indices: ``(S, M)`` training indices, most order-sensitive first, or None.
        ranking_scores: ``(S, M)`` their order-sensitivity scores, or None.
        order_check: the run's ``order_check/order_check.json`` (predictions against real
            reordered training), or None.
        recorded_check: a recorded run's ``order_check/recorded.json`` (typed), or None.
        phase_check: the run's ``phase_check/phase_check.json`` (phase orders predicted against
            real sequential training), or None.
        loss_shift: ``(S, P, T)`` each test example's loss shift ``lr^2 grad L_t . [v_i, v_j]``,
            or None (sweeps before it was recorded).
        texts: a text snippet of each test example, or None.
        tokens: per test example, the token behind each of the ``K`` columns, or None.
    """

    results_dir: Path
    meta: dict
    steps: np.ndarray
    attribute_names: list[str]
    pairs: np.ndarray
    output_shift: np.ndarray
    outputs: np.ndarray
    targets: np.ndarray | None
    grad_norm: np.ndarray
    bracket_norm: np.ndarray
    cancellation: np.ndarray
    bracket_layer_rms: np.ndarray | None
    grad_layer_rms: np.ndarray | None
    test_indices: np.ndarray | None
    thumbnails: np.ndarray | None
    metrics: list[dict] | None
    ranking_indices: np.ndarray | None = None
    ranking_scores: np.ndarray | None = None
    order_check: OrderCheckRecord | None = None
    recorded_check: RecordedCheck | None = None
    phase_check: PhaseCheckRecord | None = None
    loss_shift: np.ndarray | None = None
    texts: list[str] | None = None
    tokens: list[list[str]] | None = None


def load_report_data(results_dir: Path | str) -> ReportData:
    """Read and check a results directory (the run directory or its ``brackets/``).

    Raises:
        FileNotFoundError: no results there, or a step file listed in ``meta.json`` is missing.
        InputError: a file is corrupt or does not match ``docs/results-format.md``.
    """
    results_dir = results_dir_of(results_dir)
    meta, per_step = load_results(results_dir, framework="numpy")
    steps = list(per_step)
    arrays = list(per_step.values())

    def stack(key: str) -> np.ndarray | None:
        if not all(key in a for a in arrays):
            return None
        shapes = {a[key].shape for a in arrays}
        if len(shapes) != 1:
            raise InputError(f"{key} changes shape between step files {shapes}; {RERUN}")
        return np.stack([a[key].astype(np.float64) for a in arrays])

    names = [str(n) for n in meta["attribute_names"]]
    pairs = np.asarray(meta["pairs"], dtype=np.int64).reshape(-1, 2)
    shift = stack("output_shift")
    _check_shapes(arrays[0], len(pairs), shift.shape[2], len(names), int(meta["bracket_examples"]))
    cancellation = stack("cancellation")
    test_indices = arrays[0].get("test_indices")
    ranking, ranking_scores = _ranking(arrays)
    order_check = read_order_check(results_dir.parent)
    return ReportData(
        results_dir=results_dir,
        meta=meta,
        steps=np.asarray(steps, dtype=np.int64),
        attribute_names=names,
        pairs=pairs,
        output_shift=shift,
        outputs=stack("outputs"),
        targets=arrays[0]["targets"].astype(np.float64) if "targets" in arrays[0] else None,
        grad_norm=stack("grad_norm"),
        bracket_norm=stack("bracket_norm"),
        cancellation=cancellation if cancellation is not None else np.full((len(steps), 0), 0.0),
        bracket_layer_rms=stack("bracket_layer_rms"),
        grad_layer_rms=stack("grad_layer_rms"),
        test_indices=None if test_indices is None else test_indices.astype(np.int64),
        thumbnails=load_thumbnails(results_dir),
        metrics=producing_run_metrics(results_dir, meta),
        ranking_indices=None if ranking is None else ranking.astype(np.int64),
        ranking_scores=ranking_scores,
        order_check=order_check,
        # a recorded run's check before 0.4, shown only where no check of this version is
        recorded_check=read_recorded_check(results_dir.parent) if order_check is None else None,
        phase_check=read_phase_check(results_dir.parent),
        loss_shift=stack("loss_shift"),
        texts=meta.get("texts"),
        tokens=meta.get("tokens"),
    )


def _ranking(arrays: list[dict]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The ranking of every step that has one, stacked; a step without (a recorded run's last
    checkpoint, with no logged batches after it to move examples across) gets indices -1 and
    scores NaN."""
    ranked = [a for a in arrays if "ranking_indices" in a]
    if not ranked:
        return None, None
    shapes = {a["ranking_indices"].shape for a in ranked}
    if len(shapes) != 1:
        raise InputError(f"ranking_indices changes shape between step files {shapes}; {RERUN}")
    (shape,) = shapes
    indices = np.stack(
        [a["ranking_indices"] if "ranking_indices" in a else np.full(shape, -1) for a in arrays]
    )
    scores = np.stack(
        [
            a["ranking_scores"].astype(np.float64)
            if "ranking_indices" in a
            else np.full(shape, np.nan)
            for a in arrays
        ]
    )
    return indices.astype(np.int64), scores


def _check_shapes(arrays: dict, pairs: int, tests: int, outputs: int, bracketed: int) -> None:
    expected = {
        "output_shift": (pairs, tests, outputs),
        "grad_norm": (bracketed,),
        "bracket_norm": (pairs,),
    }
    for key, shape in expected.items():
        if arrays[key].shape != shape:
            raise InputError(
                f"{key} has shape {arrays[key].shape}, meta.json implies {shape}; {RERUN}"
            )


@dataclass
class NormCorrelation:
    """How bracket norms follow gradient norms, over all pairs and checkpoints.

    Attributes:
        pearson: Pearson correlation of ``log |[v_i, v_j]|`` and ``log(|g_i| |g_j|)``.
        spearman: Spearman rank correlation of the same (log-free: ranks ignore monotone maps).
        slope: slope of the least-squares line ``log |[v_i, v_j]| ~ a + slope log(|g_i| |g_j|)``.
        intercept: its intercept ``a``.
        count: number of (pair, checkpoint) points with positive finite norms.
    """

    pearson: float
    spearman: float
    slope: float
    intercept: float
    count: int


def norm_product(grad_norm: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """``|g_i| |g_j|`` for each pair: ``(S, B)``, ``(P, 2)`` -> ``(S, P)``."""
    return grad_norm[:, pairs[:, 0]] * grad_norm[:, pairs[:, 1]]


def bracket_gradient_correlation(
    grad_norm: np.ndarray, bracket_norm: np.ndarray, pairs: np.ndarray
) -> NormCorrelation:
    """Correlate ``log |[v_i, v_j]|`` with ``log(|g_i| |g_j|)`` over pairs and checkpoints.

    Args:
        grad_norm: ``(S, B)`` gradient norms.
        bracket_norm: ``(S, P)`` bracket norms.
        pairs: ``(P, 2)`` the pair ``(i, j)`` of each column of ``bracket_norm``.

    Returns:
        A :class:`NormCorrelation`; NaN fields when fewer than 3 usable points.
    """
    x, y = norm_product(grad_norm, pairs).ravel(), np.asarray(bracket_norm).ravel()
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    x, y = np.log(x[ok]), np.log(y[ok])
    if len(x) < 3:
        return NormCorrelation(math.nan, math.nan, math.nan, math.nan, int(len(x)))
    xc = x - x.mean()
    slope = float(xc @ (y - y.mean()) / (xc @ xc)) if xc @ xc > 0 else math.nan
    return NormCorrelation(
        pearson=pearson(x, y),
        spearman=spearman(x, y),
        slope=slope,
        intercept=float(y.mean() - slope * x.mean()),
        count=int(len(x)),
    )


def attribute_comovement(output_shift: np.ndarray) -> np.ndarray:
    """Correlation between attributes of the output shifts, one matrix per checkpoint.

    Args:
        output_shift: ``(S, P, T, K)`` shifts ``lr^2 J_f [v_i, v_j]``.

    Returns:
        ``(S, K, K)``: entry ``[s, a, b]`` is the Pearson correlation, over the ``P x T``
        (pair, test example) samples at checkpoint ``s``, of the shifts of attributes ``a`` and
        ``b``. An attribute whose shifts are all equal correlates 0 with the others, 1 with itself.
    """
    s, p, t, k = output_shift.shape
    x = np.nan_to_num(np.asarray(output_shift, dtype=np.float64).reshape(s, p * t, k))
    x = x - x.mean(axis=1, keepdims=True)
    norms = np.sqrt((x * x).sum(axis=1))  # (S, K)
    scale = np.where(norms > 0, norms, np.inf)
    corr = np.einsum("snk,snl->skl", x, x) / (scale[:, :, None] * scale[:, None, :])
    corr[:, np.arange(k), np.arange(k)] = 1.0
    return corr


def top_attribute_pairs(corr: np.ndarray, count: int = 10) -> list[tuple[int, int]]:
    """The attribute pairs ``(a, b)``, ``a < b``, with largest mean ``|r|`` over checkpoints.

    Args:
        corr: ``(S, K, K)`` from :func:`attribute_comovement`.
        count: how many pairs.
    """
    a, b = np.triu_indices(corr.shape[1], k=1)
    strength = np.abs(corr[:, a, b]).mean(axis=0)
    order = np.argsort(-strength, kind="stable")[:count]
    return [(int(a[n]), int(b[n])) for n in order]


def layer_rms_table(data: ReportData) -> list[dict]:
    """Per parameter tensor: RMS of brackets and gradients at the first and last checkpoint.

    RMS over pairs (examples) and tensor entries: ``sqrt(mean_p rms_{p,l}^2)``, which is the RMS
    of all bracket entries of tensor ``l`` across the ``P`` brackets.

    Returns:
        One dict per tensor with ``name``, ``size``, ``bracket_first``, ``bracket_last``,
        ``grad_last`` and ``ratio_last`` (bracket over gradient RMS at the last checkpoint).
        Empty when the step files hold no per-tensor arrays.
    """
    if data.bracket_layer_rms is None or data.grad_layer_rms is None:
        return []
    bracket = np.sqrt((data.bracket_layer_rms**2).mean(axis=1))  # (S, L)
    grad = np.sqrt((data.grad_layer_rms**2).mean(axis=1))
    names = list(data.meta.get("param_names") or [])
    sizes = list(data.meta.get("param_sizes") or [])
    rows = []
    for n in range(bracket.shape[1]):
        rows.append(
            {
                "name": str(names[n]) if n < len(names) else f"tensor {n}",
                "size": int(sizes[n]) if n < len(sizes) else None,
                "bracket_first": float(bracket[0, n]),
                "bracket_last": float(bracket[-1, n]),
                "grad_last": float(grad[-1, n]),
                "ratio_last": float(bracket[-1, n] / grad[-1, n]) if grad[-1, n] > 0 else math.nan,
            }
        )
    return rows


def ranking_table(data: ReportData, top: int = 5) -> list[dict]:
    """Per checkpoint: the ``top`` most order-sensitive training examples, the median score, and
    how many of the top 10 were also in the previous checkpoint's top 10 (ranking stability)."""
    if data.ranking_indices is None or data.ranking_indices.shape[1] == 0:
        return []
    rows, previous = [], None
    for step, indices, scores in zip(
        data.steps, data.ranking_indices, data.ranking_scores, strict=True
    ):
        if indices[0] < 0:  # this step was not ranked
            continue
        current = set(indices[:10].tolist())
        rows.append(
            {
                "step": int(step),
                "top": [
                    (int(i), float(v)) for i, v in zip(indices[:top], scores[:top], strict=True)
                ],
                "median": float(np.median(np.abs(scores))),
                "kept": None if previous is None else len(current & previous),
            }
        )
        previous = current
    return rows


def order_check_rows(check: OrderCheckRecord) -> list[dict]:
    """One row per (checkpoint, lr scale, kind, horizon) of an order check's summaries."""
    rows = []
    for entry in check.checkpoints:
        for scale in entry.scales:
            for kind in ("logged", "example", "batch", "exchange"):
                for row in scale.summary.rows(kind):
                    rows.append(
                        {"step": entry.step, "scale": scale.scale, "kind": kind, **asdict(row)}
                    )
    return rows


def order_check_scores(check: OrderCheckRecord) -> list[dict]:
    """One row per checkpoint whose examples were scored: the scores' summary."""
    return [
        {"step": entry.step, **asdict(scale.summary.scores)}
        for entry in check.checkpoints
        for scale in entry.scales
        if scale.summary.scores is not None
    ]


def order_check_windows(check: OrderCheckRecord) -> list[dict]:
    """One row per (checkpoint, lr scale, k) of an order check's best-order windows."""
    return [
        {"step": entry.step, "scale": scale.scale, "k": k, **asdict(scale.summary.windows[k])}
        for entry in check.checkpoints
        for scale in entry.scales
        for k in WINDOW_SIZES
        if k in scale.summary.windows
    ]


KIND_NAMES = {
    "logged": "the run's own batch pairs",
    "batch": "minibatch pairs",
    "exchange": "exchanges",
    "example": "example pairs (eval mode)",
    "example_in_batch": "example pairs (in a batch)",
}


def pooled_order_checks(
    checks: list[OrderCheckRecord], pieces: str | None = None
) -> dict[str, dict]:
    """Sign accuracy at ``h = 0`` and best-of-``k!`` picks at the run's own lr, pooled per run
    over several order checks (``order_check.json`` as read by ``read_order_check_file``).

    With ``pieces`` (``"follow"`` or ``"ignore"``) only checks whose predictions took that
    setting are pooled (checks written before the option ignored pieces); the others are counted
    as skipped. The same pairs predicted both ways are never pooled together.

    Two checks with the same seed draw the same pairs: a pair met twice (same run, step, kind
    and real difference, bit for bit; a window likewise by its real values) counts once. Only
    third-order checks are pooled; others (``--expansion 2``, or written before the option) are
    counted as skipped.

    Returns:
        ``{run: {"checks", "skipped", "duplicates", "steps", "kinds", "windows"}}``: ``kinds``
        maps each pair kind to ``pairs``, ``right``, ``accuracy``, ``standard_error``
        (binomial), ``above_floor``, ``accuracy_above_floor`` (real difference above the check's
        float32 floor), ``settled`` and ``accuracy_settled``; ``windows`` maps ``k`` to
        ``windows``, ``picked`` and ``gap_share`` (mean).
    """
    seen: dict[str, dict] = {}
    for check in checks:
        run = seen.setdefault(
            check.run,
            {
                "checks": 0,
                "skipped": 0,
                "duplicates": 0,
                "steps": set(),
                "pairs": {},
                "windows": {},
            },
        )
        options = check.options
        if options.get("expansion") != 3 or (
            pieces is not None and options.get("pieces", "ignore") != pieces
        ):
            run["skipped"] += 1
            continue
        run["checks"] += 1
        for entry in check.checkpoints:
            for scale in entry.scales:
                if scale.scale != 1.0 or 0 not in scale.horizons:
                    continue
                run["steps"].add(entry.step)
                floor = scale.floor_at(0)
                for pair in scale.pairs:
                    real = pair.real_at(0)
                    key = (entry.step, _pooled_kind(pair.kind, options), real)
                    run["duplicates"] += key in run["pairs"]
                    run["pairs"][key] = (pair, real, abs(real) > floor)
                for window in scale.windows:
                    key = (entry.step, window.k, tuple(window.real))
                    run["duplicates"] += key in run["windows"]
                    run["windows"][key] = window
    return {name: _pooled(run) for name, run in seen.items()}


def _pooled_kind(kind: str, options: dict) -> str:
    """A pair's kind for pooling: single examples trained in a batch (``--examples in-batch``)
    apart from those trained alone in eval mode (``alone``, and checks made before the option)."""
    return "example_in_batch" if kind == "example" and examples_in_batch(options) else kind


def _pooled(run: dict) -> dict:
    kinds = {}
    for kind in KIND_NAMES:
        chosen = [(p, r, above) for (_, k, _), (p, r, above) in run["pairs"].items() if k == kind]
        if not chosen:
            continue
        predicted = np.array([p.predicted for p, *_ in chosen])
        right = np.sign(predicted) == np.sign([r for _, r, _ in chosen])
        above = np.array([a for *_, a in chosen])
        trusted = settled(predicted, np.array([p.second_order for p, *_ in chosen]))
        accuracy = float(right.mean())
        kinds[kind] = {
            "pairs": len(chosen),
            "right": int(right.sum()),
            "accuracy": accuracy,
            "standard_error": math.sqrt(accuracy * (1 - accuracy) / len(chosen)),
            "above_floor": int(above.sum()),
            "accuracy_above_floor": float(right[above].mean()) if above.any() else math.nan,
            "settled": int(trusted.sum()),
            "accuracy_settled": float(right[trusted].mean()) if trusted.any() else math.nan,
        }
    windows = {}
    for k in WINDOW_SIZES:
        chosen = [w for (_, size, _), w in run["windows"].items() if size == k]
        if chosen:
            windows[k] = {
                "windows": len(chosen),
                "picked": sum(w.best_is_real_best for w in chosen),
                "gap_share": float(np.mean([w.gap_share for w in chosen])),
            }
    return {
        "checks": run["checks"],
        "skipped": run["skipped"],
        "duplicates": run["duplicates"],
        "steps": sorted(run["steps"]),
        "kinds": kinds,
        "windows": windows,
    }


def pooled_lines(pooled: dict[str, dict], sign_target: float, best_target: float) -> list[str]:
    """:func:`pooled_order_checks` as printable lines, each figure beside its target."""
    lines = []
    for name, run in pooled.items():
        lines.append(
            f"{name}: {run['checks']} third-order checks at steps "
            f"{', '.join(map(str, run['steps'])) or 'none'}; {run['duplicates']} pairs or "
            f"windows met twice, counted once; {run['skipped']} other checks skipped"
        )
        for kind, c in run["kinds"].items():
            lines.append(
                f"  {KIND_NAMES[kind]:26s} {c['right']} of {c['pairs']} = {c['accuracy']:.3f} "
                f"+- {c['standard_error']:.3f} (target {sign_target:g}: "
                f"{'met' if c['accuracy'] >= sign_target else 'not met'}); above the float32 "
                f"floor {c['accuracy_above_floor']:.3f} ({c['above_floor']}); settled "
                f"{c['accuracy_settled']:.3f} ({c['settled']})"
            )
        for k, w in run["windows"].items():
            met = (
                ""
                if k != 3
                else f" (target {best_target:g}: "
                + ("met)" if w["picked"] >= best_target * w["windows"] else "not met)")
            )
            lines.append(
                f"  best of {k}! picked           {w['picked']} of {w['windows']} = "
                f"{w['picked'] / w['windows']:.3f}{met}; share of the real best-to-worst gap "
                f"{w['gap_share']:.3f}"
            )
    return lines

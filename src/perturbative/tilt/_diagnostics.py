"""How far tilt weights can be trusted: effective sample size, largest weight share, warnings.

With mean-1 weights ``w_i`` (:func:`perturbative.tilt.tilt_weights`), the Kish effective sample
size ``ESS = (sum w)^2 / sum w^2`` counts how many unweighted examples the weighted set is worth,
and the largest share ``max w / sum w`` says whether one example dominates ``p'``.
:func:`check_tilt` reports both (also per batch) and warns with :class:`TiltWarning` past the
thresholds below.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from perturbative._core.checks import offending_indices

#: Kish effective sample size below this fraction of the data set triggers a :class:`TiltWarning`.
#: ``ESS / N = 1 / (1 + Var_p(w))``: at 0.1 the tilted estimates carry the statistical weight of a
#: tenth of the data, and for a Gaussian ``dH`` it means ``lambda^2 Var(dH) > ln 10 = 2.3``,
#: far outside the regime where the first-order prediction holds.
MIN_ESS_FRACTION = 0.1
#: Largest share ``max_i w_i / sum_j w_j`` above which a single example holds too much of ``p'``
#: (checked only when the data set has more than ``1 / MAX_WEIGHT_SHARE`` examples, so uniform
#: weights never trigger it): at 5% one example is a twentieth of the target distribution and
#: any model of ``p'`` is mostly a model of that example.
MAX_WEIGHT_SHARE = 0.05


class TiltWarning(UserWarning):
    """The tilt is too large for the weighted data to represent ``p'`` faithfully."""


def _as_weights(weights: Tensor | Sequence[float]) -> Tensor:
    w = torch.as_tensor(weights).detach().double().flatten()
    if w.numel() == 0:
        raise ValueError("weights is empty")
    bad = ~torch.isfinite(w) | (w < 0)
    if bad.any():
        raise ValueError(
            f"weights must be finite and nonnegative; not at indices {offending_indices(bad)}"
        )
    if w.sum() <= 0:
        raise ValueError("weights sum to zero: no example carries any weight")
    return w


def effective_sample_size(weights: Tensor | Sequence[float]) -> float:
    """Kish's effective sample size ``(sum_i w_i)^2 / sum_i w_i^2``.

    Equal weights give the number of examples; one nonzero weight gives 1. A weighted mean of
    ``n`` independent values of variance ``s^2`` has variance ``s^2 / ESS``. Apply it to a whole
    data set's weights or to one batch's.

    Args:
        weights: ``(n,)`` nonnegative weights, not all zero.

    Returns:
        A float in ``[1, n]``.
    """
    w = _as_weights(weights)
    return float(w.sum() ** 2 / (w * w).sum())


def max_weight_share(weights: Tensor | Sequence[float]) -> float:
    """The largest share of the total weight held by one example, ``max_i w_i / sum_j w_j``.

    Args:
        weights: ``(n,)`` nonnegative weights, not all zero.

    Returns:
        A float in ``[1/n, 1]``.
    """
    w = _as_weights(weights)
    return float(w.max() / w.sum())


@dataclass(frozen=True)
class TiltDiagnostics:
    """How trustworthy a set of tilt weights is.

    Attributes:
        n: number of examples.
        effective_sample_size: Kish ESS over the data set.
        ess_fraction: ``effective_sample_size / n``, equal to ``1 / (1 + Var(w))`` for mean-1
            weights.
        max_weight: largest weight, in units of the mean weight.
        max_weight_share: ``max_i w_i / sum_j w_j``.
        batch_ess_mean: mean Kish ESS of the given batches (``nan`` if none were given).
        batch_ess_min: smallest Kish ESS of a given batch (``nan`` if none were given).
        problems: human-readable reasons the tilt is too large; empty if it looks fine.
    """

    n: int
    effective_sample_size: float
    ess_fraction: float
    max_weight: float
    max_weight_share: float
    batch_ess_mean: float
    batch_ess_min: float
    problems: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        out = asdict(self)
        out["problems"] = list(self.problems)
        return out


def check_tilt(
    weights: Tensor | Sequence[float],
    *,
    target_batch_size: float | None = None,
    batches: Sequence[Sequence[int]] | None = None,
    min_ess_fraction: float = MIN_ESS_FRACTION,
    max_share: float = MAX_WEIGHT_SHARE,
    warn: bool = True,
) -> TiltDiagnostics:
    """Diagnose tilt weights and warn (:class:`TiltWarning`) when they are too large to trust.

    Three tests, each with its reason:

    * ``ESS / N < min_ess_fraction`` (default 0.1): the weighted data carries the information
      of fewer than a tenth of its examples, so ``p'`` is estimated from a few of them.
    * ``max_weight_share > max_share`` (default 0.05, only when ``N > 1 / max_share``): one
      example holds more than a twentieth of ``p'``; the model will memorise it.
    * ``max_i w_i > target_batch_size`` (if given): an example outweighs a whole batch; the
      adjusted-batch sampler gives it a batch of its own, a step ``w_i / B_avg`` times larger than
      an ordinary one.

    Args:
        weights: ``(N,)`` tilt weights of the whole data set (any scale; reported in units of
            their mean).
        target_batch_size: ``B_avg``, to compare the largest weight with.
        batches: optional lists of indices (e.g. ``list(sampler)``) for per-batch Kish ESS.
        min_ess_fraction: threshold of the first test.
        max_share: threshold of the second test.
        warn: emit the :class:`TiltWarning`; ``False`` only returns the diagnostics.

    Returns:
        :class:`TiltDiagnostics`, whose ``problems`` lists the failed tests.
    """
    w = _as_weights(weights)
    w = w / w.mean()
    n = w.numel()
    ess = effective_sample_size(w)
    share = max_weight_share(w)
    wmax = float(w.max())
    problems = []
    if ess / n < min_ess_fraction:
        problems.append(
            f"effective sample size {ess:.1f} is {ess / n:.1%} of the {n} examples "
            f"(threshold {min_ess_fraction:.0%}): p' rests on a few examples"
        )
    if n * max_share > 1 and share > max_share:
        problems.append(
            f"one example holds {share:.1%} of the total weight (threshold {max_share:.0%})"
        )
    if target_batch_size is not None and wmax > target_batch_size:
        problems.append(
            f"the largest weight {wmax:.1f} exceeds the target batch size {target_batch_size}: "
            "that example outweighs a whole batch (the sampler gives it a batch of its own, or "
            "merges it with the next examples when min_batch_size asks for more)"
        )
    batch_ess = [effective_sample_size(w[list(b)]) for b in batches or () if len(b) > 0]
    diag = TiltDiagnostics(
        n=n,
        effective_sample_size=ess,
        ess_fraction=ess / n,
        max_weight=wmax,
        max_weight_share=share,
        batch_ess_mean=sum(batch_ess) / len(batch_ess) if batch_ess else math.nan,
        batch_ess_min=min(batch_ess) if batch_ess else math.nan,
        problems=tuple(problems),
    )
    if warn and problems:
        warnings.warn(
            "the tilt is too large to trust: "
            + "; ".join(problems)
            + ". Reduce the strength lambda, or collect more data where exp(-dH) is large.",
            TiltWarning,
            stacklevel=2,
        )
    return diag

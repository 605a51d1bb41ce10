"""Tilted training: learning ``p'(x) ~ p(x) exp(-lambda dH(x))`` by weighting per-example losses.

A model fitted to an empirical distribution ``p(x) ~ exp(-H(x))`` by a per-example loss ``L_x``
(diffusion, GAN, classifier) is steered to the tilted distribution

    p'(x) = p(x) exp(-lambda dH(x)) / Z(lambda),    Z(lambda) = E_p[exp(-lambda dH)]

by weighting each example's loss with ``w(x) = exp(-lambda dH(x)) / Z``. Over ``N`` training
examples the normaliser is the empirical one, so the weights have mean 1:

    log w_i = -lambda dH_i - logsumexp_j(-lambda dH_j) + log N,    (1/N) sum_i w_i = 1.

A weight is then "how many ordinary examples this example counts as", and a target batch size
``B_avg`` is measured in ordinary examples. The minimiser of ``sum_i w_i L_i`` is the model of the
weighted empirical distribution ``p'_N(i) = w_i / N``, which converges to ``p'`` as ``N`` grows
while the weights stay moderate. This module holds the weights, the per-step loss
``sum_j w_j L_j / B_avg`` (see :class:`perturbative.tilt.AdjustedBatchSampler` for batches
whose weights sum to about ``B_avg``), diagnostics of how far the weights can be trusted, and
the first-order prediction ``d<O>/dlambda = -Cov_p(O, dH)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from perturbative._core.checks import offending_indices


def _evaluate_dH(dH: Tensor | Callable[[Any], Tensor], data: Any) -> Tensor:
    if callable(dH) and not isinstance(dH, Tensor):
        if data is None:
            raise ValueError(
                "dH is a function, so pass data=... (the whole data set, or the tensor it takes) "
                "to evaluate it on, or pass a precomputed (N,) tensor of dH values"
            )
        dH = dH(data)
    if not isinstance(dH, Tensor):
        raise TypeError(
            f"dH must be a tensor of shape (N,) or a function returning one, not {dH!r}"
        )
    if dH.ndim != 1 or dH.numel() == 0:
        raise ValueError(
            f"dH must have shape (N,) with N >= 1 (one value per example), got {tuple(dH.shape)}"
        )
    if not (dH.is_floating_point() or dH.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"dH must be a real tensor, got dtype {dH.dtype}")
    bad = ~torch.isfinite(dH.detach().double())
    if bad.any():
        raise ValueError(
            f"dH is NaN or infinite at indices {offending_indices(bad)}; fix or drop those "
            "examples "
            "(an example to be excluded entirely can be left out of the data set)"
        )
    return dH.detach()


def log_tilt_weights(
    dH: Tensor | Callable[[Any], Tensor], strength: float = 1.0, data: Any = None
) -> Tensor:
    """Logarithms of the tilt weights, ``log w_i = -lambda dH_i - logsumexp(-lambda dH) + log N``.

    Computed in float64, so that ``lambda dH`` of any size (``|lambda dH| = 10^4``, say) is exact
    where ``exp`` would overflow.

    Args:
        dH: ``(N,)`` tensor of the perturbation ``dH(x_i)`` for each example, or a function that
            maps ``data`` to it.
        strength: ``lambda``; ``0`` gives all weights 1.
        data: what a callable ``dH`` is called on; ignored for a tensor.

    Returns:
        ``(N,)`` float64 log-weights with ``logsumexp = log N``.

    Raises:
        ValueError: if ``dH`` is NaN or infinite anywhere (the message names the indices), or
            not of shape ``(N,)``.
    """
    if not math.isfinite(strength):
        raise ValueError(f"strength must be a finite number, got {strength}")
    values = _evaluate_dH(dH, data).double()
    logits = -strength * values
    return logits - torch.logsumexp(logits, 0) + math.log(values.numel())


def tilt_weights(
    dH: Tensor | Callable[[Any], Tensor], strength: float = 1.0, data: Any = None
) -> Tensor:
    """Per-example weights ``w_i = exp(-lambda dH_i) / Z`` normalised to mean 1 over the data.

    With ``Z = (1/N) sum_j exp(-lambda dH_j)``, training on ``sum_i w_i L_i`` fits
    ``p'(x) ~ p(x) exp(-lambda dH(x))``. Adding a constant to ``dH`` changes nothing.

    Args:
        dH: ``(N,)`` tensor of ``dH(x_i)``, or a function returning it from ``data``.
        strength: ``lambda``, the size of the tilt.
        data: the data set (or the tensor a callable ``dH`` takes), e.g. all ``N`` inputs.

    Returns:
        ``(N,)`` nonnegative weights with mean 1, in ``dH``'s dtype if floating (else float32).

    Raises:
        ValueError: if ``dH`` is NaN or infinite (names the offending indices) or has the wrong
            shape, or ``data`` is missing for a callable ``dH``.

    Example:
        >>> w = tilt_weights(torch.tensor([0.0, 0.0, math.log(2.0)], dtype=torch.float64))
        >>> w  # exp(-dH) = (1, 1, 1/2), rescaled to mean 1
        tensor([1.2000, 1.2000, 0.6000], dtype=torch.float64)
    """
    values = _evaluate_dH(dH, data)
    dtype = values.dtype if values.is_floating_point() else torch.float32
    return log_tilt_weights(values, strength).exp().to(dtype)


def weighted_loss(per_sample_losses: Tensor, weights: Tensor, target_batch_size: float) -> Tensor:
    """The per-step loss ``sum_j w_j L_j / B_avg`` of a batch.

    ``L_j`` is each example's own loss (a per-example term, not divided by the batch length).
    With batches whose adjusted size ``B = sum_j w_j`` averages ``B_avg`` (see
    :class:`perturbative.tilt.AdjustedBatchSampler`), the expected step equals a plain step of
    ``B_avg`` examples drawn from ``p'``. Uniform weights 1 and ``B_avg`` equal to the batch length
    give the ordinary mean loss. Under ``DistributedDataParallel``, which averages gradients over
    ranks, pass the per-rank target ``B_avg / world_size``.

    Args:
        per_sample_losses: ``(b,)`` losses ``L_j`` of the batch's examples.
        weights: ``(b,)`` their weights ``w_j`` (from :func:`tilt_weights`, indexed by the batch).
        target_batch_size: ``B_avg > 0``, in ordinary examples.

    Returns:
        Scalar tensor; differentiable in ``per_sample_losses``.

    Raises:
        ValueError: on mismatched or non-1-D shapes or a nonpositive target.
    """
    if per_sample_losses.ndim != 1:
        raise ValueError(
            "per_sample_losses must have shape (b,): compute the loss with reduction='none' and "
            f"reduce any other dimensions per example; got {tuple(per_sample_losses.shape)}"
        )
    if weights.shape != per_sample_losses.shape:
        raise ValueError(
            f"weights has shape {tuple(weights.shape)} but per_sample_losses has "
            f"{tuple(per_sample_losses.shape)}; index the weights with the batch's indices"
        )
    if not target_batch_size > 0:
        raise ValueError(f"target_batch_size must be positive, got {target_batch_size}")
    w = weights.detach().to(device=per_sample_losses.device, dtype=per_sample_losses.dtype)
    return (w * per_sample_losses).sum() / target_batch_size


def first_order_shift(observable: Tensor, dH: Tensor) -> Tensor:
    """First-order change of an expectation under the tilt: ``d<O>/dlambda = -Cov_p(O, dH)``.

    For ``<O>_lambda = E_p[O exp(-lambda dH)] / E_p[exp(-lambda dH)]``, the derivative at
    ``lambda = 0`` is ``-(E_p[O dH] - E_p[O] E_p[dH])``, so
    ``<O>_lambda ~ <O>_0 - lambda Cov_p(O, dH) + O(lambda^2)``. ``E_p`` is the mean over the
    ``N`` examples (population covariance, divided by ``N``).

    Args:
        observable: ``(N,)`` or ``(N, ...)`` values ``O(x_i)``; trailing dimensions are separate
            observables.
        dH: ``(N,)`` values ``dH(x_i)``.

    Returns:
        ``-Cov_p(O, dH)``: a scalar tensor, or shape ``(...)`` for a multi-dimensional observable,
        in the observable's dtype.

    Example:
        >>> x = torch.tensor([-1.0, 1.0], dtype=torch.float64)
        >>> first_order_shift(x, x)  # Var(x) = 1, so <x> moves at rate -1
        tensor(-1., dtype=torch.float64)
    """
    values = _evaluate_dH(dH, None).double()
    if observable.shape[:1] != values.shape:
        raise ValueError(
            f"observable has shape {tuple(observable.shape)}; its leading dimension must match "
            f"dH's {tuple(values.shape)} (one value per example)"
        )
    obs = observable.detach().double()
    centred = values - values.mean()
    shape = (-1,) + (1,) * (obs.ndim - 1)
    cov = (obs * centred.reshape(shape)).mean(0)
    dtype = observable.dtype if observable.is_floating_point() else torch.float64
    return (-cov).to(dtype)

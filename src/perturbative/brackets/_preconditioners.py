"""Diagonal preconditioners of adaptive optimizers, as the fields' metric ``-P g``.

Adam's update divides the gradient by ``sqrt(v_hat) + eps``; frozen at a point, that is a
diagonal ``P`` and the preconditioned fields are ``-P g_x``. Their bracket is
``P H_y P g_x - P H_x P g_y`` (:func:`perturbative.brackets.preconditioned_bracket`).
"""

from __future__ import annotations

import warnings

import torch

from perturbative._core.checks import Params
from perturbative.brackets._optimizers import adam_denominator, functional_optimizer


def adam_preconditioner(
    optimizer: torch.optim.Optimizer, params: Params, gradient: Params | None = None
) -> Params:
    """Adam's diagonal preconditioner ``P = 1 / (sqrt(v_hat) + eps)`` from its state.

    ``v_hat = exp_avg_sq / (1 - beta2^step)`` is the bias-corrected second moment. ``params``
    must hold the same tensor objects the optimizer updates (``dict(model.named_parameters())``,
    frozen parameters left out). The learning rate is left out: ``lr`` enters the swap as
    ``lr^2``.

    Where the second moment is still zero (embedding rows never seen, units dead since warm-up,
    conv taps that only see padding), ``1 / eps`` is not what Adam does: its next step on such a
    coordinate is ``lr (1-b1)/(1-b1^(t+1)) sqrt((1-b2^(t+1))/(1-b2)) sign(g)`` for any gradient
    ``g`` much larger than ``eps``, a step of fixed size. With ``gradient`` (the gradient of the
    next step, keyed like ``params``) ``P`` is the denominator of that next real step,
    ``1 / (sqrt(v'_hat) + eps)`` with ``v' = b2 v + (1-b2) g^2`` and the step count ``t+1``,
    everywhere; Adam's next update is then exactly ``-lr m'_hat P``. Without it, coordinates with
    a zero second moment get ``P = 0`` (no gradient has moved them yet) and a
    :class:`RuntimeWarning` says how many there are and where.

    Raises:
        ValueError: if the optimizer is not Adam-like or has not taken a step for a parameter.
    """
    read = functional_optimizer(optimizer, params)
    if not read.adaptive:
        raise ValueError(
            f"adam_preconditioner needs an Adam/AdamW optimizer, not {read.name} (param groups "
            "with betas and eps)"
        )
    out, unseen = {}, {}
    for name, p in params.items():
        try:
            pre, zero = adam_denominator(
                read.hyper[name],
                read.state[name],
                None if gradient is None else gradient[name],
            )
        except ValueError:
            raise ValueError(
                f"the optimizer has no second-moment state for {name!r} yet: take at least one "
                "optimizer step before building the preconditioner"
            ) from None
        if bool(zero.any()):
            unseen[name] = int(zero.sum())
        out[name] = pre.to(p.dtype)
    if unseen:
        total = sum(unseen.values())
        where = ", ".join(f"{k} ({n})" for k, n in list(unseen.items())[:4])
        warnings.warn(
            f"Adam's second moment is zero on {total} coordinates ({where}"
            f"{', ...' if len(unseen) > 4 else ''}): no gradient has reached them yet, and "
            "1/eps would not be what Adam does (its next step moves such a coordinate by a "
            "fixed-size sign step); they get P = 0. Pass gradient=<the next step's gradient> "
            "for the preconditioner of that step",
            RuntimeWarning,
            stacklevel=2,
        )
    return out

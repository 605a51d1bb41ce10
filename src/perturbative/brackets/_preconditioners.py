"""Diagonal preconditioners of adaptive optimizers, as the fields' metric ``-P g``.

Adam's update divides the gradient by ``sqrt(v_hat) + eps``; frozen at a point, that is a
diagonal ``P`` and the preconditioned fields are ``-P g_x``. Their bracket is
``P H_y P g_x - P H_x P g_y`` (:func:`perturbative.brackets.preconditioned_bracket`).
"""

from __future__ import annotations

import torch

from perturbative._core.checks import Params


def adam_preconditioner(optimizer: torch.optim.Optimizer, params: Params) -> Params:
    """Adam's diagonal preconditioner ``P = 1 / (sqrt(v_hat) + eps)`` from its state.

    ``v_hat = exp_avg_sq / (1 - beta2^step)`` is the bias-corrected second moment. ``params``
    must hold the same tensor objects the optimizer updates (``dict(model.named_parameters())``).
    The learning rate is left out: ``lr`` enters the swap as ``lr^2``.

    Raises:
        ValueError: if the optimizer is not Adam-like or has not taken a step for a parameter.
    """
    by_id = {}
    for group in optimizer.param_groups:
        if "betas" not in group or "eps" not in group:
            raise ValueError(
                "adam_preconditioner needs an Adam/AdamW optimizer (param groups with betas, eps)"
            )
        for p in group["params"]:
            by_id[id(p)] = (p, group)
    out = {}
    for name, p in params.items():
        if id(p) not in by_id:
            raise ValueError(
                f"params[{name!r}] is not a tensor the optimizer updates; pass "
                "dict(model.named_parameters()) of the model the optimizer was built on"
            )
        _, group = by_id[id(p)]
        state = optimizer.state.get(p, {})
        if "exp_avg_sq" not in state:
            raise ValueError(
                f"the optimizer has no second-moment state for {name!r} yet: take at least one "
                "optimizer step before building the preconditioner"
            )
        step = float(state["step"])
        v_hat = state["exp_avg_sq"] / (1 - group["betas"][1] ** step)
        out[name] = (1.0 / (v_hat.sqrt() + group["eps"])).detach().to(p.dtype)
    return out

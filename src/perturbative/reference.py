"""Slow, obviously correct twins of the fast code, for tests, docs and users.

Each function does the textbook computation one pair at a time with plain autograd, so that the
engines in :mod:`perturbative.brackets` can be checked against it. Conventions as in
:mod:`perturbative.brackets`: ``[v_x, v_y] = H_y g_x - H_x g_y``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from perturbative._core import calls
from perturbative._core.calls import LossFn
from perturbative._core.checks import Params
from perturbative._core.engines import differentiable_kernels


def _loss(model: nn.Module, loss_fn: LossFn, params: Params, example) -> Tensor:
    """The loss of one example: a ``(inputs, *targets)`` tuple or a keyword batch (a mapping)."""
    state = calls.fixed_state(model, params)
    if isinstance(example, Mapping):
        return loss_fn(calls.call_model(model, params, state, example), example)
    return loss_fn(calls.call_model(model, params, state, example[0]), *example[1:])


def reference_bracket(
    model: nn.Module,
    loss_fn: LossFn,
    params: Params,
    x: tuple[Tensor, ...],
    y: tuple[Tensor, ...],
    preconditioner: Params | None = None,
) -> Params:
    """``[v_x, v_y]`` by two fresh double-backward gradients and two HVPs (one example each).

    With ``preconditioner`` ``P``: ``P H_y P g_x - P H_x P g_y``.
    """
    names = list(params)
    leaves = [params[k] for k in names]
    one = preconditioner or {k: torch.ones_like(v) for k, v in params.items()}
    with differentiable_kernels():  # attention kernels that have second derivatives
        g_x = torch.autograd.grad(_loss(model, loss_fn, params, x), leaves, create_graph=True)
        g_y = torch.autograd.grad(_loss(model, loss_fn, params, y), leaves, create_graph=True)
        pg_x = [one[k] * g.detach() for k, g in zip(names, g_x, strict=True)]
        pg_y = [one[k] * g.detach() for k, g in zip(names, g_y, strict=True)]
        h_y_gx = torch.autograd.grad(g_y, leaves, grad_outputs=pg_x)
        h_x_gy = torch.autograd.grad(g_x, leaves, grad_outputs=pg_y)
    return {k: one[k] * (a - b) for k, a, b in zip(names, h_y_gx, h_x_gy, strict=True)}


def reference_bracket_matrix(
    model: nn.Module,
    loss_fn: LossFn,
    params: Params,
    data: tuple[Tensor, ...],
    preconditioner: Params | None = None,
) -> Params:
    """The naive all-pairs loop: :func:`reference_bracket` for every pair ``i < j``.

    ``n(n-1)/2`` pairs, each recomputing both gradients: ``n(n-1)`` gradient passes and
    ``n(n-1)`` HVPs. Returns ``(n, n, *param.shape)`` per key.
    """
    rows = data if isinstance(data, Mapping) else dict(enumerate(data))
    n = next(iter(rows.values())).shape[0]

    def example(i: int):
        one = {k: t[i : i + 1] for k, t in rows.items()}
        return one if isinstance(data, Mapping) else tuple(one.values())

    out = {
        k: torch.zeros((n, n, *v.shape), dtype=v.dtype, device=v.device) for k, v in params.items()
    }
    for i in range(n):
        for j in range(i + 1, n):
            b = reference_bracket(model, loss_fn, params, example(i), example(j), preconditioner)
            for k in params:
                out[k][i, j] = b[k]
                out[k][j, i] = -b[k]
    return out


def dense_hessian(model: nn.Module, loss_fn: LossFn, params: Params, example) -> Tensor:
    """The full Hessian of one example's loss over the flattened parameters (tiny models only)."""
    names = list(params)
    shapes = [params[k].shape for k in names]
    sizes = [params[k].numel() for k in names]
    flat = torch.cat([params[k].detach().reshape(-1) for k in names])

    def loss_of_flat(theta: Tensor) -> Tensor:
        pieces = torch.split(theta, sizes)
        p = {k: t.reshape(s) for k, t, s in zip(names, pieces, shapes, strict=True)}
        return _loss(model, loss_fn, p, example)

    with differentiable_kernels():
        return torch.autograd.functional.hessian(loss_of_flat, flat)


def flatten(vector: Params, names: list[str] | None = None) -> Tensor:
    """Concatenate a parameter dict into one vector (trailing dims flattened)."""
    names = names or list(vector)
    return torch.cat([vector[k].reshape(-1) for k in names])

"""Hessian-vector products ``H_A u`` of a minibatch loss, and of single examples in bulk.

``H_A`` is the Hessian of ``L_A = mean_{x in A} L_x`` with respect to the parameters. Two ways to
compute ``H u`` exactly, both without forming ``H``:

* forward-over-reverse: ``jvp(grad(L), (theta,), (u,))``, one forward-mode pass through the
  gradient computation; batches well under ``vmap``;
* reverse-over-reverse (double backward): ``grad(<grad L(theta), u>)`` through a gradient built
  with ``create_graph=True``; the graph can be reused for many ``u``.

Both give the same numbers up to rounding; the tests check them against each other.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import grad, jvp, vmap

from perturbative.fields import (
    _forward_or_fallback,
    batch_loss,
    gradients_with_graph,
    resolve_engine,
)
from perturbative.functional import (
    LossFn,
    Params,
    check_batchnorm,
    check_data,
    check_finite,
    check_params,
    example_loss,
    fixed_state,
    grad_or_zero,
)


def _check_vector(params: Params, vector: Params, what: str, leading: int = 0) -> None:
    if set(vector) != set(params):
        missing, extra = set(params) - set(vector), set(vector) - set(params)
        raise ValueError(f"{what} must have the keys of params: missing {missing}, extra {extra}")
    for k, v in vector.items():
        if v.shape[leading:] != params[k].shape:
            raise ValueError(
                f"{what}[{k!r}] has shape {tuple(v.shape)}; expected {tuple(params[k].shape)}"
                + (f" after {leading} leading dimension(s)" if leading else "")
            )


def hvp(
    model: nn.Module,
    loss_fn: LossFn,
    params: Params,
    data: tuple[Tensor, ...],
    vector: Params,
    *,
    engine: str = "auto",
    batch_context: Tensor | None = None,
) -> Params:
    """``H_A u``: the Hessian of the minibatch loss ``mean_{x in A} L_x`` times ``vector``.

    Args:
        data: the minibatch ``A``, a tuple of tensors with leading dimension ``n``.
        vector: ``u``, a dict keyed and shaped like ``params``.

    Returns:
        dict keyed and shaped like ``params``, detached.

    Example:
        For ``L_x(w) = 1/2 (w . x - y)^2`` the Hessian is ``x x^T``, so ``hvp`` returns
        ``x (x . u)``.
    """
    params = check_params(model, params)
    data, _ = check_data(data)
    _check_vector(params, vector, "vector")
    check_batchnorm(model, batch_context)
    requested, engine = engine, resolve_engine(engine, params, batch_context)
    f = batch_loss(model, loss_fn, fixed_state(model, params), batch_context)
    out = None
    if engine == "forward":
        detached = {k: v.detach() for k, v in params.items()}
        out = _forward_or_fallback(
            requested, lambda: jvp(lambda p: grad(f)(p, *data), (detached,), (vector,))[1]
        )
    if out is None:
        names = list(params)
        g = grad_or_zero([f(params, *data)], [params[k] for k in names], create_graph=True)
        dot = sum((gi * vector[k]).sum() for gi, k in zip(g, names, strict=True))
        out = dict(zip(names, grad_or_zero([dot], [params[k] for k in names]), strict=True))
    out = {k: v.detach() for k, v in out.items()}
    check_finite(out, "a Hessian-vector product")
    return out


def per_example_hvps(
    model: nn.Module,
    loss_fn: LossFn,
    params: Params,
    data: tuple[Tensor, ...],
    vector: Params,
    *,
    engine: str = "auto",
    chunk_size: int | None = None,
    batch_context: Tensor | None = None,
) -> tuple[Params, Params]:
    """Gradients ``g_x`` and products ``H_x u`` for every example ``x``, with one fixed ``u``.

    Returns:
        ``(gradients, products)``: dicts keyed like ``params`` with shape ``(n, *param.shape)``.
    """
    params = check_params(model, params)
    data, n = check_data(data)
    _check_vector(params, vector, "vector")
    check_batchnorm(model, batch_context)
    requested, engine = engine, resolve_engine(engine, params, batch_context)
    result = None
    if engine == "forward":
        f = example_loss(model, loss_fn, fixed_state(model, params))
        detached = {k: v.detach() for k, v in params.items()}

        def grad_and_hvp(*example):
            return jvp(lambda p: grad(f)(p, *example), (detached,), (vector,))

        in_dims = (0,) * len(data)
        result = _forward_or_fallback(
            requested,
            lambda: vmap(grad_and_hvp, in_dims=in_dims, chunk_size=chunk_size)(*data),
        )
    if result is not None:
        grads, products = result
    else:
        names = list(params)
        gs, hs = [], []
        for i in range(n):
            (gi,) = gradients_with_graph(
                model, loss_fn, params, tuple(t[i : i + 1] for t in data), batch_context
            )
            dot = sum((gi[k] * vector[k]).sum() for k in names)
            hi = grad_or_zero([dot], [params[k] for k in names])
            gs.append({k: gi[k].detach() for k in names})
            hs.append(dict(zip(names, hi, strict=True)))
        grads = {k: torch.stack([g[k] for g in gs]) for k in names}
        products = {k: torch.stack([h[k] for h in hs]) for k in names}
    check_finite(grads, "a per-example gradient")
    check_finite(products, "a Hessian-vector product")
    return grads, products

"""Lie brackets of training examples.

Conventions (see :mod:`perturbative.functional` for the call shape): example ``x`` is the field
``v_x = -g_x = -grad L_x``, a step is ``theta + lr v_x``, and

    [v_x, v_y] = (v_x . grad) v_y - (v_y . grad) v_x = H_y g_x - H_x g_y,

with ``H_x`` the Hessian of ``L_x``. Training on x then y, minus y then x, moves the parameters by
``lr^2 [v_x, v_y] + O(lr^3)``. The bracket is antisymmetric, ``[v, v] = 0``, and bilinear: for
minibatches ``A, B`` with mean fields ``v_A, v_B``, ``[v_A, v_B]`` is the mean of the pairwise
brackets and costs two Hessian-vector products.

With a frozen diagonal preconditioner ``P`` (Adam's ``1 / (sqrt(v_hat) + eps)``) the fields are
``-P g`` and the bracket is ``P H_y P g_x - P H_x P g_y``.

A bracket is a dict keyed like ``params``; ``bracket_matrix`` gives shape ``(n, n, *param.shape)``
with ``[i, j] = [v_i, v_j]``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import grad, jvp, vmap

from perturbative.fields import (
    gradients_with_graph,
    mean_gradient,
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
)
from perturbative.hvp import _check_vector, hvp


class ForwardADUnsupportedError(RuntimeError):
    """An operation in the model has no forward-mode derivative (needed by ``engine="forward"``)."""


@dataclass
class BracketTerms:
    """The pieces of an all-pairs bracket computation.

    Attributes:
        gradients: ``g_i``, shape ``(n, *param.shape)`` per key.
        hessian_gradients: ``[j, i] = P H_j P g_i`` (``P = 1`` without preconditioner), shape
            ``(n, n, *param.shape)`` per key.
    """

    gradients: Params
    hessian_gradients: Params

    def brackets(self) -> Params:
        """``[i, j] = [v_i, v_j] = P H_j P g_i - P H_i P g_j``, shape ``(n, n, *param.shape)``."""
        return {k: h.transpose(0, 1) - h for k, h in self.hessian_gradients.items()}


def _one_example(data, what: str) -> tuple[Tensor, ...]:
    data, n = check_data(data, what)
    if n != 1:
        raise ValueError(
            f"{what} holds {n} examples; bracket() takes one example each (leading dimension 1). "
            "Use minibatch_bracket() for batches or bracket_matrix() for all pairs"
        )
    return data


def minibatch_bracket(
    model: nn.Module,
    loss_fn: LossFn,
    params: Params,
    batch_a: tuple[Tensor, ...],
    batch_b: tuple[Tensor, ...],
    *,
    preconditioner: Params | None = None,
    engine: str = "auto",
    batch_context: Tensor | None = None,
) -> Params:
    """``[v_A, v_B] = H_B g_A - H_A g_B`` for the mean fields of two minibatches.

    Equal to the mean over ``x in A, y in B`` of ``[v_x, v_y]``; costs two gradients and two
    Hessian-vector products.

    Args:
        batch_a, batch_b: tuples of tensors with leading dimensions ``n_A``, ``n_B``.
        preconditioner: optional frozen diagonal ``P`` keyed and shaped like ``params``.

    Returns:
        dict keyed and shaped like ``params``.
    """
    params = check_params(model, params)
    batch_a, _ = check_data(batch_a, "batch_a")
    batch_b, _ = check_data(batch_b, "batch_b")
    if preconditioner is not None:
        _check_vector(params, preconditioner, "preconditioner")
    one = preconditioner if preconditioner is not None else None
    kw = dict(engine=engine, batch_context=batch_context)
    g_a = mean_gradient(model, loss_fn, params, batch_a, batch_context=batch_context)
    g_b = mean_gradient(model, loss_fn, params, batch_b, batch_context=batch_context)
    if one is not None:
        g_a = {k: one[k] * v for k, v in g_a.items()}
        g_b = {k: one[k] * v for k, v in g_b.items()}
    h_b_ga = hvp(model, loss_fn, params, batch_b, g_a, **kw)
    h_a_gb = hvp(model, loss_fn, params, batch_a, g_b, **kw)
    out = {k: h_b_ga[k] - h_a_gb[k] for k in params}
    if one is not None:
        out = {k: one[k] * v for k, v in out.items()}
    check_finite(out, "the bracket")
    return out


def bracket(
    model: nn.Module,
    loss_fn: LossFn,
    params: Params,
    x: tuple[Tensor, ...],
    y: tuple[Tensor, ...],
    *,
    engine: str = "auto",
    batch_context: Tensor | None = None,
) -> Params:
    """``[v_x, v_y] = H_y g_x - H_x g_y`` for two single examples.

    Args:
        x, y: data tuples holding one example each (leading dimension 1).

    Returns:
        dict keyed and shaped like ``params``.

    Example:
        For least squares ``L_x(w) = 1/2 (w . a - b)^2`` with ``A_x = a a^T``, ``b_x = b a``:
        ``[v_x, v_y](w) = (A_y A_x - A_x A_y) w - A_y b_x + A_x b_y``.
    """
    x, y = _one_example(x, "x"), _one_example(y, "y")
    return minibatch_bracket(
        model, loss_fn, params, x, y, engine=engine, batch_context=batch_context
    )


def preconditioned_bracket(
    model: nn.Module,
    loss_fn: LossFn,
    params: Params,
    x: tuple[Tensor, ...],
    y: tuple[Tensor, ...],
    preconditioner: Params,
    *,
    engine: str = "auto",
    batch_context: Tensor | None = None,
) -> Params:
    """Bracket of the preconditioned fields ``-P g``: ``P H_y P g_x - P H_x P g_y``.

    ``P`` is a frozen positive diagonal, e.g. :func:`adam_preconditioner`; the learning rate is
    not part of ``P`` (x-then-y minus y-then-x is ``lr^2`` times this, to leading order, for a
    preconditioned method whose preconditioner does not change between the two steps).
    """
    x, y = _one_example(x, "x"), _one_example(y, "y")
    return minibatch_bracket(
        model,
        loss_fn,
        params,
        x,
        y,
        preconditioner=preconditioner,
        engine=engine,
        batch_context=batch_context,
    )


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


def bracket_terms(
    model: nn.Module,
    loss_fn: LossFn,
    params: Params,
    data: tuple[Tensor, ...],
    *,
    preconditioner: Params | None = None,
    engine: str = "auto",
    memory_budget: int | None = None,
    batch_context: Tensor | None = None,
) -> BracketTerms:
    """Gradients and all ``n^2`` Hessian-gradient products; :meth:`BracketTerms.brackets`.

    Each example's gradient is computed once (``n`` gradient evaluations, ``n(n-1)`` HVPs,
    never ``n^2`` gradient passes). The forward engine ``vmap``s ``jvp(grad L_j, P g_i)`` over
    ``i`` and over chunks of ``j`` sized to ``memory_budget`` bytes; the double-backward engine
    keeps each ``g_j``'s graph and backpropagates all ``P g_i`` through it in one batched call.

    Args:
        memory_budget: bytes the forward engine may use for one chunk (default: half the free
            GPU memory on CUDA, 2 GiB otherwise).

    Raises:
        ForwardADUnsupportedError: ``engine="forward"`` and an op has no forward-mode AD.
    """
    params = check_params(model, params)
    data, n = check_data(data)
    check_batchnorm(model, batch_context)
    if preconditioner is not None:
        _check_vector(params, preconditioner, "preconditioner")
    requested = engine
    engine = resolve_engine(engine, params, batch_context)
    if engine == "forward":
        try:
            return _terms_forward(model, loss_fn, params, data, preconditioner, memory_budget)
        except (RuntimeError, NotImplementedError) as err:
            op = _forward_ad_failure(err)
            if op is None:
                raise
            message = (
                f"forward-mode AD is not implemented for {op}, which the model uses; "
                "falling back to engine='double_backward'"
            )
            if requested == "forward":
                raise ForwardADUnsupportedError(message.replace("falling back to", "pass")) from err
            warnings.warn(message, RuntimeWarning, stacklevel=2)
    return _terms_double_backward(model, loss_fn, params, data, preconditioner, batch_context)


def bracket_matrix(
    model: nn.Module,
    loss_fn: LossFn,
    params: Params,
    data: tuple[Tensor, ...],
    *,
    preconditioner: Params | None = None,
    engine: str = "auto",
    memory_budget: int | None = None,
    batch_context: Tensor | None = None,
) -> Params:
    """All pairwise brackets ``[i, j] = [v_i, v_j]`` of ``n`` examples.

    Antisymmetric with a zero diagonal. See :func:`bracket_terms` for cost and engines.

    Returns:
        dict keyed like ``params``; values of shape ``(n, n, *param.shape)``.
    """
    terms = bracket_terms(
        model,
        loss_fn,
        params,
        data,
        preconditioner=preconditioner,
        engine=engine,
        memory_budget=memory_budget,
        batch_context=batch_context,
    )
    out = terms.brackets()
    check_finite(out, "the bracket matrix")
    return out


def _forward_ad_failure(err: BaseException) -> str | None:
    text = str(err)
    if "forward" not in text.lower() or (
        "not implemented" not in text.lower() and "not supported" not in text.lower()
    ):
        return None
    for token in text.replace("'", " ").replace('"', " ").split():
        if token.startswith("aten::") or token.startswith("torch."):
            return token.rstrip(".,:")
    return "an operation (" + text.splitlines()[0][:120] + ")"


def _default_budget(params: Params) -> int:
    device = next(iter(params.values())).device
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    return 2 * 2**30


def _terms_forward(model, loss_fn, params, data, preconditioner, memory_budget) -> BracketTerms:
    f = example_loss(model, loss_fn, fixed_state(model, params))
    detached = {k: v.detach() for k, v in params.items()}
    in_dims = (None,) + (0,) * len(data)
    n = data[0].shape[0]
    grads = vmap(grad(f), in_dims=in_dims)(detached, *data)
    check_finite(grads, "a per-example gradient")
    tangents = grads if preconditioner is None else {k: preconditioner[k] * grads[k] for k in grads}

    def hessian_times(example, vectors):
        # H_j applied to every row of `vectors`: vmap over tangents of jvp(grad L_j).
        def one(v):
            return jvp(lambda p: grad(f)(p, *example), (detached,), (v,))[1]

        return vmap(one)(vectors)

    numel = sum(v.numel() for v in detached.values())
    itemsize = next(iter(detached.values())).element_size()
    budget = memory_budget if memory_budget is not None else _default_budget(detached)
    per_row = 6 * n * numel * itemsize  # tangents, duals, gradients and results of one row j
    rows = max(1, min(n, budget // max(per_row, 1)))
    chunks = []
    for start in range(0, n, rows):
        example = tuple(t[start : start + rows] for t in data)
        chunk = vmap(hessian_times, in_dims=(0, None))(example, tangents)
        chunks.append(chunk)
    products = {k: torch.cat([c[k] for c in chunks]) for k in detached}
    if preconditioner is not None:
        products = {k: preconditioner[k] * v for k, v in products.items()}
    check_finite(products, "a Hessian-vector product")
    return BracketTerms(grads, products)


def _terms_double_backward(
    model, loss_fn, params, data, preconditioner, batch_context
) -> BracketTerms:
    names = list(params)
    n = data[0].shape[0]
    graphs = gradients_with_graph(model, loss_fn, params, data, batch_context)
    grads = {k: torch.stack([g[k].detach() for g in graphs]) for k in names}
    check_finite(grads, "a per-example gradient")
    tangents = grads if preconditioner is None else {k: preconditioner[k] * grads[k] for k in names}
    rows = []
    for j in range(n):
        # One backward through g_j's graph, batched over all n tangents P g_i.
        outs = torch.autograd.grad(
            [graphs[j][k] for k in names],
            [params[k] for k in names],
            grad_outputs=[tangents[k] for k in names],
            is_grads_batched=True,
        )
        rows.append(dict(zip(names, outs, strict=True)))
        graphs[j] = None  # each graph is its own forward pass: free it once used
    products = {k: torch.stack([r[k] for r in rows]) for k in names}
    if preconditioner is not None:
        products = {k: preconditioner[k] * v for k, v in products.items()}
    check_finite(products, "a Hessian-vector product")
    return BracketTerms(grads, products)


def pair_indices(n: int) -> list[tuple[int, int]]:
    """The ``n(n-1)/2`` pairs ``(i, j)`` with ``i < j``, in row-major order."""
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def upper_pairs(matrix: Params) -> Params:
    """Rows ``[i, j]``, ``i < j``, of an ``(n, n, ...)`` bracket matrix: ``(n(n-1)/2, ...)``."""
    n = next(iter(matrix.values())).shape[0]
    idx = pair_indices(n)
    rows = torch.tensor([i for i, _ in idx], dtype=torch.long)
    cols = torch.tensor([j for _, j in idx], dtype=torch.long)
    return {k: v[rows, cols] for k, v in matrix.items()}


def count_pairs(n: int) -> int:
    """Number of distinct brackets among ``n`` examples."""
    return math.comb(n, 2)

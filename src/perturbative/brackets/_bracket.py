"""Lie brackets of training examples.

Conventions (see :mod:`perturbative._core.calls` for the call shape): example ``x`` is the field
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

Engines (``engine=``), equal up to rounding: ``"forward"`` vmaps forward-over-reverse HVPs
``jvp(grad L_j, g_i)`` over chunks of pairs sized to a memory budget (the GPU default);
``"double_backward"`` reuses each example's gradient graph (the CPU default, where batching does
not pay; ``docs/benchmarks.md`` has the measurements). An op without a forward-mode
derivative makes ``"forward"`` raise :class:`ForwardADUnsupportedError` naming it, and ``"auto"``
warn and use ``"double_backward"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import grad, vmap

from perturbative._core import calls, checks
from perturbative._core.calls import LossFn
from perturbative._core.checks import Params
from perturbative._core.engines import run_engine
from perturbative.brackets._gradients import gradients_with_graph, mean_gradient
from perturbative.brackets._hvp import hessian_vector_product, hvp


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
    data, n = checks.check_data(data, what)
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
    params = checks.check_params(model, params)
    batch_a, _ = checks.check_data(batch_a, "batch_a")
    batch_b, _ = checks.check_data(batch_b, "batch_b")
    if preconditioner is not None:
        checks.check_vector(params, preconditioner, "preconditioner")
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
    checks.check_finite(out, "the bracket")
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

    Each example's gradient is computed once (``n`` gradient evaluations and ``n^2`` HVPs, the
    ``n`` diagonal ones included, never ``n^2`` gradient passes). Engines:

    * ``"forward"``: ``vmap`` over ordered pairs ``(j, i)`` of ``jvp(grad L_j, P g_i)``, in chunks
      of pairs sized to ``memory_budget`` (each pair holds a few parameter-sized tensors).
    * ``"double_backward"``: keeps each ``g_j``'s graph (``create_graph=True``) and
      backpropagates each ``P g_i`` through it, one pair at a time.

    Args:
        preconditioner: optional frozen diagonal ``P`` keyed and shaped like ``params``.
        engine: ``"auto"`` (``"forward"`` on CUDA, ``"double_backward"`` otherwise),
            ``"forward"`` or ``"double_backward"``.
        memory_budget: bytes the forward engine may use for one chunk of pairs (default: half
            the free GPU memory on CUDA, 2 GiB otherwise). The results themselves, ``n^2``
            parameter-sized tensors, are not part of the budget.

    Returns:
        :class:`BracketTerms` with ``gradients`` ``(n, *shape)`` and ``hessian_gradients``
        ``(n, n, *shape)`` per key, detached.

    Raises:
        ForwardADUnsupportedError: ``engine="forward"`` and an op has no forward-mode AD (with
            ``engine="auto"`` a ``RuntimeWarning`` names the op and the double-backward engine
            is used instead).
    """
    params, data = _prepare(model, params, data, preconditioner, batch_context)
    return run_engine(
        engine,
        params,
        forward=lambda: _terms_forward(
            model, loss_fn, params, data, preconditioner, memory_budget, diagonal=True
        ),
        double_backward=lambda: _terms_double_backward(
            model, loss_fn, params, data, preconditioner, batch_context
        ),
        batch_context=batch_context,
    )


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
    """All pairwise brackets ``[i, j] = [v_i, v_j] = P H_j P g_i - P H_i P g_j`` of ``n`` examples.

    Antisymmetric with a zero diagonal. Costs ``n`` gradient evaluations and ``n(n-1)`` HVPs for
    the ``n(n-1)/2`` brackets; the naive loop (two fresh gradients and two HVPs per bracket,
    :func:`perturbative.reference.reference_bracket_matrix`) costs ``n(n-1)`` of each.

    The double-backward engine computes each bracket as ONE backward pass through the retained
    graphs of ``g_i`` and ``g_j`` together, ``grad(<g_j, sg(P g_i)> - <g_i, sg(P g_j)>)``, so the
    two HVPs of a pair share their output accumulation. On CPU an HVP is bound by memory traffic
    over parameter-sized tensors, which batching does not reduce, so ``"auto"`` picks
    ``"double_backward"`` there and ``"forward"`` (batched, one kernel launch for many pairs) on
    CUDA. Timings against the naive loop: ``benchmarks/bracket_matrix.py``, quoted in
    ``docs/benchmarks.md``.

    Args: as :func:`bracket_terms`.

    Returns:
        dict keyed like ``params``; values of shape ``(n, n, *param.shape)``, detached.
    """
    params, data = _prepare(model, params, data, preconditioner, batch_context)
    out = run_engine(
        engine,
        params,
        forward=lambda: _terms_forward(
            model, loss_fn, params, data, preconditioner, memory_budget, diagonal=False
        ).brackets(),
        double_backward=lambda: _brackets_double_backward(
            model, loss_fn, params, data, preconditioner, batch_context
        ),
        batch_context=batch_context,
    )
    checks.check_finite(out, "the bracket matrix")
    return out


def _prepare(model, params, data, preconditioner, batch_context):
    params = checks.check_params(model, params)
    data, _ = checks.check_data(data)
    checks.check_train_mode(model, batch_context)
    if preconditioner is not None:
        checks.check_vector(params, preconditioner, "preconditioner")
    return params, data


def _default_budget(params: Params) -> int:
    device = next(iter(params.values())).device
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    return 2 * 2**30


# Parameter-sized tensors one vmapped pair (or example) holds at its peak: the tangent, its
# dual, the gradient and the gradient's tangent, the result and slack for temporaries.
_TENSORS_PER_PAIR = 6


def pairs_per_chunk(params: Params, memory_budget: int | None, n_pairs: int) -> int:
    """How many ``(j, i)`` pairs the forward engine vmaps at once under ``memory_budget`` bytes.

    At least 1 (a budget below one pair's footprint still runs, one pair at a time).
    """
    numel = sum(v.numel() for v in params.values())
    itemsize = next(iter(params.values())).element_size()
    budget = memory_budget if memory_budget is not None else _default_budget(params)
    per_pair = _TENSORS_PER_PAIR * numel * itemsize
    return max(1, min(n_pairs, budget // max(per_pair, 1)))


def _terms_forward(
    model, loss_fn, params, data, preconditioner, memory_budget, diagonal: bool
) -> BracketTerms:
    f = calls.example_loss(model, loss_fn, calls.fixed_state(model, params))
    detached = {k: v.detach() for k, v in params.items()}
    in_dims = (None,) + (0,) * len(data)
    n = calls.num_examples(data)
    grads = vmap(grad(f), in_dims=in_dims, chunk_size=pairs_per_chunk(detached, memory_budget, n))(
        detached, *data
    )
    checks.check_finite(grads, "a per-example gradient")
    tangents = grads if preconditioner is None else {k: preconditioner[k] * grads[k] for k in grads}

    forward, _ = hessian_vector_product(f, detached)

    def hessian_times(vector, *example):
        # H_j u = jvp(grad L_j, u): forward-over-reverse for one pair (j, u = P g_i).
        return forward(vector, *example)[1]

    pairs = [(j, i) for j in range(n) for i in range(n) if diagonal or i != j]
    products = {k: v.new_zeros((n, *v.shape)) for k, v in grads.items()}
    size = pairs_per_chunk(detached, memory_budget, len(pairs))
    for start in range(0, len(pairs), size):
        chunk = pairs[start : start + size]
        device = next(iter(detached.values())).device
        rows = torch.tensor([j for j, _ in chunk], device=device)
        cols = torch.tensor([i for _, i in chunk], device=device)
        vectors = {k: v[cols] for k, v in tangents.items()}
        out = vmap(hessian_times)(vectors, *calls.take_all(data, rows))
        for k in products:
            products[k][rows, cols] = out[k]
    if preconditioner is not None:
        products = {k: preconditioner[k] * v for k, v in products.items()}
    checks.check_finite(products, "a Hessian-vector product")
    return BracketTerms(grads, products)


def _graphs_and_tangents(model, loss_fn, params, data, preconditioner, batch_context):
    names = list(params)
    graphs = gradients_with_graph(model, loss_fn, params, data, batch_context)
    grads = {k: torch.stack([g[k].detach() for g in graphs]) for k in names}
    checks.check_finite(grads, "a per-example gradient")
    tangents = grads if preconditioner is None else {k: preconditioner[k] * grads[k] for k in names}
    return graphs, grads, tangents


def _terms_double_backward(
    model, loss_fn, params, data, preconditioner, batch_context
) -> BracketTerms:
    names = list(params)
    leaves = [params[k] for k in names]
    n = calls.num_examples(data)
    graphs, grads, tangents = _graphs_and_tangents(
        model, loss_fn, params, data, preconditioner, batch_context
    )
    products = {k: v.new_empty((n, *v.shape)) for k, v in grads.items()}
    for j in range(n):
        outputs = [graphs[j][k] for k in names]
        for i in range(n):
            # H_j (P g_i): one backward through g_j's retained graph.
            row = calls.grad_or_zero(
                outputs,
                leaves,
                grad_outputs=[tangents[k][i] for k in names],
                retain_graph=i < n - 1,
            )
            for k, value in zip(names, row, strict=True):
                products[k][j, i] = value
        graphs[j] = None  # each graph is its own forward pass: free it once used
    if preconditioner is not None:
        products = {k: preconditioner[k] * v for k, v in products.items()}
    checks.check_finite(products, "a Hessian-vector product")
    return BracketTerms(grads, products)


def _brackets_double_backward(model, loss_fn, params, data, preconditioner, batch_context):
    names = list(params)
    leaves = [params[k] for k in names]
    n = calls.num_examples(data)
    graphs, grads, tangents = _graphs_and_tangents(
        model, loss_fn, params, data, preconditioner, batch_context
    )
    negated = {k: -v for k, v in tangents.items()}
    out = {k: v.new_empty((n, n, *v.shape[1:])) for k, v in grads.items()}
    for value in out.values():  # every off-diagonal entry is written below
        value.diagonal(dim1=0, dim2=1).zero_()
    for i in range(n):
        for j in range(i + 1, n):
            # [v_i, v_j] = H_j P g_i - H_i P g_j = grad(<g_j, sg(P g_i)> - <g_i, sg(P g_j)>):
            # one backward through both retained graphs.
            last = i == n - 2  # after the pair (n-2, n-1) no graph is needed again
            value = calls.grad_or_zero(
                [graphs[j][k] for k in names] + [graphs[i][k] for k in names],
                leaves,
                grad_outputs=[tangents[k][i] for k in names] + [negated[k][j] for k in names],
                retain_graph=not last,
            )
            for k, b in zip(names, value, strict=True):
                b = b if preconditioner is None else preconditioner[k] * b
                out[k][i, j] = b
                out[k][j, i] = -b
        graphs[i] = None  # g_i's graph is used by pairs (i, j > i) and (h < i, i): all done
    return out


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

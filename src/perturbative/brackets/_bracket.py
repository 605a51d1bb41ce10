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
from perturbative.brackets._hvp import hessian_vector_product, hvp, retained_hvp


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


def bracket(
    model: nn.Module,
    loss_fn: LossFn,
    params: Params,
    x: tuple[Tensor, ...],
    y: tuple[Tensor, ...],
    *,
    preconditioner: Params | None = None,
    engine: str = "auto",
    batch_context: Tensor | None = None,
) -> Params:
    """``[v_x, v_y] = H_y g_x - H_x g_y`` for two examples or two minibatches.

    Convention: ``v = -grad L``; ``x`` then ``y`` minus ``y`` then ``x`` moves the parameters by
    ``lr^2 [v_x, v_y] + O(lr^3)`` under plain SGD. For minibatches ``A, B`` the fields are the
    mean fields, and ``[v_A, v_B]`` is the mean over ``x in A, y in B`` of ``[v_x, v_y]``
    (bilinearity); a model in train mode normalises each minibatch by its own BatchNorm
    statistics, as a training step does. With a frozen diagonal ``preconditioner`` ``P``
    (:func:`perturbative.adam_preconditioner`) the fields are ``-P g`` and the bracket is
    ``P H_y P g_x - P H_x P g_y``; the learning rate is not part of ``P``.

    Costs two gradients and two Hessian-vector products, whatever the batch sizes.

    Args:
        x: a data tuple (or keyword batch) with leading dimension ``n_x``: one example, or a
            minibatch.
        y: the same for ``y``.
        preconditioner: optional frozen diagonal ``P`` keyed and shaped like ``params``.
        engine: ``"auto"``, ``"forward"`` or ``"double_backward"``.
        batch_context: inputs of a batch each single example joins (train-mode BatchNorm; see
            :mod:`perturbative._core.calls`).

    Returns:
        dict keyed and shaped like ``params``, detached.

    Example:
        For least squares ``L_x(w) = 1/2 (w . a - b)^2`` with ``A_x = a a^T``, ``b_x = b a``:
        ``[v_x, v_y](w) = (A_y A_x - A_x A_y) w - A_y b_x + A_x b_y``.
    """
    params = checks.check_params(model, params)
    x, _ = checks.check_data(x, "x")
    y, _ = checks.check_data(y, "y")
    if preconditioner is not None:
        checks.check_vector(params, preconditioner, "preconditioner")

    def scaled(v: Params) -> Params:
        return v if preconditioner is None else {k: preconditioner[k] * v[k] for k in v}

    kw = dict(engine=engine, batch_context=batch_context)
    g_x = scaled(mean_gradient(model, loss_fn, params, x, batch_context=batch_context))
    g_y = scaled(mean_gradient(model, loss_fn, params, y, batch_context=batch_context))
    h_y_gx = hvp(model, loss_fn, params, y, g_x, **kw)
    h_x_gy = hvp(model, loss_fn, params, x, g_y, **kw)
    out = scaled({k: h_y_gx[k] - h_x_gy[k] for k in params})
    checks.check_finite(out, "the bracket")
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
    n = calls.num_examples(data)
    graphs, grads, tangents = _graphs_and_tangents(
        model, loss_fn, params, data, preconditioner, batch_context
    )
    products = {k: v.new_empty((n, *v.shape)) for k, v in grads.items()}
    for j in range(n):
        for i in range(n):
            # H_j (P g_i): one backward through g_j's retained graph.
            row = retained_hvp([(graphs[j], _row(tangents, i))], params, retain_graph=i < n - 1)
            for k, value in row.items():
                products[k][j, i] = value
        graphs[j] = None  # each graph is its own forward pass: free it once used
    if preconditioner is not None:
        products = {k: preconditioner[k] * v for k, v in products.items()}
    checks.check_finite(products, "a Hessian-vector product")
    return BracketTerms(grads, products)


def _row(vectors: Params, i: int, sign: float = 1.0) -> Params:
    return {k: sign * v[i] for k, v in vectors.items()}


def _brackets_double_backward(model, loss_fn, params, data, preconditioner, batch_context):
    n = calls.num_examples(data)
    graphs, grads, tangents = _graphs_and_tangents(
        model, loss_fn, params, data, preconditioner, batch_context
    )
    out = {k: v.new_empty((n, n, *v.shape[1:])) for k, v in grads.items()}
    for value in out.values():  # every off-diagonal entry is written below
        value.diagonal(dim1=0, dim2=1).zero_()
    for i in range(n):
        for j in range(i + 1, n):
            # [v_i, v_j] = H_j P g_i - H_i P g_j: one backward through both retained graphs.
            last = i == n - 2  # after the pair (n-2, n-1) no graph is needed again
            value = retained_hvp(
                [(graphs[j], _row(tangents, i)), (graphs[i], _row(tangents, j, -1.0))],
                params,
                retain_graph=not last,
            )
            for k, b in value.items():
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

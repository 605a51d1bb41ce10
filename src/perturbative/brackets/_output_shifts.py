"""What a swap of two training examples does to the model's predictions.

Swapping the order of x and y moves the parameters by ``lr^2 [v_x, v_y] + O(lr^3)``
(:mod:`perturbative.brackets`), so a prediction ``f(theta, z)`` moves, to leading order, by the
Jacobian-vector product

    delta f(z) = lr^2 J_f(theta, z) [v_x, v_y].

For one scalar observable ``u(theta)`` (a held-out loss, one logit) with gradient ``u' = grad u``,
the symmetry of Hessians turns the whole ``n x n`` matrix of its shifts into ``n`` gradients and
``n`` Hessian-vector products:

    u' . [v_x, v_y] = g_x . (H_y u') - g_y . (H_x u'),

so ordering effects over thousands of training examples stay affordable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import jvp, vmap

from perturbative._core import calls, checks
from perturbative._core.calls import LossFn
from perturbative._core.checks import Params
from perturbative._core.engines import run_engine
from perturbative.brackets._gradients import per_example_gradients
from perturbative.brackets._hvp import per_example_hvps


def output_shift(
    model: nn.Module,
    params: Params,
    directions: Params,
    inputs: Tensor,
    *,
    lr: float = 1.0,
    engine: str = "auto",
    chunk_size: int | None = None,
    measure: Callable[[Any], Tensor] | None = None,
) -> Tensor:
    """``lr^2 J_f(theta) d`` for many parameter directions ``d`` (brackets) and test inputs.

    Args:
        model: the model ``f``; BatchNorm must be in eval mode (outputs of a test batch must not
            depend on each other).
        params: ``dict[str, Tensor]`` keyed like ``model.named_parameters()``.
        directions: brackets stacked along a leading dimension ``m``: each value has shape
            ``(m, *param.shape)`` (e.g. :func:`perturbative.brackets.upper_pairs` of a bracket
            matrix).
        inputs: test inputs of shape ``(T, ...)``, or a keyword batch.
        lr: learning rate; the shift is ``lr^2`` times the Jacobian-vector product.
        engine: ``"forward"`` vmaps the JVP over directions (GPU); ``"double_backward"`` loops
            over them in reverse mode (``J d`` as the derivative of ``(J^T w) . d`` in ``w``),
            so models without forward-mode derivatives work (CPU); ``"auto"`` picks by device.
        chunk_size: directions per vmap chunk for the forward engine.
        measure: ``outputs -> Tensor``, what of the model's return ``f`` is (default: its
            output values, :func:`perturbative._core.calls.output_values`): e.g. each test
            example's loss, or each target token's log-probability.

    Returns:
        Tensor of shape ``(m, T, *output_shape)``, e.g. ``(pairs, test examples, outputs)``.
    """
    params = checks.check_params(model, params)
    checks.check_train_mode(model, None)
    checks.check_vector(params, directions, "directions", leading=1)
    (inputs,), _ = checks.check_data(inputs, "inputs")
    state = calls.fixed_state(model, params)
    detached = {k: v.detach() for k, v in params.items()}

    def f(p: Params) -> Tensor:
        outputs = calls.call_model(model, p, state, inputs)
        return calls.output_values(outputs) if measure is None else measure(outputs)

    def jvp_one(d: Params) -> Tensor:
        return jvp(f, (detached,), (d,))[1]

    def one_at_a_time() -> Tensor:
        # reverse mode only, for models whose ops have no forward-mode derivative (nn.LSTM on
        # CPU): J d = d/dw [(J^T w) . d], with w a dummy cotangent
        names = list(params)
        inputs = [params[k] for k in names]
        outputs = f(params)
        w = torch.zeros_like(outputs, requires_grad=True)
        pullback = torch.autograd.grad(outputs, inputs, w, create_graph=True, allow_unused=True)
        rows = []
        for i in range(next(iter(directions.values())).shape[0]):
            dot = sum(
                (g * directions[k][i]).sum()
                for g, k in zip(pullback, names, strict=True)
                if g is not None
            )
            if not isinstance(dot, Tensor) or not dot.requires_grad:
                rows.append(torch.zeros_like(outputs))
                continue
            rows.append(torch.autograd.grad(dot, w, retain_graph=True)[0])
        return torch.stack(rows).detach()

    shifts = run_engine(
        engine,
        params,
        forward=lambda: vmap(jvp_one, chunk_size=chunk_size)(directions),
        double_backward=one_at_a_time,
    )
    shifts = shifts * lr**2
    checks.check_finite({"output_shift": shifts}, "the output shift")
    return shifts.detach()


def projected_bracket_matrix(
    model: nn.Module,
    loss_fn: LossFn,
    params: Params,
    data: tuple[Tensor, ...],
    direction: Params,
    *,
    preconditioner: Params | None = None,
    engine: str = "auto",
    chunk_size: int | None = None,
    memory_budget: int = 2 * 2**30,
) -> Tensor:
    """``M[x, y] = u . [v_x, v_y]`` for all pairs of ``n`` examples, in blocks under a memory
    budget.

    ``u`` is ``direction``, usually the gradient of an observable (see
    :func:`perturbative.brackets.mean_gradient` of a held-out batch). Since Hessians are
    symmetric, ``u . (H_y g_x) = g_x . (H_y u)``, so with ``A[x, y] = g_x . (H_y u)`` the matrix
    is ``M = A - A^T``. With a frozen diagonal preconditioner ``P`` (fields ``-P g``):
    ``u . (P H_y P g_x) = (P g_x) . H_y (P u)``.

    Moving x before y instead of after changes the observable by ``lr^2 M[x, y]`` to leading
    order (first-order change of ``u``: ``u' . delta theta``). For scores of a whole pool (the
    row sums) use :func:`perturbative.brackets.order_scores`, whose memory does not grow with
    ``n``.

    Args:
        memory_budget: bytes for the parameter-sized tensors held at once: blocks of ``b``
            examples, ``3 b`` such tensors (gradients and products of one block, gradients of
            another). With ``b >= n`` it costs ``n`` gradients and ``n`` HVPs; with smaller
            blocks the gradients are recomputed, ``n^2 / b`` in all.

    Returns:
        Tensor of shape ``(n, n)``, antisymmetric.
    """
    params = checks.check_params(model, params)
    data, n = checks.check_data(data)
    checks.check_vector(params, direction, "direction")
    checks.check_train_mode(model, None)
    scale = (
        (lambda v: v)
        if preconditioner is None
        else (lambda v: {k: preconditioner[k] * v[k] for k in v})
    )
    pu = scale(direction)
    per_tensor = sum(v.numel() * v.element_size() for v in params.values())
    block = max(1, min(n, memory_budget // (3 * per_tensor)))
    starts = range(0, n, block)
    a = torch.empty(n, n, dtype=next(iter(params.values())).dtype)
    for y0 in starts:
        ys = calls.take_all(data, slice(y0, y0 + block))
        g_y, h_y = per_example_hvps(
            model, loss_fn, params, ys, pu, engine=engine, chunk_size=chunk_size
        )
        h_y = {k: v.reshape(v.shape[0], -1) for k, v in h_y.items()}
        for x0 in starts:
            xs = calls.take_all(data, slice(x0, x0 + block))
            g_x = (
                g_y
                if x0 == y0
                else per_example_gradients(
                    model, loss_fn, params, xs, engine=engine, chunk_size=chunk_size
                )
            )
            g_x = scale(g_x)
            a[x0 : x0 + block, y0 : y0 + block] = sum(
                g_x[k].reshape(g_x[k].shape[0], -1) @ h_y[k].T for k in h_y
            ).cpu()
    return (a - a.T).to(next(iter(params.values())).device).detach()


def order_sensitivity(matrix: Tensor) -> Tensor:
    """Per-example order sensitivity: RMS over partners ``y != x`` of ``M[x, y]``.

    Args:
        matrix: an ``(n, n)`` projected bracket matrix (zero diagonal), ``n >= 2``.

    Returns:
        Tensor ``(n,)``: how much moving example x relative to the others moves the observable.
    """
    n = matrix.shape[0]
    if matrix.shape != (n, n) or n < 2:
        raise ValueError(f"expected a square (n, n) matrix with n >= 2, got {tuple(matrix.shape)}")
    return (matrix.pow(2).sum(dim=1) / (n - 1)).sqrt()

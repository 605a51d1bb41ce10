"""Training examples as vector fields on parameter space: their gradients.

Example ``x`` is the field ``v_x(theta) = -grad L_x(theta) = -g_x``; a gradient step with learning
rate ``lr`` is ``theta' = theta + lr * v_x(theta)``. This module computes the gradients ``g_x``
(note the sign: gradients, the fields are their negatives) for many examples at once, with either
engine of :mod:`perturbative._core.engines`.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.func import grad, vmap

from perturbative._core import calls, checks
from perturbative._core.calls import LossFn
from perturbative._core.checks import Params
from perturbative._core.engines import run_engine


def gradients_with_graph(
    model: nn.Module,
    loss_fn: LossFn,
    params: Params,
    data: tuple[Tensor, ...],
    batch_context: Tensor | None = None,
) -> list[Params]:
    """Per-example gradients ``g_i`` that keep their autograd graph (for double backward)."""
    state = calls.fixed_state(model, params)
    f = calls.example_loss(model, loss_fn, state, batch_context)
    names = list(params)
    out = []
    for i in range(calls.num_examples(data)):
        loss = f(params, *calls.take_all(data, i))
        grads = calls.grad_or_zero([loss], [params[k] for k in names], create_graph=True)
        out.append(dict(zip(names, grads, strict=True)))
    return out


def per_example_gradients(
    model: nn.Module,
    loss_fn: LossFn,
    params: Params,
    data: tuple[Tensor, ...],
    *,
    engine: str = "auto",
    batch_context: Tensor | None = None,
    chunk_size: int | None = None,
) -> Params:
    """Gradients ``g_x = grad L_x(theta)`` of every example (the fields are ``-g_x``).

    Args:
        model: any module; called through ``functional_call``.
        loss_fn: ``loss_fn(outputs, *targets) -> scalar`` on a batch of one example.
        params: ``dict[str, Tensor]`` requiring grad, keyed like ``model.named_parameters()``.
        data: tuple of tensors with leading dimension ``n``.
        engine: ``"auto"``, ``"forward"`` or ``"double_backward"``
            (:mod:`perturbative._core.engines`).
        batch_context: inputs (m, ...) of a batch each example joins; needed for train-mode
            BatchNorm (see :mod:`perturbative._core.calls`).
        chunk_size: examples per ``vmap`` chunk for the forward engine (``None``: all at once).

    Returns:
        dict keyed like ``params``; each value has shape ``(n, *param.shape)``, detached.

    Raises:
        ValueError, TypeError: bad params or data (the message says what to pass).
        FloatingPointError: a gradient is NaN or inf.
    """
    params = checks.check_params(model, params)
    data, n = checks.check_data(data)
    checks.check_train_mode(model, batch_context)
    state = calls.fixed_state(model, params)

    def forward() -> Params:
        f = calls.example_loss(model, loss_fn, state)
        in_dims = (None,) + (0,) * len(data)
        detached = {k: v.detach() for k, v in params.items()}
        return vmap(grad(f), in_dims=in_dims, chunk_size=chunk_size)(detached, *data)

    def double_backward() -> Params:
        f = calls.example_loss(model, loss_fn, state, batch_context)
        names = list(params)
        rows = []
        for i in range(n):
            loss = f(params, *calls.take_all(data, i))
            row = calls.grad_or_zero([loss], [params[k] for k in names])
            rows.append({k: g.detach() for k, g in zip(names, row, strict=True)})
        return calls.stack(rows)

    grads = run_engine(
        engine,
        params,
        forward=forward,
        double_backward=double_backward,
        batch_context=batch_context,
    )
    checks.check_finite(grads, "a per-example gradient")
    return grads


def mean_gradient(
    model: nn.Module,
    loss_fn: LossFn,
    params: Params,
    data: tuple[Tensor, ...],
    *,
    batch_context: Tensor | None = None,
) -> Params:
    """Gradient of the minibatch loss ``mean_x L_x``: minus the mean field ``v_A``.

    With BatchNorm in train mode, the gradient of the batch's loss normalised by its own
    statistics: the gradient a training step takes.

    Returns:
        dict keyed like ``params`` with the parameters' shapes, detached.
    """
    params = checks.check_params(model, params)
    data, n = checks.check_data(data)
    checks.check_train_mode(model, batch_context, whole_batches=(n,))
    f = calls.batch_loss(model, loss_fn, calls.fixed_state(model, params), batch_context)
    names = list(params)
    grads = calls.grad_or_zero([f(params, *data)], [params[k] for k in names])
    out = dict(zip(names, (g.detach() for g in grads), strict=True))
    checks.check_finite(out, "the minibatch gradient")
    return out

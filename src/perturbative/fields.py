"""Training examples as vector fields on parameter space.

Example ``x`` is the field ``v_x(theta) = -grad L_x(theta) = -g_x``; a gradient step with learning
rate ``lr`` is ``theta' = theta + lr * v_x(theta)``. This module computes the gradients ``g_x``
(note the sign: gradients, not fields) for many examples at once, with one of two engines:

* ``"forward"``: ``torch.func.vmap`` over examples of ``torch.func.grad``; batched, fast on GPUs.
* ``"double_backward"``: one ``torch.autograd.grad`` per example, optionally keeping its graph
  so that Hessian-vector products can reuse it; fast on CPUs, where batching by ``vmap`` buys
  little and costs memory traffic.

``engine="auto"`` picks ``"forward"`` when the parameters live on a CUDA device and
``"double_backward"`` otherwise.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

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

ENGINES = ("auto", "forward", "double_backward")


def resolve_engine(engine: str, params: Params, batch_context: Tensor | None = None) -> str:
    """Turn ``"auto"`` into a concrete engine; validate the name.

    The double-backward engine is used whenever a ``batch_context`` is given: train-mode
    BatchNorm writes its running statistics in place, which ``vmap`` cannot batch.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
    if batch_context is not None:
        return "double_backward"
    if engine == "auto":
        on_cuda = any(p.is_cuda for p in params.values())
        return "forward" if on_cuda else "double_backward"
    return engine


def stack(vectors: Sequence[Params]) -> Params:
    """Stack a list of parameter dicts into one dict with a leading dimension."""
    return {k: torch.stack([v[k] for v in vectors]) for k in vectors[0]}


def unbind(vectors: Params) -> list[Params]:
    """Inverse of :func:`stack`."""
    n = next(iter(vectors.values())).shape[0]
    return [{k: v[i] for k, v in vectors.items()} for i in range(n)]


def batch_loss(
    model: nn.Module,
    loss_fn: LossFn,
    state: dict[str, Tensor],
    batch_context: Tensor | None = None,
):
    """The minibatch loss ``L_A(params) = mean_{x in A} L_x(params)`` as ``f(params, *batch)``.

    Without a batch context the model runs once on the whole batch (eval-mode BatchNorm makes the
    outputs row-wise independent) and ``loss_fn`` is applied to each row.
    """
    per_example = example_loss(model, loss_fn, state, batch_context)

    def loss(params: Params, *batch: Tensor) -> Tensor:
        n = batch[0].shape[0]
        if batch_context is not None:
            values = [per_example(params, *(t[i] for t in batch)) for i in range(n)]
        else:
            outputs = functional_call(model, (params, state), (batch[0],))
            values = []
            for i in range(n):
                value = loss_fn(outputs[i : i + 1], *(t[i : i + 1] for t in batch[1:]))
                if not isinstance(value, Tensor) or value.dim() != 0:
                    raise ValueError(
                        "loss_fn must return a scalar for one example (reduce with .mean() "
                        "or .sum(), e.g. reduction='mean')"
                    )
                values.append(value)
        return torch.stack(values).mean()

    return loss


def gradients_with_graph(
    model: nn.Module,
    loss_fn: LossFn,
    params: Params,
    data: tuple[Tensor, ...],
    batch_context: Tensor | None = None,
) -> list[Params]:
    """Per-example gradients ``g_i`` that keep their autograd graph (for double backward)."""
    state = fixed_state(model, params)
    f = example_loss(model, loss_fn, state, batch_context)
    names = list(params)
    out = []
    for i in range(data[0].shape[0]):
        loss = f(params, *(t[i] for t in data))
        grads = grad_or_zero([loss], [params[k] for k in names], create_graph=True)
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
        engine: ``"auto"``, ``"forward"`` or ``"double_backward"`` (module docstring).
        batch_context: inputs (m, ...) of a batch each example joins; needed for train-mode
            BatchNorm (see :mod:`perturbative.functional`).
        chunk_size: examples per ``vmap`` chunk for the forward engine (``None``: all at once).

    Returns:
        dict keyed like ``params``; each value has shape ``(n, *param.shape)``, detached.

    Raises:
        ValueError, TypeError: bad params or data (the message says what to pass).
        FloatingPointError: a gradient is NaN or inf.
    """
    params = check_params(model, params)
    data, _ = check_data(data)
    check_batchnorm(model, batch_context)
    engine = resolve_engine(engine, params, batch_context)
    if engine == "forward":
        state = fixed_state(model, params)
        f = example_loss(model, loss_fn, state)
        in_dims = (None,) + (0,) * len(data)
        detached = {k: v.detach() for k, v in params.items()}
        grads = vmap(grad(f), in_dims=in_dims, chunk_size=chunk_size)(detached, *data)
    else:
        grads = stack(
            [
                {k: g.detach() for k, g in gi.items()}
                for gi in _gradients_no_graph(model, loss_fn, params, data, batch_context)
            ]
        )
    check_finite(grads, "a per-example gradient")
    return grads


def _gradients_no_graph(model, loss_fn, params, data, batch_context):
    state = fixed_state(model, params)
    f = example_loss(model, loss_fn, state, batch_context)
    names = list(params)
    for i in range(data[0].shape[0]):
        loss = f(params, *(t[i] for t in data))
        yield dict(zip(names, grad_or_zero([loss], [params[k] for k in names]), strict=True))


def mean_gradient(
    model: nn.Module,
    loss_fn: LossFn,
    params: Params,
    data: tuple[Tensor, ...],
    *,
    batch_context: Tensor | None = None,
) -> Params:
    """Gradient of the minibatch loss ``mean_x L_x``: minus the mean field ``v_A``.

    Returns:
        dict keyed like ``params`` with the parameters' shapes, detached.
    """
    params = check_params(model, params)
    data, _ = check_data(data)
    check_batchnorm(model, batch_context)
    f = batch_loss(model, loss_fn, fixed_state(model, params), batch_context)
    names = list(params)
    grads = grad_or_zero([f(params, *data)], [params[k] for k in names])
    out = dict(zip(names, (g.detach() for g in grads), strict=True))
    check_finite(out, "the minibatch gradient")
    return out


class ForwardADUnsupportedError(RuntimeError):
    """An op in the model has no forward-mode derivative or no ``torch.func`` support.

    Raised by ``engine="forward"``; ``engine="auto"`` warns and uses ``"double_backward"``.
    """


def _forward_or_fallback(requested: str, run):
    """``run()``; on a missing forward-mode derivative raise (``"forward"``) or warn (``"auto"``).

    Returns ``None`` when the caller should fall back to the double-backward engine.
    """
    try:
        return run()
    except (RuntimeError, NotImplementedError) as err:
        op = _forward_ad_failure(err)
        if op is None:
            raise
        reason = str(err).strip().splitlines()[0][:200]
        if requested == "forward":
            raise ForwardADUnsupportedError(
                f"engine='forward' cannot differentiate {op}, which the model uses, in forward "
                f"mode under torch.func ({reason}). Pass engine='double_backward' (or "
                "engine='auto', which falls back to it), or give the op a forward-mode "
                "derivative (an autograd.Function needs jvp and vmap support)"
            ) from err
        warnings.warn(
            f"engine='forward' cannot differentiate {op}, which the model uses, in forward mode "
            f"under torch.func ({reason}); falling back to engine='double_backward'",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def _forward_ad_failure(err: BaseException) -> str | None:
    """The op named by a forward-mode AD / torch.func failure, or ``None`` for other errors."""
    text = str(err)
    low = text.lower()
    custom = "autograd.function" in low and ("jvp" in low or "functorch" in low)
    custom = custom or ("vmap over" in low and "vmap support" in low)
    aten = "forward ad" in low and ("not been implemented" in low or "not support" in low)
    aten = aten or ("forward" in low and "not implemented" in low)
    zero_tensor = "zerotensors are immutable" in low
    if not (custom or aten or zero_tensor):
        return None
    if zero_tensor:
        return (
            "an op whose derivative writes into a ZeroTensor under forward AD (e.g. torch's "
            "F.mse_loss; ((outputs - targets) ** 2).mean() works in both engines)"
        )
    function = _autograd_function_in_traceback(err)
    if function is not None:
        return f"the autograd.Function {function}"
    match = re.search(r"forward AD with (\S+)", text)
    if match:
        return f"the op {match.group(1)}"
    for token in text.replace("'", " ").replace('"', " ").split():
        if token.startswith("aten::") or token.startswith("torch."):
            return f"the op {token.rstrip('.,:')}"
    return "an operation (" + text.splitlines()[0][:120] + ")"


def _autograd_function_in_traceback(err: BaseException) -> str | None:
    """Name of the innermost ``torch.autograd.Function`` whose ``apply`` raised ``err``."""
    name = None
    tb = err.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        cls = frame.f_locals.get("cls") if frame.f_code.co_name == "apply" else None
        if isinstance(cls, type) and issubclass(cls, torch.autograd.Function):
            name = cls.__qualname__
        tb = tb.tb_next
    return name

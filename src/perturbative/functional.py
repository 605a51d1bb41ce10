"""Binding a module and a loss into pure functions of the parameters, with input checks.

Everything in the package uses one call shape, ``(model, loss_fn, params, data)``:

* ``model``: any ``nn.Module``; it is only ever called through
  ``torch.func.functional_call(model, (params, buffers), inputs)``, so the module's own
  parameters are never read or written.
* ``loss_fn(outputs, *targets) -> Tensor``: the loss of a batch of ONE example (leading
  dimension 1). It must return a scalar. It defines the per-example loss ``L_x``; the loss of a
  minibatch is the *mean* of its per-example losses (so per-example gradients are not scaled by
  ``1/N``).
* ``params``: ``dict[str, Tensor]`` keyed like ``model.named_parameters()``, each requiring grad.
  Vectors over parameter space (gradients, brackets) are dicts with the same keys and shapes.
* ``data``: a tuple of tensors whose leading dimension indexes examples, usually
  ``(inputs, targets)``; the first is passed to the model, the rest to ``loss_fn``.

BatchNorm: a per-example field needs a per-example loss, and a batch of one has no batch
statistics (its variance is zero). Fields therefore use BatchNorm in eval mode (running
statistics), which makes every example's loss independent of the others. A model with BatchNorm
in train mode is refused unless the caller passes ``batch_context``: inputs of a batch that each
example joins, so that its loss is computed with that batch's statistics (the running statistics
updated by that forward pass are discarded).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

Params = dict[str, Tensor]
LossFn = Callable[..., Tensor]


def check_params(model: nn.Module, params: Any) -> Params:
    """Validate ``params`` against ``model`` and return it as a plain dict.

    Raises:
        TypeError: if ``params`` is not a mapping of names to tensors.
        ValueError: if names or shapes do not match the model, or a tensor does not require grad.
    """
    if not isinstance(params, Mapping):
        raise TypeError(
            "params must be a dict of name -> tensor: use dict(model.named_parameters()), "
            f"not {type(params).__name__}"
        )
    if not params:
        raise ValueError("params is empty: pass dict(model.named_parameters())")
    named = dict(model.named_parameters())
    for name, value in params.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"params[{name!r}] is a {type(value).__name__}, not a tensor")
        if name not in named:
            raise ValueError(
                f"params has {name!r}, which is not a parameter of {type(model).__name__}; "
                "use the names of model.named_parameters()"
            )
        if value.shape != named[name].shape:
            raise ValueError(
                f"params[{name!r}] has shape {tuple(value.shape)} but the model's parameter has "
                f"shape {tuple(named[name].shape)}"
            )
        if not value.requires_grad:
            raise ValueError(
                f"params[{name!r}] does not require grad, so it has no field: pass "
                "{k: v.detach().requires_grad_() for k, v in params.items()} or leave it out of "
                "params to hold it fixed"
            )
        if not value.is_floating_point():
            raise ValueError(f"params[{name!r}] has dtype {value.dtype}; fields need floats")
    return dict(params)


def fixed_state(model: nn.Module, params: Params) -> dict[str, Tensor]:
    """Buffers and parameters left out of ``params``, detached: held fixed in every call."""
    state = {k: v.detach() for k, v in model.named_buffers()}
    for name, value in model.named_parameters():
        if name not in params:
            state[name] = value.detach()
    return state


def check_data(data: Any, what: str = "data") -> tuple[tuple[Tensor, ...], int]:
    """Validate a data tuple; return it and the number of examples.

    Raises:
        TypeError: if ``data`` is not a tuple/list of tensors.
        ValueError: if it is empty or the leading dimensions disagree.
    """
    if isinstance(data, Tensor):
        data = (data,)
    if not isinstance(data, Sequence) or not all(isinstance(t, Tensor) for t in data):
        raise TypeError(f"{what} must be a tuple of tensors, e.g. (inputs, targets)")
    if len(data) == 0:
        raise ValueError(f"{what} is an empty tuple; pass (inputs, targets)")
    sizes = {t.shape[0] if t.dim() else None for t in data}
    if None in sizes:
        raise ValueError(f"every tensor in {what} needs a leading example dimension")
    if len(sizes) != 1:
        shapes = [tuple(t.shape) for t in data]
        raise ValueError(f"tensors in {what} disagree on the number of examples: {shapes}")
    n = sizes.pop()
    if n == 0:
        raise ValueError(f"{what} holds no examples; pass at least one")
    return tuple(data), n


def train_mode_batchnorm(model: nn.Module) -> list[str]:
    """Names of BatchNorm modules that are in train mode (they use batch statistics)."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training
    ]


def check_batchnorm(model: nn.Module, batch_context: Tensor | None) -> None:
    """Refuse train-mode BatchNorm unless a batch context is given (see module docstring)."""
    names = train_mode_batchnorm(model)
    if names and batch_context is None:
        raise ValueError(
            f"BatchNorm layers {names[:3]}{'...' if len(names) > 3 else ''} are in train mode; a "
            "single example has no batch statistics. Call model.eval() to use running statistics "
            "(the usual choice for brackets), or pass batch_context=<a batch of inputs> to "
            "evaluate each example as a member of that batch"
        )


def example_loss(
    model: nn.Module,
    loss_fn: LossFn,
    state: dict[str, Tensor],
    batch_context: Tensor | None = None,
) -> Callable[..., Tensor]:
    """The per-example loss ``L_x(params)`` as a pure function ``f(params, *example)``.

    ``example`` tensors carry no leading example dimension; they are given a batch dimension of
    one before the model is called. With ``batch_context`` (m, ...), the example is prepended to
    the context and only its own output enters the loss.
    """

    def loss(params: Params, *example: Tensor) -> Tensor:
        inputs = example[0].unsqueeze(0)
        targets = [t.unsqueeze(0) for t in example[1:]]
        if batch_context is None:
            outputs = functional_call(model, (params, state), (inputs,))
        else:
            buffers = {k: v.clone() for k, v in state.items()}  # discard running-stat updates
            joined = torch.cat([inputs, batch_context.to(inputs)], dim=0)
            outputs = functional_call(model, (params, buffers), (joined,))[:1]
        value = loss_fn(outputs, *targets)
        if not isinstance(value, Tensor) or value.dim() != 0:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(
                f"loss_fn returned shape {shape} for one example; it must return a scalar "
                "(reduce with .mean() or .sum(), e.g. reduction='mean')"
            )
        return value

    return loss


def _all_finite(v: Tensor) -> bool:
    """Exact and cheap: a NaN or inf anywhere makes the sum non-finite, so a finite sum proves
    every entry finite without a bool tensor the size of ``v``; only a non-finite sum (which
    overflow alone can also cause) needs the elementwise test."""
    if v.numel() == 0 or bool(torch.isfinite(v.sum())):
        return True
    return bool(torch.isfinite(v).all())


def check_finite(vectors: Mapping[str, Tensor], what: str) -> None:
    """Raise ``FloatingPointError`` naming the parameter tensors where ``vectors`` is not finite."""
    bad = [name for name, v in vectors.items() if not _all_finite(v)]
    if bad:
        raise FloatingPointError(
            f"{what} is not finite (NaN or inf) in {bad[:5]}{'...' if len(bad) > 5 else ''}. "
            "Check the loss at these parameters; in fp32, torch's fused mish has a NaN second "
            "derivative for inputs above about 89: use x * tanh(softplus(x)) instead"
        )


def model_outputs(
    model: nn.Module, params: Params, state: dict[str, Tensor], inputs: Tensor
) -> Tensor:
    """``f(theta, inputs)`` through ``functional_call``."""
    return functional_call(model, (params, state), (inputs,))


def grad_or_zero(
    outputs: Sequence[Tensor],
    inputs: Sequence[Tensor],
    grad_outputs: Sequence[Tensor] | None = None,
    **kwargs: Any,
) -> tuple[Tensor, ...]:
    """``torch.autograd.grad`` where a parameter the outputs do not use gets a zero gradient.

    A parameter the loss never touches has the zero field (``v = -grad L = 0``), and a gradient
    entry that carries no graph (it is a constant zero) has zero derivative; both engines agree on
    this. Outputs without a graph are dropped before the backward pass.
    """
    outputs = list(outputs)
    keep = [i for i, o in enumerate(outputs) if o.requires_grad]
    if not keep:
        return tuple(torch.zeros_like(x) for x in inputs)
    kept_grads = None if grad_outputs is None else [grad_outputs[i] for i in keep]
    return torch.autograd.grad(
        [outputs[i] for i in keep],
        list(inputs),
        grad_outputs=kept_grads,
        allow_unused=True,
        materialize_grads=True,
        **kwargs,
    )

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

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from perturbative._core.checks import Params

LossFn = Callable[..., Tensor]


def fixed_state(model: nn.Module, params: Params) -> dict[str, Tensor]:
    """Buffers and parameters left out of ``params``, detached: held fixed in every call."""
    state = {k: v.detach() for k, v in model.named_buffers()}
    for name, value in model.named_parameters():
        if name not in params:
            state[name] = value.detach()
    return state


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


def stack(vectors: Sequence[Params]) -> Params:
    """Stack a list of parameter dicts into one dict with a leading dimension."""
    return {k: torch.stack([v[k] for v in vectors]) for k in vectors[0]}

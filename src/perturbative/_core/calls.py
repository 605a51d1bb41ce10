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
* ``data``: the examples, every tensor's leading dimension indexing them, in one of two forms:

  - a tuple of tensors ``(inputs, *targets)``: the model is called ``model(inputs)`` and the
    loss ``loss_fn(outputs, *targets)``;
  - a mapping of keyword arguments (a Hugging Face batch: ``input_ids``, ``attention_mask``,
    ``labels``, ``pixel_values``, ...): the model is called ``model(**batch)`` and the loss
    ``loss_fn(outputs, batch)`` with the same mapping, so ``lambda out, batch: out.loss`` uses
    the model's own loss and a loss of your own reads ``batch["labels"]``.

  Internally a mapping travels as a one-element tuple holding the dict (``*data`` passes it
  whole), and :func:`take` indexes either form.
* ``outputs``: whatever the model returns (a tensor, a tuple, a dict, a ``transformers``
  ``ModelOutput``) reaches ``loss_fn`` unchanged. Where the library needs the output *values*
  (:func:`output_values`: output shifts, observables) it takes the tensor itself, the ``logits``
  of a dict or ``ModelOutput``, or the first element of a tuple.

BatchNorm: a per-example field needs a per-example loss, and a batch of one has no batch
statistics (its variance is zero). Fields therefore use BatchNorm in eval mode (running
statistics), which makes every example's loss independent of the others. A model with BatchNorm
in train mode is refused by per-example functions unless the caller passes ``batch_context``:
inputs of a batch that each example joins, so that its loss is computed with that batch's
statistics. Functions of whole minibatches (``mean_gradient``, ``hvp``, the order predictions
and real steps) accept train-mode BatchNorm: each batch is then normalised by its own
statistics, as a training step does. Running statistics updated by such forward passes are
discarded.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from perturbative._core.checks import Params, check_input_dtype, train_mode_batchnorm

LossFn = Callable[..., Tensor]


def fixed_state(model: nn.Module, params: Params) -> dict[str, Tensor]:
    """Buffers and parameters left out of ``params``, detached: held fixed in every call.

    With BatchNorm in train mode the buffers are copies: a train-mode forward pass updates the
    running statistics in place, and the library never changes the user's model.
    """
    copies = bool(train_mode_batchnorm(model))
    state = {k: v.detach().clone() if copies else v.detach() for k, v in model.named_buffers()}
    for name, value in model.named_parameters():
        if name not in params:
            state[name] = value.detach()
    return state


def take(item: Tensor | Mapping[str, Tensor], index: Any) -> Any:
    """``item[index]`` for a tensor, or for every tensor of a keyword batch."""
    if isinstance(item, Mapping):
        return {k: v[index] for k, v in item.items()}
    return item[index]


def num_examples(data: Sequence[Any]) -> int:
    """The leading dimension of a (checked) data tuple, keyword batches included."""
    first = data[0]
    if isinstance(first, Mapping):
        first = next(iter(first.values()))
    return first.shape[0]


def call_model(model: nn.Module, params: Params, state: dict[str, Tensor], inputs: Any) -> Any:
    """``model(inputs)`` or ``model(**inputs)`` through ``functional_call``, after checking that
    floating inputs have the parameters' dtype."""
    check_input_dtype(params, inputs)
    if isinstance(inputs, Mapping):
        return functional_call(model, (params, state), (), dict(inputs))
    return functional_call(model, (params, state), (inputs,))


def output_values(outputs: Any) -> Tensor:
    """The output tensor of a model's return value: itself, ``logits`` of a dict or
    ``ModelOutput``, or the first element of a tuple."""
    if isinstance(outputs, Tensor):
        return outputs
    if isinstance(outputs, Mapping):
        if "logits" not in outputs:
            raise ValueError(
                f"the model returned a mapping without 'logits' (keys {list(outputs)[:6]}); "
                "output shifts and observables need one output tensor: return it, or 'logits'"
            )
        return outputs["logits"]
    if isinstance(outputs, (tuple, list)) and outputs and isinstance(outputs[0], Tensor):
        return outputs[0]
    raise TypeError(f"cannot find the output tensor in a {type(outputs).__name__}")


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

    def loss(params: Params, *example: Any) -> Tensor:
        if len(example) == 1 and isinstance(example[0], Mapping):
            if batch_context is not None:
                raise ValueError("batch_context works with (inputs, targets) tuples only")
            batch = {k: v.unsqueeze(0) for k, v in example[0].items()}
            return _scalar(loss_fn(call_model(model, params, state, batch), batch))
        inputs = example[0].unsqueeze(0)
        targets = [t.unsqueeze(0) for t in example[1:]]
        if batch_context is None:
            outputs = call_model(model, params, state, inputs)
        else:
            buffers = {k: v.clone() for k, v in state.items()}  # discard running-stat updates
            joined = torch.cat([inputs, batch_context.to(inputs)], dim=0)
            outputs = call_model(model, params, buffers, joined)[:1]
        return _scalar(loss_fn(outputs, *targets))

    return loss


def _scalar(value: Any) -> Tensor:
    if not isinstance(value, Tensor) or value.dim() != 0:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(
            f"loss_fn returned shape {shape} for one example; it must return a scalar "
            "(reduce with .mean() or .sum(), e.g. reduction='mean')"
        )
    return value


_ONE_BY_ONE = [False]
# (model, loss_fn) pairs whose outputs the loss cannot read split by rows, remembered for the
# model's life: every function builds its own batch loss, and each would otherwise pay a failed
# whole-batch forward pass first
_UNSPLITTABLE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _known_unsplittable(model: nn.Module, loss_fn: LossFn) -> bool:
    try:
        return loss_fn in _UNSPLITTABLE.get(model, ())
    except TypeError:  # a loss that cannot be weakly referenced is not remembered
        return False


def _remember_unsplittable(model: nn.Module, loss_fn: LossFn) -> None:
    try:
        _UNSPLITTABLE.setdefault(model, weakref.WeakSet()).add(loss_fn)
    except TypeError:
        pass


@contextlib.contextmanager
def one_example_at_a_time() -> Iterator[None]:
    """Within the block, :func:`batch_loss` calls the model once per example (the fallback
    path), for comparisons and benchmarks of the batched path."""
    _ONE_BY_ONE.append(True)
    try:
        yield
    finally:
        _ONE_BY_ONE.pop()


def batch_loss(
    model: nn.Module,
    loss_fn: LossFn,
    state: dict[str, Tensor],
    batch_context: Tensor | None = None,
):
    """The minibatch loss ``L_A(params) = mean_{x in A} L_x(params)`` as ``f(params, *batch)``.

    The model runs once on the whole batch and ``loss_fn`` is applied to each example's rows of
    its outputs (:func:`split_outputs`: a tensor's rows, or the batch-shaped fields of a dict,
    tuple or ``ModelOutput``), with that example's targets or keyword batch of one. A model in
    eval mode treats its rows independently, so this equals one call per example. Where the
    outputs cannot be split, or ``loss_fn`` fails on a split row (it reads ``outputs.loss``, a
    batch-wide mean), every later call for this model and loss runs one example at a time. With
    BatchNorm in train mode the one forward pass normalises the batch by its own statistics, as
    a training step does: ``L_A`` is then the loss training computes, no longer a mean of
    independent per-example losses.
    """
    per_example = example_loss(model, loss_fn, state, batch_context)
    one_at_a_time = batch_context is not None or _known_unsplittable(model, loss_fn)
    # train-mode BatchNorm: one forward pass of the whole batch normalises it by its own
    # statistics, exactly as a training step does (checks.check_train_mode allowed it)
    batch_statistics = batch_context is None and bool(train_mode_batchnorm(model))

    def loss(params: Params, *batch: Any) -> Tensor:
        nonlocal one_at_a_time
        n = num_examples(batch)
        if one_at_a_time or _ONE_BY_ONE[-1]:
            return torch.stack([per_example(params, *take_all(batch, i)) for i in range(n)]).mean()
        outputs = call_model(model, params, state, batch[0])
        try:
            return example_losses(outputs, loss_fn, batch).mean()
        except Exception as error:  # the loss cannot read a split row: go one by one
            if batch_statistics:
                raise ValueError(
                    "BatchNorm layers are in train mode but the model's outputs cannot be split "
                    f"by examples for loss_fn ({type(error).__name__}: {error}), so the batch's "
                    "loss cannot be taken from one forward pass; return a tensor, or call "
                    "model.eval() to use running statistics"
                ) from error
            one_at_a_time = True
            _remember_unsplittable(model, loss_fn)
            return loss(params, *batch)

    return loss


def example_losses(outputs: Any, loss_fn: LossFn, batch: Sequence[Any]) -> Tensor:
    """Each example's loss, ``(n,)``, from one forward pass's ``outputs`` on a checked
    ``batch``: ``loss_fn`` of each example's rows (:func:`split_outputs`) with its targets, or
    its keyword batch of one.

    Raises:
        ValueError: the outputs have no per-example rows, or the loss of a row is not a tensor
            (it read a batch-wide field such as ``outputs.loss``); other errors of ``loss_fn``
            pass through.
    """
    n = num_examples(batch)
    rows = split_outputs(outputs, n)
    if rows is None:
        raise _CannotSplit(f"the model's outputs have no rows for the batch's {n} examples")
    if isinstance(batch[0], Mapping):
        values = [loss_fn(rows[i], take(batch[0], slice(i, i + 1))) for i in range(n)]
    else:
        values = [loss_fn(rows[i], *(t[i : i + 1] for t in batch[1:])) for i in range(n)]
    if not all(isinstance(v, Tensor) for v in values):
        raise _CannotSplit("the loss of a split row is not a tensor")  # e.g. outputs.loss
    return torch.stack([_scalar(v) for v in values])


class _CannotSplit(ValueError):
    """The model's outputs have no per-example rows to split."""


def split_outputs(outputs: Any, n: int) -> list[Any] | None:
    """Per-example views of a batch's outputs: row ``i`` (a batch of one) of every tensor whose
    leading dimension is ``n``, in the container the model returned (a tensor, tuple, list,
    dict or ``ModelOutput``); fields that are not batch-shaped (a batch-mean ``loss``, cached
    keys and values) become ``None``. ``None`` when nothing can be split."""
    if isinstance(outputs, Tensor):
        return (
            [outputs[i : i + 1] for i in range(n)] if outputs.dim() and len(outputs) == n else None
        )

    def row(value: Any, i: int) -> Any:
        if isinstance(value, Tensor) and value.dim() and value.shape[0] == n:
            return value[i : i + 1]
        return None

    if isinstance(outputs, Mapping):
        rows = [{k: row(v, i) for k, v in outputs.items()} for i in range(n)]
        if all(v is None for v in rows[0].values()):
            return None
        try:  # the model's own container, batch-wide fields left out
            return [type(outputs)(**{k: v for k, v in r.items() if v is not None}) for r in rows]
        except TypeError:
            return rows
    if isinstance(outputs, (tuple, list)) and any(row(v, 0) is not None for v in outputs):
        return [type(outputs)(row(v, i) for v in outputs) for i in range(n)]
    return None


def take_all(data: Sequence[Any], index: Any) -> tuple[Any, ...]:
    """:func:`take` of every item of a data tuple."""
    return tuple(take(item, index) for item in data)


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

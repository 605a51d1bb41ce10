"""Argument checks shared by every public function: params, data, BatchNorm mode, finiteness.

Each check raises with a message that says what to pass instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

Params = dict[str, Tensor]


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
                f"params[{name!r}] does not require grad. A frozen parameter is held fixed by "
                "leaving it out of params: pass {k: v for k, v in model.named_parameters() if "
                "v.requires_grad} (every function, and adam_preconditioner, follow this rule)"
            )
        if not value.is_floating_point():
            raise ValueError(f"params[{name!r}] has dtype {value.dtype}; fields need floats")
    return dict(params)


def check_data(data: Any, what: str = "data") -> tuple[tuple[Any, ...], int]:
    """Validate a data tuple or keyword batch; return it as a tuple and the number of examples.

    A mapping of keyword arguments comes back as a one-element tuple holding it as a dict (see
    :mod:`perturbative._core.calls`).

    Raises:
        TypeError: if ``data`` is neither a tuple/list of tensors nor a mapping of them.
        ValueError: if it is empty or the leading dimensions disagree.
    """
    if isinstance(data, Tensor):
        data = (data,)
    if isinstance(data, (tuple, list)) and len(data) == 1 and isinstance(data[0], Mapping):
        data = data[0]  # already checked: a keyword batch travels as a one-element tuple
    if isinstance(data, Mapping):
        bad = [k for k, v in data.items() if not isinstance(v, Tensor)]
        if bad or not data:
            raise TypeError(
                f"{what} as a mapping must hold tensors only (keyword arguments of the model), "
                f"not {bad[:3] or 'nothing'}"
            )
        tensors, packed = list(data.values()), (dict(data),)
    elif isinstance(data, Sequence) and all(isinstance(t, Tensor) for t in data):
        tensors, packed = list(data), tuple(data)
    else:
        raise TypeError(
            f"{what} must be a tuple of tensors, e.g. (inputs, targets), or a mapping of the "
            "model's keyword arguments, e.g. {'input_ids': ..., 'attention_mask': ..., "
            "'labels': ...}"
        )
    if len(tensors) == 0:
        raise ValueError(f"{what} is an empty tuple; pass (inputs, targets)")
    sizes = {t.shape[0] if t.dim() else None for t in tensors}
    if None in sizes:
        raise ValueError(f"every tensor in {what} needs a leading example dimension")
    if len(sizes) != 1:
        shapes = [tuple(t.shape) for t in tensors]
        raise ValueError(f"tensors in {what} disagree on the number of examples: {shapes}")
    n = sizes.pop()
    if n == 0:
        raise ValueError(f"{what} holds no examples; pass at least one")
    return packed, n


def check_input_dtype(params: Mapping[str, Tensor], inputs: Any) -> None:
    """Refuse floating inputs whose dtype differs from the parameters' (torch's own error names
    neither the tensors nor the fix).

    Raises:
        TypeError: saying which dtype to cast to.
    """
    reference = next((v for v in params.values() if v.is_floating_point()), None)
    if reference is None:
        return
    tensors = inputs.items() if isinstance(inputs, Mapping) else [("inputs", inputs)]
    for name, value in tensors:
        if isinstance(value, Tensor) and value.is_floating_point():
            if value.dtype != reference.dtype:
                raise TypeError(
                    f"{name} are {value.dtype} but the model's parameters are {reference.dtype}: "
                    f"cast the data (x.to({reference.dtype})) or the model "
                    f"(model.to({value.dtype})) so that both have one dtype"
                )


def train_mode_batchnorm(model: nn.Module) -> list[str]:
    """Names of BatchNorm modules that are in train mode (they use batch statistics)."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training
    ]


def train_mode_dropout(model: nn.Module) -> list[str]:
    """Names of modules that drop out at random in train mode: ``nn.Dropout*`` with ``p > 0``
    and ``nn.MultiheadAttention`` with ``dropout > 0``."""
    return [
        name
        for name, module in model.named_modules()
        if module.training
        and (
            (isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0)
            or (isinstance(module, nn.MultiheadAttention) and module.dropout > 0)
        )
    ]


def check_train_mode(
    model: nn.Module, batch_context: Tensor | None, whole_batches: Sequence[int] = ()
) -> None:
    """Refuse randomness (dropout in train mode) always, and train-mode BatchNorm unless a batch
    context is given or the caller takes the loss of whole batches (see module docstring).

    ``whole_batches``: the sizes of the batches a caller evaluates as one forward pass each (the
    minibatch loss of :func:`perturbative.brackets.mean_gradient`, ``hvp``, the predictions and
    real steps of ``predict_swap``); train-mode BatchNorm then uses each batch's own statistics,
    as training does, and needs at least 2 examples in every batch.
    """
    random = train_mode_dropout(model)
    if random:
        raise ValueError(
            f"dropout layers {random[:3]}{'...' if len(random) > 3 else ''} are in train mode: "
            "every call draws new masks, so each gradient is of another random network and "
            "two identical calls disagree. Call model.eval() (dropout off, the usual choice), "
            "or set their p to 0"
        )
    names = train_mode_batchnorm(model)
    if not names or batch_context is not None:
        return
    listed = f"{names[:3]}{'...' if len(names) > 3 else ''}"
    if not whole_batches:
        raise ValueError(
            f"BatchNorm layers {listed} are in train mode; a single example has no batch "
            "statistics. Call model.eval() to use running statistics (the usual choice for "
            "brackets), or pass batch_context=<a batch of inputs> to evaluate each example as "
            "a member of that batch"
        )
    if min(whole_batches) < 2:
        raise ValueError(
            f"BatchNorm layers {listed} are in train mode, so each batch is normalised by its "
            f"own statistics, but a batch holds {min(whole_batches)} example: a batch of one "
            "has no batch statistics. Pass batches of at least 2 examples, or call model.eval() "
            "to use running statistics"
        )


def check_batches(
    model: nn.Module, batches: Sequence[Any], batch_context: Tensor | None = None
) -> list[tuple[Any, ...]]:
    """:func:`check_data` of each batch of consecutive steps, then :func:`check_train_mode` for
    losses of whole batches; returns the packed batches."""
    checked = [check_data(b, f"batches[{i}]") for i, b in enumerate(batches)]
    check_train_mode(model, batch_context, whole_batches=[n for _, n in checked])
    return [b for b, _ in checked]


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


def check_vector(params: Params, vector: Params, what: str, leading: int = 0) -> None:
    """Raise ``ValueError`` unless ``vector`` has the keys of ``params`` and, after ``leading``
    stacking dimensions, their shapes."""
    if set(vector) != set(params):
        missing, extra = set(params) - set(vector), set(vector) - set(params)
        raise ValueError(f"{what} must have the keys of params: missing {missing}, extra {extra}")
    for k, v in vector.items():
        if v.shape[leading:] != params[k].shape:
            raise ValueError(
                f"{what}[{k!r}] has shape {tuple(v.shape)}; expected {tuple(params[k].shape)}"
                + (f" after {leading} leading dimension(s)" if leading else "")
            )


def offending_indices(mask: Tensor, limit: int = 10) -> str:
    """The indices where ``mask`` is true, the first ``limit`` of them, for an error message."""
    idx = torch.nonzero(mask).flatten().tolist()
    shown = ", ".join(str(i) for i in idx[:limit])
    more = f" and {len(idx) - limit} more" if len(idx) > limit else ""
    return f"{shown}{more}"

"""The observable ``O(theta)`` whose change the predictions measure: a function of the model's
outputs, or the mean per-example loss of held-out data, with its value and gradient ``u``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from perturbative._core import calls, checks
from perturbative._core.calls import LossFn
from perturbative._core.checks import Params
from perturbative._core.engines import (
    differentiable_kernels,
)


@dataclass
class Observable:
    """A scalar function of the model's outputs on fixed inputs: ``O(theta) = fn(f(theta, X))``,
    or (:meth:`mean_loss`) the mean per-example loss of fixed data.

    Attributes:
        inputs: ``(T, ...)`` the inputs the model is evaluated on, or a keyword batch (the model
            is then called ``model(**inputs)``).
        fn: ``outputs -> scalar tensor``, differentiable; ``outputs`` as the model returns them.
            ``None`` for a mean loss.
        description: what ``O`` is, in words (for reports).
        loss_fn: with :meth:`mean_loss`, the per-example loss whose mean over the data is ``O``.
        targets: with :meth:`mean_loss` of a data tuple, its targets ``(T, ...)`` each.
    """

    inputs: Any
    fn: Callable[[Any], Tensor] | None = None
    description: str = "a scalar function of the model's outputs"
    loss_fn: LossFn | None = None
    targets: tuple[Tensor, ...] = ()

    def __post_init__(self) -> None:
        if (self.fn is None) == (self.loss_fn is None):
            raise ValueError(
                "an Observable needs exactly one of fn (outputs -> scalar) and loss_fn (use "
                "Observable.mean_loss(loss_fn, data) for a held-out mean loss)"
            )

    @classmethod
    def mean_loss(cls, loss_fn: LossFn, data: Any, description: str | None = None) -> Observable:
        """``O = mean_x L_x``: the mean per-example loss of ``data``, with ``loss_fn`` the loss of
        a batch of one, as everywhere (:mod:`perturbative._core.calls`).

        ``data`` is a data tuple ``(inputs, *targets)`` or a keyword batch; the model runs once on
        all of it and ``loss_fn`` is applied to each example's rows of the outputs (one example at
        a time where the outputs cannot be split by rows).
        """
        data, n = checks.check_data(data, "data")
        return cls(
            data[0],
            description=description or f"mean loss of {n} held-out examples",
            loss_fn=loss_fn,
            targets=tuple(data[1:]),
        )

    def evaluate(self, model: nn.Module, params: Params, state: dict[str, Tensor]) -> Tensor:
        """``O`` at ``params`` with the buffers ``state``, differentiable."""
        if self.loss_fn is not None:
            return calls.batch_loss(model, self.loss_fn, state)(params, self.inputs, *self.targets)
        return self.fn(calls.call_model(model, params, state, self.inputs))

    def value(self, model: nn.Module, params: Params | None = None) -> float:
        """``O`` at ``params`` (default: the model's own parameters), without a graph."""
        params = dict(model.named_parameters()) if params is None else params
        with torch.no_grad(), differentiable_kernels():
            return float(self.evaluate(model, params, calls.fixed_state(model, params)))

    def gradient(self, model: nn.Module, params: Params) -> Params:
        """``u = grad O`` with respect to ``params``, detached."""
        params = checks.check_params(model, params)
        with differentiable_kernels():
            value = self.evaluate(model, params, calls.fixed_state(model, params))
            names = list(params)
            grads = torch.autograd.grad(value, [params[k] for k in names], allow_unused=True)
        out = {
            k: torch.zeros_like(params[k]) if g is None else g.detach()
            for k, g in zip(names, grads, strict=True)
        }
        checks.check_finite(out, "the observable's gradient")
        return out

    def to(self, dtype: torch.dtype) -> Observable:
        """The same observable with its floating inputs and targets cast to ``dtype``."""

        def cast(t: Any) -> Any:
            if isinstance(t, Mapping):
                return {k: cast(v) for k, v in t.items()}
            return t.to(dtype) if t.is_floating_point() else t

        return dataclasses.replace(
            self, inputs=cast(self.inputs), targets=tuple(cast(t) for t in self.targets)
        )

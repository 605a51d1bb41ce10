"""Tiny seeded float64 problems as data, turned into fixtures by ``conftest.py``.

Each builder returns a fresh :class:`Case` (same numbers every call), so tests can mutate what
they get. Models are smooth (tanh), so the swap expansion holds at moderate learning rates;
the convnet's BatchNorm is in eval mode with non-trivial running statistics. Example counts are
odd and minibatch splits uneven on purpose.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DTYPE = torch.float64


@dataclass
class Case:
    """One problem: ``(model, loss_fn, params, data)`` plus uneven minibatch sizes.

    Attributes:
        splits: sizes of consecutive minibatches of ``data`` (uneven, summing to ``n``).
    """

    name: str
    model: nn.Module
    loss_fn: Callable[..., Tensor]
    data: tuple[Tensor, ...]
    splits: tuple[int, ...]

    @property
    def params(self) -> dict[str, Tensor]:
        return dict(self.model.named_parameters())

    def example(self, i: int) -> tuple[Tensor, ...]:
        """Example ``i`` as a data tuple with leading dimension 1."""
        return tuple(t[i : i + 1] for t in self.data)

    def minibatches(self) -> list[tuple[Tensor, ...]]:
        out, start = [], 0
        for size in self.splits:
            out.append(tuple(t[start : start + size] for t in self.data))
            start += size
        return out


def mean_squared_error(outputs: Tensor, targets: Tensor) -> Tensor:
    """MSE written out (torch's ``F.mse_loss`` breaks forward-over-reverse AD in torch 2.13)."""
    return ((outputs - targets) ** 2).mean()


def binary_cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(outputs, targets)


def cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(outputs, targets)


def half_squared_error(outputs: Tensor, targets: Tensor) -> Tensor:
    """``1/2 (w . x - y)^2`` for a one-output linear model: Hessian ``x x^T``."""
    return 0.5 * ((outputs - targets) ** 2).sum()


def linear_mse() -> Case:
    torch.manual_seed(1)
    model = nn.Linear(3, 2).to(DTYPE)
    x = torch.randn(5, 3, dtype=DTYPE)
    y = torch.randn(5, 2, dtype=DTYPE)
    return Case("linear_mse", model, mean_squared_error, (x, y), (2, 3))


def mlp_bce() -> Case:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)).to(DTYPE)
    x = torch.randn(6, 3, dtype=DTYPE)
    y = torch.randint(0, 2, (6, 1)).to(DTYPE)
    return Case("mlp_bce", model, binary_cross_entropy, (x, y), (1, 3, 2))


def convnet_ce() -> Case:
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(3 * 3 * 3, 3),
    ).to(DTYPE)
    with torch.no_grad():
        model[1].running_mean.normal_()
        model[1].running_var.uniform_(0.5, 2.0)
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.normal_(0, 0.3)
    model.eval()
    x = torch.randn(5, 2, 3, 3, dtype=DTYPE)
    y = torch.randint(0, 3, (5,))
    return Case("convnet_ce", model, cross_entropy, (x, y), (3, 2))


def least_squares() -> Case:
    """``L_x(w) = 1/2 (w . x - y)^2``: ``A_x = x x^T``, ``b_x = y x`` (closed-form brackets)."""
    torch.manual_seed(4)
    model = nn.Linear(4, 1, bias=False).to(DTYPE)
    x = torch.randn(5, 4, dtype=DTYPE)
    y = torch.randn(5, 1, dtype=DTYPE)
    return Case("least_squares", model, half_squared_error, (x, y), (2, 3))


CASES: dict[str, Callable[[], Case]] = {
    "linear_mse": linear_mse,
    "mlp_bce": mlp_bce,
    "convnet_ce": convnet_ce,
}

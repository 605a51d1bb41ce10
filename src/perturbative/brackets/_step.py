"""The user's training step as one value: :class:`TrainingStep`.

A loop's step is more than its optimizer's update rule. nanoGPT's reads, top to bottom:

    for group in optimizer.param_groups: group["lr"] = get_lr(it)   # the schedule, per group
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)  # the clipping
    optimizer.step(); optimizer.zero_grad()                          # the rule and its state

A prediction that models any of these differently from the loop predicts another run. So every
prediction and every real reordering of :mod:`perturbative.brackets` takes one value that holds
all of them: the torch optimizer (its rule, each param group's hyperparameters, its state), the
clipping norm, and the learning rate of each param group at each step counted from the
optimizer's state (position 0 is the next step the loop takes). The real steps
(:func:`perturbative.brackets.values_along_steps`, on copies) write position ``i``'s rates into
the copied optimizer's groups before step ``i``; the predicted ones
(:func:`perturbative.brackets._optimizers.functional_optimizer`) read the same rates.

Where the schedule comes from:

* nothing: every group keeps the lr it holds now, at every step (the schedule frozen at the
  optimizer's state; right for a constant lr);
* ``scheduler=``: a ``torch.optim.lr_scheduler`` stepped once after each step, as the loop does;
  its rates are read on a stand-in of the optimizer's groups (the caller's scheduler and
  optimizer are not touched);
* ``rates=``: the rates themselves, ``rates[i][g]`` for group ``g`` at step ``i`` (a recorded run's
  order log holds them), or one rate per step for every group.

Asking for a step past the end of given ``rates`` is an error (a prediction must not invent the
schedule); a scheduler or a frozen schedule has no end.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import warnings
from collections.abc import Sequence
from typing import Any

import torch

Rates = tuple[float, ...]


@dataclasses.dataclass(frozen=True, eq=False)
class TrainingStep:
    """One training step of the user's loop: optimizer, clipping and the lr schedule.

    Attributes:
        optimizer: a ``torch.optim`` optimizer built on the model's parameters, in the state to
            start from (its param groups and state are read, never changed).
        max_grad_norm: the loop's ``torch.nn.utils.clip_grad_norm_`` norm over all trained
            parameters before each step (``None``: no clipping).
        rates: ``rates[i][g]``, the lr of param group ``g`` at step ``i`` counted from the
            optimizer's state; ``None`` with a scheduler or for the groups' current lrs.
        scheduler: a ``torch.optim.lr_scheduler`` the loop steps once after each step (read on a
            stand-in; ``None``: none).
        lr_scale: every rate times this (1: the loop's own; the order checks' lr-scale
            diagnostics shrink the whole schedule with it).

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = torch.optim.SGD([w], lr=0.1)
        >>> warm = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / 4))
        >>> step = TrainingStep(opt, max_grad_norm=1.0, scheduler=warm)
        >>> print(*(round(step.rates_at(i)[0], 3) for i in range(5)))
        0.025 0.05 0.075 0.1 0.1
    """

    optimizer: torch.optim.Optimizer
    max_grad_norm: float | None = None
    rates: tuple[Rates, ...] | None = None
    scheduler: Any = None
    lr_scale: float = 1.0
    start: int = 0  # positions counted from this step of the schedule (see later())
    _read: list = dataclasses.field(default_factory=list, repr=False)  # a scheduler's, so far

    def __post_init__(self) -> None:
        if not isinstance(self.optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, not {type(self.optimizer).__name__}"
            )
        if self.max_grad_norm is not None and not float(self.max_grad_norm) > 0:
            raise ValueError(f"max_grad_norm={self.max_grad_norm}: give a norm > 0, or None")
        if self.rates is not None and self.scheduler is not None:
            raise ValueError("give the schedule once: rates= or scheduler=, not both")
        if self.rates is not None:
            object.__setattr__(self, "rates", _as_rates(self.rates, self.groups))
        if self.scheduler is not None and not isinstance(
            getattr(self.scheduler, "optimizer", None), _StandIn
        ):
            if getattr(self.scheduler, "optimizer", None) is not self.optimizer:
                raise ValueError("the scheduler is not this optimizer's: build it on the optimizer")
            object.__setattr__(self, "scheduler", _stand_in_copy(self.scheduler, self.optimizer))

    @property
    def groups(self) -> int:
        """How many param groups the optimizer has."""
        return len(self.optimizer.param_groups)

    @property
    def known_steps(self) -> int | None:
        """How many steps the given ``rates`` cover (``None``: no end)."""
        return None if self.rates is None else len(self.rates) - self.start

    def rates_at(self, position: int) -> Rates:
        """Each group's lr at step ``position`` (0: the next step from the optimizer's state).

        Raises:
            IndexError: ``position`` is past the end of the given ``rates``.
        """
        rates = self._unscaled(position)
        return rates if self.lr_scale == 1.0 else tuple(self.lr_scale * r for r in rates)

    def _unscaled(self, position: int) -> Rates:
        if position < 0:
            raise IndexError(f"step position {position} < 0")
        position += self.start
        if self.rates is not None:
            if position >= len(self.rates):
                raise IndexError(
                    f"the schedule holds the rates of {len(self.rates)} steps, not of step "
                    f"{position}: give the rates of every step the prediction takes"
                )
            return self.rates[position]
        if self.scheduler is None:
            return tuple(float(g["lr"]) for g in self.optimizer.param_groups)
        while len(self._read) <= position:
            groups = self.scheduler.optimizer.param_groups
            self._read.append(tuple(float(g["lr"]) for g in groups))
            with warnings.catch_warnings():  # the stand-in takes no optimizer step
                warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*")
                self.scheduler.step()
        return self._read[position]

    def schedule(self, steps: int, start: int = 0) -> list[Rates]:
        """The rates of ``steps`` steps from position ``start``."""
        return [self.rates_at(start + i) for i in range(steps)]

    def later(self, start: int) -> TrainingStep:
        """The same step with positions counted from ``start`` (for an optimizer that has taken
        ``start`` of its steps); a frozen schedule stays frozen."""
        if start == 0 or (self.rates is None and self.scheduler is None):
            return self
        # the same schedule (a scheduler's copy and what was read of it are shared)
        return dataclasses.replace(self, start=self.start + start, _read=self._read)

    def scaled(self, factor: float) -> TrainingStep:
        """The same schedule with every rate times ``factor``."""
        if not float(factor) > 0:
            raise ValueError(f"lr scale {factor}: give a factor > 0")
        return dataclasses.replace(self, lr_scale=self.lr_scale * float(factor), _read=self._read)

    def with_max_grad_norm(self, max_grad_norm: float | None) -> TrainingStep:
        """The same step with another clipping norm (``None``: none)."""
        return dataclasses.replace(self, max_grad_norm=max_grad_norm, _read=self._read)

    def write_rates(self, optimizer: torch.optim.Optimizer, position: int) -> None:
        """Set ``optimizer``'s group lrs (a copy of :attr:`optimizer`) to step ``position``'s."""
        for group, rate in zip(optimizer.param_groups, self.rates_at(position), strict=True):
            group["lr"] = rate

    def clip(self, params: Sequence[torch.Tensor]) -> torch.Tensor | None:
        """The loop's clipping of ``params``' ``.grad`` in place; the total norm before it."""
        if self.max_grad_norm is None:
            return None
        return torch.nn.utils.clip_grad_norm_(list(params), float(self.max_grad_norm))


def as_training_step(step: TrainingStep | torch.optim.Optimizer) -> TrainingStep:
    """``step`` itself, or an optimizer as a step with its current lrs and no clipping.

    Raises:
        TypeError: neither.
    """
    if isinstance(step, TrainingStep):
        return step
    if isinstance(step, torch.optim.Optimizer):
        return TrainingStep(step)
    raise TypeError(
        f"expected a perturbative.TrainingStep or a torch.optim.Optimizer, not "
        f"{type(step).__name__}: pt.TrainingStep(optimizer, max_grad_norm=..., scheduler=...)"
    )


def _as_rates(rates: Any, groups: int) -> tuple[Rates, ...]:
    out = []
    for i, rate in enumerate(rates):
        row = (float(rate),) * groups if isinstance(rate, (int, float)) else tuple(map(float, rate))
        if len(row) != groups:
            raise ValueError(
                f"rates[{i}] has {len(row)} rates for an optimizer of {groups} param groups"
            )
        if any(not r >= 0 for r in row):
            raise ValueError(f"rates[{i}] = {row}: learning rates must be >= 0")
        out.append(row)
    return tuple(out)


class _StandIn(types.SimpleNamespace):
    """An optimizer's param-group settings without its parameters or state."""

    _opt_called = True  # torch's schedulers check that the optimizer stepped first

    def step(self, *args: Any, **kwargs: Any) -> None:
        return None


def _stand_in_copy(scheduler: Any, optimizer: torch.optim.Optimizer) -> Any:
    """A copy of ``scheduler`` driving a stand-in of ``optimizer`` that holds only its groups'
    settings (no parameters, no state), so reading the schedule copies no tensors."""
    groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    stand_in = _StandIn(param_groups=copy.deepcopy(groups))
    return copy.deepcopy(scheduler, memo={id(optimizer): stand_in})

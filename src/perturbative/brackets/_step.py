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
    _read: list = dataclasses.field(default_factory=list, repr=False)  # a scheduler's, so far
    # the caller's scheduler and its step count when this step was built: a step built once
    # and used after the loop moved on would pair today's optimizer state with an old schedule
    _origin: tuple | None = dataclasses.field(default=None, repr=False)

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
        caller = self.scheduler
        if caller is not None and not isinstance(getattr(caller, "optimizer", None), _StandIn):
            if isinstance(caller, torch.optim.lr_scheduler.ReduceLROnPlateau):
                raise ValueError(
                    "ReduceLROnPlateau sets the lr from the metric the loop gives it, which a "
                    "prediction cannot know: pass rates= (the lrs of the steps to predict)"
                )
            if getattr(caller, "optimizer", None) is not self.optimizer:
                raise ValueError("the scheduler is not this optimizer's: build it on the optimizer")
            object.__setattr__(self, "scheduler", _stand_in_copy(caller, self.optimizer))
            object.__setattr__(self, "_origin", (caller, getattr(caller, "last_epoch", None)))

    @property
    def groups(self) -> int:
        """How many param groups the optimizer has."""
        return len(self.optimizer.param_groups)

    def rates_at(self, position: int) -> Rates:
        """Each group's lr at step ``position`` (0: the next step from the optimizer's state).

        Raises:
            IndexError: ``position`` is past the end of the given ``rates``.
            ValueError: the scheduler changes another setting than the lr (OneCycleLR's
                momentum: not modelled), or it has stepped since this step was built.
        """
        rates = self._unscaled(position)
        return rates if self.lr_scale == 1.0 else tuple(self.lr_scale * r for r in rates)

    def check_current(self) -> None:
        """Refuse a step whose scheduler has stepped since it was built.

        Raises:
            ValueError: the caller's scheduler moved on.
        """
        if self._origin is None:
            return
        caller, epoch = self._origin
        if getattr(caller, "last_epoch", None) != epoch:
            raise ValueError(
                f"the scheduler has stepped since this TrainingStep was built (at its step "
                f"{epoch}, now {caller.last_epoch}): build the TrainingStep from the optimizer "
                "and scheduler as they are where you predict"
            )

    def _unscaled(self, position: int) -> Rates:
        if position < 0:
            raise IndexError(f"step position {position} < 0")
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
            before = [_settings(g) for g in groups]
            with warnings.catch_warnings():  # the stand-in takes no optimizer step
                warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*")
                self.scheduler.step()
            changed = sorted({k for b, g in zip(before, groups, strict=True) for k in b
                              if b[k] != _settings(g).get(k)})  # fmt: skip
            if changed:
                raise ValueError(
                    f"the scheduler changes {', '.join(changed)} as well as the lr, which the "
                    "predictions do not model (OneCycleLR and CyclicLR cycle the momentum: pass "
                    "cycle_momentum=False), or pass rates= with the lrs alone"
                )
        return self._read[position]

    def schedule(self, steps: int) -> list[Rates]:
        """The rates of the first ``steps`` steps."""
        return [self.rates_at(i) for i in range(steps)]

    def scaled(self, factor: float) -> TrainingStep:
        """The same schedule with every rate times ``factor``."""
        if not float(factor) > 0:
            raise ValueError(f"lr scale {factor}: give a factor > 0")
        return dataclasses.replace(
            self, lr_scale=self.lr_scale * float(factor), _read=self._read, _origin=self._origin
        )

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


def _settings(group: dict) -> dict:
    """A param group's settings a scheduler could change, other than its lr."""
    kept = ("momentum", "betas", "weight_decay", "eps", "dampening")
    return {k: group[k] for k in kept if k in group}


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

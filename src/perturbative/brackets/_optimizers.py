"""Optimizer updates as pure functions: ``(params, grads, state) -> (params, state)``.

To predict what an order of training examples does with a real optimizer, the prediction has to
take the optimizer's own steps: momentum carries a gradient into later steps, Adam divides by its
second moment and corrects its bias. These functions reproduce ``torch.optim``'s update rules on
dicts of tensors (no ``nn.Module``, no in-place writes into the caller's tensors), so a prediction
can run many orders from one state, and ``torch.func`` can differentiate through them. One small
function per optimizer and a registry, :data:`UPDATE_RULES`. Tests check each rule against
``optimizer.step()``.

:func:`functional_optimizer` is the one place that reads a ``torch.optim`` optimizer: its kind,
each parameter's group hyperparameters and its state, with the clipping and the lr of each group
at each step from a :class:`~perturbative.TrainingStep`. Everything else derives from what it
returns: the functional steps of the predictions, Adam's preconditioner
(:func:`adam_denominator`, :func:`perturbative.brackets.adam_preconditioner`) and the leading-order
swap coefficients of :func:`perturbative.brackets.swap_check`.

Supported: ``SGD`` (momentum, dampening, Nesterov, weight decay) and ``Adam``/``AdamW`` (weight
decay coupled or decoupled), not ``amsgrad``, ``maximize`` or other optimizers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from perturbative._core.checks import Params
from perturbative.brackets._step import TrainingStep, as_training_step

UpdateRule = Callable[[Tensor, Tensor, dict, dict], tuple[Tensor, dict]]


def sgd_update(theta: Tensor, grad: Tensor, state: dict, hyper: dict) -> tuple[Tensor, dict]:
    """One ``torch.optim.SGD`` step of one tensor; ``state`` holds ``momentum_buffer`` or None."""
    lr, mu, tau = hyper["lr"], hyper["momentum"], hyper["dampening"]
    step = grad + hyper["weight_decay"] * theta if hyper["weight_decay"] else grad
    buffer = state.get("momentum_buffer")
    if mu:
        buffer = step if buffer is None else mu * buffer + (1 - tau) * step
        step = step + mu * buffer if hyper["nesterov"] else buffer
    return theta - lr * step, {"momentum_buffer": buffer}


def adam_update(theta: Tensor, grad: Tensor, state: dict, hyper: dict) -> tuple[Tensor, dict]:
    """One ``torch.optim.Adam``/``AdamW`` step of one tensor (state ``exp_avg``, ``exp_avg_sq``,
    ``step``; fresh when empty)."""
    lr, (b1, b2), eps, wd = hyper["lr"], hyper["betas"], hyper["eps"], hyper["weight_decay"]
    step = state.get("step", 0) + 1
    if wd and hyper["decoupled"]:
        theta = theta * (1 - lr * wd)
    elif wd:
        grad = grad + wd * theta
    m = state.get("exp_avg", torch.zeros_like(theta))
    v = state.get("exp_avg_sq", torch.zeros_like(theta))
    m = b1 * m + (1 - b1) * grad
    v = b2 * v + (1 - b2) * grad * grad
    denom = _sqrt(v) / math.sqrt(1 - b2**step) + eps
    theta = theta - (lr / (1 - b1**step)) * m / denom
    return theta, {"exp_avg": m, "exp_avg_sq": v, "step": step}


def _sqrt(v: Tensor) -> Tensor:
    """``v.sqrt()`` for ``v >= 0``, with a zero derivative where ``v`` is 0 (a coordinate no
    gradient has reached yet), where ``sqrt``'s own is infinite and would make every derivative
    through the step NaN."""
    return torch.where(v > 0, v.clamp_min(torch.finfo(v.dtype).tiny).sqrt(), torch.zeros_like(v))


UPDATE_RULES: dict[type, UpdateRule] = {
    torch.optim.SGD: sgd_update,
    torch.optim.Adam: adam_update,
    torch.optim.AdamW: adam_update,
}


@dataclass
class FunctionalOptimizer:
    """A training step's update rule, hyperparameters, schedule and state, as plain data.

    Attributes:
        rule: the update of one tensor (from :data:`UPDATE_RULES`).
        hyper: per parameter name, the hyperparameters of its group (``"lr"``: the group's lr
            at the first step; ``rates`` gives every step's).
        state: per parameter name, the state to start from (tensors detached and copied).
        name: the optimizer's class name (``"SGD"``, ``"Adam"``, ``"AdamW"``).
        max_grad_norm: clip the gradient to this total norm before each step, as
            ``torch.nn.utils.clip_grad_norm_`` does (``None``: no clipping).
        group: per parameter name, the index of its param group.
        rates: ``position -> per-group lrs`` (the :class:`~perturbative.TrainingStep`'s
            schedule); ``None``: each group's ``hyper["lr"]`` at every step.
    """

    rule: UpdateRule
    hyper: dict[str, dict]
    state: dict[str, dict] = field(default_factory=dict)
    name: str = "SGD"
    max_grad_norm: float | None = None
    group: dict[str, int] = field(default_factory=dict)
    rates: Callable[[int], tuple[float, ...]] | None = None

    @property
    def lr(self) -> float:
        """The learning rate of the first parameter's group at the first step."""
        return float(next(iter(self.hyper.values()))["lr"])

    @property
    def adaptive(self) -> bool:
        """Whether the update divides by a second moment (Adam, AdamW)."""
        return self.rule is adam_update

    def lr_of(self, name: str, position: int) -> float:
        """The lr of parameter ``name``'s group at step ``position``."""
        if self.rates is None:
            return float(self.hyper[name]["lr"])
        return float(self.rates(position)[self.group[name]])

    def step(
        self,
        params: Params,
        grads: Params,
        state: dict[str, dict],
        position: int = 0,
        recompute: bool = False,
    ):
        """``(params, grads, state) -> (params, state)`` for every name of ``params``: step
        ``position`` of the schedule (0: the first from :attr:`state`). ``recompute``: a
        backward pass through the step recomputes each update rule's intermediates rather than
        holding them (``torch.utils.checkpoint``; Adam's hold several parameter-sized tensors a
        step, which an unrolled window would otherwise keep for every step)."""
        if self.max_grad_norm is not None:
            grads = clipped(grads, self.max_grad_norm)
        out_params, out_state = {}, {}
        for name, theta in params.items():
            hyper = self.hyper[name]
            if self.rates is not None:
                hyper = {**hyper, "lr": self.lr_of(name, position)}
            if recompute:
                out_params[name], out_state[name] = checkpoint(
                    self.rule, theta, grads[name], state[name], hyper, use_reentrant=False
                )
            else:
                out_params[name], out_state[name] = self.rule(
                    theta, grads[name], state[name], hyper
                )
        return out_params, out_state

    def run(self, params: Params, gradients: list[Params], start: int = 0) -> list[Params]:
        """Parameters after each of ``len(gradients)`` steps fed these gradients, from
        :attr:`state`, the first at schedule position ``start``: ``[theta_1, ..., theta_k]``."""
        state, path = self.state, []
        for i, grads in enumerate(gradients):
            params, state = self.step(params, grads, state, start + i)
            path.append(params)
        return path


def clipped(grads: Params, max_norm: float) -> Params:
    """``grads`` scaled to total norm at most ``max_norm``, exactly as
    ``torch.nn.utils.clip_grad_norm_`` scales them (``max_norm / (norm + 1e-6)``, at most 1)."""
    total = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(g) for g in grads.values()])
    )
    coefficient = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    return {k: g * coefficient for k, g in grads.items()}


def functional_optimizer(
    step: TrainingStep | torch.optim.Optimizer, params: dict[str, Tensor]
) -> FunctionalOptimizer:
    """Read a training step's rule, per-group hyperparameters, schedule, clipping and current
    state for ``params``: the one reader of a torch optimizer.

    Args:
        step: the :class:`~perturbative.TrainingStep` (an optimizer alone: its current lrs at
            every step, no clipping), built on the tensors of ``params``.
        params: the trained parameters by name (``dict(model.named_parameters())``).

    Raises:
        ValueError: the optimizer's update is not modelled (see the module docstring), or a
            parameter is not in any of its groups.
    """
    step = as_training_step(step)
    step.check_current()
    optimizer = step.optimizer
    kind = type(optimizer)
    if kind not in UPDATE_RULES:
        raise ValueError(
            f"the update of {kind.__name__} is not modelled; predictions support "
            f"{', '.join(k.__name__ for k in UPDATE_RULES)}"
        )
    groups = {
        id(p): (index, group)
        for index, group in enumerate(optimizer.param_groups)
        for p in group["params"]
    }
    hyper, state, group_of = {}, {}, {}
    first = step.rates_at(0)
    for name, p in params.items():
        if id(p) not in groups:
            raise ValueError(
                f"params[{name!r}] is not updated by the optimizer: build it on "
                "model.parameters() and pass dict(model.named_parameters())"
            )
        group_of[name], group = groups[id(p)]
        if group.get("maximize", False) or group.get("amsgrad", False):
            raise ValueError("maximize=True and amsgrad=True are not modelled")
        hyper[name] = {**_hyperparameters(kind, group), "lr": float(first[group_of[name]])}
        saved = optimizer.state.get(p, {})
        state[name] = {
            k: (v.detach().clone().to(p) if isinstance(v, Tensor) and k != "step" else v)
            for k, v in saved.items()
        }
        if "step" in state[name]:
            state[name]["step"] = int(float(state[name]["step"]))
    return FunctionalOptimizer(
        UPDATE_RULES[kind],
        hyper,
        state,
        kind.__name__,
        step.max_grad_norm,
        group_of,
        step.rates_at,
    )


def plain_sgd(
    names: list[str], lr: float, max_grad_norm: float | None = None, like: Any = None
) -> FunctionalOptimizer:
    """Plain SGD at ``lr`` on ``names`` (no momentum, no weight decay, no state, the given
    clipping): what a prediction that ignores the run's optimizer assumes. ``like``: a read
    :class:`FunctionalOptimizer` whose schedule (each group's lr at each step) it follows, so
    that it differs from that optimizer in its update rule alone."""
    hyper = {"lr": float(lr), "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0}
    return FunctionalOptimizer(
        sgd_update,
        {k: {**hyper, "nesterov": False} for k in names},
        {k: {} for k in names},
        max_grad_norm=max_grad_norm,
        group=like.group if like is not None else {},
        rates=like.rates if like is not None else None,
    )


def adam_denominator(
    hyper: dict, state: dict, gradient: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Adam's diagonal preconditioner ``P = 1 / (sqrt(v_hat) + eps)`` of one tensor, and where
    its second moment is zero.

    ``v_hat = exp_avg_sq / (1 - b2^t)`` from ``state``; with ``gradient`` (the next step's) the
    denominator of that next step, ``v' = b2 v + (1-b2) g^2`` at step ``t + 1``. Where ``v`` is
    zero (no gradient has reached the coordinate yet) ``P`` is set to 0: Adam's next step moves
    such a coordinate by a fixed-size sign step, which no ``1/eps`` describes.

    Returns:
        ``(P, zero)``: ``P`` shaped like the tensor, and the boolean mask of zero second moments
        (all False with ``gradient``).

    Raises:
        ValueError: the state has no second moment yet (no step taken).
    """
    if "exp_avg_sq" not in state:
        raise ValueError("no second-moment state yet: take at least one optimizer step first")
    b2, step = hyper["betas"][1], float(state["step"])
    v = state["exp_avg_sq"]
    if gradient is not None:
        v = b2 * v + (1 - b2) * gradient.detach().to(v) ** 2
        step += 1
    pre = 1.0 / ((v / (1 - b2**step)).sqrt() + hyper["eps"])
    zero = v == 0 if gradient is None else torch.zeros_like(v, dtype=torch.bool)
    return torch.where(zero, torch.zeros_like(pre), pre), zero


def _hyperparameters(kind: type, group: dict) -> dict:
    if kind is torch.optim.SGD:
        keys = ("lr", "momentum", "dampening", "weight_decay", "nesterov")
        return {k: group[k] for k in keys}
    decoupled = kind is torch.optim.AdamW or bool(group.get("decoupled_weight_decay", False))
    return {
        "lr": float(group["lr"]),
        "betas": tuple(float(b) for b in group["betas"]),
        "eps": float(group["eps"]),
        "weight_decay": float(group["weight_decay"]),
        "decoupled": decoupled,
    }

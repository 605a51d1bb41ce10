"""The swap experiment: two real optimizer steps in both orders, against the bracket.

From parameters ``theta`` (the model's current weights) and an optimizer in its current state,
train on ``x`` then ``y`` and, separately, on ``y`` then ``x``. The measured difference

    D = theta_xy - theta_yx

is split into two parts:

* the **optimizer-state part** ``D_s``: the same two steps, in both orders, with each step fed the
  gradient at ``theta`` (``g_x(theta)``, ``g_y(theta)``) instead of the gradient at the current
  point. It is what the optimizer's own state does with the order (momentum and second-moment
  weights); for plain SGD it is zero (up to rounding), with momentum or Adam it is first order in
  ``lr``;
* the **curvature part** ``D_c = D - D_s``: the effect of the second gradient being evaluated at
  the point the first step moved to. This is where the bracket lives.

Leading-order prediction of ``D_c`` (derivation). Let an optimizer step from ``theta`` with
gradient ``g`` move by ``-lr * u``. For the optimizers supported below, the first of the two
updates is ``u_1 = P (alpha m + beta g) + s_1`` and the second depends on its gradient ``g'``
through the diagonal Jacobian ``du_2/dg' = kappa P``, where ``m`` is the optimizer's first moment
(momentum buffer), ``P`` a frozen diagonal preconditioner and ``s_1`` a weight-decay term that
does not depend on the example. Since ``g_y(theta - lr u_1^x) = g_y - lr H_y u_1^x + O(lr^2)``,

    D_c = lr^2 kappa P [H_y w_x - H_x w_y] + O(lr^3),    w_x = beta P g_x + s,
        = lr^2 kappa beta [Pg_x, Pg_y]_P  +  lr^2 kappa P (H_y - H_x) s,

with ``[Pg_x, Pg_y]_P = P H_y P g_x - P H_x P g_y`` the preconditioned bracket
(:func:`perturbative.brackets.preconditioned_bracket`) and ``s = alpha P m + s_1`` the direction
the first step takes whichever example comes first (``bracket_term`` and ``momentum_term`` of
:class:`SwapCheck`). Coefficients (``t`` = the optimizer's step count at ``theta``):

* SGD, no momentum: ``P = 1``, ``alpha = 0``, ``beta = kappa = 1``: ``D_s = 0`` and
  ``D = D_c = lr^2 [v_x, v_y] + O(lr^3)`` (exactly ``lr^2 [v_x, v_y]`` for affine fields).
* SGD, momentum ``mu``, dampening ``tau``, buffer ``b``: ``alpha = mu``, ``beta = kappa = 1-tau``
  (a fresh buffer: ``alpha = 0``, ``beta = 1``, ``kappa = 1-tau``). Nesterov: ``alpha = mu^2``,
  ``beta = kappa = 1 + mu (1-tau)`` (fresh: ``beta = 1 + mu``). Coupled weight decay ``lambda``
  adds ``s_1 = beta lambda theta``.
* Adam/AdamW, ``betas = (b1, b2)``, ``c_k = 1 / (1 - b1^(t+k))``: ``P = 1/(sqrt(v_hat) + eps)``
  with ``v_hat = exp_avg_sq / (1 - b2^t)`` from the state at ``theta``
  (:func:`perturbative.brackets.adam_preconditioner`), ``alpha = c_1 b1``, ``beta = c_1 (1-b1)``,
  ``kappa = c_2 (1-b1)``. The second step carries only ``(1-b1)`` of its gradient (plus ``b1``
  times the moment), and the first step displaced the point by ``(1-b1)`` of ``g_x`` plus ``b1``
  of the moment, so the preconditioned bracket enters with ``lr^2 c_1 c_2 (1-b1)^2`` and the
  moment adds ``lr^2 c_1 c_2 b1 (1-b1) P (H_y - H_x) P m``. With ``b1 = 0.9`` and an
  established moment the momentum term is usually the larger one. Decoupled weight decay
  (AdamW) adds ``s_1 = lambda theta``; coupled (Adam's ``weight_decay``) ``s_1 = beta lambda P
  theta``.

When the Adam prediction holds: it freezes ``P`` at ``theta``, but each step updates ``v``,
``v_hat_(t+1) - v_hat_t = (1-b2)/(1-b2^(t+1)) (g^2 - v_hat_t)``; the prediction is the leading
term when that weight ``(1-b2)/(1-b2^(t+1))`` times ``|g^2/v_hat - 1|`` is small (``v`` well
established: many warm-up steps, the two new gradients of a size ``v_hat`` has seen), and its
relative error is then ``O(lr) + O((1-b2)/(1-b2^(t+1)) g^2/v_hat)``: the Taylor remainder,
and the ``v`` change between the steps, which enters at ``lr^2`` and so sets a floor on the
relative residual (``docs/results/brackets.md`` gives it for a few warm-up lengths and
``b2``). A fresh Adam (``t = 0``) gets no prediction.
``amsgrad`` and ``maximize`` are not modelled: ``prediction`` is ``None`` for them and for other
optimizers, but the measured difference and its split are computed for any ``torch.optim``
optimizer.

Smoothness: the expansion needs fields that are smooth along the steps. Max-pooling and ReLU make
them piecewise smooth; the prediction then holds only while ``lr`` is small enough that no
pooling choice or activation sign changes within the two steps. Use smooth models (tanh, GELU,
Mish written as ``x * tanh(softplus(x))``) or very small ``lr`` to check ``O(lr^3)`` scaling.

The caller's model and optimizer are never changed: every run works on ``copy.deepcopy`` of the
pair (so the optimizer's state follows the copied parameters), and both orders start from equal
copies.
"""

from __future__ import annotations

import collections
import copy
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from perturbative._core import calls, checks
from perturbative._core.calls import LossFn
from perturbative._core.checks import Params
from perturbative.brackets._gradients import mean_gradient
from perturbative.brackets._hvp import hvp
from perturbative.brackets._norms import vector_norm
from perturbative.brackets._optimizers import (
    FunctionalOptimizer,
    adam_denominator,
    adam_update,
    functional_optimizer,
    sgd_update,
)
from perturbative.brackets._step import TrainingStep, as_training_step


@dataclass
class SwapCheck:
    """Result of :func:`swap_check`; every dict is keyed like the trained parameters.

    Attributes:
        measured: ``D = theta_xy - theta_yx`` after the real steps.
        optimizer_state_part: ``D_s``, the same steps fed the gradients at ``theta``.
        curvature_part: ``D_c = D - D_s``.
        prediction: leading-order ``D_c`` (module docstring), ``bracket_term + momentum_term``;
            ``None`` when the optimizer's update is not modelled (see ``prediction_formula``).
        bracket_term: ``lr^2 kappa beta`` times the (preconditioned) bracket of ``x`` and ``y``.
        momentum_term: ``lr^2 kappa P (H_y - H_x) s``, from the first step's shared direction.
        relative_residual: ``|D_c - prediction| / |prediction|`` (norms over all parameters);
            ``O(lr)`` where the prediction holds.
        residual_norm: ``|D_c - prediction|``, ``O(lr^3)`` where the prediction holds.
        lr: the learning rate of the steps (of the first parameter group).
        prediction_formula: the coefficients used, or why there is no prediction.
    """

    measured: Params
    optimizer_state_part: Params
    curvature_part: Params
    prediction: Params | None
    bracket_term: Params | None
    momentum_term: Params | None
    relative_residual: float | None
    residual_norm: float | None
    lr: float
    prediction_formula: str


def trained_names(model: nn.Module, step: TrainingStep | torch.optim.Optimizer) -> list[str]:
    """The names of ``model``'s parameters the step trains (the model checked against it)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, not {type(model).__name__}")
    optimizer = as_training_step(step).optimizer
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    names = [k for k, p in model.named_parameters() if p.requires_grad]
    if not names:
        raise ValueError("no parameter of the model requires grad: there is nothing to train")
    missing = [
        k for k, p in model.named_parameters() if p.requires_grad and id(p) not in in_optimizer
    ]
    if missing:
        raise ValueError(
            f"parameters {missing[:3]} require grad but the optimizer does not update them: build "
            "the optimizer on model.parameters() of this model, or set requires_grad_(False) on "
            "the parameters to hold fixed"
        )
    dropout = checks.train_mode_dropout(model)
    if dropout:
        raise ValueError(
            f"dropout layers {dropout[:3]} are in train mode, so the two orders would see "
            "different random masks; call model.eval() (BatchNorm then uses running statistics)"
        )
    return names


def steps_on_copies(
    model: nn.Module,
    loss_fn: LossFn,
    step: TrainingStep | torch.optim.Optimizer,
    batches: Sequence[tuple[Tensor, ...]],
    *,
    gradients: Sequence[Mapping[str, Tensor]] | None = None,
    batch_context: Tensor | None = None,
    extra: Sequence[tuple[tuple[Any, ...], float] | None] | None = None,
) -> Iterator[tuple[nn.Module, Params]]:
    """Copies of ``model`` and the step's optimizer trained one step per batch, in order, as the
    loop trains (step ``i``: its schedule's lrs written into the groups, backward, the clipping,
    ``optimizer.step()``): yields the model copy and its trained parameters before the first step
    and after each step (lazily, so a caller that stops early takes no further steps).
    ``extra[i]``, where given, is ``(data, weight)``: step ``i``'s loss adds ``weight`` times the
    mean loss of ``data``."""
    for model_copy, _, params in _trained_copies(
        model, loss_fn, step, batches, gradients, batch_context, extra
    ):
        yield model_copy, params


def trained_copy(
    model: nn.Module,
    loss_fn: LossFn,
    step: TrainingStep | torch.optim.Optimizer,
    batches: Sequence[tuple[Tensor, ...]],
    then: int,
) -> tuple[nn.Module, TrainingStep]:
    """Copies of ``model`` and the step's optimizer trained on ``batches`` (as
    :func:`steps_on_copies`), and the step that goes on from there: that optimizer copy, the
    loop's clipping, and the schedule's next ``then`` rates (positions ``len(batches)`` on).
    Phases that share a first phase branch from one copy instead of each training it again."""
    step = as_training_step(step)
    *_, (model_copy, optimizer_copy, _) = _trained_copies(model, loss_fn, step, batches)
    rates = tuple(step.rates_at(len(batches) + i) for i in range(then))
    return model_copy, TrainingStep(optimizer_copy, step.max_grad_norm, rates=rates)


def _trained_copies(model, loss_fn, step, batches, gradients=None, batch_context=None, extra=None):
    """:func:`steps_on_copies`, yielding the optimizer copy too."""
    step = as_training_step(step)
    step.check_current()
    names = trained_names(model, step)
    if gradients is not None and len(gradients) != len(batches):
        raise ValueError(f"got {len(gradients)} gradient dicts for {len(batches)} batches")
    batches = checks.check_batches(model, batches, batch_context)
    model_copy, optimizer_copy = copy.deepcopy((model, step.optimizer))
    params = {k: p for k, p in model_copy.named_parameters() if k in names}
    loss = calls.batch_loss(
        model_copy, loss_fn, calls.fixed_state(model_copy, params), batch_context
    )
    yield model_copy, optimizer_copy, params
    for i, batch in enumerate(batches):
        optimizer_copy.zero_grad(set_to_none=True)
        if gradients is None:
            value = loss(params, *batch)
            if extra is not None and extra[i] is not None:
                value = value + extra[i][1] * loss(params, *extra[i][0])
            value.backward()
            checks.check_finite({k: p.grad for k, p in params.items()}, f"the gradient of step {i}")
        else:
            for k, p in params.items():
                p.grad = gradients[i][k].detach().to(p).clone()
        step.clip(params.values())
        step.write_rates(optimizer_copy, i)
        optimizer_copy.step()
        yield model_copy, optimizer_copy, params


def parameters_after_steps(
    model: nn.Module,
    loss_fn: LossFn,
    step: TrainingStep | torch.optim.Optimizer,
    batches: Sequence[tuple[Tensor, ...]],
    *,
    gradients: Sequence[Mapping[str, Tensor]] | None = None,
    batch_context: Tensor | None = None,
) -> Params:
    """Take one training step per batch, in order, on copies of ``model`` and the optimizer.

    Each step minimises the batch's mean per-example loss (a batch of one is one example).

    Args:
        model: the module at ``theta``; not modified.
        loss_fn: ``loss_fn(outputs, *targets) -> scalar`` for one example.
        step: the loop's :class:`~perturbative.TrainingStep` (or its optimizer alone: current
            lrs, no clipping), built on ``model.parameters()``, in the state to start from; not
            modified.
        batches: data tuples, each with a leading example dimension.
        gradients: if given, one gradient dict per batch (keyed like the trained parameters,
            shaped like them) fed to the optimizer instead of the gradient at the current point.
        batch_context: inputs of a batch each example joins (train-mode BatchNorm); see
            :mod:`perturbative._core.calls`.

    Returns:
        The trained parameters after the last step, detached: ``{name: (*param.shape)}``.
    """
    steps = steps_on_copies(
        model, loss_fn, step, batches, gradients=gradients, batch_context=batch_context
    )
    _, params = collections.deque(steps, maxlen=1)[0]  # run every step, keep the last
    return {k: p.detach().clone() for k, p in params.items()}


def values_along_steps(
    model: nn.Module,
    loss_fn: LossFn,
    step: TrainingStep | torch.optim.Optimizer,
    batches: Sequence[tuple[Tensor, ...]],
    evaluate: Callable[[nn.Module], float],
    record_after: Sequence[int],
) -> list[float]:
    """Really train on copies of ``model`` and the optimizer, one training step per batch in
    order (the step's schedule and clipping, as the loop trains), and ``evaluate`` the trained
    copy after each step count in ``record_after``.

    Args:
        step: the loop's :class:`~perturbative.TrainingStep`, or its optimizer alone.
        evaluate: ``model -> float``, e.g. ``observable.value``.
        record_after: step counts (``2`` is after the first two batches); each at most
            ``len(batches)``.

    Returns:
        One value per entry of ``record_after``.
    """
    if max(record_after, default=0) > len(batches):
        raise ValueError(f"record_after {list(record_after)} goes past {len(batches)} batches")
    wanted = set(record_after)
    recorded = {}
    for count, (model_copy, _) in enumerate(steps_on_copies(model, loss_fn, step, batches)):
        if count in wanted:
            recorded[count] = evaluate(model_copy)
        if len(recorded) == len(wanted):
            break  # no further steps are taken
    return [recorded[c] for c in record_after]


def values_after_each(
    model: nn.Module,
    loss_fn: LossFn,
    step: TrainingStep | torch.optim.Optimizer,
    first: Sequence[tuple[Tensor, ...]],
    phases: Sequence[Sequence[tuple[Tensor, ...]]],
    evaluate: Callable[[nn.Module], Any],
) -> list[Any]:
    """``evaluate`` after ``first`` then each of ``phases``, really trained (as
    :func:`values_along_steps`), every phase branching from one copy trained on ``first``: its
    optimizer state and the schedule's next rates go on from there. ``len(first) + sum(len(p))``
    steps where training each order from the start takes ``(len(phases) - 1) * len(first)``
    more, with the same values bit for bit where the steps are deterministic (on the CPU; on a
    GPU, kernels that are not deterministic can differ in the last bits either way).

    Args:
        step: the loop's :class:`~perturbative.TrainingStep` (``first`` at positions
            ``0..len(first)-1`` of its schedule, each phase after it), or its optimizer alone.
        first: the batches trained first, once.
        phases: the phases each trained after ``first``, of any lengths.
        evaluate: ``model -> value``, e.g. ``observable.value``.

    Returns:
        One value per phase.
    """
    if not phases:
        return []
    after_first, going_on = trained_copy(
        model, loss_fn, step, first, then=max(len(p) for p in phases)
    )
    return [
        values_along_steps(after_first, loss_fn, going_on, p, evaluate, [len(p)])[0] for p in phases
    ]


def _difference(a: Params, b: Params) -> Params:
    return {k: a[k] - b[k] for k in a}


def swap_check(
    model: nn.Module,
    loss_fn: LossFn,
    step: TrainingStep | torch.optim.Optimizer,
    x: tuple[Tensor, ...],
    y: tuple[Tensor, ...],
    *,
    engine: str = "auto",
    batch_context: Tensor | None = None,
) -> SwapCheck:
    """Train on ``x`` then ``y`` and on ``y`` then ``x``; compare with the bracket.

    See the module docstring for the split into optimizer-state and curvature parts, the
    derivation of the prediction and when it holds.

    Args:
        model: the module at ``theta`` (e.g. eval mode for BatchNorm); not modified.
        loss_fn: ``loss_fn(outputs, *targets) -> scalar`` for one example.
        step: the loop's :class:`~perturbative.TrainingStep` (or any ``torch.optim`` optimizer
            alone) built on ``model.parameters()``, in the state to start from; not modified.
            Predictions for ``SGD`` (momentum, dampening, Nesterov, weight decay) and
            ``Adam``/``AdamW`` (not amsgrad, not maximize), without clipping; each step at its
            schedule's lr (the first step's displacement at the first, its effect on the second
            at the second).
        x: a data tuple (one example, or a minibatch: then its mean field).
        y: the same for ``y``.
        engine: Hessian-vector-product engine for the prediction (see :mod:`perturbative.brackets`).
        batch_context: for train-mode BatchNorm (see :mod:`perturbative._core.calls`).

    Returns:
        :class:`SwapCheck`.

    Raises:
        ValueError, TypeError: bad model, optimizer or data (the message says what to pass).
        FloatingPointError: a gradient, step or Hessian-vector product is not finite.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = nn.Linear(3, 1, bias=False).double()
        >>> mse = lambda out, target: 0.5 * ((out - target) ** 2).sum()
        >>> x = (torch.randn(1, 3, dtype=torch.float64), torch.randn(1, 1, dtype=torch.float64))
        >>> y = (torch.randn(1, 3, dtype=torch.float64), torch.randn(1, 1, dtype=torch.float64))
        >>> opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        >>> swap_check(model, mse, opt, x, y).relative_residual < 1e-2
        True
    """
    step = as_training_step(step)
    names = trained_names(model, step)
    x, n_x = checks.check_data(x, "x")
    y, n_y = checks.check_data(y, "y")
    checks.check_train_mode(model, batch_context, whole_batches=(n_x, n_y))
    params = {k: p.detach().clone().requires_grad_() for k, p in model.named_parameters()}
    params = {k: params[k] for k in names}
    g_x = mean_gradient(model, loss_fn, params, x, batch_context=batch_context)
    g_y = mean_gradient(model, loss_fn, params, y, batch_context=batch_context)

    kw = dict(batch_context=batch_context)
    theta_xy = parameters_after_steps(model, loss_fn, step, [x, y], **kw)
    theta_yx = parameters_after_steps(model, loss_fn, step, [y, x], **kw)
    frozen_xy = parameters_after_steps(model, loss_fn, step, [x, y], gradients=[g_x, g_y], **kw)
    frozen_yx = parameters_after_steps(model, loss_fn, step, [y, x], gradients=[g_y, g_x], **kw)
    measured = _difference(theta_xy, theta_yx)
    state_part = _difference(frozen_xy, frozen_yx)
    curvature_part = _difference(measured, state_part)
    checks.check_finite(measured, "the measured swap difference")

    by_name = dict(model.named_parameters())
    try:
        read = functional_optimizer(step, {k: by_name[k] for k in names})
        if read.max_grad_norm is not None:
            raise ValueError("the leading-order formula does not model gradient clipping")
        model_of_update = update_model(read, {k: params[k].detach() for k in names})
    except ValueError as reason:
        read, model_of_update = (
            None,
            (
                f"no prediction: {reason}; measured, optimizer_state_part and curvature_part are "
                "still exact"
            ),
        )
    first = step.rates_at(0)[0]
    parts = dict(
        measured=measured,
        optimizer_state_part=state_part,
        curvature_part=curvature_part,
        lr=float(first),
    )
    if isinstance(model_of_update, str):
        return SwapCheck(
            **parts,
            prediction=None,
            bracket_term=None,
            momentum_term=None,
            relative_residual=None,
            residual_norm=None,
            prediction_formula=model_of_update,
        )
    pre, alpha_m_plus_s1, beta, kappa, formula = model_of_update

    def hvp_of(batch, vector):
        return hvp(
            model, loss_fn, params, batch, vector, engine=engine, batch_context=batch_context
        )

    # Displacements of the first step (without the minus sign), split into example and shared;
    # the first step moves at its lr, the second responds at its own.
    lr_1 = {k: read.lr_of(k, 0) for k in names}
    lr_2 = {k: read.lr_of(k, 1) for k in names}
    w_gx = {k: lr_1[k] * beta[k] * pre[k] * g_x[k] for k in names}
    w_gy = {k: lr_1[k] * beta[k] * pre[k] * g_y[k] for k in names}
    shared = {k: lr_1[k] * alpha_m_plus_s1[k] for k in names}
    h_y_wx, h_x_wy = hvp_of(y, w_gx), hvp_of(x, w_gy)
    bracket_term = {k: lr_2[k] * kappa[k] * pre[k] * (h_y_wx[k] - h_x_wy[k]) for k in names}
    if all(not bool(v.any()) for v in shared.values()):
        momentum_term = {k: torch.zeros_like(v) for k, v in bracket_term.items()}
    else:
        h_y_s, h_x_s = hvp_of(y, shared), hvp_of(x, shared)
        momentum_term = {k: lr_2[k] * kappa[k] * pre[k] * (h_y_s[k] - h_x_s[k]) for k in names}
    prediction = {k: bracket_term[k] + momentum_term[k] for k in names}
    residual = float(vector_norm(_difference(curvature_part, prediction)))
    scale = float(vector_norm(prediction))
    relative = residual / scale if scale > 0 else (0.0 if residual == 0 else float("inf"))
    return SwapCheck(
        **parts,
        prediction=prediction,
        bracket_term=bracket_term,
        momentum_term=momentum_term,
        relative_residual=relative,
        residual_norm=residual,
        prediction_formula=formula,
    )


def update_model(read: FunctionalOptimizer, theta: Params):
    """Coefficients of the module docstring's update model, or the reason there are none.

    Args:
        read: the optimizer as :func:`functional_optimizer` reads it.
        theta: the trained parameters at ``theta``, detached.

    Returns:
        ``(P, alpha P m + s_1, beta, kappa, formula)`` with per-name ``beta``/``kappa``, or a
        string saying why there is no prediction.
    """
    coefficients = SWAP_COEFFICIENTS[read.rule]
    pre, shared, beta, kappa, unseen = {}, {}, {}, {}, {}
    for k, value in theta.items():
        try:
            pre[k], shared[k], beta[k], kappa[k] = coefficients(value, read.hyper[k], read.state[k])
        except _NoPrediction as reason:
            return str(reason)
        if read.adaptive and bool((pre[k] == 0).any()):
            unseen[k] = int((pre[k] == 0).sum())
    if unseen:
        warnings.warn(
            f"Adam's second moment is zero on {sum(unseen.values())} coordinates "
            f"({', '.join(list(unseen)[:4])}): the prediction gives them P = 0, as "
            "adam_preconditioner does (Adam's next step moves them by a fixed-size sign step, "
            "which 1/eps does not describe)",
            RuntimeWarning,
            stacklevel=3,
        )
    return pre, shared, beta, kappa, FORMULAS[read.rule]


class _NoPrediction(Exception):
    """The optimizer's state admits no leading-order swap prediction (the message says why)."""


def _sgd_coefficients(theta: Tensor, hyper: dict, state: dict):
    mu, tau = float(hyper["momentum"]), float(hyper["dampening"])
    wd, nesterov = float(hyper["weight_decay"]), bool(hyper["nesterov"])
    buffer = state.get("momentum_buffer")
    if mu == 0:
        alpha, beta, kappa = 0.0, 1.0, 1.0
    elif nesterov:
        alpha, beta = (0.0, 1.0 + mu) if buffer is None else (mu * mu, 1.0 + mu * (1 - tau))
        kappa = 1.0 + mu * (1 - tau)
    else:
        alpha, beta = (0.0, 1.0) if buffer is None else (mu, 1.0 - tau)
        kappa = 1.0 - tau
    moment = torch.zeros_like(theta) if buffer is None else buffer.to(theta)
    return torch.ones_like(theta), alpha * moment + beta * wd * theta, beta, kappa


def _adam_coefficients(theta: Tensor, hyper: dict, state: dict):
    if "exp_avg_sq" not in state or float(state["step"]) < 1:
        raise _NoPrediction(
            "no prediction: Adam has no second-moment state yet, so v_hat changes at first order "
            "between the steps; take warm-up steps first (module docstring)"
        )
    (b1, _), t = hyper["betas"], float(state["step"])
    c1, c2 = 1 / (1 - b1 ** (t + 1)), 1 / (1 - b1 ** (t + 2))
    pre, _ = adam_denominator(
        hyper, {k: v.to(theta) if isinstance(v, Tensor) else v for k, v in state.items()}
    )
    wd = hyper["weight_decay"]
    s1 = wd * theta if hyper["decoupled"] else c1 * (1 - b1) * wd * pre * theta
    shared = c1 * b1 * pre * state["exp_avg"].to(theta) + s1
    return pre, shared, c1 * (1 - b1), c2 * (1 - b1)


SWAP_COEFFICIENTS = {sgd_update: _sgd_coefficients, adam_update: _adam_coefficients}
FORMULAS = {
    sgd_update: "SGD: lr^2 kappa P [H_y w_x - H_x w_y], P = 1 (see perturbative.brackets._swap)",
    adam_update: (
        "Adam: lr^2 c1 c2 (1-b1) P [(1-b1) (H_y P g_x - H_x P g_y) + b1 (H_y - H_x) P m] "
        "(+ weight decay), P = 1/(sqrt(v_hat)+eps) frozen at theta, 0 where v = 0 (see "
        "perturbative.brackets._swap)"
    ),
}

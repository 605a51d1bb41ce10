"""Order scores with the run's optimizer: how much training each example in the first rather
than the last of the run's next minibatches changes an observable, under SGD (with momentum),
Adam or AdamW in their real state.

:func:`perturbative.brackets.order_scores` is the plain-SGD score ``lr^2 S_x``, second order in
``lr``: under an optimizer with state it misses the leading term, and with single-example steps
Adam's response to one example saturates (a near sign step) where a frozen preconditioner does
not. Here an example ``x`` joins one of the run's own minibatches, weighted like the batch's own
examples (``1/b`` for a batch of ``b``), in a window of ``W`` of the run's batches: in the first
batch or in the last. Call the window's steps ``theta_t = step(theta_{t-1}, g_t + e_t)``, with
``e_t`` the gradient an added example contributes. Then, to first order in the one example's
weight and exactly in ``lr``,

    O(x first) - O(x last) = lambda_1 . g_x(theta_0) / b_1 - lambda_W . g_x(theta_{W-1}) / b_W,

with ``lambda_t = dO(theta_W) / de_t`` the adjoint of the window's real trajectory under the
run's optimizer (momentum, Adam's moments and bias correction, weight decay, clipping), taken
by one backward pass through the ``W`` unrolled steps (``torch.func``-style functional steps of
:mod:`perturbative.brackets._optimizers`, gradients with their graphs). The parts:

- the *state part*: the same with every gradient frozen at ``theta`` and ``O`` linear (``u .
  theta_W``): first order in ``lr``, what the optimizer's state alone does;
- the *curvature part*: the rest (the Hessians along the trajectory);
- the *plain-SGD score*: the same adjoint under plain SGD at the same ``lr``, the score of a
  method that ignores the optimizer (a baseline).

Cost: ``W`` minibatch gradients with their graphs and one backward pass through them (twice:
the run's optimizer and plain SGD), ``W`` frozen gradients, and ``2 n`` per-example gradients
(at ``theta_0`` and ``theta_{W-1}``, for ``n`` examples scored). Really training both orders
costs ``2 n W`` minibatch steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from perturbative._core import calls, checks
from perturbative._core.calls import LossFn
from perturbative._core.checks import Params
from perturbative._core.engines import differentiable_kernels
from perturbative.brackets._gradients import per_example_gradients
from perturbative.brackets._optimizers import (
    FunctionalOptimizer,
    functional_optimizer,
    plain_sgd,
)
from perturbative.brackets._order import Observable
from perturbative.brackets._swap import _steps_on_copies, trained_names


@dataclass
class OptimizerOrderScores:
    """:func:`optimizer_order_scores`' answer, each ``(n,)``: ``O(x first) - O(x last)``.

    Attributes:
        scores: the prediction, ``state_part + curvature_part``.
        state_part: first order in ``lr``: the optimizer's own steps in both orders, gradients
            frozen at ``theta``.
        curvature_part: the rest, the curvature along the window's trajectory.
        sgd: the same score under plain SGD at ``lr`` (a baseline that ignores the optimizer).
        optimizer: the optimizer's class name, which the scores model.
        lr: the learning rate of the steps.
        window: the number of minibatches in the window.
    """

    scores: Tensor
    state_part: Tensor
    curvature_part: Tensor
    sgd: Tensor
    optimizer: str
    lr: float
    window: int


def optimizer_order_scores(
    model: nn.Module,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    examples: Any,
    observable: Observable,
    window: Sequence[Any],
    *,
    lr: float | None = None,
    max_grad_norm: float | None = None,
) -> OptimizerOrderScores:
    """How much training each of ``examples`` in the first rather than the last batch of
    ``window`` changes ``O``, with the optimizer's own steps from its real state (module
    docstring).

    Args:
        model: the model at ``theta``; not modified.
        loss_fn: the per-example loss (a batch of one).
        optimizer: ``SGD``, ``Adam`` or ``AdamW`` built on the model, in the run's state.
        examples: ``n`` examples to score (a data tuple or keyword batch).
        observable: ``O``.
        window: ``W >= 2`` minibatches, the steps the run takes next (one step each); an
            example joins the first or the last, weighted like that batch's own examples.
        lr: the learning rate (default: the optimizer's).
        max_grad_norm: the run's gradient clipping, applied to every step.

    Returns:
        :class:`OptimizerOrderScores`, each ``(n,)``.
    """
    if len(window) < 2:
        raise ValueError(f"the window needs at least 2 minibatches, not {len(window)}")
    names = trained_names(model, optimizer)
    by_name = dict(model.named_parameters())
    window = checks.check_batches(model, window)
    sizes = [calls.num_examples(b) for b in window]
    examples, n = checks.check_data(examples, "examples")
    theta = {k: by_name[k].detach() for k in names}
    state = calls.fixed_state(model, theta)
    read = dataclasses.replace(
        functional_optimizer(optimizer, {k: by_name[k] for k in names}).with_lr(lr),
        max_grad_norm=max_grad_norm,
    )
    sgd = dataclasses.replace(plain_sgd(names, read.lr), max_grad_norm=max_grad_norm)
    u = observable.gradient(model, {k: v.clone().requires_grad_() for k, v in theta.items()})
    with differentiable_kernels():
        full = _adjoints(model, loss_fn, observable, read, theta, state, window, frozen=False)
        frozen = _adjoints(model, loss_fn, observable, read, theta, state, window, u=u)
        plain = _adjoints(model, loss_fn, observable, sgd, theta, state, window, frozen=False)

    def score(adjoint: tuple[Params, Params, Params]) -> Tensor:
        first, last, before_last = adjoint
        return (
            _dots(model, loss_fn, theta, examples, first) / sizes[0]
            - _dots(model, loss_fn, before_last, examples, last) / sizes[-1]
        )

    scores, state_part = score(full), score(frozen)
    if not bool(torch.isfinite(scores).all()):
        raise FloatingPointError(
            "the order scores are not finite: the window's trajectory or the observable is NaN "
            "or inf at this checkpoint (check the loss there, or use float64)"
        )
    return OptimizerOrderScores(
        scores=scores,
        state_part=state_part,
        curvature_part=scores - state_part,
        sgd=score(plain),
        optimizer=read.name,
        lr=read.lr,
        window=len(window),
    )


def _adjoints(
    model: nn.Module,
    loss_fn: LossFn,
    observable: Observable,
    read: FunctionalOptimizer,
    theta: Params,
    state: dict[str, Tensor],
    window: list[tuple[Any, ...]],
    *,
    frozen: bool = True,
    u: Params | None = None,
) -> tuple[Params, Params, Params]:
    """``(lambda_1, lambda_W, theta_{W-1})`` of the window's unrolled steps under ``read``:
    ``lambda_t = dO(theta_W)/de_t`` for a gradient ``e_t`` added at the first and last steps.
    ``frozen``: every gradient at ``theta`` and ``O`` replaced by ``u . theta_W``."""
    loss = calls.batch_loss(model, loss_fn, state)
    start = {k: v.clone().requires_grad_() for k, v in theta.items()}
    added = [{k: torch.zeros_like(v, requires_grad=True) for k, v in theta.items()} for _ in "fl"]
    params, opt_state, before_last = start, read.state, theta
    for t, batch in enumerate(window):
        at = start if frozen else params
        grads = torch.autograd.grad(loss(at, *batch), list(at.values()), create_graph=not frozen)
        grads = {k: g if not frozen else g.detach() for k, g in zip(at, grads, strict=True)}
        checks.check_finite(grads, f"the gradient of the window's batch {t}")
        if t == 0:
            grads = {k: g + added[0][k] for k, g in grads.items()}
        if t == len(window) - 1:
            if not frozen:  # frozen gradients are all taken at theta
                before_last = {k: v.detach() for k, v in params.items()}
            grads = {k: g + added[1][k] for k, g in grads.items()}
        params, opt_state = read.step(params, grads, opt_state)
    if frozen:
        value = sum((u[k] * params[k]).sum() for k in u)
    else:
        value = observable.evaluate(model, params, state)
    first, last = (
        torch.autograd.grad(value, [a[k] for k in theta], retain_graph=True, allow_unused=True)
        for a in added
    )
    as_dict = [
        {
            k: torch.zeros_like(theta[k]) if g is None else g.detach()
            for k, g in zip(theta, gs, strict=True)
        }
        for gs in (first, last)
    ]
    return as_dict[0], as_dict[1], before_last


def _dots(
    model: nn.Module, loss_fn: LossFn, at: Params, examples: tuple[Any, ...], vector: Params
) -> Tensor:
    """``vector . g_x(at)`` for every example ``x``, ``(n,)`` in float64."""
    params = {k: v.detach().clone().requires_grad_() for k, v in at.items()}
    grads = per_example_gradients(model, loss_fn, params, examples, engine="double_backward")
    return sum((grads[k].flatten(1) * vector[k].flatten()).sum(1).to(torch.float64) for k in vector)


def moved_first_or_last(
    model: nn.Module,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    example: Any,
    observable: Observable,
    window: Sequence[Any],
    *,
    lr: float | None = None,
    max_grad_norm: float | None = None,
) -> tuple[float, float]:
    """Really train the window on copies of the model and optimizer with ``example`` in its
    first batch, then in its last (weighted like each batch's own examples): ``(O first, O
    last)``, what :func:`optimizer_order_scores` predicts the difference of."""
    window = checks.check_batches(model, window)
    example, _ = checks.check_data(example, "example")
    values = []
    for at in (0, len(window) - 1):
        extra = [None] * len(window)
        extra[at] = (example, 1.0 / calls.num_examples(window[at]))
        *_, (trained, _) = _steps_on_copies(
            model, loss_fn, optimizer, window, lr=lr, max_grad_norm=max_grad_norm, extra=extra
        )
        values.append(observable.value(trained))
    return values[0], values[1]

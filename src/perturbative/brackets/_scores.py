"""Order scores with the run's optimizer: how much moving each example of a pool first rather
than last changes an observable, under SGD with momentum, Adam or AdamW in their real state.

:func:`perturbative.brackets.order_scores` is the plain-SGD score ``lr^2 S_x``, second order in
``lr``: under an optimizer with state it misses the leading term. Take a pool of ``n`` examples,
one optimizer step each, and let ``x`` come first (then the rest in pool order) or last. With
momentum or Adam the two orders differ already at first order in ``lr``, with every gradient
frozen at ``theta``: momentum carries the first gradients into every later step while the last
one enters only its own step's ``(1 - b1)``, and Adam's bias correction and second moment weight
the steps differently. That *state part* is computed exactly here, by running the optimizer's
own update (from its real state) on the frozen gradients in both orders, and projected on
``u = grad O``. The *curvature part*, second order, is the bracket score of the fields the
optimizer's preconditioner shapes, ``lr^2 S^P_x`` (Adam's ``P = 1/(sqrt(v_hat) + eps)``, or 1),
with the coefficients of plain preconditioned steps: an approximation whose error is of the
order of what momentum does to the curvature term, checked against really reordering the run
(``docs/results/own-run.md``).

Cost: ``n`` per-example gradients (held at once: ``n`` parameter-sized tensors), ``2 n`` runs of
``n`` functional optimizer steps (elementwise, no model evaluation), and one
:func:`~perturbative.brackets.order_scores` pass.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from perturbative._core import checks
from perturbative._core.calls import LossFn
from perturbative.brackets._gradients import per_example_gradients
from perturbative.brackets._optimizers import adam_denominator, functional_optimizer
from perturbative.brackets._order import Observable, order_scores
from perturbative.brackets._swap import trained_names


@dataclass
class OptimizerOrderScores:
    """:func:`optimizer_order_scores`' answer, each ``(n,)``: ``O(x first) - O(x last)``.

    Attributes:
        scores: the prediction, ``state_part + curvature_part``.
        state_part: first order in ``lr``: the optimizer's own steps in both orders, gradients
            frozen at ``theta``.
        curvature_part: ``lr^2 S^P_x``, the preconditioned bracket score.
        sgd: ``lr^2 S_x``, the plain-SGD score that ignores the optimizer (a baseline).
        optimizer: the optimizer's class name, which the scores model.
        lr: the learning rate of the steps.
    """

    scores: Tensor
    state_part: Tensor
    curvature_part: Tensor
    sgd: Tensor
    optimizer: str
    lr: float


def optimizer_order_scores(
    model: nn.Module,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    pool: Any,
    observable: Observable,
    *,
    lr: float | None = None,
    max_grad_norm: float | None = None,
    engine: str = "forward",
) -> OptimizerOrderScores:
    """How much training each example of ``pool`` first rather than last changes ``O``, with the
    optimizer's own steps from its real state (module docstring).

    Args:
        model: the model at ``theta``; not modified.
        loss_fn: the per-example loss (a batch of one).
        optimizer: ``SGD``, ``Adam`` or ``AdamW`` built on the model, in the run's state.
        pool: ``n`` examples (a data tuple or keyword batch), one optimizer step each.
        observable: ``O``.
        lr: the learning rate (default: the optimizer's).
        max_grad_norm: the run's gradient clipping, applied to every step.
        engine: the engine of the bracket scores.

    Returns:
        :class:`OptimizerOrderScores`, each ``(n,)``.
    """
    names = trained_names(model, optimizer)
    by_name = dict(model.named_parameters())
    params = {k: by_name[k].detach().clone().requires_grad_() for k in names}
    pool, n = checks.check_data(pool, "pool")
    read = dataclasses.replace(
        functional_optimizer(optimizer, {k: by_name[k] for k in names}).with_lr(lr),
        max_grad_norm=max_grad_norm,
    )
    step = read.lr
    # one example's gradient per step (double backward: a keyword batch's model may not vmap)
    stacked = per_example_gradients(model, loss_fn, params, pool, engine="double_backward")
    gradients = [{k: v[i] for k, v in stacked.items()} for i in range(n)]
    u = observable.gradient(model, params)
    theta = {k: v.detach() for k, v in params.items()}

    def end(order: list[int]) -> dict[str, Tensor]:
        return read.run(theta, [gradients[i] for i in order])[-1]

    state = torch.zeros(n, dtype=torch.float64)
    for x in range(n):
        rest = [i for i in range(n) if i != x]
        first, last = end([x, *rest]), end([*rest, x])
        state[x] = float(sum((u[k] * (first[k] - last[k])).sum() for k in u))
    preconditioner = None
    if read.adaptive:
        preconditioner = {
            k: adam_denominator(read.hyper[k], read.state[k])[0]
            if read.state[k]
            else torch.ones_like(theta[k])
            for k in names
        }
    curvature = step**2 * order_scores(
        model, loss_fn, params, pool, u, preconditioner=preconditioner, engine=engine
    ).to(torch.float64)
    sgd = (
        curvature
        if preconditioner is None
        else step**2
        * order_scores(model, loss_fn, params, pool, u, engine=engine).to(torch.float64)
    )
    return OptimizerOrderScores(
        scores=state + curvature,
        state_part=state,
        curvature_part=curvature,
        sgd=sgd,
        optimizer=read.name,
        lr=step,
    )

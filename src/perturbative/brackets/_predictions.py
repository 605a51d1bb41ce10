"""What the order of training examples does to an observable, with the run's real optimizer.

Conventions: example (or minibatch) ``x`` has the field ``v_x = -g_x``; ``O(theta)`` is a scalar
observable (:class:`Observable`: by default the mean loss of a held-out batch) with gradient
``u = grad O``. Training on ``x`` then ``y`` rather than ``y`` then ``x`` changes ``O`` by

    O(x then y) - O(y then x) = lr^2 u . [v_x, v_y] + O(lr^3)          (plain SGD),

``[v_x, v_y] = H_y g_x - H_x g_y``. With momentum or Adam the optimizer's state adds a term of
*first* order in ``lr`` (momentum carries the first gradient into the second step, Adam's bias
correction weights the two steps differently), and the curvature term is reshaped by Adam's
preconditioner. :func:`predict_order` handles every optimizer in one way, exact in the optimizer
and expanded in the curvature: it takes the optimizer's own steps (the functional copies of
:mod:`perturbative.brackets._optimizers`, from the optimizer's real state), feeding step ``j`` the
gradient ``g_j(theta) + H_j (theta_j - theta) + 1/2 D^3 L_j[theta_j - theta, theta_j - theta]``,
the Taylor expansion at ``theta`` of the gradient at the point ``theta_j`` the earlier predicted
steps reached (to the order of :class:`~perturbative.brackets.Expansion`), and evaluates ``O``
there. Every derivative is taken at ``theta``; nothing is trained. For plain SGD and two steps
this is exactly ``lr^2 u . [v_x, v_y]`` plus the order-independent part; for Adam it contains the
leading-order formula of :mod:`perturbative.brackets._swap` and the optimizer's exact response
to it (Adam's update is far from linear on coordinates whose second moment is small).

Max pooling and ReLU make the loss only piecewise smooth, and a step at a run's lr crosses piece
boundaries: the expansion at ``theta`` would then err in proportion to the step whatever its
order. So each gradient is expanded on the piece its point lies on
(``Expansion.follow_pieces``, :func:`perturbative.brackets.on_pieces`), whose winners and signs
one forward pass there reads. The third-order term is a nested directional derivative that
forward mode computes without forming a Hessian (reverse mode, three times, under train-mode
BatchNorm).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from perturbative._core import calls, checks
from perturbative._core.calls import LossFn
from perturbative._core.checks import Params
from perturbative.brackets._expansion import Expansion, as_expansion
from perturbative.brackets._gradients import mean_gradient
from perturbative.brackets._hvp import (
    gradient_and_hvp,
    hvp,
    third_derivative,
)
from perturbative.brackets._norms import vector_norm
from perturbative.brackets._observable import Observable
from perturbative.brackets._optimizers import FunctionalOptimizer, functional_optimizer, plain_sgd
from perturbative.brackets._pieces import Selection, on_pieces, record_pieces
from perturbative.brackets._step import TrainingStep, as_training_step
from perturbative.brackets._swap import trained_names


@dataclass
class SwapPrediction:
    """:func:`predict_swap`'s answer: ``O(x then y) - O(y then x)``, predicted three ways.

    Attributes:
        predicted: with the optimizer's exact steps and the gradient expanded to second order
            (third with ``third_order``) at ``theta`` (module docstring).
        second_order: the same with the gradient expanded to second order only (equal to
            ``predicted`` unless ``third_order``): what the third-order term adds. Where that
            term is smaller than ``predicted`` the expansion's own error estimate leaves the
            sign safe (``order-check`` calls such pairs settled).
        sgd_bracket: the plain-SGD bracket ``lr_1 lr_2 u . [v_x, v_y]`` (the two steps' lrs),
            whatever the optimizer (a baseline: what ignoring the optimizer predicts; under a
            schedule it leaves out the first-order term ``(lr_2 - lr_1) u . (g_x - g_y)`` that
            two steps of different lrs add).
        state_part: the part from the optimizer's state alone (both orders fed the gradients at
            ``theta``); zero for plain SGD.
        before: ``O(theta)``.
        lr: the learning rate of the first step (of the first parameter's group).
        gradient_norms: ``(|g_x|, |g_y|)``, for heuristics that order by gradient size.
        later: with ``horizons``, the predicted difference after ``h`` further identical steps
            for each ``h`` (:func:`_later_differences`; ``predicted`` at ``h = 0``), else ``None``.
    """

    predicted: float
    second_order: float
    sgd_bracket: float
    state_part: float
    before: float
    lr: float
    gradient_norms: tuple[float, float]
    later: list[float] | None = None


@dataclass
class OrderPrediction:
    """:func:`best_order`'s answer for a window of ``k`` minibatches.

    Attributes:
        orders: the orders evaluated (tuples of batch indices).
        predicted: ``O`` predicted after each order, shape ``(len(orders),)``.
        best: the order with the lowest predicted ``O``; ``worst`` the highest.
        exhaustive: all ``k!`` orders were evaluated (else a tournament order and its reverse).
        second_order: with ``third_order``, ``O`` predicted after each order with the gradients
            expanded to second order only (else ``None``).
    """

    orders: list[tuple[int, ...]]
    predicted: Tensor
    best: tuple[int, ...]
    worst: tuple[int, ...]
    exhaustive: bool
    second_order: Tensor | None = None


@dataclass
class _Window:
    """Everything a prediction over a window of batches needs, computed once at ``theta``."""

    model: nn.Module
    loss_fn: LossFn
    params: Params
    theta: Params
    optimizer: FunctionalOptimizer
    batches: list[tuple[Tensor, ...]]
    gradients: list[Params]
    observable: Observable
    expansion: Expansion
    # what depends on the optimizer, computed once (a window with another optimizer needs its
    # own), after one step on batch j, the same for both expansions and every order that starts
    # with j: ("pieces", j, i) the piece theta + d lies on for batch i, ("hvp", j, i) that
    # piece's (g_i, H_i d) and ("third", j, i) its D^3 L_i[d, d]; ("end", order, third_order) the
    # parameters, optimizer state and O after an order
    cache: dict[tuple, Any] = dataclasses.field(default_factory=dict)

    def gradient_at(
        self, index: int, displacement: Params | None, third_order: bool, after: int | None = None
    ) -> Params:
        """``g_i(theta + d)`` expanded at ``theta`` to second (third) order in ``d``; ``after``
        names the one batch whose step made ``d`` (its derivatives are then kept for reuse).

        With ``pieces`` the expansion is that of the smooth piece ``theta + d`` lies on (its
        pooling winners and ReLU signs, read from a forward pass there:
        :func:`perturbative.brackets.on_pieces`), which equals the network there; a model without
        piecewise ops has one piece, and the expansion is the plain one."""
        if displacement is None:
            return self.gradients[index]
        batch = self.batches[index]

        def cached(kind: str, compute: Callable[[], Any]) -> Any:
            if after is None:
                return compute()
            if (kind, after, index) not in self.cache:
                self.cache[kind, after, index] = compute()
            return self.cache[kind, after, index]

        point = {k: self.theta[k] + displacement[k] for k in self.theta}
        selections = cached("pieces", lambda: self.pieces_at(batch, point))

        def on_piece(fn: Callable[..., Any]) -> Callable[[], Any]:
            def compute() -> Any:
                with on_pieces(selections):
                    return fn(
                        self.model,
                        self.loss_fn,
                        self.params,
                        batch,
                        displacement,
                        engine=self.expansion.engine,
                    )

            return compute

        if selections:  # the piece's own gradient at theta comes with its HVP
            g, h = cached("hvp", on_piece(gradient_and_hvp))
        else:
            g, h = cached("hvp", lambda: (self.gradients[index], on_piece(hvp)()))
        out = {k: g[k] + h[k] for k in g}
        if third_order:
            t = cached("third", on_piece(third_derivative))
            out = {k: out[k] + 0.5 * t[k] for k in out}
        return out

    def pieces_at(self, batch: tuple[Tensor, ...], point: Params) -> list[Selection]:
        """What the piecewise ops select on ``batch`` at ``point`` (empty without ``pieces``)."""
        if not self.expansion.follow_pieces:
            return []
        loss = calls.batch_loss(
            self.model, self.loss_fn, calls.fixed_state(self.model, self.params)
        )
        return record_pieces(lambda: loss(point, *batch))

    def predicted_path(
        self, order: Sequence[int], third_order: bool
    ) -> Iterator[tuple[Params, dict[str, dict]]]:
        """Parameters and optimizer state after each of the optimizer's steps on ``order``,
        expanded gradients."""
        current, state = self.theta, self.optimizer.state
        for position, index in enumerate(order):
            d = None if position == 0 else {k: current[k] - self.theta[k] for k in current}
            after = order[0] if position == 1 else None
            gradient = self.gradient_at(index, d, third_order, after)
            current, state = self.optimizer.step(current, gradient, state, position)
            yield current, state

    def predicted_end(
        self, order: Sequence[int], third_order: bool | None = None
    ) -> tuple[Params, dict[str, dict], float]:
        """Parameters, optimizer state and ``O`` after the optimizer's steps on ``order`` with
        expanded gradients (the window's expansion unless ``third_order`` is given)."""
        third_order = self.expansion.third_order if third_order is None else third_order
        key = ("end", tuple(order), third_order)
        if key not in self.cache:
            *_, (params, state) = self.predicted_path(order, third_order)
            value = self.observable.value(self.model, {**self.theta, **params})
            self.cache[key] = (params, state, value)
        return self.cache[key]

    def predicted_value(self, order: Sequence[int], third_order: bool | None = None) -> float:
        """``O`` after ``order``, with the window's expansion unless ``third_order`` is given."""
        return self.predicted_end(order, third_order)[2]

    def frozen_value(self, order: Sequence[int]) -> float:
        """``O`` after the optimizer's steps fed the gradients at ``theta`` (the state part)."""
        path = self.optimizer.run(self.theta, [self.gradients[i] for i in order])
        return self.observable.value(self.model, {**self.theta, **path[-1]})


def _window(model, loss_fn, step, batches, observable, expansion) -> _Window:
    step = as_training_step(step)
    names = trained_names(model, step)
    by_name = dict(model.named_parameters())
    batches = checks.check_batches(model, batches)
    _warn_if_stateless(step.optimizer, [by_name[k] for k in names])
    params = {k: by_name[k].detach().clone().requires_grad_() for k in names}
    gradients = [mean_gradient(model, loss_fn, params, b) for b in batches]
    return _Window(
        model=model,
        loss_fn=loss_fn,
        params=params,
        theta={k: v.detach() for k, v in params.items()},
        optimizer=functional_optimizer(step, {k: by_name[k] for k in names}),
        batches=batches,
        gradients=gradients,
        observable=observable,
        expansion=as_expansion(expansion),
    )


class FreshOptimizerWarning(UserWarning):
    """An Adam or momentum optimizer with no state for parameters it is asked to predict."""


def _warn_if_stateless(optimizer: torch.optim.Optimizer, params: list[Tensor]) -> None:
    """Warn when a stateful update (Adam, AdamW, SGD with momentum) has no state for some of the
    parameters: a fresh optimizer where the run's own belongs makes the prediction describe the
    first steps of a new run, and under Adam the state is most of an order effect."""
    stateful = any("betas" in group or group.get("momentum", 0) for group in optimizer.param_groups)
    missing = sum(1 for p in params if not optimizer.state.get(p))
    if stateful and missing:
        warnings.warn(
            f"the {type(optimizer).__name__} optimizer has no state for {missing} of the "
            f"{len(params)} trained parameters, so the prediction is that of a fresh optimizer: "
            "pass the optimizer that trained the model, loaded from the same checkpoint (its "
            "moments are most of an order effect under Adam); at the very start of a run this "
            "is expected",
            FreshOptimizerWarning,
            stacklevel=3,
        )


def _later_differences(
    window: _Window,
    one: Sequence[int],
    other: Sequence[int],
    later: Sequence[tuple[Tensor, ...]],
    horizons: Sequence[int],
) -> list[float]:
    """``O(one, later[:h]) - O(other, later[:h])`` predicted for each ``h`` of ``horizons``;
    ``one`` and ``other`` are orders of the window's batches of one length (a swap, an exchange).

    At ``h = 0`` it is the window's prediction. Past it, the prediction follows the run that took
    ``one``: ``one`` and the later batches are really taken with the optimizer's own steps (what
    the run did). The run that took ``other`` starts from it minus the predicted difference of
    the two schedules' parameters and optimizer state (so that the expansion errors the two
    predicted schedules share cancel), and takes the optimizer's own steps too, each fed the
    gradient expanded to first order at the point the first run reached: ``g_b + H_b d`` with
    ``d`` the distance between the two runs, one HVP (with the gradient) per later step, on the
    smooth piece the second run's point lies on (one more gradient per step where the model has
    piecewise ops: the first run's own). Only the gradient is expanded, in the small ``d`` (not
    in the distance travelled, as :func:`predicted_values_along_steps` does); Adam's state,
    whose two copies differ by a finite amount after a swap, and its update, far from linear
    where the second moment is small, are exact. Costs per later step one pass for the gradient
    and its HVP, per horizon two values of ``O``.
    """
    horizons = [int(h) for h in horizons]
    if not horizons or min(horizons) < 0 or max(horizons) > len(later):
        raise ValueError(
            f"horizons {horizons} must be step counts from 0 to the {len(later)} later batches"
        )
    later = checks.check_batches(window.model, later) if later else []
    model, optimizer, theta = window.model, window.optimizer, window.theta
    ends = [window.predicted_end(order) for order in (one, other)]
    values = {0: ends[0][2] - ends[1][2]}
    current, state = theta, optimizer.state
    for position, index in enumerate(one):  # the run's own steps on `one`
        gradient = window.gradients[index] if position == 0 else None
        current, state = _real_step(
            window, current, state, window.batches[index], position, gradient
        )
    # the run that took `other`: the real one minus the predicted difference (a second moment
    # stays >= 0 where rounding, on a gradient that is zero up to it, would cross 0)
    shifted = {k: current[k] - (ends[0][0][k] - ends[1][0][k]) for k in current}
    shifted_state = {
        name: {
            k: _shifted_state(k, v, ends[0][1][name][k] - ends[1][1][name][k])
            for k, v in values_of.items()
        }
        for name, values_of in state.items()
    }
    wanted = set(horizons)
    for h, batch in enumerate(later[: max(horizons)], start=1):
        distance = {k: shifted[k] - current[k] for k in current}
        selections = window.pieces_at(batch, shifted)  # expanded on the piece `shifted` is on
        with on_pieces(selections):
            gradient, curvature = gradient_and_hvp(
                model,
                window.loss_fn,
                _leaf(current),
                batch,
                distance,
                engine=window.expansion.engine,
            )
        expanded = {k: gradient[k] + curvature[k] for k in gradient}
        if selections:  # the run's own step takes the network's gradient
            gradient = mean_gradient(model, window.loss_fn, _leaf(current), batch)
        position = len(one) + h - 1  # the schedule goes on after the window
        current, state = optimizer.step(current, gradient, state, position)
        shifted, shifted_state = optimizer.step(shifted, expanded, shifted_state, position)
        if h in wanted:
            values[h] = window.observable.value(
                model, {**theta, **current}
            ) - window.observable.value(model, {**theta, **shifted})
    return [values[h] for h in horizons]


def _shifted_state(key: str, value: Any, difference: Any) -> Any:
    if not isinstance(value, Tensor):
        return value  # a step count, equal in both runs
    shifted = value - difference
    return shifted.clamp(min=0) if key == "exp_avg_sq" else shifted


def _leaf(params: Params) -> Params:
    return {k: v.detach().clone().requires_grad_() for k, v in params.items()}


def _real_step(window: _Window, current, state, batch, position: int, gradient=None):
    """One real step of the window's optimizer on ``batch`` from ``current``, at schedule
    position ``position``."""
    if gradient is None:
        gradient = mean_gradient(window.model, window.loss_fn, _leaf(current), batch)
    return window.optimizer.step(current, gradient, state, position)


def predict_order(
    model: nn.Module,
    loss_fn: LossFn,
    step: TrainingStep | torch.optim.Optimizer,
    batches: Sequence[tuple[Tensor, ...]],
    observable: Observable,
    *,
    expansion: Expansion | int = Expansion(),
) -> float:
    """``O`` predicted after training on ``batches`` in the given order (module docstring).

    Args:
        model: the model at ``theta`` (eval mode for BatchNorm); not modified.
        loss_fn: per-example loss ``loss_fn(outputs, *targets) -> scalar`` (batch of one).
        step: the loop's :class:`~perturbative.TrainingStep`: a ``torch.optim`` SGD, Adam or
            AdamW built on ``model.parameters()``, in the state to start from (its real state:
            momentum buffers, moments, step count), the clipping (applied to every expanded
            gradient) and the lr of each group at each step; an optimizer alone is its current
            lrs at every step, no clipping. Not modified.
        batches: data tuples, one optimizer step each (a batch of one is one example), step
            ``i`` at the schedule's position ``i``.
        observable: ``O``.
        expansion: how each gradient is expanded (:class:`Expansion`; ``2`` or ``3`` is short
            for ``Expansion(order=...)``). The default, third order on each point's own piece,
            is what every figure in ``docs/results/`` was measured with.

    Returns:
        The predicted ``O`` after the last step. Costs ``k`` gradients, ``k - 1`` HVPs (and
        ``k - 1`` third derivatives at third order) for ``k`` batches, and one evaluation of
        ``O``.
    """
    window = _window(model, loss_fn, step, batches, observable, expansion)
    return window.predicted_value(range(len(window.batches)))


def predicted_values(
    model: nn.Module,
    loss_fn: LossFn,
    step: TrainingStep | torch.optim.Optimizer,
    batches: Sequence[tuple[Tensor, ...]],
    orders: Sequence[Sequence[int]],
    observable: Observable,
    *,
    expansion: Expansion | int = Expansion(),
) -> list[float]:
    """``O`` predicted after each of ``orders`` of ``batches`` (:func:`predict_order` of each),
    sharing the derivatives at ``theta`` and along the way between the orders."""
    window = _window(model, loss_fn, step, batches, observable, expansion)
    return [window.predicted_value(list(order)) for order in orders]


def expanded_values_along_steps(
    model: nn.Module,
    loss_fn: LossFn,
    step: TrainingStep | torch.optim.Optimizer,
    batches: Sequence[tuple[Tensor, ...]],
    observable: Observable,
    record_after: Sequence[int],
    *,
    expansion: Expansion | int = Expansion(),
) -> list[float]:
    """``O`` predicted after each step count of ``record_after`` along ``batches`` in order: the
    prediction of :func:`perturbative.brackets.values_along_steps` (which really trains), every
    gradient expanded at ``theta`` as in :func:`predict_order` (one HVP, at third order also one
    third derivative, per step after the first).

    Not public: the expansion is in the distance travelled, so it degrades along many steps, and
    so does the difference of two such predictions for schedules that differ only early (a swap
    followed by the same steps). ``predict_swap(..., later=, horizons=)`` expands only in the
    distance between the two runs; this earlier method stays for the comparison in
    ``docs/orders.md``.
    """
    if not record_after or max(record_after) > len(batches) or min(record_after) < 1:
        raise ValueError(
            f"record_after {list(record_after)} must hold step counts from 1 to {len(batches)}"
        )
    window = _window(model, loss_fn, step, batches, observable, expansion)
    values, wanted = {}, set(record_after)
    path = window.predicted_path(range(max(record_after)), window.expansion.third_order)
    for count, (point, _) in enumerate(path, start=1):
        if count in wanted:
            values[count] = observable.value(model, {**window.theta, **point})
    return [values[c] for c in record_after]


def predict_swap(
    model: nn.Module,
    loss_fn: LossFn,
    step: TrainingStep | torch.optim.Optimizer,
    x: tuple[Tensor, ...],
    y: tuple[Tensor, ...],
    observable: Observable,
    *,
    expansion: Expansion | int = Expansion(),
    later: Sequence[tuple[Tensor, ...]] = (),
    horizons: Sequence[int] = (),
) -> SwapPrediction:
    """Predict ``O(x then y) - O(y then x)`` for two examples or minibatches in consecutive steps.

    ``x`` and ``y`` are data tuples (or keyword batches): one example each, or minibatches (then
    their mean fields, normalised by their own statistics under train-mode BatchNorm). Costs
    three gradients and four HVPs at ``theta`` (two third derivatives more at third order) and
    five evaluations of ``O``. Arguments as :func:`predict_order`.

    Args:
        later: the batches of the steps that follow the swap, identical in both runs. With
            ``later`` the answer's ``.later`` holds the difference after ``h`` of them for each
            ``h`` of ``horizons`` (default: every step count from 0 to ``len(later)``): the run
            that trained ``x`` then ``y`` is followed, and the predicted difference of parameters
            and optimizer state is carried along it by linearised steps (one gradient and one
            HVP per later step).
        horizons: step counts after the swap, each at most ``len(later)``.

    Example:
        Plain SGD at small ``lr`` gives ``lr^2 u . [v_x, v_y]``:
        ``predict_swap(...).predicted`` equals ``.sgd_bracket`` up to ``O(lr^3)``.
    """
    window = _window(model, loss_fn, step, [x, y], observable, expansion)
    engine = window.expansion.engine
    u = observable.gradient(model, window.params)
    h_y_u = hvp(model, loss_fn, window.params, window.batches[1], u, engine=engine)
    h_x_u = hvp(model, loss_fn, window.params, window.batches[0], u, engine=engine)
    g_x, g_y = window.gradients
    first, second = (window.optimizer.lr_of(next(iter(u)), i) for i in (0, 1))
    bracket = sum(float((g_x[k] * h_y_u[k]).sum() - (g_y[k] * h_x_u[k]).sum()) for k in u)
    predicted, second_order = _differences(window, (0, 1), (1, 0))
    return SwapPrediction(
        predicted=predicted,
        second_order=second_order,
        sgd_bracket=first * second * bracket,
        state_part=window.frozen_value((0, 1)) - window.frozen_value((1, 0)),
        before=observable.value(model, window.theta),
        lr=first,
        gradient_norms=(float(vector_norm(g_x)), float(vector_norm(g_y))),
        later=_later(window, (0, 1), (1, 0), later, horizons),
    )


def _differences(window: _Window, one: Sequence[int], other: Sequence[int]) -> tuple[float, float]:
    """``O(one) - O(other)`` with the window's expansion, and at second order."""
    predicted = window.predicted_value(one) - window.predicted_value(other)
    if not window.expansion.third_order:
        return predicted, predicted
    return predicted, window.predicted_value(one, False) - window.predicted_value(other, False)


def _later(window, one, other, later, horizons) -> list[float] | None:
    """:func:`_later_differences` for ``horizons`` (default: every step count of ``later``);
    ``None`` when neither is given."""
    later, horizons = list(later), list(horizons)
    if not later and not horizons:
        return None
    if not horizons:
        horizons = list(range(len(later) + 1))
    return _later_differences(window, one, other, later, horizons)


def exchanged(
    first: tuple[Tensor, ...], second: tuple[Tensor, ...], i: int, j: int
) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """The two minibatches with example ``i`` of ``first`` and example ``j`` of ``second``
    changing places (every other row, and the row positions, kept)."""

    def swap(ta: Tensor, tb: Tensor) -> tuple[Tensor, Tensor]:
        ta, tb = ta.clone(), tb.clone()
        ta[i], tb[j] = tb[j].clone(), ta[i].clone()
        return ta, tb

    a, b = [], []
    for fa, fb in zip(first, second, strict=True):
        if isinstance(fa, Mapping):
            pairs = {k: swap(fa[k], fb[k]) for k in fa}
            a.append({k: v[0] for k, v in pairs.items()})
            b.append({k: v[1] for k, v in pairs.items()})
        else:
            ta, tb = swap(fa, fb)
            a.append(ta)
            b.append(tb)
    return tuple(a), tuple(b)


def predict_exchange(
    model: nn.Module,
    loss_fn: LossFn,
    step: TrainingStep | torch.optim.Optimizer,
    first: tuple[Tensor, ...],
    second: tuple[Tensor, ...],
    i: int,
    j: int,
    observable: Observable,
    *,
    expansion: Expansion | int = Expansion(),
    later: Sequence[tuple[Tensor, ...]] = (),
    horizons: Sequence[int] = (),
) -> SwapPrediction:
    """Predict what training example ``x`` one step earlier than example ``y`` does to ``O``,
    where the run trains them in minibatches.

    ``x`` is example ``i`` of ``first`` and ``y`` example ``j`` of ``second``, two minibatches
    trained on in consecutive steps. The prediction is ``O(first, second) - O(first', second')``
    where ``x`` and ``y`` change places (:func:`exchanged`): the single-example swap of
    :func:`predict_swap` as it happens inside minibatch training, where the examples keep their
    batch companions' statistics (train-mode BatchNorm: batches of at least 2). Costs four
    gradients and two HVPs (plus two third derivatives); arguments as :func:`predict_order`,
    ``later`` and ``horizons`` as :func:`predict_swap` (the run that trained ``first`` then
    ``second`` is followed).
    The answer's ``sgd_bracket`` is the same prediction for plain SGD at the same ``lr``, to
    second order; ``gradient_norms`` are those of the two minibatches ``first`` and ``first'``.
    """
    first, second = checks.check_batches(model, [first, second])
    sizes = (calls.num_examples(first), calls.num_examples(second))
    if not (0 <= i < sizes[0] and 0 <= j < sizes[1]):
        raise IndexError(
            f"example ({i}, {j}) is not in minibatches of {sizes[0]} and {sizes[1]} examples"
        )
    batches = [first, second, *exchanged(first, second, i, j)]
    window = _window(model, loss_fn, step, batches, observable, expansion)
    lr = window.optimizer.lr
    rule = plain_sgd(list(window.theta), lr, like=window.optimizer)  # the same schedule
    sgd = dataclasses.replace(window, optimizer=rule, cache={})
    predicted, second_order = _differences(window, (0, 1), (2, 3))
    return SwapPrediction(
        predicted=predicted,
        second_order=second_order,
        sgd_bracket=sgd.predicted_value((0, 1), False) - sgd.predicted_value((2, 3), False),
        state_part=window.frozen_value((0, 1)) - window.frozen_value((2, 3)),
        before=observable.value(model, window.theta),
        lr=lr,
        gradient_norms=(
            float(vector_norm(window.gradients[0])),
            float(vector_norm(window.gradients[2])),
        ),
        later=_later(window, (0, 1), (2, 3), later, horizons),
    )


def best_order(
    model: nn.Module,
    loss_fn: LossFn,
    step: TrainingStep | torch.optim.Optimizer,
    batches: Sequence[tuple[Tensor, ...]],
    observable: Observable,
    *,
    expansion: Expansion | int = Expansion(),
    max_orders: int = 24,
) -> OrderPrediction:
    """The predicted best and worst orders of a window of ``k`` minibatches for ``O``.

    Every order of the ``k!`` is predicted as in :func:`predict_order` (``k - 1`` HVPs each, shared
    between orders with a common prefix) when ``k! <= max_orders``; beyond, a tournament: each
    pair ``(i, j)`` is scored by the predicted swap at the window's start, batches are ordered by
    their total score (the ones whose going first lowers ``O`` most come first), and that order
    and its reverse are predicted. Arguments as :func:`predict_order`.
    """
    window = _window(model, loss_fn, step, batches, observable, expansion)
    k = len(window.batches)
    if k < 2:
        raise ValueError(f"best_order needs at least 2 batches, got {k}")
    exhaustive = math.factorial(k) <= max_orders
    if exhaustive:
        orders = list(itertools.permutations(range(k)))
    else:
        wins = torch.zeros(k, dtype=torch.float64)
        for i, j in itertools.combinations(range(k), 2):
            diff = window.predicted_value((i, j)) - window.predicted_value((j, i))
            wins[i] += diff
            wins[j] -= diff
        first = tuple(int(i) for i in torch.argsort(wins))
        orders = [first, first[::-1]]
    values = torch.tensor([window.predicted_value(o) for o in orders], dtype=torch.float64)
    second = (
        torch.tensor([window.predicted_value(o, False) for o in orders], dtype=torch.float64)
        if window.expansion.third_order
        else None
    )
    return OrderPrediction(
        orders=orders,
        predicted=values,
        best=orders[int(values.argmin())],
        worst=orders[int(values.argmax())],
        exhaustive=exhaustive,
        second_order=second,
    )

"""Which data first? The order of two training phases, predicted: ``O(A then B) - O(B then A)``
for phases ``A`` and ``B`` of ``k`` minibatches each, with the run's optimizer in its real state.

Two methods:

- ``"expansion"``: :func:`perturbative.predict_order` on the window of ``2k`` batches in both
  orders, every gradient expanded at the checkpoint (for ``k = 1`` exactly
  :func:`perturbative.predict_swap`). Right while the whole window stays within the expansion's
  radius, which a phase of one source leaves at a run's lr.
- ``"composition"``: train each phase alone from the checkpoint with the optimizer's own
  functional steps (:mod:`perturbative.brackets._optimizers`), exactly, and linearise only how a
  phase's end depends on where it starts. With ``Phi_B`` phase ``B`` as a map of the parameters
  and optimizer state ``z = (theta, m, v, ...)``, ``Delta_A = Phi_A(z) - z`` and ``J_B`` the
  Jacobian of ``Phi_B``, the two orders end at

      p_AB ~ Phi_B(z) + J_B Delta_A,      p_BA ~ Phi_A(z) + J_A Delta_B,

  and differ by ``O(p_AB) - O(p_BA) ~ u . (p_AB - p_BA)``, ``u = grad O`` halfway between them.
  ``u . J_B Delta_A`` is one backward pass through ``B``'s unrolled steps (their gradients kept
  with their graphs) with the cotangent ``u``. Each phase runs with the step count of its place
  (Adam's bias correction): first from the checkpoint for ``Delta``, second (count advanced by
  ``k``) for ``Phi`` and ``J``. Exact in the lr and in each phase's length; it errs by the
  curvature of a phase's map over the other phase's displacement of parameters AND optimizer
  state. Under SGD with momentum (linear in its buffer) that leaves ``O(lr^2)`` against an
  ``O(lr)`` effect; under Adam a phase moves the moments by ``O(1)`` whatever the lr and
  ``m / sqrt(v)`` is not linear in them, so the error is of the order of the effect itself
  (``tests/brackets/test_phases.py`` measures both).
- ``"exact-state"``: the same, with the optimizer state carried exactly: the second phase runs
  from the checkpoint's parameters with the state the first phase left, and only its dependence
  on the parameters is linearised: ``O(lr^3)`` under Adam. It costs a phase run per ordered
  pair (twice what training both orders costs): a diagnostic of what the state's
  linearisation costs the composition.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from perturbative._core import calls, checks
from perturbative._core.calls import LossFn
from perturbative._core.checks import Params
from perturbative._core.engines import differentiable_kernels
from perturbative.brackets._expansion import Expansion
from perturbative.brackets._gradients import mean_gradient
from perturbative.brackets._hvp import hvp
from perturbative.brackets._observable import Observable
from perturbative.brackets._optimizers import FunctionalOptimizer, functional_optimizer
from perturbative.brackets._predictions import predicted_values
from perturbative.brackets._step import TrainingStep
from perturbative.brackets._swap import trained_names

METHODS = ("composition", "exact-state", "expansion")


@dataclass
class PhasePrediction:
    """:func:`predict_phase_order`'s answer.

    Attributes:
        predicted: ``O(A then B) - O(B then A)`` predicted.
        method: ``"composition"`` or ``"expansion"``.
        cross: the terms carried by the other phase's step, ``(u . J_B Delta_A, u . J_A
            Delta_B)`` (composition).
    """

    predicted: float
    method: str
    cross: tuple[float, float] | None = None


@dataclass
class PhaseEffect:
    """One phase trained alone from a checkpoint, for the composition method.

    Attributes:
        theta: the checkpoint's parameters.
        delta: what the phase does in first place: its end minus its start, parameters
            (``"p/name"``) and optimizer state (``"s/name/key"``).
        shifted: what it does to the parameters in second place (its step count advanced).
        pullback: ``cotangent on its end's parameters -> on its start`` (keys as ``delta``),
            through its second-place steps.
    """

    theta: dict[str, Tensor]
    delta: dict[str, Tensor]
    shifted: dict[str, Tensor]
    pullback: Callable[[dict[str, Tensor]], dict[str, Tensor]]


def predict_phase_order(
    model: nn.Module,
    loss_fn: LossFn,
    step: TrainingStep | torch.optim.Optimizer,
    phase_a: Sequence[Any],
    phase_b: Sequence[Any],
    observable: Observable,
    *,
    method: str = "expansion",
    expansion: Expansion | int = Expansion(),
) -> PhasePrediction:
    """``O(A then B) - O(B then A)`` for two phases of ``k`` minibatches each (module docstring).

    Args:
        model: the model at the checkpoint (eval mode for BatchNorm); not modified.
        loss_fn: the per-example loss.
        step: the loop's :class:`~perturbative.TrainingStep` (SGD, Adam or AdamW on the model,
            in the run's state, its clipping and the lr of each group at each of the ``2k``
            steps), or the optimizer alone; not modified.
        phase_a: the first phase's batches in order, ``k`` of them (one step each).
        phase_b: the second phase's batches in order, as many as ``phase_a``.
        observable: ``O``.
        method: ``"expansion"`` (default) or ``"composition"``.
        expansion: how the ``"expansion"`` method expands gradients.

    Raises:
        ValueError: an unknown method, or phases of different lengths.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    k = len(phase_a)
    if k == 0 or len(phase_b) != k:
        raise ValueError(
            f"the two phases need the same number of batches, not {k} and {len(phase_b)}"
        )
    if method == "expansion":
        ab, ba = predicted_values(
            model,
            loss_fn,
            step,
            [*phase_a, *phase_b],
            [range(2 * k), [*range(k, 2 * k), *range(k)]],
            observable,
            expansion=expansion,
        )
        return PhasePrediction(predicted=ab - ba, method=method)
    if method == "exact-state":
        return _exact_state(model, loss_fn, step, phase_a, phase_b, observable)
    a, b = (phase_effect(model, loss_fn, step, phase, observable) for phase in (phase_a, phase_b))
    return composed(model, observable, a, b)


def predict_phase_orders(
    model: nn.Module,
    loss_fn: LossFn,
    step: TrainingStep | torch.optim.Optimizer,
    phases: Sequence[Sequence[Any]],
    orders: Sequence[Sequence[int]],
    observable: Observable,
    *,
    expansion: Expansion | int = Expansion(),
) -> list[float]:
    """``O`` predicted after training the phases in each of ``orders`` (e.g. all ``3!`` orders
    of three phases), by the expansion at the checkpoint on the window of all their batches,
    the derivatives shared between the orders; the best order is the smallest. Unlike ranking by
    pairwise preferences, this keeps what depends on a phase's place in the whole order (a
    momentum carries the first phase's gradients into every later step).

    Raises:
        ValueError: an order that is not a permutation of the phases.
    """
    n = len(phases)
    if any(sorted(order) != list(range(n)) for order in orders):
        raise ValueError(f"each order must be a permutation of range({n}), got {list(orders)}")
    starts = [0]
    for phase in phases:
        starts.append(starts[-1] + len(phase))
    batches = [b for phase in phases for b in phase]
    windows = [[i for p in order for i in range(starts[p], starts[p + 1])] for order in orders]
    return predicted_values(
        model,
        loss_fn,
        step,
        batches,
        windows,
        observable,
        expansion=expansion,
    )


def _exact_state(model, loss_fn, step, phase_a, phase_b, observable):
    """The ``"exact-state"`` method (module docstring)."""
    names, read, theta, loss = _functional(model, loss_fn, step)
    a, b = (checks.check_batches(model, p) for p in (phase_a, phase_b))
    with differentiable_kernels():
        (end_a, state_a), (end_b, state_b) = (
            _run(read, loss, theta, read.state, p, graph=False) for p in (a, b)
        )
        starts = [{n: v.clone().requires_grad_() for n, v in theta.items()} for _ in "ab"]
        # A then B: B from the checkpoint's parameters and the state A left; B then A likewise
        ab, _ = _run(read, loss, starts[0], state_a, b, graph=True, start=len(a))
        ba, _ = _run(read, loss, starts[1], state_b, a, graph=True, start=len(b))
    delta_a = {n: end_a[n] - theta[n] for n in names}
    delta_b = {n: end_b[n] - theta[n] for n in names}
    point = {
        n: (0.5 * (ab[n] + ba[n]).detach() + 0.5 * (delta_a[n] + delta_b[n])).requires_grad_()
        for n in names
    }
    u = observable.gradient(model, point)
    carried = []
    for end, start, moved in ((ab, starts[0], delta_a), (ba, starts[1], delta_b)):
        pulled = torch.autograd.grad(
            [end[n] for n in names], [start[n] for n in names], [u[n] for n in names]
        )
        carried.append(sum(float((g * moved[n]).sum()) for n, g in zip(names, pulled, strict=True)))
    base = _dot(u, {n: ab[n].detach() - ba[n].detach() for n in names})
    return PhasePrediction(
        predicted=base + carried[0] - carried[1],
        method="exact-state",
        cross=(carried[0], carried[1]),
    )


def composed(
    model: nn.Module, observable: Observable, first: PhaseEffect, second: PhaseEffect
) -> PhasePrediction:
    """``O(first then second) - O(second then first)`` from two phases' effects (module
    docstring)."""
    point = {  # halfway between the two ends, each phase's step taken in both places
        n: (
            t
            + 0.5 * (first.delta[f"p/{n}"] + first.shifted[n])
            + 0.5 * (second.delta[f"p/{n}"] + second.shifted[n])
        ).requires_grad_()
        for n, t in first.theta.items()
    }
    u = observable.gradient(model, point)
    base = _dot(u, second.shifted) - _dot(u, first.shifted)
    ab = _dot(second.pullback(u), first.delta)
    ba = _dot(first.pullback(u), second.delta)
    return PhasePrediction(predicted=base + ab - ba, method="composition", cross=(ab, ba))


def phase_effect(
    model: nn.Module,
    loss_fn: LossFn,
    step: TrainingStep | torch.optim.Optimizer,
    phase: Sequence[Any],
    observable: Observable,
) -> PhaseEffect:
    """Train ``phase`` alone from the checkpoint twice with the optimizer's functional steps: in
    first place (its displacement of parameters and state) and in second place, its step count
    advanced by its own length, keeping the graph of its steps so that any cotangent on its end
    pulls back to its start. Costs ``2 k`` gradients (``k`` with their graphs) and holds the
    graph of ``k`` steps while the effect lives (:func:`phase_tournaments` holds none: it pulls
    back one recomputed step at a time)."""
    names, read, theta, loss = _functional(model, loss_fn, step)
    batches = checks.check_batches(model, phase)
    with differentiable_kernels():
        delta = _displacement(read, loss, theta, batches)
        end, leaves = _second_place(read, loss, names, theta, batches)
    return PhaseEffect(
        theta=theta,
        delta=delta,
        shifted={n: end[n].detach() - theta[n] for n in names},
        pullback=lambda cotangent: _pulled(
            {n: end[n] for n in names}, leaves, cotangent, retain=True
        ),
    )


def _displacement(read, loss, theta, batches) -> dict[str, Tensor]:
    """A phase in first place, from the checkpoint: its end minus its start, parameters
    (``"p/name"``) and optimizer state (``"s/name/key"``)."""
    end, end_state = _run(read, loss, theta, read.state, batches, graph=False)
    delta = {**_flat(end, "p"), **_flat(end_state, "s")}
    start = {**_flat(theta, "p"), **_flat(read.state, "s")}
    # a fresh optimizer's state starts empty: only what it had can be a start to differentiate
    return {key: delta[key] - start[key] for key in delta if key in start}


def _second_place(read, loss, names, theta, batches) -> tuple[Params, dict[str, Tensor]]:
    """A phase in second place (its step count advanced by its length) from the checkpoint,
    with the graph of its steps: ``(its end's parameters, the start's leaves)``."""
    start = {**_flat(theta, "p"), **_flat(read.state, "s")}
    leaves = {key: value.clone().requires_grad_() for key, value in start.items()}
    params = {n: leaves[f"p/{n}"] for n in names}
    later = _advanced(_unflat(read.state, leaves), len(batches))
    end, _ = _run(read, loss, params, later, batches, graph=True, start=len(batches))
    return end, leaves


def _second_place_pulled(
    read, loss, names, theta, batches, cotangents: Mapping[str, Params]
) -> tuple[Params, dict[str, dict[str, Tensor]]]:
    """A phase in second place, as :func:`_second_place`, with each of ``cotangents`` on its
    end's parameters pulled back to its start (keys as :func:`_pulled`'s), holding no step's
    graph for long: the steps run once without graphs, keeping each step's start (parameters
    and optimizer state), then backwards each step is run again with its graph and the
    cotangents pulled through it, one step's graph at a time. Memory: ``k`` starts (a few
    parameter-sized tensors each) instead of ``k`` steps' activations and double-backward
    graphs, which on the reference model at ``k = 50`` outgrow 24 GiB; cost: ``k`` more
    gradients with their graphs."""
    k = len(batches)
    params, state = dict(theta), _advanced(read.state, k)
    starts = []
    for t, batch in enumerate(batches):
        if cotangents:
            starts.append((params, state))
        params, state = _run(read, loss, params, state, [batch], graph=False, start=k + t)
    end = {n: params[n].detach() for n in names}
    pulled = {key: {f"p/{n}": c[n] for n in names} for key, c in cotangents.items()}
    for t in reversed(range(len(starts))):  # the same draws: dropout in train mode is refused
        at_params, at_state = starts.pop()  # t's start, freed once pulled through
        _pull_through_step(read, loss, names, at_params, at_state, batches[t], k + t, pulled)
    return end, pulled


def _pull_through_step(read, loss, names, at_params, at_state, batch, position, pulled) -> None:
    """Run one step again from its start with its graph and pull every cotangent of ``pulled``
    (keyed as its outputs) through it to its start, in place."""
    start = {**_flat(at_params, "p"), **_flat(at_state, "s")}
    leaves = {key: value.detach().clone().requires_grad_() for key, value in start.items()}
    step_params = {n: leaves[f"p/{n}"] for n in names}
    out_params, out_state = _run(
        read,
        loss,
        step_params,
        _unflat(at_state, leaves),
        [batch],
        graph=True,
        start=position,
    )
    out = {**_flat(out_params, "p"), **_flat(out_state, "s")}
    keys = list(pulled)
    for x, key in enumerate(keys):
        pulled[key] = _pulled(out, leaves, pulled[key], retain=x < len(keys) - 1)


def _pulled(end, leaves, cotangent: dict[str, Tensor], retain: bool) -> dict[str, Tensor]:
    """A cotangent on a phase's (or a step's) end pulled back to its start (keys as its
    leaves), through the entries of ``end`` that it names and that depend on the start."""
    carried = [key for key in end if key in cotangent and end[key].requires_grad]
    grads = torch.autograd.grad(
        [end[key] for key in carried],
        list(leaves.values()),
        [cotangent[key] for key in carried],
        retain_graph=retain,
        allow_unused=True,
    )
    out = {
        key: torch.zeros_like(leaves[key]) if g is None else g.detach()
        for key, g in zip(leaves, grads, strict=True)
    }
    checks.check_finite(out, "the phase's pullback")
    return out


def _functional(model, loss_fn, step):
    """``(names, read, theta, loss)``: the trained parameters' names, the training step as
    functional steps (schedule and clipping), the checkpoint's parameters, the batch loss."""
    names = trained_names(model, step)
    by_name = dict(model.named_parameters())
    read = functional_optimizer(step, {n: by_name[n] for n in names})
    theta = {n: by_name[n].detach() for n in names}
    return names, read, theta, calls.batch_loss(model, loss_fn, calls.fixed_state(model, theta))


def _run(
    read: FunctionalOptimizer,
    loss,
    params: Params,
    state: dict,
    batches,
    *,
    graph: bool,
    start: int = 0,
) -> tuple[Params, dict]:
    """The phase's functional steps from ``(params, state)``, the first at schedule position
    ``start`` (0 in first place, ``k`` in second); with ``graph`` every gradient keeps its graph
    so that the end can be differentiated by the start."""
    for t, batch in enumerate(batches):
        at = params if graph else {k: v.detach().requires_grad_() for k, v in params.items()}
        grads = torch.autograd.grad(loss(at, *batch), list(at.values()), create_graph=graph)
        grads = dict(zip(at, grads if graph else [g.detach() for g in grads], strict=True))
        checks.check_finite(grads, f"the gradient of the phase's batch {t}")
        point = at if graph else {k: v.detach() for k, v in at.items()}
        params, state = read.step(point, grads, state, start + t)
    return params, state


def _flat(values: dict, prefix: str) -> dict[str, Tensor]:
    """Parameters (``prefix`` "p") or the optimizer state's tensors ("s") keyed ``prefix/name``
    (and ``s/name/key`` for a state), step counts and empty buffers left out."""
    out = {}
    for name, value in values.items():
        if isinstance(value, Tensor):
            out[f"{prefix}/{name}"] = value
            continue
        for key, entry in value.items():
            if isinstance(entry, Tensor) and key != "step":
                out[f"{prefix}/{name}/{key}"] = entry
    return out


def _unflat(state: dict[str, dict], leaves: dict[str, Tensor]) -> dict[str, dict]:
    """The optimizer state with its tensors replaced by ``leaves`` (keyed as :func:`_flat`)."""
    return {
        name: {key: leaves.get(f"s/{name}/{key}", entry) for key, entry in value.items()}
        for name, value in state.items()
    }


def _advanced(state: dict[str, dict], steps: int) -> dict[str, dict]:
    """The state with Adam's step count advanced by ``steps`` (its place in the order)."""
    return {
        name: {**value, "step": value["step"] + steps} if "step" in value else value
        for name, value in state.items()
    }


def _dot(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    return float(sum((a[key] * b[key]).sum() for key in a if key in b))


@dataclass
class PhaseTournament:
    """A tournament of ``N`` sources' phases: every pair's order, predicted.

    Attributes:
        preference: ``(N, N)``: ``[i, j]`` is ``O(i then j) - O(j then i)`` predicted (negative:
            ``i`` first is better); antisymmetric, zero diagonal.
        scores: ``(N,)``, the row sums (Borda scores; most negative: best put early).
        ranking: the sources from the best to put first to the best to put last.
        method: how the preferences were predicted (``"composition"``, ``"last-phase"``,
            ``"bracket"``).
        cost: what the prediction took (gradients, backward passes through a phase's unrolled
            steps, Hessian-vector products), and the gradients that training every pair both
            ways takes.
        gradient_norms: each phase's mean batch gradient norm, where the method took them.
        drift: ``mean_s delta_s``, the parameters' displacement by the sources' average phase
            (a reference point between the orders: ``theta + drift``), where the method took it.
    """

    preference: Tensor
    scores: Tensor
    ranking: list[int]
    method: str
    cost: dict[str, int]
    gradient_norms: list[float] | None = None
    drift: dict[str, Tensor] | None = field(default=None, repr=False)

    @classmethod
    def from_preference(
        cls, preference: Tensor, method: str, cost: dict[str, int], **extra: Any
    ) -> PhaseTournament:
        scores = preference.sum(1)
        return cls(preference, scores, torch.argsort(scores).tolist(), method, cost, **extra)

    def best_order(self, sources: Sequence[int]) -> list[int]:
        """The predicted best order of phases from ``sources`` (3 or 4 of them, say): by their
        row sums over each other (Borda within the subset)."""
        chosen = list(sources)
        sub = self.preference[chosen][:, chosen].sum(1)
        return [chosen[i] for i in torch.argsort(sub).tolist()]


TOURNAMENT_METHODS = ("composition", "last-phase")


def phase_tournament(
    model: nn.Module,
    loss_fn: LossFn,
    step: TrainingStep | torch.optim.Optimizer,
    phases: Sequence[Sequence[Any]],
    observable: Observable,
    *,
    method: str = "composition",
) -> PhaseTournament:
    """The predicted order of every pair of ``N`` phases (one per source, ``k`` batches each),
    and their ranking by row sums: :func:`phase_tournaments` for one observable and method.

    Raises:
        ValueError: fewer than two phases, phases of different lengths, or an unknown method.
    """
    got = phase_tournaments(
        model,
        loss_fn,
        step,
        phases,
        {"O": observable},
        methods=(method,),
    )
    return got[method]["O"]


def phase_tournaments(
    model: nn.Module,
    loss_fn: LossFn,
    step: TrainingStep | torch.optim.Optimizer,
    phases: Sequence[Sequence[Any]],
    observables: Mapping[str, Observable],
    *,
    methods: Sequence[str] = TOURNAMENT_METHODS,
) -> dict[str, dict[str, PhaseTournament]]:
    """Every pair's predicted order for several observables at once: ``{method: {name:
    tournament}}``, each phase trained twice alone from the checkpoint, whatever ``N``.

    ``"composition"`` (the module docstring's, at one point shared by all pairs: ``u = grad O``
    at ``theta + 2 mean_s delta_s``, the average end of two phases):

        P[i, j] = u . (shifted_j - shifted_i) + (J_j^T u) . delta_i - (J_i^T u) . delta_j,

    one pullback per source and observable through its second-place steps, each step run again
    with its graph and pulled through alone (memory of the phase's ``k`` starts, not of ``k``
    steps' graphs; the pair method :func:`predict_phase_order` holds the graph, two per pair).
    ``"last-phase"``, the baseline that only the phase trained last matters: ``P[i, j] =
    O(theta + shifted_j) - O(theta + shifted_i)``, exact in ``O``, no backward pass.

    Raises:
        ValueError: fewer than two phases, phases of different lengths, or an unknown method.
    """
    unknown = sorted(set(methods) - set(TOURNAMENT_METHODS))
    if unknown:
        raise ValueError(f"method must be one of {TOURNAMENT_METHODS}, not {unknown[0]!r}")
    if len(phases) < 2 or len({len(p) for p in phases}) != 1:
        raise ValueError("a tournament needs at least two phases of the same number of batches")
    n, k = len(phases), len(phases[0])
    names, read, theta, loss = _functional(model, loss_fn, step)
    batches = [checks.check_batches(model, p) for p in phases]
    with differentiable_kernels():
        deltas = [_displacement(read, loss, theta, b) for b in batches]
    compose = "composition" in methods
    point = {  # halfway: the average end of two phases
        m: (t + 2 * sum(d[f"p/{m}"] for d in deltas) / n).requires_grad_() for m, t in theta.items()
    }
    us = {key: o.gradient(model, point) for key, o in observables.items()} if compose else {}
    shifted, pulled = [], []
    for b in batches:  # one step's graph at a time
        with differentiable_kernels():
            end, got = _second_place_pulled(read, loss, names, theta, b, us)
        shifted.append({m: end[m] - theta[m] for m in names})
        pulled.append(got)
    drift = {m: sum(d[f"p/{m}"] for d in deltas) / n for m in theta}
    every_pair = {"gradients_to_train_every_pair_both_ways": n * n * k}
    # last-phase: each phase twice alone; the composition: and each step of the second run
    # again with its graph, one pullback through the phase (k single steps) per observable
    cost = {"gradients": 2 * n * k, "backward_passes": 0, **every_pair}
    composed_cost = {"gradients": 3 * n * k, "backward_passes": n, **every_pair}
    out: dict[str, dict[str, PhaseTournament]] = {m: {} for m in methods}
    for key, o in observables.items():
        if "last-phase" in methods:
            ends = torch.tensor(
                [o.value(model, {m: t + s[m] for m, t in theta.items()}) for s in shifted],
                dtype=torch.float64,
            )
            out["last-phase"][key] = PhaseTournament.from_preference(
                ends[None, :] - ends[:, None], "last-phase", cost, drift=drift
            )
        if compose:
            u = us[key]
            ends = torch.tensor([_dot(u, s) for s in shifted], dtype=torch.float64)
            carried = torch.tensor(  # [i, j] = (J_j^T u) . delta_i: i's displacement carried by j
                [[_dot(pulled[j][key], deltas[i]) for j in range(n)] for i in range(n)],
                dtype=torch.float64,
            )
            preference = ends[None, :] - ends[:, None] + carried - carried.T
            preference.fill_diagonal_(0.0)
            out["composition"][key] = PhaseTournament.from_preference(
                preference, "composition", composed_cost, drift=drift
            )
    return out


def bracket_tournament(
    model: nn.Module,
    loss_fn: LossFn,
    phases: Sequence[Sequence[Any]],
    observable: Observable,
    *,
    lr: float,
    at: Params | None = None,
) -> PhaseTournament:
    """The plain-SGD bracket's prediction for every pair of phases, ignoring the optimizer
    (:func:`bracket_tournaments` for one observable)."""
    return bracket_tournaments(model, loss_fn, phases, {"O": observable}, lr=lr, at=at)["O"]


def bracket_tournaments(
    model: nn.Module,
    loss_fn: LossFn,
    phases: Sequence[Sequence[Any]],
    observables: Mapping[str, Observable],
    *,
    lr: float,
    at: Params | None = None,
) -> dict[str, PhaseTournament]:
    """The plain-SGD bracket's prediction for every pair of phases and each observable,
    ignoring the optimizer:

        P[i, j] = lr^2 k^2 u . [v_i, v_j] = lr^2 k^2 (g_i . H_j u - g_j . H_i u),

    ``g_s`` and ``H_s`` a phase's mean batch gradient and Hessian (each batch with its own
    statistics), ``u = grad O``, all at ``at`` (default the model's parameters). By the
    Hessian's symmetry each source needs ``k`` gradients, and ``k`` HVPs per observable with
    its one vector ``u``, whatever ``N``. At a reference point between the orders (``at``: the
    checkpoint moved by the sources' mean phase, :attr:`PhaseTournament.drift`) it is the
    reference-point scoring of Lie-bracket transfer-order prediction, as read from its
    description.

    Raises:
        ValueError: fewer than two phases, or phases of different lengths.
    """
    if len(phases) < 2 or len({len(p) for p in phases}) != 1:
        raise ValueError("a tournament needs at least two phases of the same number of batches")
    n, k = len(phases), len(phases[0])
    params = {m: p for m, p in model.named_parameters() if p.requires_grad}
    if at is not None:
        params = {m: at[m].detach().requires_grad_() for m in params}
    batches = [checks.check_batches(model, p) for p in phases]
    g = [_mean([mean_gradient(model, loss_fn, params, b) for b in p]) for p in batches]
    norms = [float(sum((v**2).sum() for v in gs.values()).sqrt()) for gs in g]
    cost = {
        "gradients": n * k,
        "hvps": n * k * len(observables),
        "gradients_to_train_every_pair_both_ways": n * n * k,
    }
    out = {}
    for key, observable in observables.items():
        u = observable.gradient(model, params)
        hu = [_mean([hvp(model, loss_fn, params, b, u) for b in p]) for p in batches]
        cross = torch.tensor(  # [i, j] = g_i . H_j u
            [[_dot(g[i], hu[j]) for j in range(n)] for i in range(n)], dtype=torch.float64
        )
        out[key] = PhaseTournament.from_preference(
            lr**2 * k**2 * (cross - cross.T), "bracket", cost, gradient_norms=norms
        )
    return out


def _mean(values: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    return {m: sum(v[m] for v in values) / len(values) for m in values[0]}


def kendall_tau(ranking: Sequence[int], reference: Sequence[int]) -> float:
    """Kendall's tau between two rankings of the same items (1: the same order)."""
    place = {item: n for n, item in enumerate(reference)}
    n, concordant = len(ranking), 0
    pairs = n * (n - 1) // 2
    for a in range(n):
        for b in range(a + 1, n):
            concordant += place[ranking[a]] < place[ranking[b]]
    return math.nan if pairs == 0 else (2 * concordant - pairs) / pairs

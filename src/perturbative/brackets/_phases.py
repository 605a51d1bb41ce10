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
  state, and a phase changes Adam's moments by far more than it moves the parameters.
- ``"exact-state"``: the same, with the optimizer state carried exactly: the second phase runs
  from the checkpoint's parameters with the state the first phase left, and only its dependence
  on the parameters is linearised. It costs a phase run per ordered pair (twice what training
  both orders costs): a diagnostic of what the state's linearisation costs the composition.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from perturbative._core import calls, checks
from perturbative._core.calls import LossFn
from perturbative._core.checks import Params
from perturbative._core.engines import differentiable_kernels
from perturbative.brackets._expansion import Expansion
from perturbative.brackets._observable import Observable
from perturbative.brackets._optimizers import FunctionalOptimizer, functional_optimizer
from perturbative.brackets._predictions import predicted_values
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
    optimizer: torch.optim.Optimizer,
    phase_a: Sequence[Any],
    phase_b: Sequence[Any],
    observable: Observable,
    *,
    method: str = "expansion",
    lr: float | None = None,
    expansion: Expansion | int = Expansion(),
    max_grad_norm: float | None = None,
) -> PhasePrediction:
    """``O(A then B) - O(B then A)`` for two phases of ``k`` minibatches each (module docstring).

    Args:
        model: the model at the checkpoint (eval mode for BatchNorm); not modified.
        loss_fn: the per-example loss.
        optimizer: SGD, Adam or AdamW on the model, in the run's state; not modified.
        phase_a, phase_b: the phases' batches in order, ``k`` each (one step each).
        observable: ``O``.
        method: ``"expansion"`` (default) or ``"composition"``.
        lr: the learning rate (default: the optimizer's).
        expansion: how the ``"expansion"`` method expands gradients.
        max_grad_norm: the run's gradient clipping.

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
            optimizer,
            [*phase_a, *phase_b],
            [range(2 * k), [*range(k, 2 * k), *range(k)]],
            observable,
            lr=lr,
            expansion=expansion,
            max_grad_norm=max_grad_norm,
        )
        return PhasePrediction(predicted=ab - ba, method=method)
    if method == "exact-state":
        return _exact_state(
            model, loss_fn, optimizer, phase_a, phase_b, observable, lr, max_grad_norm
        )
    a, b = (
        phase_effect(
            model, loss_fn, optimizer, phase, observable, lr=lr, max_grad_norm=max_grad_norm
        )
        for phase in (phase_a, phase_b)
    )
    return composed(model, observable, a, b)


def _exact_state(model, loss_fn, optimizer, phase_a, phase_b, observable, lr, max_grad_norm):
    """The ``"exact-state"`` method (module docstring)."""
    names, read, theta, loss = _functional(model, loss_fn, optimizer, lr, max_grad_norm)
    a, b = (checks.check_batches(model, p) for p in (phase_a, phase_b))
    with differentiable_kernels():
        (end_a, state_a), (end_b, state_b) = (
            _run(read, loss, theta, read.state, p, graph=False) for p in (a, b)
        )
        starts = [{n: v.clone().requires_grad_() for n, v in theta.items()} for _ in "ab"]
        # A then B: B from the checkpoint's parameters and the state A left; B then A likewise
        ab, _ = _run(read, loss, starts[0], state_a, b, graph=True)
        ba, _ = _run(read, loss, starts[1], state_b, a, graph=True)
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
    optimizer: torch.optim.Optimizer,
    phase: Sequence[Any],
    observable: Observable,
    *,
    lr: float | None = None,
    max_grad_norm: float | None = None,
) -> PhaseEffect:
    """Train ``phase`` alone from the checkpoint twice with the optimizer's functional steps: in
    first place (its displacement of parameters and state) and in second place, its step count
    advanced by its own length, keeping the graph of its steps so that any cotangent on its end
    pulls back to its start. Costs ``2 k`` gradients (``k`` with their graphs) and holds the
    graph of ``k`` steps while the effect lives."""
    names, read, theta, loss = _functional(model, loss_fn, optimizer, lr, max_grad_norm)
    batches = checks.check_batches(model, phase)
    with differentiable_kernels():
        end, end_state = _run(read, loss, theta, read.state, batches, graph=False)
        delta = {**_flat(end, "p"), **_flat(end_state, "s")}
        start = {**_flat(theta, "p"), **_flat(read.state, "s")}
        # a fresh optimizer's state starts empty: only what it had can be a start to differentiate
        delta = {key: delta[key] - start[key] for key in delta if key in start}
        leaves = {key: value.clone().requires_grad_() for key, value in start.items()}
        params = {n: leaves[f"p/{n}"] for n in names}
        later = _advanced(_unflat(read.state, leaves), len(batches))
        end, _ = _run(read, loss, params, later, batches, graph=True)

    def pullback(cotangent: dict[str, Tensor]) -> dict[str, Tensor]:
        grads = torch.autograd.grad(
            [end[n] for n in names],
            list(leaves.values()),
            [cotangent[n] for n in names],
            retain_graph=True,
            allow_unused=True,
        )
        out = {
            key: torch.zeros_like(leaves[key]) if g is None else g.detach()
            for key, g in zip(leaves, grads, strict=True)
        }
        checks.check_finite(out, "the phase's pullback")
        return out

    return PhaseEffect(
        theta=theta,
        delta=delta,
        shifted={n: end[n].detach() - theta[n] for n in names},
        pullback=pullback,
    )


def _functional(model, loss_fn, optimizer, lr, max_grad_norm):
    """``(names, read, theta, loss)``: the trained parameters' names, the optimizer as
    functional steps (lr and clipping applied), the checkpoint's parameters, the batch loss."""
    names = trained_names(model, optimizer)
    by_name = dict(model.named_parameters())
    read = functional_optimizer(
        optimizer, {n: by_name[n] for n in names}, lr=lr, max_grad_norm=max_grad_norm
    )
    theta = {n: by_name[n].detach() for n in names}
    return names, read, theta, calls.batch_loss(model, loss_fn, calls.fixed_state(model, theta))


def _run(
    read: FunctionalOptimizer, loss, params: Params, state: dict, batches, *, graph: bool
) -> tuple[Params, dict]:
    """The phase's functional steps from ``(params, state)``; with ``graph`` every gradient
    keeps its graph so that the end can be differentiated by the start."""
    for t, batch in enumerate(batches):
        at = params if graph else {k: v.detach().requires_grad_() for k, v in params.items()}
        grads = torch.autograd.grad(loss(at, *batch), list(at.values()), create_graph=graph)
        grads = dict(zip(at, grads if graph else [g.detach() for g in grads], strict=True))
        checks.check_finite(grads, f"the gradient of the phase's batch {t}")
        start = at if graph else {k: v.detach() for k, v in at.items()}
        params, state = read.step(start, grads, state)
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
    """:func:`phase_tournament`'s answer for ``N`` sources.

    Attributes:
        preference: ``(N, N)``: ``[i, j]`` is ``O(i then j) - O(j then i)`` predicted (negative:
            ``i`` first is better); antisymmetric, zero diagonal.
        scores: the row sums (most negative: best put early).
        ranking: the sources from the best to put first to the best to put last.
        cost: what the prediction took, and what training every pair both ways would take.
    """

    preference: Tensor
    scores: Tensor
    ranking: list[int]
    cost: dict[str, int]


def phase_tournament(
    model: nn.Module,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    phases: Sequence[Sequence[Any]],
    observable: Observable,
    *,
    lr: float | None = None,
    max_grad_norm: float | None = None,
) -> PhaseTournament:
    """The predicted preference of every pair of ``N`` phases (one per source, ``k`` batches
    each) by the composition method, from one :func:`phase_effect` per phase, and the ranking
    by row sums.

    Raises:
        ValueError: fewer than two phases, or phases of different lengths.
    """
    if len(phases) < 2 or len({len(p) for p in phases}) != 1:
        raise ValueError("a tournament needs at least two phases of the same number of batches")
    effects = [
        phase_effect(model, loss_fn, optimizer, p, observable, lr=lr, max_grad_norm=max_grad_norm)
        for p in phases
    ]
    n, k = len(phases), len(phases[0])
    preference = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(i + 1, n):
            preference[i, j] = composed(model, observable, effects[i], effects[j]).predicted
            preference[j, i] = -preference[i, j]
    scores = preference.sum(1)
    return PhaseTournament(
        preference=preference,
        scores=scores,
        ranking=torch.argsort(scores).tolist(),
        cost={
            "gradients": 2 * n * k,
            "backward_passes": n * (n - 1),
            "gradients_to_train_every_pair_both_ways": 2 * n * (n - 1) * k,
        },
    )


def kendall_tau(ranking: Sequence[int], reference: Sequence[int]) -> float:
    """Kendall's tau between two rankings of the same items (1: the same order)."""
    place = {item: n for n, item in enumerate(reference)}
    n, concordant = len(ranking), 0
    pairs = n * (n - 1) // 2
    for a in range(n):
        for b in range(a + 1, n):
            concordant += place[ranking[a]] < place[ranking[b]]
    return math.nan if pairs == 0 else (2 * concordant - pairs) / pairs

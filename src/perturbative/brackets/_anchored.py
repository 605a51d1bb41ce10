"""Which data first, from real phases: every pair trained both ways, or (from a few phases)
every source placed before and after one anchor.

Training every pair of ``N`` phases of ``k`` batches both ways takes ``N^2 k`` steps when each
first phase is trained once and every second phase branches from it
(:func:`trained_tournaments`; ``2 N (N - 1) k`` if each order trains from the start).

Write ``O(A then B)`` for ``O`` after phase ``A`` then phase ``B`` from the checkpoint, and
``D_AB = O(A then B) - O(B then A)``. Where a phase's effect on ``O`` splits into what it does
in the first place and what it does in the second,

    O(A then B) = c + f_A + l_B,

the order's effect is a difference of per-source potentials, ``D_AB = s_A - s_B`` with
``s = f - l``, and one anchor phase ``M`` of the same length measures every potential:
``D_AM = s_A - s_M``, so

    D_AB = D_AM - D_BM,        D_sM = O(s then M) - O(M then s).

That is ``M`` really trained once, each source after it (branching from the one trained copy)
and each source before it (then ``M`` again): ``(3N + 1) k`` steps against the ``N^2 k`` of
training every pair both ways (0.45 of it at ``N = 7``, 0.53 at ``N = 6``: under a third only
from ``N = 10``). The split is exact for plain SGD on losses that share one Hessian, with ``O``
linear (every phase's map is ``theta -> A theta + c_s`` with one ``A``;
``tests/brackets/test_anchored.py``); on real runs it is measured: how much of each real
tournament a potential explains is in ``docs/results/phases.md``. The anchor used by
``perturbative phase-check`` is a phase of the sources' mixture, the same for every source.
Nothing is expanded: the method errs by the part of the order's effect that is not a
difference of potentials (how ``A`` and ``B`` interact, beyond what each does with ``M``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from perturbative._core import checks
from perturbative._core.calls import LossFn
from perturbative.brackets._observable import Observable
from perturbative.brackets._phases import PhaseTournament
from perturbative.brackets._step import TrainingStep, as_training_step
from perturbative.brackets._swap import trained_copy, values_after_each, values_along_steps


def anchored_tournaments(
    model: nn.Module,
    loss_fn: LossFn,
    step: TrainingStep | torch.optim.Optimizer,
    phases: Sequence[Sequence[Any]],
    observables: Mapping[str, Observable],
    anchor: Sequence[Any],
    *,
    alone: bool = False,
) -> dict[str, PhaseTournament]:
    """Every pair's order of ``N`` phases predicted from each phase really trained before and
    after ``anchor`` (module docstring): ``P[i, j] = D_iM - D_jM``, for each observable.

    With ``alone``, each source's phase trained alone stands in for it after the anchor: its
    potential is read as ``s_A = O(A then M) - O(A alone)`` (what the anchor does after ``A``;
    exact where a phase's effect in second place is its effect alone, as for plain SGD with a
    momentum at a constant lr on losses that share one Hessian and ``O`` linear), from ``2 N k``
    steps: each source then the anchor, read after the source and after the anchor.

    Args:
        model: the model at the checkpoint; not modified (copies train).
        step: the loop's :class:`~perturbative.TrainingStep` (its optimizer in the run's state,
            clipping and schedule: the first phase at positions ``0..k-1``, the second at
            ``k..2k-1``, as the pairs they predict), or the optimizer alone.
        phases: ``N >= 2`` phases of ``k`` batches each, one per source.
        observables: ``{name: O}``.
        anchor: ``k`` batches, e.g. the sources' mixture.
        alone: read each potential from the source then the anchor alone (above).

    Returns:
        ``{name: PhaseTournament}`` with ``method="anchored"`` (``"anchored-alone"``); its cost
        counts the ``(3N + 1) k`` (``2 N k``) steps.

    Raises:
        ValueError: fewer than two phases, or phases and anchor of different lengths.
    """
    if len(phases) < 2 or len({len(p) for p in [*phases, anchor]}) != 1 or not len(anchor):
        raise ValueError(
            "an anchored tournament needs at least two phases and an anchor, all of the same "
            "number of batches (at least one)"
        )
    step = as_training_step(step)
    n, k = len(phases), len(anchor)
    names = list(observables)
    anchor = checks.check_batches(model, list(anchor))
    phases = [checks.check_batches(model, list(p)) for p in phases]

    def measured(trained: nn.Module) -> list[float]:
        return [observables[name].value(trained) for name in names]

    # O(s then M), each source from the checkpoint then the anchor (and O(s alone) on the way)
    alone_then = [
        values_along_steps(
            model, loss_fn, step, [*p, *anchor], measured, [k, 2 * k] if alone else [2 * k]
        )
        for p in phases
    ]
    if alone:
        against = [[m - a for a, m in zip(*got, strict=True)] for got in alone_then]
        method, steps = "anchored-alone", 2 * n * k
    else:
        after_anchor, going_on = trained_copy(model, loss_fn, step, anchor, then=k)
        after = [  # O(M then s): each source from the one copy trained on the anchor
            values_along_steps(after_anchor, loss_fn, going_on, p, measured, [k])[0] for p in phases
        ]
        against = [  # D_sM
            [b - a for b, a in zip(got[-1], a_s, strict=True)]
            for got, a_s in zip(alone_then, after, strict=True)
        ]
        method, steps = "anchored", (3 * n + 1) * k
    cost = {"gradients": steps, "gradients_to_train_every_pair_both_ways": n * n * k}
    out = {}
    for x, name in enumerate(names):
        potential = torch.tensor([a[x] for a in against], dtype=torch.float64)
        out[name] = PhaseTournament.from_preference(
            potential[:, None] - potential[None, :], method, cost
        )
    return out


def trained_tournaments(
    model: nn.Module,
    loss_fn: LossFn,
    step: TrainingStep | torch.optim.Optimizer,
    phases: Sequence[Sequence[Any]],
    observables: Mapping[str, Observable],
) -> dict[str, PhaseTournament]:
    """The real tournament: every pair of ``N`` phases trained both ways,
    ``P[i, j] = O(i then j) - O(j then i)``, each first phase trained once and every second
    phase branching from it (``N^2 k`` steps; the same values, bit for bit, as training each
    order from the start).

    Args:
        model: the model at the checkpoint; not modified (copies train).
        step: the loop's :class:`~perturbative.TrainingStep` (the first phase at positions
            ``0..k-1`` of its schedule, the second at ``k..2k-1``), or the optimizer alone.
        phases: ``N >= 2`` phases of ``k`` batches each, one per source.
        observables: ``{name: O}``.

    Returns:
        ``{name: PhaseTournament}`` with ``method="trained"``.

    Raises:
        ValueError: fewer than two phases, or phases of different lengths.
    """
    if len(phases) < 2 or len({len(p) for p in phases}) != 1 or not len(phases[0]):
        raise ValueError(
            "a tournament needs at least two phases, all of the same number of batches (at "
            "least one)"
        )
    n, k, names = len(phases), len(phases[0]), list(observables)
    phases = [checks.check_batches(model, list(p)) for p in phases]

    def measured(trained: nn.Module) -> list[float]:
        return [observables[name].value(trained) for name in names]

    after = []  # after[i][j]: O(i then j), for j != i
    for i in range(n):
        others = [j for j in range(n) if j != i]
        values = values_after_each(
            model, loss_fn, step, phases[i], [phases[j] for j in others], measured
        )
        after.append(dict(zip(others, values, strict=True)))
    cost = {"gradients": n * n * k, "gradients_to_train_every_pair_both_ways": n * n * k}
    out = {}
    for x, name in enumerate(names):
        real = torch.zeros(n, n, dtype=torch.float64)
        for i in range(n):
            for j, values in after[i].items():
                real[i, j] = values[x] - after[j][i][x]
        out[name] = PhaseTournament.from_preference(real, "trained", cost)
    return out

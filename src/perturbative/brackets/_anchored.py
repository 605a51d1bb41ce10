"""Which data first, from a few real phases: every source placed before and after one anchor.

Write ``O(A then B)`` for ``O`` after phase ``A`` then phase ``B`` from the checkpoint, and
``D_AB = O(A then B) - O(B then A)``. Where a phase's effect on ``O`` splits into what it does
in the first place and what it does in the second,

    O(A then B) = c + f_A + l_B,

the order's effect is a difference of per-source potentials, ``D_AB = s_A - s_B`` with
``s = f - l``, and one anchor phase ``M`` of the same length measures every potential:
``D_AM = s_A - s_M``, so

    D_AB = D_AM - D_BM,        D_sM = O(s then M) - O(M then s).

That is ``M`` really trained once, each source after it (branching from the one trained copy)
and each source before it (then ``M`` again): ``(3N + 1) k`` steps against
the ``2 N (N - 1) k`` of training every pair both ways (0.26 of it at ``N = 7``, 0.32 at ``N =
6``). The split is exact for plain SGD on losses that share one Hessian, with ``O`` linear
(every phase's map is ``theta -> A theta + c_s`` with one ``A``;
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
from perturbative.brackets._swap import trained_copy, values_along_steps


def anchored_tournaments(
    model: nn.Module,
    loss_fn: LossFn,
    step: TrainingStep | torch.optim.Optimizer,
    phases: Sequence[Sequence[Any]],
    observables: Mapping[str, Observable],
    anchor: Sequence[Any],
) -> dict[str, PhaseTournament]:
    """Every pair's order of ``N`` phases predicted from each phase really trained before and
    after ``anchor`` (module docstring): ``P[i, j] = D_iM - D_jM``, for each observable.

    Args:
        model: the model at the checkpoint; not modified (copies train).
        step: the loop's :class:`~perturbative.TrainingStep` (its optimizer in the run's state,
            clipping and schedule: the first phase at positions ``0..k-1``, the second at
            ``k..2k-1``, as the pairs they predict), or the optimizer alone.
        phases: ``N >= 2`` phases of ``k`` batches each, one per source.
        observables: ``{name: O}``.
        anchor: ``k`` batches, e.g. the sources' mixture.

    Returns:
        ``{name: PhaseTournament}`` with ``method="anchored"``; its cost counts the ``(3N + 1)
        k`` steps.

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

    before = [  # O(s then M): each source from the checkpoint, then the anchor
        values_along_steps(model, loss_fn, step, [*p, *anchor], measured, [2 * k])[0]
        for p in phases
    ]
    after_anchor, going_on = trained_copy(model, loss_fn, step, anchor, then=k)
    after = [  # O(M then s): each source from the one copy trained on the anchor
        values_along_steps(after_anchor, loss_fn, going_on, p, measured, [k])[0] for p in phases
    ]
    cost = {
        "gradients": (3 * n + 1) * k,
        "gradients_to_train_every_pair_both_ways": 2 * n * (n - 1) * k,
    }
    out = {}
    for x, name in enumerate(names):
        against = torch.tensor(  # D_sM
            [b[x] - a[x] for b, a in zip(before, after, strict=True)], dtype=torch.float64
        )
        out[name] = PhaseTournament.from_preference(
            against[:, None] - against[None, :], "anchored", cost
        )
    return out

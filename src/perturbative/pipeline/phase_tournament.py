"""One tournament of ``perturbative phase-check``: every pair of ``N`` phases really trained both
ways at a checkpoint, every triple's ``3!`` orders, and every method's prediction of them.

Each pair's two orders come from each source's phase trained once and every other phase
branching from its copy (:func:`perturbative.brackets.values_after_each`: ``N^2 k`` steps, the
same values bit for bit as each order trained from the checkpoint). Every unit (the phases after
one first phase, the floor, the predictions, a triple, an anchored method) is saved in the
check's progress file as it finishes, so a check that stops continues where it stopped; a check
the earlier version stopped, which saved one unit per pair, continues from its pairs.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from perturbative._core import calls
from perturbative.brackets import (
    Observable,
    TrainingStep,
    anchored_tournaments,
    bracket_tournaments,
    phase_tournaments,
    predict_phase_order,
    predict_phase_orders,
    values_after_each,
    values_along_steps,
)
from perturbative.pipeline.checkpoints import copied_in
from perturbative.pipeline.partial import PartialCheck
from perturbative.pipeline.phase_extend import reproduced
from perturbative.pipeline.phase_records import TournamentRecord, TripleRecord
from perturbative.pipeline.task import as_dtype


@dataclass
class Tournament:
    """One tournament of the check: the checkpoint's model and the run's training step from it,
    ``k``, the targets, the drawn sources with their phases and triples, and the progress file
    each of its units is saved in.

    Attributes:
        step: the checkpoint's step; ``lr`` the first group's lr at the first step after it.
        folder: the run's folder, named in a refusal to extend a check.
        chosen: the drawn sources' names; ``phases[i]`` the ``k`` batches of ``chosen[i]``.
        triples: each triple of indices into ``chosen`` whose ``3!`` orders train.
        expand: whether the expansion predicts it too.
    """

    step: int
    lr: float
    model: nn.Module
    training: TrainingStep
    loss_fn: object
    folder: str
    targets: dict[str, Observable]
    chosen: list[str]
    phases: list
    triples: list
    k: int
    expand: bool
    unfinished: PartialCheck

    @property
    def names(self) -> list[str]:
        return list(self.targets)

    @property
    def args(self) -> tuple:
        """The model at the checkpoint, the loss and the run's training step from it."""
        return (self.model, self.loss_fn, self.training)

    def key(self, *unit) -> tuple:
        return (self.step, self.k, *unit)

    def saved(self, unit: tuple, compute):
        """The unit of this tournament, from the progress file or computed and saved."""
        return self.unfinished.get(self.key(*unit), compute)

    def measured(self, model: nn.Module) -> list[float]:
        return [self.targets[t].value(model) for t in self.names]

    def values(self, order: Sequence[int], batches_of=None) -> list[float]:
        """Every target after the phases of ``order`` trained from the checkpoint in turn."""
        batches = [b for i in order for b in (batches_of or self.phases)[i]]
        return values_along_steps(*self.args, batches, self.measured, [len(batches)])[0]

    def both_ways(self, i: int, j: int) -> dict:
        """One pair trained both ways, each order from the checkpoint."""
        started = time.perf_counter()
        ij, ji = self.values((i, j)), self.values((j, i))
        return {"values": [ij, ji], "seconds": time.perf_counter() - started}

    def after(self, i: int) -> dict:
        """Every target after phase ``i`` then each other phase (``values`` in the order of
        the others), each second phase branching from one copy trained on ``i``; where the
        earlier version saved a pair (both ways from the checkpoint), its value and half its
        seconds."""
        others = [j for j in range(len(self.phases)) if j != i]
        pairs = {j: self.unfinished.find(self.key("pair", min(i, j), max(i, j))) for j in others}
        values = {j: pair["values"][int(i > j)] for j, pair in pairs.items() if pair is not None}
        seconds = sum(pair["seconds"] for pair in pairs.values() if pair is not None) / 2
        missing = [j for j in others if j not in values]
        if missing:
            started = time.perf_counter()
            got = values_after_each(
                *self.args, self.phases[i], [self.phases[j] for j in missing], self.measured
            )
            values.update(zip(missing, got, strict=True))
            seconds += time.perf_counter() - started
        return {"values": [values[j] for j in others], "seconds": seconds}


def tournament_record(
    tournament: Tournament,
    *,
    anchors: Mapping[str, tuple[list, bool]],
    earlier: TournamentRecord | None,
) -> TournamentRecord:
    """Train every pair both ways and every triple's orders, and predict them all
    (``anchors``: each anchored method's anchor phase, and whether each source alone stands in
    for it after the anchor); with ``earlier`` (the same tournament
    in the check being extended), keep what it has once its first and last pairs reproduce, and
    predict with the methods it lacks."""
    t = tournament
    if earlier is not None:  # its first and last pairs trained again first
        again = {
            (i, j): t.saved(("pair", i, j), lambda i=i, j=j: t.both_ways(i, j))["values"]
            for i, j in ((0, 1), (len(t.chosen) - 2, len(t.chosen) - 1))
        }
        record = reproduced(earlier, t.chosen, t.names, again, t.folder)
    else:
        record = _trained(t)

    def anchored(anchor, alone) -> dict:
        clock = time.perf_counter()
        got = anchored_tournaments(*t.args, t.phases, t.targets, anchor, alone=alone)
        return {
            "predicted": {name: g.preference.tolist() for name, g in got.items()},
            "cost": got[t.names[0]].cost,
            "seconds": time.perf_counter() - clock,
        }

    for method, (anchor, alone) in anchors.items():
        if method not in record.predicted:
            got = t.saved(("predicted", method), lambda a=anchor, b=alone: anchored(a, b))
            record.predicted[method], record.cost[method] = got["predicted"], got["cost"]
            record.seconds[method] = got["seconds"]
    n = len(t.phases)
    for cost in record.cost.values():  # against the same experiment, saved by any version
        if "gradients_to_train_every_pair_both_ways" in cost:
            cost["gradients_to_train_every_pair_both_ways"] = n * n * t.k
    return record


def _trained(t: Tournament) -> TournamentRecord:
    """The tournament trained: every pair both ways (from each first phase trained once), the
    floor, every method but the anchored ones, and the triples (each a unit saved)."""
    n, names = len(t.phases), t.names
    real = {name: np.zeros((n, n)) for name in names}
    seconds = {"real": 0.0}  # each unit's own time, saved with it (a resumed check has it)
    for i in range(n):
        unit = t.saved(("after", i), lambda i=i: t.after(i))
        seconds["real"] += unit["seconds"]
        others = [j for j in range(n) if j != i]
        for j, values in zip(others, unit["values"], strict=True):
            for x, name in enumerate(names):
                real[name][i, j] += values[x]
                real[name][j, i] -= values[x]

    def floor() -> list[float]:
        """One order again: in float64 with each batch's rows reversed (the same sums in
        another order), in float32 trained in float64 (rows reversed can round alike)."""
        first = t.values((0, 1))
        if next(t.model.parameters()).dtype == torch.float64:
            again = t.values((0, 1), [[_reversed_rows(b) for b in p] for p in t.phases])
        else:
            again = _in_float64(t, [t.targets[x] for x in names])
        return [abs(a - b) for a, b in zip(again, first, strict=True)]

    floors = t.saved(("floor",), floor)
    predicted, cost, seconds_of = t.saved(("predicted",), lambda: _predictions(t))
    seconds.update(seconds_of)
    orders = [list(o) for o in itertools.permutations(range(3))]
    triple_records = []
    for x, members in enumerate(t.triples):
        got = t.saved(
            ("triple", x), lambda m=members: [t.values([m[i] for i in o]) for o in orders]
        )
        predicted_orders = {}
        if t.expand:  # the expansion predicts O after each order, not only pairwise preferences
            predicted_orders["expansion"] = t.saved(
                ("triple-predicted", x),
                lambda m=members: {
                    name: predict_phase_orders(
                        *t.args, [t.phases[i] for i in m], orders, t.targets[name]
                    )
                    for name in names
                },
            )
        triple_records.append(
            TripleRecord(
                sources=list(members),
                orders=orders,
                real={name: [g[y] for g in got] for y, name in enumerate(names)},
                predicted=predicted_orders,
            )
        )
    return TournamentRecord(
        step=t.step,
        k=t.k,
        lr=t.lr,
        sources=list(t.chosen),
        real={name: m.tolist() for name, m in real.items()},
        floor=dict(zip(names, floors, strict=True)),
        predicted=predicted,
        seconds=seconds,
        cost=cost,
        triples=triple_records,
    )


def _predictions(t: Tournament) -> tuple[dict, dict, dict]:
    """Every method's but the anchored ones' predicted tournament for every target, the cost
    each reports, and the seconds each took."""
    targets, phases, k = t.targets, t.phases, t.k
    model, loss_fn = t.model, t.loss_fn
    n, names = len(phases), t.names
    predicted: dict[str, dict[str, list]] = {}
    cost: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    tournaments = phase_tournaments(model, loss_fn, t.training, phases, targets)
    seconds["composition"] = time.perf_counter() - clock  # last-phase comes with it
    for method, got in tournaments.items():
        predicted[method] = {name: g.preference.tolist() for name, g in got.items()}
        cost[method] = got[names[0]].cost
    theta = {m: p.detach() for m, p in model.named_parameters() if p.requires_grad}
    drift = tournaments["composition"][names[0]].drift
    reference = {m: v + drift[m] for m, v in theta.items()}
    for method, point in (("sgd-bracket", None), ("reference-bracket", reference)):
        clock = time.perf_counter()
        got = bracket_tournaments(model, loss_fn, phases, targets, lr=t.lr, at=point)
        seconds[method] = time.perf_counter() - clock
        predicted[method] = {name: g.preference.tolist() for name, g in got.items()}
        cost[method] = got[names[0]].cost
        if point is None:
            norms = got[names[0]].gradient_norms  # at the checkpoint
    if t.expand:
        clock = time.perf_counter()
        matrix = {name: np.zeros((n, n)) for name in names}
        for i, j in itertools.combinations(range(n), 2):
            for name in names:
                value = predict_phase_order(
                    model,
                    loss_fn,
                    t.training,
                    phases[i],
                    phases[j],
                    targets[name],
                ).predicted
                matrix[name][i, j], matrix[name][j, i] = value, -value
        seconds["expansion"] = time.perf_counter() - clock
        predicted["expansion"] = {name: m.tolist() for name, m in matrix.items()}
    losses = _phase_losses(model, loss_fn, phases)
    # a phase first is taken to lower O when its gradient (its loss) is larger
    heuristics = {
        "larger-gradient-first": np.sign(np.subtract.outer(norms, norms)) * -1.0,
        "larger-loss-first": np.sign(np.subtract.outer(losses, losses)) * -1.0,
    }
    coin = np.triu(np.random.default_rng(n * 1000 + k).choice([-1.0, 1.0], (n, n)), 1)
    heuristics["coin"] = coin - coin.T
    for method, matrix in heuristics.items():
        predicted[method] = dict.fromkeys(names, matrix.tolist())
    return predicted, cost, seconds


def _phase_losses(model: nn.Module, loss_fn, phases) -> np.ndarray:
    params = {m: p.detach() for m, p in model.named_parameters()}
    loss = calls.batch_loss(model, loss_fn, calls.fixed_state(model, params))
    with torch.no_grad():
        return np.array([np.mean([float(loss(params, *b)) for b in p]) for p in phases])


def _reversed_rows(batch: tuple) -> tuple:
    def flip(value):
        if isinstance(value, Tensor):
            return value.flip(0)
        if isinstance(value, dict):
            return {k: flip(v) for k, v in value.items()}
        return value

    return tuple(flip(v) for v in batch)


def _in_float64(t: Tournament, observables: list[Observable]) -> list[float]:
    """The observables after the first two phases trained in order on float64 copies of the
    model and its optimizer."""
    model, training = copied_in(t.model, t.training, torch.float64)
    batches = [as_dtype(b, torch.float64) for p in t.phases[:2] for b in p]
    exact = [o.to(torch.float64) for o in observables]
    measured = values_along_steps(
        model, t.loss_fn, training, batches, lambda m: [o.value(m) for o in exact], [len(batches)]
    )
    return measured[0]

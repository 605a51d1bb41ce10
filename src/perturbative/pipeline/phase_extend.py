"""A finished phase check extended with the anchored methods it lacks
(``perturbative phase-check --from-check DIR``), without training its pairs again.

The earlier check must be finished and made with the same settings (an option it predates reads
as its default), on the same checkpoints and phase lengths, with the same targets. Each of its
tournaments is kept once two of its pairs, trained again, give what it recorded: the first pair,
whose phases are drawn first, and the last, whose draws depend on every source drawn before it.
Otherwise the run's checkpoints, data or code have changed since, and the check stops rather
than mix the two.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import MISSING, fields
from typing import Any

from perturbative._core.errors import InputError
from perturbative.pipeline.partial import UNSAVED
from perturbative.pipeline.phase_records import PhaseCheckRecord, TournamentRecord
from perturbative.pipeline.results import read_phase_check_file

#: Options a check may set otherwise than the earlier check it extends.
EXTENDING = (*UNSAVED, "from_check")


def earlier_check(folder: str, settings: Mapping[str, Any], defaults: Mapping[str, Any]):
    """The finished check in ``folder``, once its options equal ``settings`` (those it lacks
    read as ``defaults``).

    Raises:
        InputError: it is not a finished phase check, or it was made with other settings.
    """
    check = read_phase_check_file(folder)
    if not check.finished:
        raise InputError(
            f"{folder} holds an unfinished phase check: finish it first (run its command "
            "again), then extend it"
        )
    differ = [
        f"--{name.replace('_', '-')} {check.options.get(name, defaults[name])!r} there, "
        f"{value!r} here"
        for name, value in settings.items()
        if name not in EXTENDING and check.options.get(name, defaults[name]) != value
    ]
    if differ:
        raise InputError(
            f"{folder} was checked with other settings ({'; '.join(differ)}): pass its settings "
            "to extend it"
        )
    return check


def tournaments_to_extend(
    check: PhaseCheckRecord, steps: Sequence[int], ks: Sequence[int]
) -> dict[tuple[int, int], TournamentRecord]:
    """The earlier check's tournaments by ``(step, k)``, once they are this check's.

    Raises:
        InputError: other checkpoints or phase lengths.
    """
    here = {(s, k) for s in steps for k in ks}
    there = {(r.step, r.k) for r in check.tournaments}
    if here != there:
        raise InputError(
            f"the check being extended has tournaments at (step, k) {sorted(there)}, this one "
            f"{sorted(here)}: the run's checkpoints have changed since, or --checkpoints picks "
            "others; pass --steps with its steps"
        )
    return {(r.step, r.k): r for r in check.tournaments}


def reproduced(
    earlier: TournamentRecord,
    chosen: Sequence[str],
    names: Sequence[str],
    again: Mapping[tuple[int, int], Sequence[Sequence[float]]],
    run: str,
) -> TournamentRecord:
    """A copy of ``earlier`` once each pair ``(i, j)`` of ``again`` (its two orders' targets,
    trained again) moves every target as it recorded, within twice its rounding floor.

    Raises:
        InputError: other sources drawn, other targets, or a pair that does not reproduce.
    """
    step, k = earlier.step, earlier.k
    if list(earlier.real) != list(names):
        raise InputError(
            f"the check being extended measured {list(earlier.real)}, this one {list(names)}: "
            "pass --target-source as it had it"
        )
    if list(earlier.sources) != list(chosen):
        raise InputError(
            f"the check being extended drew the sources {earlier.sources} at step {step} and "
            f"k = {k}, this one {list(chosen)}: the run's task has changed since; run a new "
            "check without --from-check"
        )
    for (i, j), (ij, ji) in again.items():
        for x, t in enumerate(names):
            got, recorded, floor = ij[x] - ji[x], earlier.real[t][i][j], earlier.floor[t]
            if not abs(got - recorded) <= 2 * floor + 1e-9 * abs(recorded):
                raise InputError(
                    f"the pair ({i}, {j}) at step {step} and k = {k}, trained again, moves {t} "
                    f"by {got:.6g} where the check of {run} being extended recorded "
                    f"{recorded:.6g} (floor {floor:.2g}): the run's checkpoints, data, device "
                    "or code have changed since; run a new check without --from-check"
                )
    return TournamentRecord(
        step=step,
        k=k,
        lr=earlier.lr,
        sources=list(earlier.sources),
        real=earlier.real,
        floor=dict(earlier.floor),
        predicted=dict(earlier.predicted),
        seconds=dict(earlier.seconds),
        cost=dict(earlier.cost),
        triples=list(earlier.triples),
    )


def defaults_of(cls: type) -> dict[str, Any]:
    """Each field's default of a dataclass of options, as JSON holds it (tuples as lists)."""
    return {
        f.name: list(f.default) if isinstance(f.default, tuple) else f.default
        for f in fields(cls)
        if f.default is not MISSING
    }

"""The records of a phase check (``perturbative phase-check``), typed, and the one versioned
reader of ``phase_check.json`` (documented in ``docs/results-format.md``).

A check holds, per checkpoint and phase length ``k``, the real tournament of its sources and
every method's prediction of it (:class:`TournamentRecord`, with the triples whose ``3!`` orders
were all trained), the replay gate's gaps, and the summary pooled per target, ``k`` and method
(:class:`PhaseSummary`). The CLI's lines and the report read these; :meth:`PhaseCheckRecord.
from_json` is the only place that reads the file's keys.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from perturbative._core.errors import InputError
from perturbative.pipeline.recorded_records import ReplayGap

#: ``(format, version)`` written and read.
PHASE_CHECK_FORMAT = ("perturbative phase check", 1)


@dataclass
class TripleRecord:
    """Three of a tournament's sources: ``O`` after each of their ``3!`` orders, per target,
    really trained and, where a method predicts the value of each order (``predicted[method]
    [target]``), predicted; other methods pick by their pairwise preferences."""

    sources: list[int]
    orders: list[list[int]]
    real: dict[str, list[float]]
    predicted: dict[str, dict[str, list[float]]] = field(default_factory=dict)


@dataclass
class TournamentRecord:
    """One checkpoint and phase length: the real tournament and every method's prediction.

    ``real[target]`` and ``predicted[method][target]`` are ``(N, N)`` nested lists,
    ``[i][j] = O(i then j) - O(j then i)``; ``floor[target]`` is the rounding floor;
    ``seconds`` what each took (``"real"``: training every pair both ways).
    """

    step: int
    k: int
    lr: float
    sources: list[str]
    real: dict[str, list[list[float]]]
    floor: dict[str, float]
    predicted: dict[str, dict[str, list[list[float]]]]
    seconds: dict[str, float]
    cost: dict[str, dict[str, int]] = field(default_factory=dict)
    triples: list[TripleRecord] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TournamentRecord:
        triples = [TripleRecord(**t) for t in data.get("triples", [])]
        return cls(**{**data, "triples": triples})


@dataclass
class MethodSummary:
    """One method at one target and ``k``, pooled over checkpoints (NaN: not measured, a
    method that predicts signs alone has no Spearman, slope or error; no triples, no best of
    ``3!``).

    Attributes:
        sign_accuracy: over every pair ``i < j``.
        sign_accuracy_above_floor: over pairs whose real difference is above the floor.
        kendall_tau: of the row-sum ranking against the real tournament's (mean).
        triples: triples whose ``3!`` orders were all trained.
        best_of_3: share of them whose predicted best order was the real best.
        gap_captured: mean share of the real best-to-worst gap the predicted best captures.
        spearman: of the predicted values against the real ones.
        calibration_slope: ``sum(p r) / sum(p^2)``.
        median_relative_error: median ``|p - r| / |r|``.
        seconds: the prediction's seconds, summed (None where it was timed with another).
    """

    sign_accuracy: float
    sign_accuracy_above_floor: float
    kendall_tau: float
    triples: int = 0
    best_of_3: float = math.nan
    gap_captured: float = math.nan
    spearman: float = math.nan
    calibration_slope: float = math.nan
    median_relative_error: float = math.nan
    seconds: float | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MethodSummary:
        numbers = {
            name: _float(data.get(name))
            for name, f in cls.__dataclass_fields__.items()
            if f.type == "float"
        }
        seconds = data.get("seconds")
        return cls(
            **numbers,
            triples=int(data.get("triples", 0)),
            seconds=None if seconds is None else float(seconds),
        )


@dataclass
class PhaseRow:
    """One target and ``k``: the pairs, what training them took, and every method.

    Attributes:
        pairs: pairs of sources (``i < j``) over every tournament.
        above_floor: of them, pairs whose real difference is above the rounding floor.
        median_real: median ``|real difference|``.
        tournaments: tournaments pooled (one per checkpoint).
        sources: sources per tournament.
        seconds_real: training every pair both ways, summed.
        methods: per method, its numbers.
        anchors_agree: the share of the pairs on whose sign the two anchored methods agree
            (NaN without both): known before any pair trains.
        right_where_anchors_agree: of those above the floor, the share whose agreed sign is
            the real one.
    """

    pairs: int
    above_floor: int
    median_real: float
    tournaments: int
    sources: int
    seconds_real: float
    methods: dict[str, MethodSummary] = field(default_factory=dict)
    anchors_agree: float = math.nan
    right_where_anchors_agree: float = math.nan

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PhaseRow:
        return cls(
            pairs=int(data["pairs"]),
            above_floor=int(data["above_floor"]),
            median_real=_float(data.get("median_real")),
            tournaments=int(data["tournaments"]),
            sources=int(data["sources"]),
            seconds_real=_float(data.get("seconds_real")),
            methods={m: MethodSummary.from_json(v) for m, v in data.get("methods", {}).items()},
            anchors_agree=_float(data.get("anchors_agree")),
            right_where_anchors_agree=_float(data.get("right_where_anchors_agree")),
        )


@dataclass
class PhaseSummary:
    """The check's summary: ``rows[target][k]``
    (:func:`perturbative.pipeline.phase_summary.summarize`)."""

    rows: dict[str, dict[int, PhaseRow]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """As ``phase_check.json`` holds it: ``{target: {"k": row}}``."""
        return {
            t: {str(k): asdict(row) for k, row in by_k.items()} for t, by_k in self.rows.items()
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PhaseSummary:
        return cls(
            {
                target: {int(k): PhaseRow.from_json(row) for k, row in by_k.items()}
                for target, by_k in data.items()
            }
        )


@dataclass
class PhaseCheckRecord:
    """A phase check: the run, its options and targets, the replay gate's gaps, every
    tournament and the summary.

    Attributes:
        run: the checked run's folder.
        finished: the check ran to its end (the file is rewritten after each tournament).
        options: :class:`perturbative.pipeline.phase_order.PhaseCheckOptions` as a dict.
        targets: the observables, the held-out loss first.
        replay: the replay gate's gap at each checkpoint.
        tournaments: one per checkpoint and ``k``.
        summary: pooled per target, ``k`` and method.
        costs: per checkpoint step (as a string), the check's wall-clock ``seconds`` there and
            its ``peak_memory_gib`` on the device it ran on.
    """

    run: str
    finished: bool
    options: dict[str, Any]
    targets: list[str]
    replay: list[ReplayGap] = field(default_factory=list)
    tournaments: list[TournamentRecord] = field(default_factory=list)
    summary: PhaseSummary = field(default_factory=PhaseSummary)
    costs: dict[str, dict[str, float | None]] = field(default_factory=dict)

    def cost_lines(self) -> list[str]:
        """What each checkpoint's check cost, as printed after the summary."""
        lines = []
        for step, cost in self.costs.items():
            peak = cost.get("peak_memory_gib")
            memory = "n/a" if peak is None else f"{peak:.2f} GiB"
            lines.append(f"step {step}: {cost['seconds']:.0f} s, peak memory {memory}")
        return lines

    def to_json(self) -> dict[str, Any]:
        """The check as the JSON object written to ``phase_check.json``."""
        return {
            "format": PHASE_CHECK_FORMAT[0],
            "version": PHASE_CHECK_FORMAT[1],
            **asdict(self),
            "summary": self.summary.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "phase_check.json") -> PhaseCheckRecord:
        """Read a check this version writes.

        Raises:
            InputError: another format or version, or a record without a field it needs.
        """
        if (data.get("format"), data.get("version")) != PHASE_CHECK_FORMAT:
            raise InputError(
                f"{source} is not a phase check this version of perturbative reads; rerun "
                "`perturbative phase-check`"
            )
        try:
            return cls(
                run=str(data.get("run", "")),
                finished=bool(data.get("finished", False)),
                options=dict(data.get("options", {})),
                targets=list(data.get("targets", [])),
                replay=[ReplayGap.from_json(g) for g in data.get("replay", [])],
                tournaments=[TournamentRecord.from_json(r) for r in data.get("tournaments", [])],
                summary=PhaseSummary.from_json(data.get("summary") or {}),
                costs=dict(data.get("costs") or {}),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(
                f"{source} is not a phase check this reader understands ({type(error).__name__}: "
                f"{error}); rerun `perturbative phase-check`"
            ) from error


def _float(value: Any) -> float:
    """A number as JSON holds it (``null`` for NaN)."""
    return math.nan if value is None else float(value)

"""The records of an order check of a run, typed, and their one versioned reader and writer
(``order_check.json``, documented in ``docs/results-format.md``).

A check holds, per checkpoint and lr scale, the pairs it predicted and really trained
(:class:`PairRecord`), the windows whose best order it predicted (:class:`WindowRecord`), the
float32 rounding floor of the real differences and the summary statistics computed from them.
Everything that reads a check (its summary, the printed lines, the report's tables and plots,
the pooled targets) walks these records; :meth:`OrderCheckRecord.from_json` is the only place
that reads the file's keys, and it reads every version written so far (fields added later get
the value older checks implied).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from perturbative._core.errors import InputError
from perturbative.pipeline.recorded_records import ReplayGap

#: The ``format_version`` written; :meth:`OrderCheckRecord.from_json` reads every version in
#: :data:`READABLE_VERSIONS`.
ORDER_CHECK_VERSION = 3  # 2: the replay gate's gaps; 3: any run, logged pairs, scores, clipping
READABLE_VERSIONS = (1, 2, 3)


@dataclass
class PairRecord:
    """One swap: two of the run's logged batches, two examples, two minibatches, or two
    examples exchanged between minibatches.

    Attributes:
        kind: ``"logged"``, ``"example"``, ``"batch"`` or ``"exchange"``.
        predicted: the predicted ``O(x then y) - O(y then x)`` at ``h = 0``.
        second_order: the same with gradients expanded to second order only.
        sgd_bracket: the plain-SGD bracket ``lr^2 u . [v_x, v_y]`` (a baseline).
        state_part: the optimizer-state part of the prediction.
        gradient_norms: ``(|g_x|, |g_y|)``.
        horizons: the horizons ``h`` really followed.
        real: the real difference after each horizon.
        predicted_horizons: the prediction at each horizon, where one was made.
        clipped: the loop's gradient clipping acts on one of the two steps.
        batches: a logged pair's two steps (the log's step numbers).
        seconds: ``(predicting, really training both orders)``, wall-clock seconds.
    """

    kind: str
    predicted: float
    second_order: float
    sgd_bracket: float
    state_part: float
    gradient_norms: list[float]
    horizons: list[int]
    real: list[float]
    predicted_horizons: list[float] | None = None
    clipped: bool = False
    batches: list[int] | None = None
    seconds: list[float] | None = field(default=None, compare=False)  # not part of the result

    def real_at(self, h: int) -> float:
        """The real difference at horizon ``h`` (which must have been followed)."""
        return self.real[self.horizons.index(h)]

    def predicted_at(self, h: int) -> float:
        """The predicted difference at horizon ``h`` (NaN where none was made)."""
        if h == 0:
            return self.predicted
        if not self.predicted_horizons or h not in self.horizons:
            return math.nan
        return self.predicted_horizons[self.horizons.index(h)]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PairRecord:
        return cls(
            kind=data["kind"],
            predicted=_float(data["predicted"]),
            second_order=_float(data.get("second_order", data["predicted"])),
            sgd_bracket=_float(data["sgd_bracket"]),
            state_part=_float(data["state_part"]),
            gradient_norms=[_float(v) for v in data["gradient_norms"]],
            horizons=[int(h) for h in data["horizons"]],
            real=[_float(v) for v in data["real"]],
            predicted_horizons=(
                None
                if data.get("predicted_horizons") is None
                else [_float(v) for v in data["predicted_horizons"]]
            ),
            clipped=bool(data.get("clipped", False)),
            batches=None if data.get("batches") is None else [int(b) for b in data["batches"]],
            seconds=None if data.get("seconds") is None else [float(t) for t in data["seconds"]],
        )


@dataclass
class ScoreRecord:
    """One training example trained in the first rather than the last of the run's next
    ``score_window`` batches: ``O(first) - O(last)``, predicted (with its parts and the
    plain-SGD score) and real.

    Attributes:
        example: its index in the task's training examples.
        predicted: the optimizer-aware order score.
        state_part: its optimizer-state part.
        curvature_part: its curvature part.
        sgd: the plain-SGD score of the same window (a baseline).
        real: the real difference.
        seconds: ``(scoring, really training both)``: the scoring call's wall-clock seconds
            over its examples, and this example's.
    """

    example: int
    predicted: float
    state_part: float
    curvature_part: float
    sgd: float
    real: float
    seconds: list[float] | None = field(default=None, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScoreRecord:
        numbers = ("predicted", "state_part", "curvature_part", "sgd", "real")
        seconds = data.get("seconds")
        return cls(
            int(data["example"]),
            *(_float(data[k]) for k in numbers),
            seconds=None if seconds is None else [float(t) for t in seconds],
        )


@dataclass
class WindowRecord:
    """``k`` minibatches: the predicted best of their ``k!`` orders against training all.

    Attributes:
        k: the window's size.
        best_is_real_best: the predicted best order is the real best.
        gap_share: the share of the real best-to-worst gap the predicted best captures.
        second_order_best_is_real_best: the same for the second-order prediction.
        real_gap: the real best-to-worst gap.
        predicted: ``O`` after each order, predicted.
        second_order: the same, second order.
        real: ``O`` after each order, really trained.
    """

    k: int
    best_is_real_best: bool
    gap_share: float
    second_order_best_is_real_best: bool
    real_gap: float
    predicted: list[float]
    second_order: list[float]
    real: list[float]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WindowRecord:
        return cls(
            k=int(data["k"]),
            best_is_real_best=bool(data["best_is_real_best"]),
            gap_share=_float(data["gap_share"]),
            second_order_best_is_real_best=bool(
                data.get("second_order_best_is_real_best", data["best_is_real_best"])
            ),
            real_gap=_float(data.get("real_gap", math.nan)),
            predicted=[_float(v) for v in data["predicted"]],
            second_order=[_float(v) for v in data.get("second_order", data["predicted"])],
            real=[_float(v) for v in data["real"]],
        )


@dataclass
class Baselines:
    """The baselines' sign accuracy on the same pairs at one horizon (NaN: not measured).

    Attributes:
        random: a fair coin.
        gradient_norm: the larger gradient first taken to lower ``O``.
        second_order: the prediction with gradients expanded to second order (``h = 0``).
        second_order_above_floor: the same over pairs above the float32 floor.
        h0_prediction: the sign of the swap's own ``h = 0`` prediction, held at ``h``.
        sgd_bracket: the plain-SGD bracket ``lr^2 u . [v_x, v_y]``, ignoring the optimizer.
        sgd_bracket_above_floor: the same over pairs above the floor.
        state_part: the prediction's optimizer-state part alone (``h = 0``).
    """

    random: float
    gradient_norm: float
    second_order: float
    second_order_above_floor: float
    h0_prediction: float
    sgd_bracket: float
    sgd_bracket_above_floor: float
    state_part: float = math.nan

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Baselines:
        return cls(**{name: _float(data.get(name)) for name in cls.__dataclass_fields__})


@dataclass
class HorizonSummary:
    """The prediction against the real difference over one kind of pair at one horizon.

    Attributes:
        horizon: the further identical steps ``h`` after the swap.
        relative_error: median ``|predicted - real| / |real|``.
        second_order_relative_error: the same for the second-order prediction (``h = 0``).
        state_share: median share of ``|real|`` that the optimizer-state part is.
        curvature_share: the same for the rest (the curvature part).
        pairs: pairs followed to ``h``.
        predicted_pairs: of those, pairs predicted at ``h``.
        above_floor: pairs whose real difference is above the float32 rounding floor.
        accuracy: sign accuracy over the predicted pairs.
        accuracy_above_floor: the same over pairs above the floor.
        settled_pairs: pairs whose third-order term is smaller than the prediction (``h = 0``
            with the third-order expansion; None otherwise).
        accuracy_settled: sign accuracy over the settled pairs.
        spearman: Spearman correlation of predicted and real.
        calibration_slope: ``sum(p r) / sum(p^2)``, 1 when right on average.
        baselines: the baselines on the same pairs.
        clipped: pairs on which the loop's gradient clipping acts.
    """

    horizon: int
    relative_error: float
    second_order_relative_error: float
    state_share: float
    curvature_share: float
    pairs: int
    predicted_pairs: int
    above_floor: int
    accuracy: float
    accuracy_above_floor: float
    settled_pairs: int | None
    accuracy_settled: float
    spearman: float
    calibration_slope: float
    baselines: Baselines
    clipped: int = 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HorizonSummary:
        """A row of any version (fields added later read as NaN, or the pair count)."""
        counts = {"pairs": int(data["pairs"])}
        counts["predicted_pairs"] = int(data.get("predicted_pairs", counts["pairs"]))
        counts["above_floor"] = int(data.get("above_floor", 0))
        counts["clipped"] = int(data.get("clipped", 0))
        settled = data.get("settled_pairs")
        numbers = {
            name: _float(data.get(name))
            for name, f in cls.__dataclass_fields__.items()
            if f.type == "float"
        }
        return cls(
            horizon=int(data["horizon"]),
            settled_pairs=None if settled is None else int(settled),
            baselines=Baselines.from_json(data.get("baselines", {})),
            **counts,
            **numbers,
        )


@dataclass
class WindowSummary:
    """Best-order windows of one size ``k``: how often the predicted best was the real best.

    Attributes:
        windows: windows checked.
        best_picked: share whose predicted best order was the real best.
        gap_share: mean share of the real best-to-worst gap the predicted best captures.
        second_order_best_picked: ``best_picked`` of the second-order prediction.
    """

    windows: int
    best_picked: float
    gap_share: float
    second_order_best_picked: float

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WindowSummary:
        return cls(
            windows=int(data["windows"]),
            best_picked=_float(data["best_picked"]),
            gap_share=_float(data["gap_share"]),
            second_order_best_picked=_float(
                data.get("second_order_best_picked", data["best_picked"])
            ),
        )


@dataclass
class ScoreSummary:
    """The optimizer-aware order scores of a checkpoint against really moving each example.

    Attributes:
        examples: examples with a real difference (not zero, not NaN).
        accuracy: sign accuracy of the scores.
        state_part: of their optimizer-state part alone.
        sgd: of the plain-SGD score.
        relative_error: median ``|score - real| / |real|``.
    """

    examples: int
    accuracy: float
    state_part: float
    sgd: float
    relative_error: float

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScoreSummary:
        return cls(
            int(data["examples"]),
            *(_float(data.get(k)) for k in list(cls.__dataclass_fields__)[1:]),
        )


@dataclass
class ScaleSummary:
    """The statistics of one checkpoint at one lr scale
    (:func:`perturbative.pipeline.order_summary.summarize`).

    Attributes:
        kinds: per kind of pair (``"example"``, ``"batch"``, ``"exchange"``) and ``"all"``,
            a row per horizon.
        windows: per window size ``k``, the best-order windows.
        scores: the scored examples (None where none were).
    """

    kinds: dict[str, list[HorizonSummary]] = field(default_factory=dict)
    windows: dict[int, WindowSummary] = field(default_factory=dict)
    scores: ScoreSummary | None = None

    def rows(self, kind: str) -> list[HorizonSummary]:
        """The rows of one kind (none where the kind was not checked)."""
        return self.kinds.get(kind, [])

    def to_json(self) -> dict[str, Any]:
        """As ``order_check.json`` holds it: ``{kind: [rows]}`` and ``{"windows_k": ...}``."""
        out: dict[str, Any] = {kind: [asdict(r) for r in rows] for kind, rows in self.kinds.items()}
        out.update({f"windows_{k}": asdict(w) for k, w in self.windows.items()})
        if self.scores is not None:
            out["scores"] = asdict(self.scores)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScaleSummary:
        windows = {
            int(key.removeprefix("windows_")): WindowSummary.from_json(value)
            for key, value in data.items()
            if key.startswith("windows_")
        }
        kinds = {
            kind: [HorizonSummary.from_json(row) for row in rows]
            for kind, rows in data.items()
            if not kind.startswith("windows_") and isinstance(rows, list)
        }
        scores = data.get("scores")
        return cls(kinds, windows, None if scores is None else ScoreSummary.from_json(scores))


@dataclass
class ScaleRecord:
    """Everything checked at one checkpoint at one lr (the run's, times ``scale``).

    Attributes:
        scale: the lr's multiple of the run's.
        lr: the lr of the swapped steps.
        horizons: the horizons followed (``(0,)`` at scales other than 1).
        pairs: the swaps.
        floor: the float32 rounding floor of the real differences (``{"float32": per horizon,
            "repeat": ...}``), or None.
        windows: the best-order windows.
        summary: the statistics of :func:`perturbative.pipeline.order_summary.summarize`.
        scores: the scored examples (at the run's own lr).
    """

    scale: float
    lr: float
    horizons: list[int]
    pairs: list[PairRecord]
    floor: dict[str, Any] | None
    windows: list[WindowRecord]
    summary: ScaleSummary = field(default_factory=ScaleSummary)
    scores: list[ScoreRecord] = field(default_factory=list)

    def floor_at(self, h: int) -> float:
        """The float32 floor at horizon ``h`` (0 where none was measured)."""
        values = (self.floor or {}).get("float32") or []
        n = self.horizons.index(h)
        return float(values[n]) if n < len(values) else 0.0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScaleRecord:
        return cls(
            scale=float(data["scale"]),
            lr=float(data["lr"]),
            horizons=[int(h) for h in data["horizons"]],
            pairs=[PairRecord.from_json(p) for p in data["pairs"]],
            floor=data.get("floor"),
            windows=[WindowRecord.from_json(w) for w in data.get("windows", [])],
            summary=ScaleSummary.from_json(data.get("summary", {})),
            scores=[ScoreRecord.from_json(r) for r in data.get("scores", [])],
        )


@dataclass
class CheckpointRecord:
    """The scales checked at one checkpoint, with the check's wall-clock seconds there and its
    peak memory (GiB, on the device it ran on: :class:`perturbative._core.memory.PeakMemory`;
    None in a check that did not measure them)."""

    step: int
    scales: list[ScaleRecord]
    seconds: float | None = field(default=None, compare=False)
    peak_memory_gib: float | None = field(default=None, compare=False)

    def at_run_lr(self) -> ScaleRecord | None:
        """The scale at the run's own lr, if it was checked."""
        return next((s for s in self.scales if s.scale == 1.0), None)


@dataclass
class OrderCheckRecord:
    """An order check: the run, its lr, the options and every checkpoint's records.

    Attributes:
        run: the checked run's folder.
        lr: the run's lr (its largest logged, under a schedule).
        options: :class:`perturbative.pipeline.config.OrderCheckOptions` as a dict.
        checkpoints: per checkpoint, its scales.
        replay: the replay gate's gap at each checkpoint (none before version 2).
        batch_statistics: the BatchNorm layers the run trained on batch statistics, which the
            check met as its options say (None: a check that did not record them).
    """

    run: str
    lr: float
    options: dict[str, Any]
    checkpoints: list[CheckpointRecord] = field(default_factory=list)
    replay: list[ReplayGap] = field(default_factory=list)
    batch_statistics: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        """The check as the JSON object written to ``order_check.json``."""
        data = asdict(self)
        for entry, saved in zip(self.checkpoints, data["checkpoints"], strict=True):
            for scale, written in zip(entry.scales, saved["scales"], strict=True):
                written["summary"] = scale.summary.to_json()
        return {**data, "format_version": ORDER_CHECK_VERSION}

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "order_check.json") -> OrderCheckRecord:
        """Read a check of any readable version.

        Raises:
            InputError: a version this reader does not know, or a record without a field every
                version has.
        """
        version = data.get("format_version", 1)
        if version not in READABLE_VERSIONS:
            raise InputError(
                f"{source} has format_version {version!r}; this version of perturbative reads "
                f"{list(READABLE_VERSIONS)}: rerun `perturbative order-check`"
            )
        try:
            return cls(
                run=str(data.get("run", "")),
                lr=float(data.get("lr", math.nan)),
                options=dict(data.get("options", {})),
                checkpoints=[
                    CheckpointRecord(
                        int(entry["step"]),
                        [ScaleRecord.from_json(s) for s in entry["scales"]],
                        entry.get("seconds"),
                        entry.get("peak_memory_gib"),
                    )
                    for entry in data.get("checkpoints", [])
                ],
                replay=[ReplayGap.from_json(gap) for gap in data.get("replay", [])],
                batch_statistics=data.get("batch_statistics"),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(
                f"{source} is not an order check this reader understands ({type(error).__name__}: "
                f"{error}); rerun `perturbative order-check`"
            ) from error


def _float(value: Any) -> float:
    """A number as JSON holds it (``null`` for NaN)."""
    return math.nan if value is None else float(value)

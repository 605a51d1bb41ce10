"""The typed records of a recorded run's order check and ONE versioned reader of
``order_check/recorded.json``; the replay gate's gap, which every check keeps.

Version 0.3's separate check of recorded runs wrote ``recorded.json``; every run now has the one
order check (:mod:`perturbative.pipeline.order_check`, ``order_check.json``), and these records
read the older files so that the report still draws them; none of its readers walks the file's
dicts itself.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from perturbative._core.errors import InputError
from perturbative._core.stats import sign_accuracy

RECORDED_CHECK = "recorded.json"  # the order check of a run recorded by perturbative.Recorder
RECORDED_CHECK_VERSION = 2  # 2: the replay gate's gaps
READABLE_VERSIONS = (1, 2)


@dataclass
class ReplayGap:
    """What the gate measured at one checkpoint.

    Attributes:
        step: the checkpoint being checked.
        start: the checkpoint replayed from.
        end: the checkpoint replayed to.
        steps: logged steps replayed (``end - start``).
        gap: ``|theta_replayed - theta_end| / |theta_end - theta_start|``, replayed in float64.
        floor: the same measure between two replays of the loop as it ran that differ only in
            rounding (float64 and the run's own precision, or rows reversed).
        tolerance: the largest gap that passes, ``TOLERANCE_FACTOR * floor`` + epsilon.
        passed: ``gap <= tolerance``.
        causes: what would explain a failed gate, from what the run recorded.
    """

    step: int
    start: int
    end: int
    steps: int
    gap: float
    floor: float
    tolerance: float
    passed: bool
    causes: tuple[str, ...] = ()

    def line(self) -> str:
        """One line for the console: the measured gap first, then the verdict."""
        head = (
            f"replay gap at step {self.step}: {self.gap:.2e} of the movement over the "
            f"{self.steps} logged steps {self.start} -> {self.end} (rounding floor "
            f"{self.floor:.1e}, tolerance {self.tolerance:.1e})"
        )
        if self.passed:
            return head + (
                ": the modelled step is the loop's (to within the tolerance: a modelling error "
                "smaller than that would not show)"
            )
        return head + ": the modelled step is NOT the loop's; likely " + "; or ".join(self.causes)

    @classmethod
    def from_json(cls, data: dict) -> ReplayGap:
        return cls(**{**data, "causes": tuple(data.get("causes", ()))})


@dataclass
class RecordedPair:
    """One minibatch pair: what was predicted, what really happened."""

    step: int
    batches: tuple[int, int]
    lr: float
    predicted: float
    second_order: float
    sgd_bracket: float
    state_part: float
    real: float
    gradient_norms: tuple[float, float]
    clipped: bool = False  # the gradient clipping was active on one of the two batches

    @classmethod
    def from_json(cls, data: dict) -> RecordedPair:
        return cls(
            **{
                **data,
                "batches": tuple(data["batches"]),
                "gradient_norms": tuple(data["gradient_norms"]),
            }
        )


@dataclass
class RecordedWindow:
    """Three of the run's batches: ``O`` after each of their orders, predicted and real."""

    step: int
    batches: tuple[int, ...]
    orders: list[list[int]]
    predicted: list[float]
    real: list[float]

    @classmethod
    def from_json(cls, data: dict) -> RecordedWindow:
        return cls(**{**data, "batches": tuple(data["batches"])})


@dataclass
class RecordedScore:
    """One training example trained in the first rather than the last batch of the run's next
    ``score_window`` batches: ``O(first) - O(last)``, predicted (with its parts) and real."""

    step: int
    example: int
    predicted: float
    state_part: float
    curvature_part: float
    sgd: float
    real: float


@dataclass
class RecordedCheck:
    """The check's records and options (written as ``order_check/recorded.json``)."""

    options: dict
    optimizer: str
    pairs: list[RecordedPair] = field(default_factory=list)
    windows: list[RecordedWindow] = field(default_factory=list)
    scores: list[RecordedScore] = field(default_factory=list)
    replay: list[ReplayGap] = field(default_factory=list)
    version: int = RECORDED_CHECK_VERSION

    def to_json(self) -> dict[str, Any]:
        """The check as ``recorded.json`` holds it, with its summary."""
        return {
            **asdict(self),
            "version": RECORDED_CHECK_VERSION,
            "summary": summary(self).to_json(),
        }


@dataclass
class PairAccuracies:
    """Sign accuracy of the prediction and of each baseline over a set of minibatch pairs."""

    pairs: int
    fair_coin: float
    clipped: int
    sign_accuracy: float
    median_relative_error: float
    plain_sgd_bracket: float
    larger_gradient_first: float
    optimizer_state_part: float

    @classmethod
    def of(cls, pairs: list[RecordedPair]) -> PairAccuracies:
        real = np.array([p.real for p in pairs])

        def accuracy(values) -> float:
            return sign_accuracy(np.asarray(values, dtype=np.float64), real)

        errors = np.abs(np.array([p.predicted for p in pairs]) - real) / np.abs(real)
        coin = np.random.default_rng(0).choice([-1.0, 1.0], size=len(pairs))
        return cls(
            pairs=len(pairs),
            fair_coin=accuracy(coin),
            clipped=sum(p.clipped for p in pairs),
            sign_accuracy=accuracy([p.predicted for p in pairs]),
            median_relative_error=float(np.median(errors)),
            plain_sgd_bracket=accuracy([p.sgd_bracket for p in pairs]),
            larger_gradient_first=accuracy(
                [1.0 if p.gradient_norms[0] < p.gradient_norms[1] else -1.0 for p in pairs]
            ),
            optimizer_state_part=accuracy([p.state_part for p in pairs]),
        )


@dataclass
class ScoreAccuracies:
    """Sign accuracy of the optimizer-aware order scores, their parts, and by checkpoint."""

    scored_examples: int
    predicted: float
    state_part: float
    sgd: float
    median_relative_error: float
    by_checkpoint: dict[int, float]


@dataclass
class RecordedSummary:
    """What a recorded check found: its pairs over all checkpoints and per checkpoint, the
    order scores, and the best-of-3! windows.

    Attributes:
        pairs: pairs with a real difference (not zero, not NaN).
        windows: windows of three batches checked.
        all: the pairs' accuracies over every checkpoint (``None`` without pairs).
        by_checkpoint: per checkpoint step.
        scores: the order scores' accuracies (``None`` without scored examples).
        best_of_3_picked: windows whose predicted best order was the real best.
    """

    pairs: int
    windows: int
    all: PairAccuracies | None = None
    by_checkpoint: dict[int, PairAccuracies] = field(default_factory=dict)
    scores: ScoreAccuracies | None = None
    best_of_3_picked: int | None = None

    @classmethod
    def of(cls, check: RecordedCheck) -> RecordedSummary:
        """The summary of a check's records."""
        pairs = [p for p in check.pairs if p.real == p.real and p.real != 0]
        out = cls(pairs=len(pairs), windows=len(check.windows))
        if pairs:
            out.all = PairAccuracies.of(pairs)
            out.by_checkpoint = {
                step: PairAccuracies.of([p for p in pairs if p.step == step])
                for step in sorted({p.step for p in pairs})
            }
        scored = [r for r in check.scores if r.real != 0]
        if scored:
            real = np.array([r.real for r in scored])
            predicted = np.array([r.predicted for r in scored])

            def accuracy(name: str) -> float:
                return sign_accuracy(np.array([getattr(r, name) for r in scored]), real)

            out.scores = ScoreAccuracies(
                scored_examples=len(scored),
                predicted=accuracy("predicted"),
                state_part=accuracy("state_part"),
                sgd=accuracy("sgd"),
                median_relative_error=float(np.median(np.abs(predicted - real) / np.abs(real))),
                by_checkpoint={
                    step: sign_accuracy(
                        np.array([r.predicted for r in scored if r.step == step]),
                        np.array([r.real for r in scored if r.step == step]),
                    )
                    for step in sorted({r.step for r in scored})
                },
            )
        if check.windows:
            picked = [int(np.argmin(w.predicted)) == int(np.argmin(w.real)) for w in check.windows]
            out.best_of_3_picked = sum(picked)
        return out

    def to_json(self) -> dict[str, Any]:
        """The ``summary`` object of ``recorded.json`` (flat keys, as version 1 wrote them)."""
        out: dict[str, Any] = {"pairs": self.pairs, "windows": self.windows}
        if self.all is not None:
            out |= asdict(self.all)
            out["by_checkpoint"] = {step: asdict(a) for step, a in self.by_checkpoint.items()}
        if self.scores is not None:
            out["scored_examples"] = self.scores.scored_examples
            for name in ("predicted", "state_part", "sgd", "median_relative_error"):
                out[f"scores_{name}"] = getattr(self.scores, name)
            out["scores_by_checkpoint"] = dict(self.scores.by_checkpoint)
        if self.best_of_3_picked is not None:
            out["best_of_3_picked"] = self.best_of_3_picked
        return out


def summary(check: RecordedCheck) -> RecordedSummary:
    """Sign accuracy of the prediction and of the baselines, over all pairs and per checkpoint,
    the order scores', and the share of windows whose predicted best order is the real best."""
    return RecordedSummary.of(check)


def read_recorded_check_file(path: str | os.PathLike) -> RecordedCheck:
    """``recorded.json`` of any readable version, as typed records (version 1, written before
    the replay gate, has no gaps).

    Raises:
        InputError: not valid JSON, a version this reader does not know, or a record without a
            field every version has.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not valid JSON ({error}); rerun the order check") from error
    version = data.get("version")
    if version not in READABLE_VERSIONS:
        raise InputError(
            f"{path} has version {version}; this reader reads {list(READABLE_VERSIONS)}: rerun "
            "`perturbative order-check`"
        )
    try:
        return RecordedCheck(
            options=dict(data.get("options", {})),
            optimizer=str(data.get("optimizer", "")),
            pairs=[RecordedPair.from_json(p) for p in data.get("pairs", [])],
            windows=[RecordedWindow.from_json(w) for w in data.get("windows", [])],
            scores=[RecordedScore(**r) for r in data.get("scores", [])],
            replay=[ReplayGap.from_json(g) for g in data.get("replay", [])],
        )
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(
            f"{path} is not a recorded check this reader understands ({type(error).__name__}: "
            f"{error}); rerun `perturbative order-check`"
        ) from error

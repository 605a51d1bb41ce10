"""``pipeline/order_summary.py``: an order check's statistics from its records."""

import numpy as np

from perturbative.pipeline.order_records import PairRecord
from perturbative.pipeline.order_summary import calibration_slope, sign_accuracy, summarize


def test_sign_accuracy_and_calibration_slope():
    assert sign_accuracy(np.array([1.0, -2.0, 3.0]), np.array([2.0, -1.0, -1.0])) == 2 / 3
    assert calibration_slope(np.array([1.0, 2.0]), np.array([2.0, 4.0])) == 2.0


def test_settled_pairs_are_those_whose_third_order_term_is_smaller_than_the_prediction():
    def pair(predicted, second_order, real):
        return {
            "kind": "batch",
            "predicted": predicted,
            "second_order": second_order,
            "sgd_bracket": 0.0,
            "state_part": 0.0,
            "gradient_norms": [1.0, 1.0],
            "horizons": [0],
            "real": [real],
        }

    records = [
        pair(1.0, 0.8, 2.0),  # term 0.2 < 1: settled, right
        pair(-1.0, -1.5, 1.0),  # term 0.5 < 1: settled, wrong
        pair(0.5, -1.0, 1.0),  # term 1.5 > 0.5: not settled, right
        pair(0.1, 0.5, -1.0),  # term 0.4 > 0.1: not settled, wrong
        pair(2.0, 1.0, 3.0),  # term 1 < 2: settled, right
    ]
    summary = summarize([PairRecord.from_json(r) for r in records], (0,), None, [], seed=0)
    (row,) = summary.rows("batch")
    assert row.accuracy == 3 / 5
    assert row.settled_pairs == 3 and row.accuracy_settled == 2 / 3


def test_the_checkpoints_are_pooled_at_the_runs_own_lr_only():
    """The printed summary ends with every checkpoint's swaps at the run's lr pooled (``h = 0``);
    pairs at other lr scales, or a check of one checkpoint, add no pooled block."""
    from perturbative.pipeline.order_records import (
        CheckpointRecord,
        OrderCheckRecord,
        ScaleRecord,
        ScoreRecord,
    )
    from perturbative.pipeline.order_summary import pooled_summary, summary_lines

    def pair(predicted, real):
        return PairRecord(
            "logged", predicted, predicted, 0.0, 0.0, [1.0, 2.0], [0, 5], [real, real]
        )

    def scale(factor, pairs, scores=()):
        return ScaleRecord(factor, 0.1 * factor, [0, 5], pairs, None, [], scores=list(scores))

    score = ScoreRecord(
        example=3, predicted=1.0, state_part=1.0, curvature_part=0.0, sgd=-1.0, real=2.0
    )
    first = CheckpointRecord(
        10, [scale(1.0, [pair(1.0, 1.0), pair(1.0, -1.0)], [score]), scale(0.1, [pair(1.0, -1.0)])]
    )
    second = CheckpointRecord(20, [scale(1.0, [pair(-1.0, -2.0), pair(2.0, 1.0)])])
    result = OrderCheckRecord("run", 0.1, {"seed": 0}, [first, second])
    pooled = pooled_summary(result)
    (row,) = pooled.rows("logged")
    assert row.horizon == 0 and row.pairs == 4 and row.accuracy == 3 / 4
    assert pooled.scores.examples == 1 and pooled.scores.accuracy == 1.0
    lines = summary_lines(result)
    at = lines.index("all checkpoints (steps 10, 20) pooled, each at its run's lr (x1):")
    assert "pairs 4 " in lines[at + 1] and "scores   1 examples" in lines[-1]
    assert pooled_summary(OrderCheckRecord("run", 0.1, {}, [first])) is None

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

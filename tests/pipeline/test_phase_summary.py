"""The phase check's summary on records whose numbers are known by hand."""

import math

import numpy as np
import pytest

from perturbative.pipeline.phase_records import TournamentRecord, TripleRecord
from perturbative.pipeline.phase_summary import summarize, summary_lines

T = "held-out loss"


def antisymmetric(upper: dict[tuple[int, int], float], n: int = 3) -> list[list[float]]:
    matrix = np.zeros((n, n))
    for (i, j), value in upper.items():
        matrix[i, j], matrix[j, i] = value, -value
    return matrix.tolist()


def record(real, predicted, floor=0.0, triples=()) -> TournamentRecord:
    return TournamentRecord(
        step=10,
        k=1,
        lr=0.1,
        sources=["a", "b", "c"],
        real={T: antisymmetric(real)},
        floor={T: floor},
        predicted={"composition": {T: antisymmetric(predicted)}},
        seconds={"real": 2.0, "composition": 1.0},
        triples=list(triples),
    )


def test_signs_above_the_floor_ranking_and_best_of_three():
    # real: a first beats b (-0.3), a beats c (-0.2), b beats c (-1e-9, below the floor)
    real = {(0, 1): -0.3, (0, 2): -0.2, (1, 2): -1e-9}
    predicted = {(0, 1): -0.1, (0, 2): 0.4, (1, 2): 0.5}  # right, wrong, wrong
    orders = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]]
    # the predicted row sums (-0.1 + 0.4 = 0.3, 0.1 + 0.5, -0.9) put c, a, b: order [2, 0, 1]
    triple = TripleRecord([0, 1, 2], orders, {T: [1.0, 2.0, 3.0, 4.0, 1.5, 5.0]})
    summary = summarize([record(real, predicted, floor=1e-6, triples=[triple])])
    row = summary.rows[T][1]
    assert row.pairs == 3 and row.above_floor == 2
    got = row.methods["composition"]
    assert got.sign_accuracy == pytest.approx(1 / 3)
    assert got.sign_accuracy_above_floor == pytest.approx(1 / 2)
    # real row sums rank a (-0.5), c (0.2), b (0.3); predicted c, a, b: 2 of 3 pairs agree
    assert got.kendall_tau == pytest.approx(1 / 3)
    assert got.best_of_3 == 0.0 and got.triples == 1
    assert got.gap_captured == pytest.approx((5.0 - 1.5) / (5.0 - 1.0))
    assert got.seconds == 1.0 and row.seconds_real == 2.0
    # a method that predicts each order's value picks the smallest instead
    triple.predicted["composition"] = {T: [9.0, 9.0, 9.0, 9.0, 9.0, 0.0]}
    again = summarize([record(real, predicted, floor=1e-6, triples=[triple])])
    assert again.rows[T][1].methods["composition"].gap_captured == 0.0  # picked the worst
    lines = summary_lines(summary)
    assert lines[0] == f"{T}:" and "2 above the rounding floor" in lines[1]
    assert "best of 3! 0.00 of 1 (gap 0.88)" in lines[2] and lines[2].endswith(", 1 s")
    assert lines[3] == "    most right here at k=1: composition (signs 0.500, tau +0.33)"


def test_a_method_timed_with_another_and_pairs_without_a_measure():
    only = record({(0, 1): 0.2, (0, 2): 0.1, (1, 2): 0.3}, {(0, 1): 0.2, (0, 2): 0.1, (1, 2): 0.3})
    only.predicted["last-phase"] = only.predicted["composition"]  # no seconds of its own
    summary = summarize([only])
    got = summary.rows[T][1].methods
    assert got["last-phase"].seconds is None and got["composition"].sign_accuracy == 1.0
    assert got["composition"].triples == 0 and math.isnan(got["composition"].best_of_3)
    line = [x for x in summary_lines(summary) if "last-phase" in x][0]
    assert not line.endswith(" s") and "slope 1" in line
    # every real difference below the floor: no pair to measure on, said as n/a
    below = summarize([record({(0, 1): 1e-9, (0, 2): 1e-9, (1, 2): 1e-9}, {(0, 1): 1.0}, 1e-6)])
    assert math.isnan(below.rows[T][1].methods["composition"].sign_accuracy_above_floor)
    assert "signs n/a" in summary_lines(below)[2]
    assert not any("most right" in line for line in summary_lines(below))
    # the most signs right wins, then the larger tau; the coin is never named, even when right
    real = {(0, 1): 0.2, (0, 2): 0.1, (1, 2): 0.3}
    both = record(real, {(0, 1): 0.2, (0, 2): 0.1, (1, 2): -9})  # composition: 2 of 3
    both.predicted["coin"] = {T: antisymmetric(real)}  # 3 of 3, tau 1
    both.predicted["last-phase"] = {T: antisymmetric({(0, 1): 1.0, (0, 2): 1.0, (1, 2): 0.1})}
    assert summary_lines(summarize([both]))[-1].startswith("    most right here at k=1: last-phase")
    del both.predicted["last-phase"]
    assert summary_lines(summarize([both]))[-1].startswith(
        "    most right here at k=1: composition"
    )
    # methods tied at the top are all named, in the tables' order
    both.predicted["anchored"] = both.predicted["composition"]
    assert summary_lines(summarize([both]))[-1] == (
        "    most right here at k=1: anchored, composition (signs 0.667, tau -0.33)"
    )


def test_where_the_two_anchored_methods_agree():
    """Their agreement is counted over every pair (it is known before any pair trains), how
    often the agreed sign is the real one over the pairs above the floor; the summary says
    both, and nothing without the two methods."""
    real = {(0, 1): 0.2, (0, 2): 0.1, (1, 2): 1e-9}
    both = record(real, {(0, 1): 0.2, (0, 2): 0.1, (1, 2): 0.3})
    # agreed and right, disagreed, agreed and wrong
    both.predicted["anchored"] = {T: antisymmetric({(0, 1): 1.0, (0, 2): -1.0, (1, 2): -1.0})}
    both.predicted["anchored-cycle"] = {T: antisymmetric({(0, 1): 2.0, (0, 2): 1.0, (1, 2): -3})}
    row = summarize([both]).rows[T][1]  # floor 0: every pair is above it
    assert row.anchors_agree == pytest.approx(2 / 3) and row.right_where_anchors_agree == 0.5
    both.floor[T] = 1e-6  # the wrong one is now below the floor: agreed on, not counted right
    row = summarize([both]).rows[T][1]
    assert row.anchors_agree == pytest.approx(2 / 3) and row.right_where_anchors_agree == 1.0
    assert summary_lines(summarize([both]))[-1] == (
        "    the two anchored methods agree on 67% of the pairs (known before any pair "
        "trains), right on 100% of those"
    )
    del both.predicted["anchored-cycle"]
    assert math.isnan(summarize([both]).rows[T][1].anchors_agree)

"""``pipeline/phase_records.py``: a phase check's typed records and their one versioned reader."""

import json
import math

import pytest

from perturbative._core.errors import InputError
from perturbative.pipeline.phase_records import (
    PHASE_CHECK_FORMAT,
    MethodSummary,
    PhaseCheckRecord,
    TournamentRecord,
    TripleRecord,
)
from perturbative.pipeline.phase_summary import summarize
from perturbative.pipeline.recorded_records import ReplayGap
from perturbative.pipeline.results import PHASE_CHECK, read_phase_check_file

T = "held-out loss"
ORDERS = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]]


def a_check() -> PhaseCheckRecord:
    real = [[0.0, -0.3, 0.2], [0.3, 0.0, 0.1], [-0.2, -0.1, 0.0]]
    record = TournamentRecord(
        step=10,
        k=5,
        lr=0.01,
        sources=["a", "b", "c"],
        real={T: real},
        floor={T: 1e-9},
        predicted={"composition": {T: real}, "coin": {T: [[0.0, 1.0, 1.0]] * 3}},
        seconds={"real": 3.0, "composition": 0.5},
        triples=[TripleRecord([0, 1, 2], ORDERS, {T: [1.0, 2.0, 0.5, 3.0, 4.0, 5.0]})],
    )
    gap = ReplayGap(10, 10, 20, 10, 1e-6, 1e-6, 1e-5, True)
    check = PhaseCheckRecord("runs/x", True, {"ks": [5]}, [T], [gap], [record])
    check.summary = summarize([record])
    return check


def test_a_written_check_reads_back_as_the_same_records(tmp_path):
    check = a_check()
    (tmp_path / PHASE_CHECK).write_text(json.dumps(check.to_json()))
    read = read_phase_check_file(tmp_path)
    assert json.dumps(read.to_json()) == json.dumps(check.to_json())  # NaN != NaN: as text
    assert read.tournaments == check.tournaments
    assert read.summary.rows[T][5].methods["composition"].sign_accuracy == 1.0
    assert read.replay[0].passed and read.tournaments[0].triples[0].sources == [0, 1, 2]
    # a method that predicts signs alone has no value statistics; they read as NaN
    coin = read.summary.rows[T][5].methods["coin"]
    assert math.isnan(coin.spearman) and coin.seconds is None


def test_summaries_written_without_a_methods_optional_numbers_read_as_not_measured():
    got = MethodSummary.from_json(
        {"sign_accuracy": 0.5, "sign_accuracy_above_floor": None, "kendall_tau": 0.2}
    )
    assert got.triples == 0 and math.isnan(got.best_of_3) and got.seconds is None
    assert math.isnan(got.sign_accuracy_above_floor)


def test_another_format_or_a_broken_record_is_refused_with_what_to_do(tmp_path):
    data = a_check().to_json()
    with pytest.raises(InputError, match="not a phase check this version.*rerun"):
        PhaseCheckRecord.from_json({**data, "version": PHASE_CHECK_FORMAT[1] + 1})
    del data["tournaments"][0]["real"]
    with pytest.raises(InputError, match="not a phase check this reader understands"):
        PhaseCheckRecord.from_json(data)

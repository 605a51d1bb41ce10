"""``pipeline/recorded_records.py``: a recorded check's typed records, its summary and the one
versioned reader of ``recorded.json``."""

import json

import pytest

from perturbative._core.errors import InputError
from perturbative.pipeline.recorded_records import (
    RecordedCheck,
    RecordedPair,
    RecordedScore,
    RecordedWindow,
    ReplayGap,
    read_recorded_check_file,
    summary,
)


def pair(step, predicted, real, norms=(1.0, 2.0), clipped=False):
    return RecordedPair(step, (step + 1, step + 2), 0.1, predicted, predicted, -predicted, real,
                        real, norms, clipped)  # fmt: skip


def check() -> RecordedCheck:
    gap = ReplayGap(10, 10, 20, 10, 3e-7, 3e-7, 3e-6, True)
    return RecordedCheck(
        options={"score_window": 4},
        optimizer="AdamW",
        pairs=[
            pair(10, 1.0, 2.0),
            pair(10, -1.0, 1.0, clipped=True),
            pair(20, 3.0, 3.3),
            pair(20, 1.0, 0.0),
        ],  # fmt: skip
        windows=[RecordedWindow(10, (1, 2, 3), [[0, 1, 2], [2, 1, 0]], [0.5, 0.7], [0.1, 0.2])],
        scores=[
            RecordedScore(10, 5, 1.0, 0.5, 0.5, -1.0, 2.0),
            RecordedScore(20, 6, -1.0, 0, 0, 1, 1),
        ],
        replay=[gap],
    )


def test_the_summary_counts_what_a_hand_count_gives():
    numbers = summary(check())
    assert numbers.pairs == 3 and numbers.windows == 1  # a zero real difference is left out
    assert numbers.all.sign_accuracy == pytest.approx(2 / 3) and numbers.all.clipped == 1
    assert numbers.all.plain_sgd_bracket == pytest.approx(1 / 3)
    assert numbers.all.median_relative_error == pytest.approx(0.5)  # |1-2|/2, 2, |3-3.3|/3.3
    assert numbers.by_checkpoint[10].pairs == 2 and numbers.by_checkpoint[20].sign_accuracy == 1
    assert numbers.scores.predicted == 0.5 and numbers.scores.by_checkpoint == {10: 1.0, 20: 0.0}
    assert numbers.best_of_3_picked == 1


def test_the_file_round_trips_and_older_or_unknown_versions_are_handled(tmp_path):
    path = tmp_path / "recorded.json"
    written = check().to_json()
    path.write_text(json.dumps(written))
    read = read_recorded_check_file(path)
    assert read == check() and written["summary"]["sign_accuracy"] == pytest.approx(2 / 3)
    old = {k: v for k, v in written.items() if k != "replay"} | {"version": 1}
    path.write_text(json.dumps(old))
    assert read_recorded_check_file(path).replay == []
    path.write_text(json.dumps(written | {"version": 9}))
    with pytest.raises(InputError, match="version 9; this reader reads \\[1, 2\\]"):
        read_recorded_check_file(path)
    path.write_text(json.dumps(written | {"pairs": [{"step": 1}]}))
    with pytest.raises(InputError, match="not a recorded check this reader understands"):
        read_recorded_check_file(path)
    empty = summary(RecordedCheck({}, "SGD"))
    assert (empty.pairs, empty.all, empty.scores, empty.best_of_3_picked) == (0, None, None, None)

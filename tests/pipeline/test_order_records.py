"""``pipeline/order_records.py``: an order check's typed records and their one versioned reader."""

import json
import math

import pytest

from perturbative._core.errors import InputError
from perturbative.pipeline.order_records import OrderCheckRecord, PairRecord, WindowRecord
from perturbative.pipeline.results import read_order_check_file, write_order_check


def a_check() -> dict:
    """An order check as this version writes it."""
    pair = {"kind": "batch", "predicted": 0.5, "second_order": 0.4, "sgd_bracket": -0.1,
            "state_part": 0.3, "gradient_norms": [1.0, 2.0], "horizons": [0, 2],
            "real": [0.6, 0.2], "predicted_horizons": [0.5, float("nan")]}  # fmt: skip
    window = {"k": 3, "best_is_real_best": True, "gap_share": 1.0,
              "second_order_best_is_real_best": False, "real_gap": 0.2,
              "predicted": [1.0, 2.0], "second_order": [2.0, 1.0], "real": [1.0, 1.2]}  # fmt: skip
    scale = {"scale": 1.0, "lr": 5e-3, "horizons": [0, 2], "pairs": [pair],
             "floor": {"float32": [1e-7, 2e-7], "repeat": 0.0}, "windows": [window],
             "summary": {"all": []}}  # fmt: skip
    return {"run": "runs/x", "lr": 5e-3, "options": {"seed": 0},
            "checkpoints": [{"step": 10, "scales": [scale]}], "format_version": 1}  # fmt: skip


def test_a_written_check_reads_back_as_the_same_records(tmp_path):
    check = OrderCheckRecord.from_json(a_check())
    read = read_order_check_file(write_order_check(tmp_path, check).parent)
    (pair,) = read.checkpoints[0].at_run_lr().pairs
    assert math.isnan(pair.predicted_horizons[1])  # NaN travels as null and comes back
    pair.predicted_horizons[1] = check.checkpoints[0].scales[0].pairs[0].predicted_horizons[1] = 0
    assert read == check
    assert pair.real_at(2) == 0.2 and pair.predicted_at(0) == 0.5
    assert read.checkpoints[0].scales[0].floor_at(2) == 2e-7


def test_checks_written_before_fields_existed_read_with_what_they_implied():
    old = a_check()
    del old["format_version"]
    scale = old["checkpoints"][0]["scales"][0]
    for key in ("second_order", "predicted_horizons"):
        del scale["pairs"][0][key]
    for key in ("second_order_best_is_real_best", "second_order", "real_gap"):
        del scale["windows"][0][key]
    read = OrderCheckRecord.from_json(old)
    pair: PairRecord = read.checkpoints[0].scales[0].pairs[0]
    window: WindowRecord = read.checkpoints[0].scales[0].windows[0]
    assert pair.second_order == pair.predicted and math.isnan(pair.predicted_at(2))
    assert window.second_order_best_is_real_best is True
    assert window.second_order == window.predicted


def test_unknown_versions_and_broken_records_are_refused_with_what_to_do(tmp_path):
    with pytest.raises(InputError, match="format_version 7.*rerun"):
        OrderCheckRecord.from_json({**a_check(), "format_version": 7})
    broken = a_check()
    del broken["checkpoints"][0]["scales"][0]["pairs"][0]["kind"]
    (tmp_path / "order_check.json").write_text(json.dumps(broken))
    with pytest.raises(InputError, match="not an order check this reader understands"):
        read_order_check_file(tmp_path)


def test_summaries_are_typed_and_read_back_from_the_file_as_written(tmp_path):
    """The summary is a dataclass in memory and the same JSON on disk as before it was one; a
    summary row written before ``predicted_pairs``, ``above_floor`` and the settled counts
    existed reads with what they implied (every pair, none, none)."""
    from perturbative.pipeline.order_records import HorizonSummary, ScaleRecord
    from perturbative.pipeline.order_summary import summarize

    data = a_check()
    scale = data["checkpoints"][0]["scales"][0]
    pairs = [PairRecord.from_json(p) for p in scale["pairs"]]
    windows = [WindowRecord.from_json(w) for w in scale["windows"]]
    summary = summarize(pairs, [0, 2], scale["floor"], windows, seed=0)
    scale["summary"] = summary.to_json()
    check = OrderCheckRecord.from_json(data)
    written = json.loads(write_order_check(tmp_path, check).read_text())
    on_disk = written["checkpoints"][0]["scales"][0]["summary"]
    assert set(on_disk) == {"batch", "all", "windows_3"} and on_disk["batch"][0]["horizon"] == 0
    read = read_order_check_file(tmp_path).checkpoints[0].scales[0]
    assert isinstance(read, ScaleRecord) and read.summary.rows("batch")[0].pairs == 1
    assert read.summary.windows[3].windows == 1 and read.summary.rows("exchange") == []
    old = HorizonSummary.from_json({"horizon": 0, "pairs": 4, "accuracy": 0.5, "baselines": {}})
    assert old.predicted_pairs == 4 and old.above_floor == 0 and old.settled_pairs is None
    assert math.isnan(old.spearman) and math.isnan(old.baselines.sgd_bracket)

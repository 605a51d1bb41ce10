"""``pipeline/recorded.py``: a recorded run opened for analysis, and its order predictions
checked against really reordering it."""

import pytest
from recorded_task import record

import perturbative as pt
from perturbative._core.errors import InputError
from perturbative.pipeline.recorded import RecordedCheckOptions, check_recorded_run, summary


def test_order_predictions_on_a_recorded_run_match_really_reordering_it(tmp_path):
    run = tmp_path / "run"
    record(run, steps=40, clip=0.5)  # clipping active on most batches, and modelled
    check = check_recorded_run(run, options=RecordedCheckOptions(checkpoints=2, pairs=6))
    numbers = summary(check)
    assert numbers["pairs"] == 12 and numbers["clipped"] >= 6
    assert numbers["sign_accuracy"] == 1.0 and numbers["median_relative_error"] < 0.05, numbers
    assert (run / "order_check" / "recorded.json").is_file()


def test_bad_runs_and_tasks_say_what_to_do(tmp_path):
    with pytest.raises(InputError, match="not a recorded run"):
        check_recorded_run(tmp_path)
    run = tmp_path / "run"
    record(run, steps=12, task="no_such_module:task")
    with pytest.raises(InputError, match="cannot import the task's module 'no_such_module'"):
        check_recorded_run(run)
    with pytest.raises(InputError, match="has no attribute 'nothing'"):
        check_recorded_run(run, task="recorded_task:nothing")
    with pytest.raises(InputError, match="outside the task's train set"):
        pt.Task(model=lambda: None, loss_fn=None, train=[0, 1]).batch([5])

"""``pipeline/recorded_run.py``: a recorded checkpoint rebuilt with the loop's own step."""

import pytest
import recorded_task
import torch
from recorded_task import record

from perturbative._core.errors import InputError
from perturbative.pipeline.recorded_run import open_recorded_checkpoint, read_run
from perturbative.pipeline.recorder import read_order_log


def test_a_checkpoint_carries_the_runs_clipping_and_each_later_steps_logged_lr(tmp_path):
    run = tmp_path / "run"
    record(run, steps=20, clip=0.5)
    at = open_recorded_checkpoint(run, 10, recorded_task.task)
    log = read_order_log(run)
    assert at.training.max_grad_norm == 0.5 and at.training.optimizer is at.optimizer
    assert [r["step"] for r in at.next_steps] == list(range(11, 21))
    # the loop's LambdaLR decays the lr each step: step 11's and step 20's differ
    assert at.training.rates_at(0) == tuple(log[10]["lr"]) != at.training.rates_at(9)
    with pytest.raises(IndexError, match="holds the rates of 10 steps"):
        at.training.rates_at(10)
    assert next(at.model.parameters()).dtype == torch.float64 and not at.model.training
    assert read_run(run)["max_grad_norm"] == 0.5


def test_another_architecture_and_a_missing_checkpoint_are_named(tmp_path):
    run = tmp_path / "run"
    record(run, steps=10)
    with pytest.raises(InputError, match="has no checkpoint at step 5; it has \\[0, 10\\]"):
        open_recorded_checkpoint(run, 5, recorded_task.task)
    wide = recorded_task.Task(
        model=lambda: torch.nn.Sequential(torch.nn.Linear(6, 8)),
        loss_fn=recorded_task.loss,
        train=recorded_task.train,
    )
    with pytest.raises(InputError, match="another architecture than the one recorded"):
        open_recorded_checkpoint(run, 10, wide)

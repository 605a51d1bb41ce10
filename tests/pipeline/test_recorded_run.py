"""``pipeline/recorded_run.py``: a recorded checkpoint rebuilt with the loop's own step."""

import pytest
import recorded_task
import torch
from recorded_task import record

from perturbative._core.errors import InputError
from perturbative.pipeline.recorded_run import analysis_device, open_recorded_checkpoint, read_run
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


def _record_batchnorm_loop(run_dir, steps=12):
    """A user's loop over a network with BatchNorm on batch statistics (train mode), SGD with
    momentum at a constant lr, no scheduler."""
    from perturbative.pipeline.recorder import Recorder

    torch.manual_seed(0)
    net = batchnorm_task.model().train()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    order = torch.Generator().manual_seed(1)
    with Recorder(run_dir, net, opt, task=None, save_at=6) as rec:
        for _ in range(steps):
            indices = torch.randperm(160, generator=order)[:16]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(
                net(recorded_task.INPUTS[indices]), recorded_task.TARGETS[indices]
            ).backward()
            opt.step()
            rec.step(indices)


def _batchnorm_model():
    return torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.BatchNorm1d(16), torch.nn.Tanh(), torch.nn.Linear(16, 3)
    )


batchnorm_task = recorded_task.Task(
    model=_batchnorm_model,
    loss_fn=recorded_task.loss,
    train=recorded_task.train,
    heldout=recorded_task.heldout,
)


def test_batchnorm_is_rebuilt_as_it_trained_and_a_constant_lr_holds_past_the_log(tmp_path):
    """BatchNorm that trained on batch statistics is rebuilt in train mode (the rest in eval),
    so the replay gate replays the loop's own steps; a run whose lr never changed keeps it past
    the log's end (its step holds no schedule), one with a schedule does not."""
    from perturbative.pipeline.recorded_run import batch_statistics, batchnorm_statistics
    from perturbative.pipeline.replay import replay_gap

    run = tmp_path / "run"
    _record_batchnorm_loop(run)
    assert batch_statistics(run) == ["1"]
    at = open_recorded_checkpoint(run, 12, batchnorm_task)
    assert at.model[1].training and not at.model.training
    assert at.training.rates is None and at.training.rates_at(50) == (0.05,)
    gap = replay_gap(run, 6, batchnorm_task, read_run(run), read_order_log(run))
    assert gap.passed, gap
    # recomputed running statistics: the whole network in eval mode on them
    before = at.model[1].running_mean.clone()
    batchnorm_statistics(at.model, batchnorm_task, 64, seed=0)
    assert not at.model[1].training and not torch.equal(before, at.model[1].running_mean)
    scheduled = tmp_path / "scheduled"
    record(scheduled, steps=10)
    assert open_recorded_checkpoint(scheduled, 10, recorded_task.task).training.rates == ()


def test_an_analysis_runs_where_asked_else_where_the_run_trained_when_that_device_is_here():
    assert analysis_device({"device": "cpu"}) == torch.device("cpu")
    assert analysis_device({"device": "cpu"}, "cpu") == torch.device("cpu")
    here = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert analysis_device({"device": "cuda:0"}) == torch.device(here)
    assert analysis_device({}) == torch.device("cpu")
    with pytest.raises(InputError, match="not a device torch knows"):
        analysis_device({}, "gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA device; use --device cpu"):
            analysis_device({}, "cuda")

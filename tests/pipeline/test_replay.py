"""``pipeline/replay.py``: the replay gate passes a faithfully recorded loop to rounding, and
refuses, in one line with the measured gap, each way a check can model a step the loop did not
take."""

import json

import pytest
import recorded_task
import torch
from recorded_task import record

from perturbative._core.errors import InputError
from perturbative.pipeline.config import OrderCheckOptions
from perturbative.pipeline.order_check import order_check
from perturbative.pipeline.recorded_run import read_run
from perturbative.pipeline.recorder import StochasticTrainingWarning, read_order_log
from perturbative.pipeline.replay import replay_gap
from perturbative.pipeline.results import read_order_check_file


def gap_of(run, step=10, task=recorded_task.task):
    return replay_gap(run, step, task, read_run(run), read_order_log(run))


def test_a_faithful_recording_replays_to_rounding(tmp_path):
    run = tmp_path / "run"
    record(run, steps=20, clip=0.5)  # clipping active, and told to the Recorder
    gap = gap_of(run)
    assert gap.passed and (gap.start, gap.end, gap.steps) == (10, 20, 10)
    assert 0 < gap.floor < 1e-5 and gap.gap <= gap.tolerance, gap
    assert gap.line().startswith("replay gap at step 10: ")
    last = gap_of(run, step=20)  # the last checkpoint: replayed from the one before
    assert last.passed and (last.start, last.end) == (10, 20)


def test_clipping_not_given_to_the_recorder_is_refused(tmp_path):
    run = tmp_path / "run"
    record(run, steps=20, clip=0.5, recorded_clip=None)
    gap = gap_of(run)
    assert not gap.passed and gap.gap > 1e3 * gap.tolerance
    assert any("clipping not given" in cause for cause in gap.causes)
    with pytest.raises(InputError, match=r"^replay gap at step \d+: .* NOT the loop's; likely"):
        order_check(run, OrderCheckOptions(checkpoints=1, horizons=(0,)), progress=False)


def test_the_override_checks_anyway_and_keeps_the_gap(tmp_path, capsys):
    run = tmp_path / "run"
    record(run, steps=20, clip=0.5, recorded_clip=None)
    options = OrderCheckOptions(
        steps=(10,), logged_pairs=2, example_pairs=0, batch_pairs=0, exchanges=0, windows=0,
        horizons=(0,), lr_scales=(1.0,), allow_replay_gap=True,
    )  # fmt: skip
    check = read_order_check_file(order_check(run, options, progress=False).parent)
    assert len(check.replay) == 1 and not check.replay[0].passed
    assert capsys.readouterr().out.startswith("replay gap at step 10")  # printed first
    saved = json.loads((run / "order_check" / "order_check.json").read_text())
    assert saved["format_version"] == 3 and saved["replay"][0]["gap"] == check.replay[0].gap


def test_dropout_on_is_said_when_recording_starts_and_refused(tmp_path):
    run = tmp_path / "run"
    with pytest.warns(StochasticTrainingWarning, match="stochastic layers active"):
        record(run, steps=20, network=recorded_task.dropout_model)
    assert read_run(run)["model_mode"]["stochastic"] == ["2"]
    gap = gap_of(run, task=recorded_task.dropout_task)
    assert not gap.passed and "dropout or other randomness on" in gap.causes[0]


@pytest.mark.parametrize("task", ["relu_task", "changed_data_task"])
def test_another_network_with_the_same_shapes_or_changed_data_is_refused(tmp_path, task):
    run = tmp_path / "run"
    record(run, steps=20)
    assert gap_of(run).passed
    gap = gap_of(run, task=getattr(recorded_task, task))
    assert not gap.passed and gap.gap > 100 * gap.tolerance, gap


def test_a_corrupt_or_truncated_log_is_refused_naming_the_line(tmp_path):
    run = tmp_path / "run"
    record(run, steps=20)
    log = run / "order.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:12]) + "{not json\n" + "".join(lines[13:]))
    with pytest.raises(InputError, match=r"order.jsonl line 13 is not valid JSON"):
        order_check(run)
    log.write_text("".join(lines[:15]))  # cut: checkpoints go to step 20
    with pytest.raises(InputError, match=r"ends at step 15 but checkpoints go to step 20"):
        order_check(run)
    log.write_text("".join(lines[:19]) + lines[19][:10])  # the last line cut short
    with pytest.raises(InputError, match=r"line 20 is cut short"):
        order_check(run)
    log.write_text("".join(lines[:5]) + "".join(lines[6:]))  # a step missing
    with pytest.raises(InputError, match=r"line 6 is step 7, not 6"):
        order_check(run)
    bad = json.loads(lines[7]) | {"micro": [3, 4]}  # micro-batches that are not the step's
    log.write_text("".join(lines[:7]) + json.dumps(bad) + "\n" + "".join(lines[8:]))
    with pytest.raises(InputError, match=r"line 8 does not add up"):
        order_check(run)


def test_no_checkpoint_near_enough_says_what_to_do(tmp_path):
    run = tmp_path / "run"
    record(run, steps=20)
    with pytest.raises(InputError, match="raise --replay-steps"):
        replay_gap(run, 10, recorded_task.task, read_run(run), read_order_log(run), max_steps=5)


def test_mixed_precision_recorded_as_such_replays_to_its_own_rounding(tmp_path):
    from recorded_task import record_precisely

    told, untold = tmp_path / "told", tmp_path / "untold"
    record_precisely(told, autocast=torch.bfloat16)
    record_precisely(untold, autocast=torch.bfloat16, tell_autocast=False)
    assert read_run(told)["autocast"] == "bfloat16"
    passed, refused = gap_of(told), gap_of(untold)
    assert passed.passed and passed.floor > 1e-4, passed  # bfloat16's rounding, measured
    assert not refused.passed and refused.floor < 1e-5, refused  # float32's: far below the gap
    assert any("mixed precision not given" in cause for cause in refused.causes)


def test_accumulation_over_equal_micro_batches_is_the_modelled_step_unequal_is_refused(tmp_path):
    from recorded_task import record_precisely

    equal, unequal = tmp_path / "equal", tmp_path / "unequal"
    record_precisely(equal, micro=(8, 8))
    record_precisely(unequal, micro=(12, 4))
    assert read_order_log(equal)[0]["micro"] == [8, 8]
    assert gap_of(equal).passed
    gap = gap_of(unequal)  # a mean of means, not the checks' one mean per batch
    assert not gap.passed and gap.gap > 100 * gap.tolerance, gap
    assert any("unequal sizes" in cause for cause in gap.causes)


def test_a_step_the_gradient_scaler_skipped_is_logged_and_not_replayed(tmp_path):
    from recorded_task import record_precisely

    run = tmp_path / "run"
    record_precisely(run, scaler=True, infinite_at=13)
    assert [r["step"] for r in read_order_log(run) if r.get("skipped")] == [14]
    assert gap_of(run).passed


def test_a_train_run_replays_to_rounding_and_a_tilted_one_is_not_the_checks_step(tmp_path):
    """A run of ``perturbative train`` is a recorded run (its own task, BatchNorm on batch
    statistics as it trained): the one gate replays it to rounding; a tilted one's weighted
    loss is not the task's mean loss, and the gate says so first."""
    from cases import tiny_digits_run

    from perturbative.pipeline.recorded_run import run_task

    for name, tilt in (("plain", None), ("tilted", "even=1.0,digit_3=-0.5")):
        run = tiny_digits_run(tmp_path / name, steps=8, checkpoint_every=4, tilt=tilt)
        gap = replay_gap(run, 4, run_task(run), read_run(run), read_order_log(run))
        assert (gap.start, gap.end) == (4, 8) and 0 < gap.floor < 1e-4, gap
        if tilt is None:
            assert gap.passed, gap
        else:  # its steps weigh examples; the check's do not
            assert not gap.passed and "tilted by even=1.0" in gap.causes[0], gap


def test_a_loop_that_sets_its_lr_before_the_step_is_logged_right(tmp_path):
    """nanoGPT's way: ``group["lr"] = get_lr(it)`` at the top of the iteration, no scheduler;
    the log holds the rate each step really used, so the gate passes."""
    import torch.nn.functional as F
    from recorded_task import INPUTS, TARGETS, model

    from perturbative.pipeline.recorder import Recorder

    torch.manual_seed(0)
    net = model()
    opt = torch.optim.AdamW(net.parameters(), lr=1.0)
    run = tmp_path / "run"
    recorder = Recorder(run, net, opt, task="recorded_task:task", save_at=10)
    order = torch.Generator().manual_seed(1)
    for it in range(20):
        for group in opt.param_groups:
            group["lr"] = 3e-2 * min(1.0, (it + 1) / 8)  # warm-up, set before the step
        indices = torch.randperm(160, generator=order)[:16]
        opt.zero_grad()
        F.cross_entropy(net(INPUTS[indices]), TARGETS[indices]).backward()
        opt.step()
        recorder.step(indices)
    recorder.close()
    log = read_order_log(run)
    assert [r["lr"][0] for r in log[:3]] == pytest.approx([3e-2 / 8, 6e-2 / 8, 9e-2 / 8])
    assert gap_of(run).passed and gap_of(run, step=20).passed

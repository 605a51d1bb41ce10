"""The order check on a tiny real run: predictions against real reordered training."""

import dataclasses
import json
import math

import pytest
from cases import run_benchmark

from perturbative._core.errors import InputError
from perturbative.pipeline import order_check as order_check_module
from perturbative.pipeline.config import OrderCheckOptions, TrainConfig
from perturbative.pipeline.order_check import PROGRESS, choose_checkpoints, order_check
from perturbative.pipeline.order_sampling import sample_pairs
from perturbative.pipeline.order_summary import (
    summary_lines,
)
from perturbative.pipeline.results import read_order_check_file
from perturbative.pipeline.train import train

TINY_CHECK = dict(
    checkpoints=1,
    example_pairs=6,
    batch_pairs=3,
    exchanges=2,
    windows=1,
    horizons=(0, 2),
    horizon_pairs=2,
    scaled_pairs=4,
    lr_scales=(1.0, 0.01),
    heldout_examples=8,
    floor_pairs=2,
    logged_pairs=0,
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    config = TrainConfig.demo(
        run_dir=str(tmp_path_factory.mktemp("runs") / "run"),
        image_size=8,
        width=0.0625,
        steps=6,
        checkpoint_every=3,
        eval_every=3,
        batch_size=4,
    )
    return train(config, progress=False)


def test_check_writes_every_pair_and_the_expansion_holds_at_small_lr(run_dir, tmp_path):
    options = OrderCheckOptions(**TINY_CHECK, out_dir=str(tmp_path / "check"))
    result = read_order_check_file(order_check(run_dir, options, progress=False).parent)
    (entry,) = result.checkpoints
    assert entry.step == 3
    full, small = entry.scales
    kinds = ("example", "batch", "exchange")
    assert [len([p for p in full.pairs if p.kind == k]) for k in kinds] == [6, 3, 2]
    assert sum(len(p.horizons) == 2 for p in full.pairs) == 6  # followed pairs
    assert len(full.floor["float32"]) == 2 and full.floor["repeat"] == 0.0
    assert {w.k for w in full.windows} == {3, 4}
    # at lr x 0.01 the second-order prediction is the real difference
    (row,) = small.summary.rows("example")
    assert row.accuracy == 1.0 and row.calibration_slope == pytest.approx(1.0, abs=0.05)
    assert any("sign acc" in line for line in summary_lines(result))
    # the default third-order prediction keeps the second-order one beside it
    assert result.options["expansion"] == 3 and result.options["pieces"] == "follow"
    assert all(p.second_order != p.predicted for p in full.pairs)
    assert math.isfinite(row.baselines.second_order)
    assert math.isfinite(full.summary.windows[3].second_order_best_picked)
    assert any("2nd-order" in line for line in summary_lines(result))
    h0, later = full.summary.rows("all")
    assert 0 <= h0.settled_pairs <= h0.pairs and later.settled_pairs is None
    assert any("settled (3rd-order term < |pred|)" in line for line in summary_lines(result))
    # followed pairs are predicted at every horizon, the swap's own prediction at h = 0
    followed = [p for p in full.pairs if len(p.horizons) == 2]
    assert all(p.predicted_horizons[0] == p.predicted for p in followed)
    assert all(math.isfinite(p.predicted_horizons[1]) for p in followed)
    assert later.horizon == 2 and math.isfinite(later.baselines.h0_prediction)
    assert any("h=0 prediction" in line for line in summary_lines(result))


def test_second_order_expansion_records_the_same_prediction_twice(run_dir, tmp_path):
    options = OrderCheckOptions(
        **{**TINY_CHECK, "windows": 1, "lr_scales": (1.0,), "floor_pairs": 0},
        window_sizes=(2,),
        steps=(6,),
        expansion=2,
        pieces="ignore",
        horizon_predictions=0,
        out_dir=str(tmp_path / "check2"),
    )
    result = read_order_check_file(order_check(run_dir, options, progress=False).parent)
    assert result.options["pieces"] == "ignore"
    assert [c.step for c in result.checkpoints] == [6]
    (scale,) = result.checkpoints[0].scales
    assert [w.k for w in scale.windows] == [2] and 2 in scale.summary.windows
    assert any("k=2 windows" in line for line in summary_lines(result))
    assert scale.pairs and all(p.second_order == p.predicted for p in scale.pairs)
    # followed but not predicted past h = 0: only the h = 0 prediction's sign is scored there
    assert all(p.predicted_horizons is None for p in scale.pairs)
    h0, later = scale.summary.rows("all")
    assert later.predicted_pairs == 0 and math.isnan(later.accuracy)
    assert math.isfinite(later.baselines.h0_prediction)
    # with no third-order term there is no error estimate, so no pair is called settled
    assert h0.settled_pairs is None
    assert not any("settled" in line for line in summary_lines(result))


def without_costs(saved):
    """A check's saved numbers without what they cost (seconds, peak memory), which differ
    from one run to the next."""
    if isinstance(saved, dict):
        costs = ("seconds", "peak_memory_gib")
        return {k: without_costs(v) for k, v in saved.items() if k not in costs}
    if isinstance(saved, list):
        return [without_costs(v) for v in saved]
    return saved


def test_a_stopped_check_continues_where_it_stopped_and_a_finished_one_is_kept(
    run_dir, tmp_path, monkeypatch
):
    small = dict(example_pairs=3, batch_pairs=2, exchanges=1, horizons=(0,), lr_scales=(1.0,))
    options = OrderCheckOptions(
        **{**TINY_CHECK, **small}, window_sizes=(2,), out_dir=str(tmp_path / "check")
    )
    whole = order_check(
        run_dir, dataclasses.replace(options, out_dir=str(tmp_path / "whole")), progress=False
    )
    real_pair_record, computed = order_check_module.pair_record, []

    def pair_record(*args, stop_after=None, **kwargs):
        if len(computed) == stop_after:
            raise KeyboardInterrupt  # the check stops here, as under Ctrl-C or a time limit
        computed.append(args[3])
        return real_pair_record(*args, **kwargs)

    monkeypatch.setattr(
        order_check_module, "pair_record", lambda *a, **k: pair_record(*a, stop_after=4, **k)
    )
    with pytest.raises(KeyboardInterrupt):
        order_check(run_dir, options, progress=False)
    progress = tmp_path / "check" / PROGRESS
    assert len(progress.read_text().splitlines()) == 1 + 4  # the settings, then 4 pairs
    with progress.open("a") as handle:
        handle.write('{"key": "3/1.0/pair/4", "val')  # a line the stop cut short
    computed.clear()
    monkeypatch.setattr(order_check_module, "pair_record", pair_record)
    resumed = order_check(run_dir, options, progress=False)
    # only the missing pairs were trained again, and the numbers are those of an unbroken check
    assert computed == ["batch", "exchange"]
    assert without_costs(json.loads(resumed.read_text())["checkpoints"]) == without_costs(
        json.loads(whole.read_text())["checkpoints"]
    )
    assert not progress.exists()
    # a finished check is never overwritten, and an unfinished one is not mixed with others
    with pytest.raises(InputError, match="already holds a finished order check"):
        order_check(run_dir, options, progress=False)
    monkeypatch.setattr(
        order_check_module, "pair_record", lambda *a, **k: pair_record(*a, stop_after=0, **k)
    )
    computed.clear()
    other = dataclasses.replace(options, out_dir=str(tmp_path / "other"))
    with pytest.raises(KeyboardInterrupt):
        order_check(run_dir, other, progress=False)
    with pytest.raises(InputError, match="example_pairs: 3 there, 5 now"):
        order_check(run_dir, dataclasses.replace(other, example_pairs=5), progress=False)


def test_checkpoint_choice(run_dir):
    assert choose_checkpoints(run_dir, 5) == [3, 6] and choose_checkpoints(run_dir, 1) == [3]
    assert choose_checkpoints(run_dir, 1, (6,)) == [6]
    from perturbative import InputError

    with pytest.raises(InputError, match=r"no checkpoint at step \[4\]; it has steps \[3, 6\]"):
        choose_checkpoints(run_dir, 1, (4, 6))
    with pytest.raises(InputError, match="step 0 has no optimizer state"):
        OrderCheckOptions(steps=(0,))


def test_bad_options_are_refused():
    from perturbative import InputError

    with pytest.raises(InputError, match="dtype"):
        OrderCheckOptions(dtype="float16")
    with pytest.raises(InputError, match="batchnorm must be 'batch' or 'running'"):
        OrderCheckOptions(batchnorm="frozen")
    with pytest.raises(InputError, match="expansion must be 2 or 3"):
        OrderCheckOptions(expansion=4)
    with pytest.raises(InputError, match="pieces must be 'follow' or 'ignore'"):
        OrderCheckOptions(pieces="smooth")
    with pytest.raises(InputError, match="examples must be 'in-batch' or 'alone'"):
        OrderCheckOptions(examples="together")
    with pytest.raises(InputError, match=r"window_sizes \[5\]: each k must be 2 to 4"):
        OrderCheckOptions(window_sizes=(5,))


def trained_by_hand(at, batches, held_targets, rows=None) -> float:
    """The held-out BCE (held-out batch in train mode) after a hand-written loop on copies of the
    checkpoint's model and Adam: ``model.train()``, the BCE of each batch's first ``rows`` rows
    (all by default) with BatchNorm over the whole batch, ``backward()``, ``Adam.step()``."""
    import copy

    import torch
    import torch.nn.functional as F

    model, optimizer = copy.deepcopy((at.model, at.optimizer))
    model.train()
    for inputs, targets in batches:
        optimizer.zero_grad()
        outputs = model(inputs)
        F.binary_cross_entropy_with_logits(outputs[:rows], targets[:rows]).backward()
        optimizer.step()
    with torch.no_grad():
        return float(F.binary_cross_entropy_with_logits(model(at.observable.inputs), held_targets))


def restored(run_dir, step=3, **options):
    """The order check's checkpoint of a run of ``train``, rebuilt with its own task, and the
    task and held-out positions the check draws."""
    from perturbative.pipeline.order_check import restore
    from perturbative.pipeline.recorded_run import run_task
    from perturbative.pipeline.recorder import read_order_log
    from perturbative.pipeline.sweep import select_examples

    task = run_task(run_dir)
    heldout = select_examples(range(len(task.heldout)), 8, 0)
    at = restore(
        run_dir,
        step,
        task,
        read_order_log(run_dir),
        heldout,
        OrderCheckOptions(**{**TINY_CHECK, **options}),
        4,
    )
    return at, task, heldout


def batch_statistics_on(at) -> bool:
    """Whether the checkpoint's BatchNorm layers normalise by each batch's statistics."""
    import torch

    return all(m.training for m in at.model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_minibatches_train_with_their_own_batchnorm_statistics_as_the_run_did(run_dir):
    """With batchnorm="batch" a minibatch pair's real difference is that of plain train-mode
    training (a hand-written loop: model.train(), loss.backward(), Adam.step()), the held-out
    loss taken with the held-out batch's own statistics; with "running" it differs."""

    import torch

    from perturbative.brackets import exchanged
    from perturbative.pipeline.order_check import real_differences

    at, task, heldout = restored(run_dir)
    generator = torch.Generator().manual_seed(0)
    ((_, x, y),) = sample_pairs(task, 4, 0, 1, 0, generator, "float64")
    held_targets = task.batch(heldout.tolist(), "heldout")[1].double()

    def by_hand(first, second):
        return trained_by_hand(at, (first, second), held_targets)

    expected = by_hand(x, y) - by_hand(y, x)
    at.mode_for("batch")
    assert batch_statistics_on(at) and expected != 0
    (got,) = real_differences(at, (x, y), (y, x), (0,), 1.0)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-15)
    at.model.eval()
    (eval_mode,) = real_differences(at, (x, y), (y, x), (0,), 1.0)
    assert eval_mode != pytest.approx(expected, rel=1e-3)
    # an exchange: the first examples of x and y change places, both batches in train mode
    x2, y2 = exchanged(x, y, 0, 0)
    expected = by_hand(x, y) - by_hand(x2, y2)
    at.mode_for("exchange")
    assert batch_statistics_on(at) and expected != 0
    (got,) = real_differences(at, (x, y), (x2, y2), (0,), 1.0)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_a_single_example_trained_in_a_batch_is_trained_as_by_hand_with_batch_statistics(run_dir):
    """``examples="in-batch"``: each single example is the first row of a minibatch of the run's
    batch size whose other rows weigh 0, in train mode; a real step is then a hand-written step
    on that example's own BCE with BatchNorm normalising the whole minibatch. ``"alone"`` (or
    ``batchnorm="running"``) keeps a batch of one in eval mode."""

    import torch

    from perturbative.pipeline.order_check import real_differences

    at, task, heldout = restored(run_dir)
    assert at.example_batch == at.batch_size == 4
    generator = torch.Generator().manual_seed(1)
    ((kind, x, y),) = sample_pairs(task, 4, 1, 0, 0, generator, "float64", at.example_batch)
    assert kind == "example" and len(x) == 3 and x[2].tolist() == [4.0, 0.0, 0.0, 0.0]
    assert not torch.equal(x[0][1:], y[0][1:])  # each example has its own companions
    held_targets = task.batch(heldout.tolist(), "heldout")[1].double()

    def by_hand(first, second):  # BatchNorm over the whole minibatch, the loss of its first row
        return trained_by_hand(at, (first[:2], second[:2]), held_targets, rows=1)

    expected = by_hand(x, y) - by_hand(y, x)
    at.mode_for("example")
    assert batch_statistics_on(at) and expected != 0
    (got,) = real_differences(at, (x, y), (y, x), (0,), 1.0, at.loss("example"))
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-15)
    for options in (dict(examples="alone"), dict(batchnorm="running")):
        alone, _, _ = restored(run_dir, **options)
        alone.mode_for("example")
        assert alone.example_batch == 1 and not batch_statistics_on(alone)


def test_example_steps_benchmark_prints_both_ways_of_training_an_example(run_dir, capsys):
    run_benchmark("example_steps.py", str(run_dir), "--steps", "3", "--examples", "2")
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [row[0] for row in rows] == ["3", "3"] and rows[0][1] == "alone"
    assert all(float(row[-3]) > 0 and float(row[-1]) > 0 for row in rows)


def test_a_scheduled_runs_checkpoints_are_chosen_where_its_lrs_are_known(tmp_path):
    """Under a schedule a check trains from a checkpoint only where the run logged as many
    steps after it as the check trains (their lrs); a constant lr holds past the log. The
    phase check chooses its checkpoints the same way, with its own flags in the refusal."""
    from perturbative.pipeline.order_check import usable_checkpoints

    (tmp_path / "checkpoints").mkdir()
    for step in (0, 10, 20, 30):
        (tmp_path / "checkpoints" / f"step_{step:06d}.safetensors").write_bytes(b"")
    scheduled = [{"step": s, "lr": [0.1 / s], "indices": [0]} for s in range(1, 31)]
    usable = usable_checkpoints({"scheduler": "LambdaLR"}, scheduled, 5)
    assert choose_checkpoints(tmp_path, 3, (), usable) == [10, 20]
    with pytest.raises(InputError, match=r"steps \[30\] have too few logged.*smaller --ks"):
        choose_checkpoints(tmp_path, 3, (30,), usable, "smaller --ks or --triple-ks")
    constant = [{**r, "lr": [0.1]} for r in scheduled]
    assert choose_checkpoints(tmp_path, 3, (), usable_checkpoints({}, constant, 5)) == [10, 20, 30]


def test_batches_past_the_log_come_from_the_task_or_are_said_to_be_random(capsys):
    """Past the run's log the check trains the batches its task says the loop draws next; with
    none, random batches of the run's size, and it says so: they are not the run's."""
    import perturbative as pt
    from perturbative.pipeline.order_check import next_batches

    task = pt.Task(model=lambda: None, loss_fn=None, train=list(range(50)))
    logged = [{"step": 11, "indices": [1, 2, 3, 4], "lr": [0.1]}]
    batches = next_batches(task, logged, 10, 3, 4, seed=0)
    assert batches[0] == [1, 2, 3, 4] and [len(b) for b in batches] == [4, 4, 4]
    assert "step 10: 2 of the 3 batches trained after it are random" in capsys.readouterr().out
    told = pt.Task(
        model=lambda: None,
        loss_fn=None,
        train=list(range(50)),
        batches_after=lambda step, count: [[step + i] * 4 for i in range(1, count + 1)],
    )
    assert next_batches(told, logged, 10, 3, 4, seed=0) == [[11] * 4, [12] * 4, [13] * 4]
    assert capsys.readouterr().out == ""

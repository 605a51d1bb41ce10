"""Sweeping a run of ``perturbative train`` (the one sweep of every run): the run's data and
checkpoints, each checkpoint's lr, the ranking with the run's Adam, refusals."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch

from perturbative import InputError
from perturbative._core.io import file_sha256
from perturbative.pipeline import SweepOptions, load_results, sweep_run
from perturbative.pipeline.config import TrainConfig
from perturbative.pipeline.results import producing_run_metrics
from perturbative.pipeline.train import train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    config = TrainConfig.demo(
        run_dir=str(tmp_path_factory.mktemp("runs") / "run"),
        image_size=8,
        width=0.0625,
        steps=4,
        checkpoint_every=2,
        eval_every=2,
    )
    return train(config, progress=False)


def test_every_checkpoint_is_swept_with_the_runs_lr(run_dir, tmp_path):
    options = SweepOptions(test_examples=6, bracket_examples=3, ranking_examples=5)
    out = sweep_run(run_dir, options)
    meta, steps = load_results(out)
    assert meta["steps"] == [0, 2, 4] and meta["lr"] == 5e-3 and meta["dataset"] == "digits"
    # ranked with the run's Adam in its state, the last checkpoint too (a constant lr: the
    # sampler's next batches past the log)
    assert steps[4]["ranking_indices"].shape == (5,)
    assert meta["ranking_model"].startswith("order scores with the run's Adam")
    plain = SweepOptions(
        test_examples=6,
        bracket_examples=3,
        ranking_examples=5,
        ranking_window=0,
        out_dir=str(tmp_path / "plain"),
    )
    assert load_results(sweep_run(run_dir, plain))[0]["ranking_model"].startswith("plain-SGD")


def test_adam_preconditioner_skips_step_zero(run_dir, tmp_path):
    options = SweepOptions(
        test_examples=6,
        bracket_examples=3,
        ranking_examples=0,
        preconditioner="adam",
        out_dir=str(tmp_path / "adam"),
    )
    meta, _ = load_results(sweep_run(run_dir, options))
    assert meta["steps"] == [2, 4] and meta["preconditioner"] == "adam"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(preconditioner="kfac"), "preconditioner must be one of"),
        (dict(engine="fast"), "engine must be one of"),
        (dict(bracket_examples=1), "at least 2"),
        (dict(bracket_examples=8, test_examples=4), "fewer than bracket_examples"),
    ],
)
def test_bad_options_are_refused_before_any_work(options, message):
    with pytest.raises(InputError, match=message):
        SweepOptions(**options)


def test_a_folder_that_is_not_a_run_is_refused(tmp_path):
    with pytest.raises(InputError, match="holds no run: neither a run of"):
        sweep_run(tmp_path)


def _tiny(path, seed=0):
    return TrainConfig.demo(
        run_dir=str(path),
        image_size=8,
        width=0.0625,
        steps=2,
        checkpoint_every=2,
        eval_every=2,
        seed=seed,
    )


TINY_SWEEP = SweepOptions(test_examples=6, bracket_examples=3, ranking_examples=4)


def test_results_are_tied_to_their_checkpoints(tmp_path):
    """A retrained run is re-swept, not served the old results; another run's folder is never
    overwritten; the report takes metrics only from the run that produced the results."""
    run_a = train(_tiny(tmp_path / "a"), progress=False)
    first = load_results(sweep_run(run_a, TINY_SWEEP))[1][2]["grad_norm"]
    # retrain the same folder with another seed: the sweep recomputes every step
    shutil.rmtree(run_a / "checkpoints")
    for name in ("metrics.jsonl", "run.json", "order.jsonl"):
        (run_a / name).unlink()
    train(_tiny(run_a, seed=1), progress=False)
    meta, steps = load_results(sweep_run(run_a, TINY_SWEEP))
    assert not torch.equal(steps[2]["grad_norm"], first)
    assert meta["sources"]["2"] == file_sha256(run_a / "checkpoints" / "step_000002.safetensors")
    # another run into run A's results folder is refused, and A's files are untouched
    run_b = train(_tiny(tmp_path / "b", seed=2), progress=False)
    before = (run_a / "brackets" / "meta.json").read_text()
    other = SweepOptions(**{**vars(TINY_SWEEP), "out_dir": str(run_a / "brackets")})
    with pytest.raises(FileExistsError, match="other checkpoints"):
        sweep_run(run_b, other)
    assert (run_a / "brackets" / "meta.json").read_text() == before
    # the report's metrics come only from the run whose checkpoints produced the results
    meta = load_results(run_a / "brackets")[0]
    assert producing_run_metrics(run_a / "brackets", meta) is not None
    shutil.copytree(run_a / "brackets", run_b / "copied")
    assert producing_run_metrics(run_b / "copied", meta) is None


def test_sweeping_some_steps_keeps_the_steps_swept_before(tmp_path):
    """``--only-steps`` into a folder that holds other steps of the same run adds to them; the
    steps not asked for are still checked against their checkpoints (another run is refused)."""
    run = train(TrainConfig.demo(**{**vars(_tiny(tmp_path / "r")), "steps": 4}), progress=False)
    first = SweepOptions(**{**vars(TINY_SWEEP), "only_steps": (0, 2)})
    out = sweep_run(run, first)
    before = {s: (out / f"step_{s:06d}.safetensors").read_bytes() for s in (0, 2)}
    timed = load_results(out)[0]["seconds"]
    meta, _ = load_results(sweep_run(run, SweepOptions(**{**vars(first), "only_steps": (4,)})))
    assert meta["steps"] == [0, 2, 4] and sorted(meta["sources"]) == ["0", "2", "4"]
    # each step's time is recorded when it is swept and kept when later steps are added
    assert sorted(timed) == ["0", "2"] and all(t > 0 for t in timed.values())
    assert meta["seconds"] == {**timed, "4": meta["seconds"]["4"]} and meta["seconds"]["4"] > 0
    assert sorted(meta["peak_memory_gib"]) == ["0", "2", "4"]
    assert all(0 < gib < 64 for gib in meta["peak_memory_gib"].values())
    assert all((out / f"step_{s:06d}.safetensors").read_bytes() == before[s] for s in (0, 2))
    other = train(
        TrainConfig.demo(**{**vars(_tiny(tmp_path / "o", seed=3)), "steps": 4}), progress=False
    )
    into = SweepOptions(**{**vars(first), "only_steps": (4,), "out_dir": str(out)})
    with pytest.raises(FileExistsError, match="other checkpoints"):
        sweep_run(other, into)
    assert load_results(out)[0]["steps"] == [0, 2, 4]


def test_a_second_sweep_on_the_same_folder_is_refused(tmp_path):
    run = train(_tiny(tmp_path / "r"), progress=False)
    lock = run / "brackets" / ".lock"
    lock.parent.mkdir()
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": "x"}))
    with pytest.raises(InputError, match=f"pid {os.getpid()}"):
        sweep_run(run, TINY_SWEEP)
    # a lock left by a process that is gone is taken over
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    lock.write_text(json.dumps({"pid": int(gone.stdout), "host": socket.gethostname()}))
    meta, _ = load_results(sweep_run(run, TINY_SWEEP))
    assert meta["steps"] == [0, 2] and not lock.exists()


def test_a_train_run_is_a_task_and_sweeps_the_examples_it_always_did(run_dir, tmp_path):
    """The sweep takes a train run's model, loss and examples from its built-in task; the
    examples are those it took before it went through the task (the same data hash)."""
    from perturbative._core.io import tensors_sha256
    from perturbative.pipeline import training_task
    from perturbative.pipeline.config import load_run_config
    from perturbative.pipeline.sweep import select_examples
    from perturbative.pipeline.train import build_dataset

    task = training_task(run_dir)
    dataset = build_dataset(load_run_config(run_dir))
    inputs, targets = task.batch([0, 3], "heldout")
    expected = dataset.batch(dataset.heldout_indices[[0, 3]])
    assert torch.equal(inputs, expected[0]) and torch.equal(targets, expected[1])
    assert task.output_names == tuple(dataset.attribute_names) and task.examples_view == "image"
    options = SweepOptions(test_examples=6, ranking_examples=4, out_dir=str(tmp_path / "b"))
    meta, _ = load_results(sweep_run(run_dir, options))
    # the examples as the sweep chose them before it went through the task
    test = select_examples(dataset.heldout_indices.tolist(), 6, options.seed)
    pool = select_examples(dataset.train_indices.tolist(), 4, options.seed + 1)
    assert meta["data_sha256"] == tensors_sha256(*dataset.batch(test), *dataset.batch(pool))

"""Sweeping a training run: the run's data and checkpoints, Adam's preconditioner, refusals."""

import pytest

from perturbative import InputError
from perturbative.pipeline import SweepOptions, load_results, sweep_training_run
from perturbative.pipeline.config import TrainConfig
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


def test_every_checkpoint_is_swept_with_the_runs_lr(run_dir):
    options = SweepOptions(test_examples=6, bracket_examples=3, ranking_examples=5)
    out = sweep_training_run(run_dir, options)
    meta, steps = load_results(out)
    assert meta["steps"] == [0, 2, 4] and meta["lr"] == 5e-3 and meta["dataset"] == "digits"
    assert steps[4]["ranking_indices"].shape == (5,)


def test_adam_preconditioner_skips_step_zero(run_dir, tmp_path):
    options = SweepOptions(
        test_examples=6,
        bracket_examples=3,
        ranking_examples=0,
        preconditioner="adam",
        out_dir=str(tmp_path / "adam"),
    )
    meta, _ = load_results(sweep_training_run(run_dir, options))
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
    with pytest.raises(FileNotFoundError, match="not a training run directory"):
        sweep_training_run(tmp_path)

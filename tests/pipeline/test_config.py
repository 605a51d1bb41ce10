"""Training: config validation, checkpoints, exact resume, tilted batches."""

import json
from pathlib import Path

import pytest

from perturbative import InputError
from perturbative.pipeline.config import TrainConfig, parse_tilt
from perturbative.pipeline.train import (
    build_dataset,
)


def test_defaults_are_the_reference_experiment():
    config = TrainConfig()
    assert (config.lr, config.beta1, config.beta2) == (5e-3, 0.8, 0.999)
    assert (config.batch_size, config.steps, config.checkpoint_every) == (32, 5000, 250)
    reference = TrainConfig.reference("some/celeba")
    # the data path is stored resolved, so the run works from any folder
    assert reference.dataset == "celeba"
    assert reference.data_root == str(Path("some/celeba").resolve())
    assert (reference.depth, reference.width, reference.image_size) == (18, 1.0, 64)
    demo = TrainConfig.demo()
    assert demo.dataset == "digits" and demo.steps < 1000 and demo.width < 1
    with pytest.raises(ValueError, match="needs data_root"):
        build_dataset(TrainConfig())


def test_overrides_are_validated_and_converted():
    base = TrainConfig.demo()
    config = TrainConfig.from_overrides(
        base, {"lr": "1e-3", "steps": "7", "tilt": "even=0.5", "limit": "none", "width": 1}
    )
    assert config.lr == 1e-3 and config.steps == 7 and config.tilt == "even=0.5"
    assert config.limit is None and isinstance(config.width, float)
    assert base.steps == 600  # the base is not modified
    with pytest.raises(InputError, match="unknown TrainConfig keys \\['learning_rate'\\]"):
        TrainConfig.from_overrides(base, {"learning_rate": 0.1})
    with pytest.raises(InputError, match="steps='many' cannot be read as int"):
        TrainConfig.from_overrides(base, {"steps": "many"})
    with pytest.raises(InputError, match="batch_size must be int"):
        TrainConfig.from_overrides(base, {"batch_size": 2.5})
    with pytest.raises(ValueError, match="dataset must be one of"):
        TrainConfig.from_overrides(base, {"dataset": "mnist"})
    with pytest.raises(ValueError, match="ATTRIBUTE=STRENGTH"):
        TrainConfig.from_overrides(base, {"tilt": "Smiling"})
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_parse_tilt():
    assert parse_tilt("Smiling=1.5, Male=-0.5") == {"Smiling": 1.5, "Male": -0.5}
    with pytest.raises(ValueError, match="valid names: digit_0, digit_1"):
        parse_tilt("Smiling=1", ["digit_0", "digit_1"])
    with pytest.raises(ValueError, match="cannot read tilt 'x=abc'"):
        parse_tilt("x=abc")


def test_a_run_config_follows_its_folder_and_moved_data(tmp_path):
    from perturbative.pipeline.config import load_run_config

    config = TrainConfig.reference("data/celeba", run_dir=str(tmp_path / "old"))
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "config.json").write_text(json.dumps(config.to_dict()))
    loaded = load_run_config(tmp_path / "new")
    assert loaded.run_dir == str(tmp_path / "new") and loaded.data_root == config.data_root
    moved = load_run_config(tmp_path / "new", data_root=tmp_path / "elsewhere")
    assert moved.data_root == str(tmp_path / "elsewhere")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(floor_pairs=-1), "floor_pairs must be >= 0"),
        (dict(scaled_pairs=-2), "scaled_pairs must be >= 0"),
        (dict(lr_scales=(1.0, 0.0)), "each must be > 0"),
        (dict(lr_scales=(0.1,)), "keep 1 in --lr-scales"),
        (dict(windows=2, window_sizes=()), "at least one window size"),
        (dict(window_sizes=(5,)), "each k must be 2 to 4"),
    ],
)
def test_order_check_options_that_cannot_be_run_are_refused(options, message):
    """What the check would silently skip or fail on is refused before any work."""
    from perturbative.pipeline.config import OrderCheckOptions

    with pytest.raises(InputError, match=message):
        OrderCheckOptions(**options)
    # at lr scales without the run's own, the checks made there alone still run
    assert OrderCheckOptions(lr_scales=(0.1,), logged_pairs=0).lr_scales == (0.1,)


def test_a_checkpoint_at_lr_0_is_swept_and_a_negative_lr_refused():
    """A warm-up from 0 gives its first checkpoint lr 0 (its shifts are 0), not an error."""
    from perturbative.pipeline.config import SweepSettings

    assert SweepSettings(lr=0.0).lr == 0.0
    for lr in (-1e-3, float("nan")):
        with pytest.raises(InputError, match="lr must be a finite number >= 0"):
            SweepSettings(lr=lr)

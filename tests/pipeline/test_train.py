"""Training: config validation, checkpoints, exact resume, tilted batches."""

import json
import warnings
from pathlib import Path

import pytest
import torch
from cases import SHARED_CELEBA
from safetensors.torch import load_file

from perturbative.pipeline import checkpoints
from perturbative.pipeline import train as training
from perturbative.pipeline.checkpoints import list_checkpoints, load_checkpoint
from perturbative.pipeline.config import TrainConfig, load_run_config
from perturbative.pipeline.train import (
    build_dataset,
    model_from_checkpoint,
    train,
)


def tiny(tmp_path: Path, name: str = "run", **overrides) -> TrainConfig:
    """Digits at 8x8, a 1/16-width MXResNet-18, 180 training images (5 batches an epoch)."""
    settings = dict(
        run_dir=str(tmp_path / name),
        image_size=8,
        width=0.0625,
        heldout_fraction=0.9,
        steps=12,
        checkpoint_every=5,
        eval_every=5,
        eval_examples=64,
        device="cpu",
    )
    settings.update(overrides)
    return TrainConfig.demo(**settings)


def checkpoint_tensors(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoints.checkpoint_path(run_dir, step)))


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_run_writes_checkpoints_metrics_and_learns(tmp_path):
    config = tiny(tmp_path, steps=30, checkpoint_every=10, eval_every=10)
    run_dir = train(config, progress=False)
    assert [step for step, _ in list_checkpoints(run_dir)] == [0, 10, 20, 30]
    assert load_run_config(run_dir) == config
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [0, 10, 20, 30]
    assert metrics[0]["train_loss"] is None
    assert metrics[-1]["heldout_loss"] < metrics[0]["heldout_loss"]
    assert metrics[-1]["heldout_accuracy"] > metrics[0]["heldout_accuracy"]

    checkpoint = load_checkpoint(list_checkpoints(run_dir)[-1][1])
    assert checkpoint["step"] == 30 and checkpoint["config"] == config
    assert checkpoint["attribute_names"][:2] == ["digit_0", "digit_1"]
    assert checkpoint["num_outputs"] == 14 and checkpoint["in_channels"] == 1
    assert checkpoint["sampler"]["epoch"] * 5 + checkpoint["sampler"]["batch"] == 30
    assert int(checkpoint["optimizer"]["state"][0]["step"]) == 30
    assert checkpoint["optimizer"]["param_groups"][0]["betas"] == (0.8, 0.999)

    model, _ = model_from_checkpoint(list_checkpoints(run_dir)[-1][1])
    assert not model.training
    dataset = build_dataset(config)
    inputs, targets = dataset.batch(dataset.heldout_indices[:64])
    with torch.no_grad():
        loss = training.attribute_bce(model(inputs), targets).mean()
    assert float(loss) == pytest.approx(metrics[-1]["heldout_loss"], rel=1e-5)

    with pytest.raises(FileExistsError, match="resume it"):
        train(config, progress=False)


def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path):
    straight = train(tiny(tmp_path, "straight"), progress=False)
    killed = train(tiny(tmp_path, "killed"), progress=False)
    # deterministic: two fresh runs agree bit for bit
    assert_same_tensors(checkpoint_tensors(straight, 12), checkpoint_tensors(killed, 12))
    # as if killed just before the step-10 checkpoint (the metrics line of step 10 was written)
    for step in (10, 12):
        checkpoints.checkpoint_path(killed, step).unlink()
    resumed = train(tiny(tmp_path, "killed"), resume=True, progress=False)
    for step in (5, 10, 12):
        assert_same_tensors(checkpoint_tensors(straight, step), checkpoint_tensors(resumed, step))
    assert (straight / "metrics.jsonl").read_text() == (resumed / "metrics.jsonl").read_text()
    assert (straight / "order.jsonl").read_text() == (resumed / "order.jsonl").read_text()

    # a longer run continues the same way as one that was always longer
    longer = train(tiny(tmp_path, "killed", steps=16), resume=True, progress=False)
    always = train(tiny(tmp_path, "always", steps=16), progress=False)
    assert_same_tensors(checkpoint_tensors(longer, 16), checkpoint_tensors(always, 16))
    with pytest.raises(ValueError, match="lr: 0.005 -> 0.001"):
        train(tiny(tmp_path, "killed", steps=20, lr=1e-3), resume=True, progress=False)


def test_tilted_batches_and_uniform_tilt(tmp_path):
    with pytest.raises(ValueError, match="valid names: digit_0"):
        train(tiny(tmp_path, "bad", tilt="Smiling=1"), progress=False)
    run_dir = train(tiny(tmp_path, "tilted", tilt="even=1.0,digit_3=-0.5"), progress=False)
    # strict JSON: no bare NaN or Infinity
    json.loads((run_dir / "tilt.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    dataset = build_dataset(tiny(tmp_path))
    train_targets = dataset.targets[dataset.train_indices]
    dH = training.tilt_delta_h(dataset, "even=1.0,digit_3=-0.5", dataset.train_indices)
    expected = -(train_targets[:, 10].double() - 0.5 * train_targets[:, 3].double())
    torch.testing.assert_close(dH, expected)
    # a zero tilt is plain training: same batches, the loss sum(L)/B equals the mean
    plain = train(tiny(tmp_path, "plain", steps=6), progress=False)
    zero = train(tiny(tmp_path, "zero", steps=6, tilt="even=0"), progress=False)
    a, b = checkpoint_tensors(plain, 6), checkpoint_tensors(zero, 6)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)


def test_tilt_with_weights_far_above_the_batch_size_trains(tmp_path):
    # digit_9 is rare among 180 images; a strength of 8 gives its examples weights far above
    # the batch size, which once made batches of one that BatchNorm refuses
    config = tiny(tmp_path, "heavy", tilt="digit_9=8", steps=12, batch_size=8)
    dataset = build_dataset(config)
    weights = training.training_weights(config, dataset)
    assert weights.max() > config.batch_size
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_dir = train(config, progress=False)
    messages = [str(w.message) for w in caught]
    assert any("outweighs a whole batch" in m for m in messages)  # the tilt diagnostics
    assert any("merged" in m for m in messages)  # the sampler's policy
    assert [s for s, _ in list_checkpoints(run_dir)][-1] == 12


@pytest.mark.slow
def test_demo_config_learns_the_digits(tmp_path):
    run_dir = train(TrainConfig.demo(run_dir=str(tmp_path / "demo"), device="cpu"), progress=False)
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 600 and last["heldout_accuracy"] > 0.97


@pytest.mark.skipif(
    not SHARED_CELEBA.is_dir(), reason=f"CelebA subset not found at {SHARED_CELEBA}"
)
def test_reference_pipeline_on_shared_celeba(tmp_path):
    config = TrainConfig.reference(
        str(SHARED_CELEBA),
        run_dir=str(tmp_path / "celeba"),
        limit=400,
        image_size=16,
        width=0.0625,
        steps=2,
        checkpoint_every=1,
        eval_every=1,
        eval_examples=32,
        device="cpu",
    )
    run_dir = train(config, progress=False)
    assert [step for step, _ in list_checkpoints(run_dir)] == [0, 1, 2]
    model, checkpoint = model_from_checkpoint(list_checkpoints(run_dir)[-1][1])
    assert checkpoint["num_outputs"] == 40 and checkpoint["in_channels"] == 3
    assert checkpoint["attribute_names"][31] == "Smiling" and checkpoint["dataset"] == "celeba"
    assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 40)


def test_a_split_the_run_cannot_use_is_refused_before_training(tmp_path):
    from perturbative import InputError

    # 0.1% of the digits is two held-out images: refused before any file is written
    config = tiny(tmp_path, "one", heldout_fraction=0.001)
    with pytest.raises(InputError, match=r"holds out 2 example\(s\), but 6 are needed"):
        train(config, progress=False, heldout_needed=6)
    assert not (tmp_path / "one").exists()
    with pytest.raises(InputError, match="fewer than one batch"):
        train(tiny(tmp_path, "few", heldout_fraction=0.99, batch_size=32), progress=False)


def test_a_run_is_recorded_as_any_loop_is(tmp_path):
    """``train`` writes through the Recorder: ``run.json`` names its own task (a factory of the
    run folder), the log holds each step's positions in the training split and its lr, and the
    task rebuilt from the folder alone trains those positions."""
    from perturbative.pipeline.recorded_run import read_run, run_task
    from perturbative.pipeline.recorder import read_order_log

    config = tiny(tmp_path, steps=6, checkpoint_every=5, eval_every=5)
    run_dir = train(config, progress=False)
    run, log = read_run(run_dir), read_order_log(run_dir)
    assert run["task"] == training.TRAINING_TASK and run["optimizer"] == "Adam"
    assert run["loop"] == {"made_by": "perturbative train", "tilt": None}
    assert len(run["model_mode"]["batch_statistics"]) > 0 and not run["model_mode"]["stochastic"]
    assert [r["step"] for r in log] == list(range(1, 7)) and {len(r["indices"]) for r in log} == {
        config.batch_size
    }
    assert all(r["lr"] == [config.lr] for r in log)
    assert [step for step, _ in list_checkpoints(run_dir)] == [0, 5, 6]  # the last one too
    task = run_task(run_dir)  # imported from run.json, given the folder
    dataset = build_dataset(config)
    first = log[0]["indices"]
    inputs, _ = task.batch(first)
    torch.testing.assert_close(inputs, dataset.batch(dataset.train_indices[first])[0])

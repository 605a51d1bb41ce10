"""Training: config validation, checkpoints, exact resume, tilted batches."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from perturbative import checkpoints, training
from perturbative.training import (
    TrainConfig,
    build_dataset,
    list_checkpoints,
    load_checkpoint,
    load_run_config,
    model_from_checkpoint,
    parse_tilt,
    train,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and a busy machine makes two threads crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def test_defaults_are_the_reference_experiment():
    config = TrainConfig()
    assert (config.lr, config.beta1, config.beta2) == (5e-3, 0.8, 0.999)
    assert (config.batch_size, config.steps, config.checkpoint_every) == (32, 5000, 250)
    reference = TrainConfig.reference("some/celeba")
    assert reference.dataset == "celeba" and reference.data_root == "some/celeba"
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
    with pytest.raises(KeyError, match="unknown TrainConfig keys \\['learning_rate'\\]"):
        TrainConfig.from_overrides(base, {"learning_rate": 0.1})
    with pytest.raises(TypeError, match="steps='many' cannot be read as int"):
        TrainConfig.from_overrides(base, {"steps": "many"})
    with pytest.raises(TypeError, match="batch_size must be int"):
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


def checkpoint_tensors(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(training.checkpoint_path(run_dir, step)))


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path):
    straight = train(tiny(tmp_path, "straight"), progress=False)
    killed = train(tiny(tmp_path, "killed"), progress=False)
    # deterministic: two fresh runs agree bit for bit
    assert_same_tensors(checkpoint_tensors(straight, 12), checkpoint_tensors(killed, 12))
    # as if killed just before the step-10 checkpoint (the metrics line of step 10 was written)
    for step in (10, 12):
        training.checkpoint_path(killed, step).unlink()
    resumed = train(tiny(tmp_path, "killed"), resume=True, progress=False)
    for step in (5, 10, 12):
        assert_same_tensors(checkpoint_tensors(straight, step), checkpoint_tensors(resumed, step))
    assert (straight / "metrics.jsonl").read_text() == (resumed / "metrics.jsonl").read_text()

    # a longer run continues the same way as one that was always longer
    longer = train(tiny(tmp_path, "killed", steps=16), resume=True, progress=False)
    always = train(tiny(tmp_path, "always", steps=16), progress=False)
    assert_same_tensors(checkpoint_tensors(longer, 16), checkpoint_tensors(always, 16))
    with pytest.raises(ValueError, match="lr: 0.005 -> 0.001"):
        train(tiny(tmp_path, "killed", steps=20, lr=1e-3), resume=True, progress=False)


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    target = tmp_path / "checkpoints" / "step_000001.safetensors"

    def broken_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoints.save_checkpoint(target, {"x": torch.zeros(2)}, {"step": 1})
    assert list(target.parent.iterdir()) == []
    monkeypatch.undo()
    checkpoints.save_checkpoint(target, {"x": torch.arange(3.0)}, {"step": 1})
    tensors, info = checkpoints.read_checkpoint(target)
    assert torch.equal(tensors["x"], torch.arange(3.0)) and info["step"] == 1
    assert checkpoints.list_checkpoints(tmp_path) == [(1, target)]
    with pytest.raises(ValueError, match="not a checkpoint written by perturbative"):
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(1)}, str(target))
        checkpoints.read_checkpoint(target)


def test_tilted_batches_and_uniform_tilt(tmp_path):
    with pytest.raises(ValueError, match="valid names: digit_0"):
        train(tiny(tmp_path, "bad", tilt="Smiling=1"), progress=False)
    run_dir = train(tiny(tmp_path, "tilted", tilt="even=1.0,digit_3=-0.5"), progress=False)
    assert (run_dir / "tilt.json").is_file()
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


@pytest.mark.slow
def test_demo_config_learns_the_digits(tmp_path):
    run_dir = train(TrainConfig.demo(run_dir=str(tmp_path / "demo"), device="cpu"), progress=False)
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 600 and last["heldout_accuracy"] > 0.97


SHARED_CELEBA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "celeba"


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

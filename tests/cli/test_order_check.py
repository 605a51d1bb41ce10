"""``perturbative order-check``: the command prints the summary and writes the numbers."""

from perturbative.cli import main
from perturbative.pipeline.config import TrainConfig
from perturbative.pipeline.train import train


def test_command_prints_the_summary(tmp_path, capsys):
    config = TrainConfig.demo(
        run_dir=str(tmp_path / "run"),
        image_size=8,
        width=0.0625,
        steps=2,
        checkpoint_every=2,
        eval_every=2,
        batch_size=4,
    )
    run_dir = train(config, progress=False)
    flags = [
        "--example-pairs",
        "2",
        "--batch-pairs",
        "1",
        "--windows",
        "2",
        "--window-sizes",
        "2",
        "--steps",
        "2",
        "--horizons",
        "0",
        "--lr-scales",
        "0.01",
        "--heldout-examples",
        "4",
        "--floor-pairs",
        "1",
    ]
    assert main(["order-check", str(run_dir), "--out-dir", str(tmp_path / "c"), *flags]) == 0
    out = capsys.readouterr().out
    assert "sign acc" in out and (tmp_path / "c" / "order_check.json").is_file()
    assert "step 2," in out and "k=2 windows" in out
    # the same command again keeps the finished check and says what to do instead
    assert main(["order-check", str(run_dir), "--out-dir", str(tmp_path / "c"), *flags]) == 2
    assert "--out-dir for a new one" in capsys.readouterr().err
    assert (
        main(["order-check", str(run_dir), "--out-dir", str(tmp_path / "c"), "--summary-only"]) == 0
    )
    # a step with no checkpoint is refused with what the run has
    assert main(["order-check", str(run_dir), "--steps", "3"]) == 2
    assert "no checkpoint at step [3]; it has steps [2]" in capsys.readouterr().err


def test_order_check_of_a_recorded_run(tmp_path, capsys):
    from recorded_task import record

    record(tmp_path / "run", steps=20)
    flags = ["--checkpoints", "1", "--batch-pairs", "3", "--windows", "1", "--threads", "1"]
    assert main(["order-check", str(tmp_path / "run"), *flags]) == 0
    out = capsys.readouterr().out
    assert "AdamW: 3 minibatch pairs" in out and "sign accuracy 1.000" in out
    assert "best of 3! picked:" in out and "of 1 windows" in out
    assert main(["order-check", str(tmp_path / "run"), *flags, "--task", "nowhere:task"]) == 2
    assert "cannot import the task's module 'nowhere'" in capsys.readouterr().err


def test_flags_that_do_not_apply_to_the_run_are_refused_and_defaults_are_pythons(tmp_path, capsys):
    from recorded_task import record

    run = tmp_path / "recorded"
    record(run, steps=20)
    assert main(["order-check", str(run), "--example-pairs", "3", "--lr-scales", "1"]) == 2
    assert "--example-pairs, --lr-scales apply to runs of `perturbative train` only" in (
        capsys.readouterr().err
    )
    flags = ["--steps", "10", "--windows", "0", "--threads", "1"]
    assert main(["order-check", str(run), *flags]) == 0
    out = capsys.readouterr().out
    assert out.startswith("replay gap at step 10: ") and "AdamW: 20 minibatch pairs" in out
    assert main(["order-check", str(run), "--summary-only", *flags]) == 0
    assert "AdamW: 20 minibatch pairs" in capsys.readouterr().out
    config = TrainConfig.demo(run_dir=str(tmp_path / "train"), image_size=8, width=0.0625, steps=2)
    train_run = train(config, progress=False)
    assert main(["order-check", str(train_run), "--scored-examples", "2"]) == 2
    assert "--scored-examples apply to recorded runs only" in capsys.readouterr().err

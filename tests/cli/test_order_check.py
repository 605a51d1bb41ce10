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
        "--logged-pairs",
        "0",  # the run's own batches are checked at its own lr only
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


def test_one_check_for_a_recorded_run_with_pythons_defaults(tmp_path, capsys):
    """A recorded run takes the same command, flags and defaults as a run of ``train``: its own
    logged batches, random pairs, windows and scored examples; what does not apply to it is
    refused in one line."""
    import json

    from recorded_task import record

    from perturbative.pipeline.config import OrderCheckOptions

    run = tmp_path / "run"
    record(run, steps=20)
    flags = ["--checkpoints", "1", "--logged-pairs", "3", "--example-pairs", "2"]
    flags += ["--batch-pairs", "1", "--exchanges", "1", "--windows", "1", "--window-sizes", "3"]
    flags += ["--horizons", "0", "--lr-scales", "1", "--floor-pairs", "1"]
    flags += ["--scored-examples", "2", "--threads", "1"]
    assert main(["order-check", str(run), *flags]) == 0
    out = capsys.readouterr().out
    assert out.startswith("replay gap at step 10: ") and "logged   h=0   pairs 3" in out
    assert "exchange h=0   pairs 1" in out and "k=3 windows" in out and "scores   2 examples" in out
    saved = json.loads((run / "order_check" / "order_check.json").read_text())["options"]
    given = dict(logged_pairs=3, example_pairs=2, batch_pairs=1, exchanges=1, windows=1)
    given |= dict(window_sizes=[3], horizons=[0], lr_scales=[1.0], floor_pairs=1)
    expected = {**vars(OrderCheckOptions(checkpoints=1, scored_examples=2)), **given}
    assert saved == json.loads(json.dumps(expected))  # every other value is Python's default
    assert main(["order-check", str(run), "--summary-only"]) == 0
    assert "logged   h=0   pairs 3" in capsys.readouterr().out
    assert main(["order-check", str(run), *flags, "--task", "nowhere:task"]) == 2
    assert "cannot import the task's module 'nowhere'" in capsys.readouterr().err
    assert main(["order-check", str(run), "--celeba", "x", "--out-dir", str(tmp_path / "o")]) == 2
    assert "--celeba applies to runs of `perturbative train`" in capsys.readouterr().err
    # its schedule is known for the 10 logged steps after step 10: horizons past them are not
    assert main(["order-check", str(run), "--steps", "10", "--horizons", "0,20"]) == 2
    assert "too few logged steps after them" in capsys.readouterr().err
    # a model without BatchNorm: its flags do not apply
    assert main(["order-check", str(run), "--batchnorm", "running", "--examples", "alone"]) == 2
    err = capsys.readouterr().err
    assert (
        "--batchnorm, --examples apply to runs whose BatchNorm trained on batch statistics" in err
    )

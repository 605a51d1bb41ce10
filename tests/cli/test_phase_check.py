"""``perturbative phase-check``: the command runs the check, prints its summary and prints it
again from the saved numbers; bad input is one line."""

from cases import tiny_digits_run

from perturbative.cli import main


def test_command_prints_the_summary_and_again_from_the_numbers(tmp_path, capsys):
    run_dir = str(tiny_digits_run(tmp_path / "run", steps=2, checkpoint_every=2))
    flags = ["--ks", "1", "--sources", "3", "--triples", "1", "--heldout-examples", "8"]
    assert main(["--threads", "1", "phase-check", run_dir, *flags]) == 0
    out = capsys.readouterr().out
    assert "held-out loss:" in out and "k=1: 3 pairs" in out and "best of 3! " in out
    assert "composition" in out and "expansion" in out and "numbers: " in out
    assert main(["phase-check", run_dir, "--summary-only"]) == 0
    assert capsys.readouterr().out == out
    # a second check into the same folder is refused, in one line, with what to do
    assert main(["phase-check", run_dir, *flags]) == 2
    assert "already holds a finished phase check: pass --out-dir" in capsys.readouterr().err


def test_train_run_flags_are_refused_on_a_recorded_run(tmp_path, capsys):
    from recorded_task import record

    run = tmp_path / "recorded"
    record(run, steps=20)
    assert main(["phase-check", str(run), "--celeba", "x"]) == 2
    assert "--celeba applies to runs of `perturbative train` only" in capsys.readouterr().err
    # its model has no BatchNorm: how BatchNorm meets the batches does not apply
    assert main(["phase-check", str(run), "--batchnorm", "running"]) == 2
    assert "--batchnorm applies to runs whose BatchNorm trained on batch statistics" in (
        capsys.readouterr().err
    )

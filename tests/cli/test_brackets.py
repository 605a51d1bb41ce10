"""The command line end to end on tiny settings, and its errors."""

from cases import TINY_RUN as TINY
from cases import TINY_SWEEP

from perturbative.cli import main


def test_brackets_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["brackets", str(tmp_path)]) == 2
    assert "not a training run directory" in capsys.readouterr().err


def test_a_truncated_checkpoint_is_named_not_a_traceback(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--run-dir", str(run)]) == 0
    damaged = run / "checkpoints" / "step_000002.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:1000])
    capsys.readouterr()
    assert main(["brackets", str(run), *TINY_SWEEP]) == 2
    err = capsys.readouterr().err
    assert str(damaged) in err and "Traceback" not in err

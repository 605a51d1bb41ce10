"""The command line end to end on tiny settings, and its errors."""

import pytest
from cases import TINY_RUN as TINY

from perturbative.cli import main


def test_train_refuses_to_overwrite_and_resumes(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--run-dir", str(run)]) == 0
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert main(["train", *TINY, "--run-dir", str(run)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
    assert main(["train", *TINY[2:], "--steps", "6", "--run-dir", str(run), "--resume"]) == 0
    assert (run / "checkpoints" / "step_000006.safetensors").exists()


def test_resume_as_users_type_it(tmp_path, monkeypatch, capsys):
    """The run folder alone resumes; paths as typed, moved folders; no silent extension."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "--run-dir", "run"]) == 0
    capsys.readouterr()
    # the folder alone: a finished run is not extended without --steps
    assert main(["train", "--run-dir", "run", "--resume"]) == 0
    assert "already finished its 4 steps" in capsys.readouterr().out
    assert max(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()).endswith(
        "4.safetensors"
    )
    # ./run and an absolute path are the same run
    assert main(["train", "--run-dir", "./run", "--resume", "--steps", "6"]) == 0
    assert (tmp_path / "run" / "checkpoints" / "step_000006.safetensors").exists()
    # a moved folder resumes
    (tmp_path / "run").rename(tmp_path / "moved")
    assert main(["train", "--run-dir", str(tmp_path / "moved"), "--resume", "--steps", "8"]) == 0
    assert (tmp_path / "moved" / "checkpoints" / "step_000008.safetensors").exists()
    capsys.readouterr()
    # what may not change is refused with the numbers, and nothing is lost
    assert main(["train", "--run-dir", "moved", "--resume", "--steps", "10", "--lr", "1e-3"]) == 2
    err = capsys.readouterr().err
    assert "lr: 0.005 -> 0.001" in err and "--resume" in err
    assert not (tmp_path / "moved" / "checkpoints" / "step_000010.safetensors").exists()
    assert main(["train", "--run-dir", "nothing", "--resume"]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_unknown_tilt_attribute_is_a_clear_error(tmp_path, capsys):
    code = main(["train", *TINY, "--run-dir", str(tmp_path / "r"), "--tilt", "Nope=1.0"])
    assert code == 2
    assert "digit_0" in capsys.readouterr().err


def test_celeba_needs_a_path(capsys):
    assert main(["train", "--data", "celeba"]) == 2
    assert "--data celeba needs --celeba PATH" in capsys.readouterr().err


def test_a_library_bug_keeps_its_traceback(monkeypatch, tmp_path):
    """Only bad input is a one-line error: a KeyError or TypeError from a bug propagates."""
    from perturbative.cli import train as train_command

    def bug(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(train_command, "train", bug)
    with pytest.raises(KeyError, match="a bug"):
        main(["train", "--run-dir", str(tmp_path / "r")])


def test_threads_flag_after_the_subcommand(tmp_path, capsys):
    assert main(["train", *TINY, "--run-dir", str(tmp_path / "r"), "--threads", "1"]) == 0

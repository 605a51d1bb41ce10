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

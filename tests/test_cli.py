"""The command line end to end on tiny settings, and its errors."""

import json

import pytest

from perturbative.cli import main

TINY = ["--steps", "4", "--checkpoint-every", "2", "--eval-every", "2", "--image-size", "16"]
SWEEP = ["--ranking-examples", "6", "--test-examples", "8"]


def test_demo_runs_train_brackets_report(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["demo", *TINY, *SWEEP, "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert "report:" in out
    html = (run / "report.html").read_text()
    assert "digit_0" in html
    meta = json.loads((run / "brackets" / "meta.json").read_text())
    assert meta["steps"] == [0, 2, 4]
    assert meta["pairs"][0] == [0, 1] and len(meta["pairs"]) == 15
    assert meta["ranking_examples"] == 6

    # the same run with Adam's preconditioner: step 0 has no Adam state and is skipped
    adam = tmp_path / "adam"
    assert main(["brackets", str(run), "--preconditioner", "adam", "--out", str(adam), *SWEEP]) == 0
    adam_meta = json.loads((adam / "meta.json").read_text())
    assert adam_meta["steps"] == [2, 4] and adam_meta["preconditioner"] == "adam"

    # report again from the run directory, to another file
    assert main(["report", str(run), "--out", str(tmp_path / "again.html")]) == 0
    assert (tmp_path / "again.html").stat().st_size > 10_000


def test_train_refuses_to_overwrite_and_resumes(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--run-dir", str(run)]) == 0
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert main(["train", *TINY, "--run-dir", str(run)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
    assert main(["train", *TINY[2:], "--steps", "6", "--run-dir", str(run), "--resume"]) == 0
    assert (run / "checkpoints" / "step_000006.safetensors").exists()


def test_brackets_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["brackets", str(tmp_path)]) == 2
    assert "not a training run directory" in capsys.readouterr().err


def test_report_without_results(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "perturbative brackets" in capsys.readouterr().err


def test_unknown_tilt_attribute_is_a_clear_error(tmp_path, capsys):
    code = main(["train", *TINY, "--run-dir", str(tmp_path / "r"), "--tilt", "Nope=1.0"])
    assert code == 2
    assert "digit_0" in capsys.readouterr().err


def test_celeba_needs_a_path():
    with pytest.raises(SystemExit):
        main(["train", "--data", "celeba"])


def test_demo_again_reuses_the_finished_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["demo", *TINY, *SWEEP, "--run-dir", str(run)]) == 0
    checkpoint = run / "checkpoints" / "step_000004.safetensors"
    first = checkpoint.stat().st_mtime_ns
    assert main(["demo", *TINY, *SWEEP, "--run-dir", str(run)]) == 0
    assert checkpoint.stat().st_mtime_ns == first
    assert "report:" in capsys.readouterr().out

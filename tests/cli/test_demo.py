"""The command line end to end on tiny settings, and its errors."""

import json

from cases import TINY_RUN as TINY
from cases import TINY_SWEEP as SWEEP

from perturbative.cli import main


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


def test_demo_again_reuses_the_finished_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["demo", *TINY, *SWEEP, "--run-dir", str(run)]) == 0
    checkpoint = run / "checkpoints" / "step_000004.safetensors"
    first = checkpoint.stat().st_mtime_ns
    assert main(["demo", *TINY, *SWEEP, "--run-dir", str(run)]) == 0
    assert checkpoint.stat().st_mtime_ns == first
    assert "report:" in capsys.readouterr().out

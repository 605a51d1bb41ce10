"""The command line end to end on tiny settings, and its errors."""

import pytest
from cases import TINY_RUN as TINY
from cases import TINY_SWEEP

from perturbative.cli import main
from perturbative.pipeline import load_results
from perturbative.pipeline.config import load_run_config
from perturbative.pipeline.train import build_dataset


def test_brackets_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["brackets", str(tmp_path)]) == 2
    assert "holds no run: neither a run of `perturbative train`" in capsys.readouterr().err


def test_a_truncated_checkpoint_is_named_not_a_traceback(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--run-dir", str(run)]) == 0
    damaged = run / "checkpoints" / "step_000002.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:1000])
    capsys.readouterr()
    assert main(["brackets", str(run), *TINY_SWEEP]) == 2
    err = capsys.readouterr().err
    assert str(damaged) in err and "Traceback" not in err


def test_only_some_steps_with_the_whole_split_ranked(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--run-dir", str(run)]) == 0
    out = tmp_path / "full"
    args = ["brackets", str(run), *TINY_SWEEP, "--out", str(out), "--only-steps", "0,4"]
    # the whole split by the plain bracket scores, as docs/results/reference-experiment.md does
    assert main([*args, "--ranking-examples", "100000", "--ranking-window", "0"]) == 0
    meta, steps = load_results(out)
    assert meta["steps"] == [0, 4]
    train_split = len(build_dataset(load_run_config(run)).train_indices)
    assert meta["ranking_examples"] == train_split == steps[4]["ranking_indices"].shape[0]
    assert sorted(steps[4]["ranking_indices"].tolist()) == sorted(
        set(steps[0]["ranking_indices"].tolist())
    )

    capsys.readouterr()
    assert main(["brackets", str(run), *TINY_SWEEP, "--only-steps", "3"]) == 2
    assert "no checkpoint at step(s) [3]; its checkpoints are at steps [0, 2, 4]" in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        main(["brackets", str(run), "--only-steps", "zero"])
    assert "comma-separated integers" in capsys.readouterr().err

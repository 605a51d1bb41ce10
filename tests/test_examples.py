"""The examples run and assert what they show (each in a fresh interpreter, one thread)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *args: str, timeout: int = 300) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def test_own_model(tmp_path):
    out = run_example("own_model.py", "--out", str(tmp_path / "own"))
    # the recorded order score against real swaps converges as lr -> 0
    last = [line for line in out.splitlines() if "lr 5e-07" in line][-1]
    assert abs(float(last.split("ratio ")[1].rstrip(")")) - 1) < 0.02, last


def test_language_model():
    pytest.importorskip(
        "transformers", reason="transformers is not installed (pip install -e '.[hf]')"
    )
    out = run_example("language_model.py")
    assert "relative error" in out and "most order-sensitive training sequence" in out


def test_gpt2_small_records_a_124m_parameter_run_that_the_checks_can_open(tmp_path):
    pytest.importorskip(
        "transformers", reason="transformers is not installed (pip install -e '.[hf]')"
    )
    run = tmp_path / "gpt2"
    flags = ["--steps", "2", "--warmup", "1", "--save-every", "2"]
    out = run_example("gpt2_small.py", "--run-dir", str(run), *flags)
    assert "GPT-2 small: 124,439,808 parameters" in out and "step 2: loss" in out
    from perturbative.pipeline.recorded_run import open_recorded_checkpoint, read_run, run_task

    run_json = read_run(run)
    assert run_json["max_grad_norm"] == 1.0 and run_json["optimizer"] == "AdamW"
    at = open_recorded_checkpoint(run, 2, run_task(run), torch.float32)
    assert at.optimizer.state and next(at.model.parameters()).dtype == torch.float32
    # tied embeddings: the output layer is the token embedding
    assert at.model.lm_head.weight is at.model.transformer.wte.weight


@pytest.mark.slow
def test_tilted_diffusion(tmp_path):
    out = run_example("tilted_diffusion.py", str(tmp_path / "tilt"))
    assert "predicted -0.200" in out


def test_reference_summary_prints_every_readme_figure(tmp_path):
    from cases import TINY_RUN, TINY_SWEEP

    from perturbative.cli import main

    run = tmp_path / "run"
    assert main(["demo", *TINY_RUN, *TINY_SWEEP, "--run-dir", str(run)]) == 0
    full = run / "brackets-full"
    args = ["--only-steps", "0,4", "--ranking-examples", "100000", "--out", str(full)]
    args += ["--ranking-window", "0"]  # as docs/results/reference-experiment.md ranks the split
    assert main(["brackets", str(run), *TINY_SWEEP, *args]) == 0
    # a later sweep adds a step to the same folder: the earlier steps stay
    args[1] = "2"
    assert main(["brackets", str(run), *TINY_SWEEP, *args]) == 0
    out = run_example(
        "reference_summary.py", str(run), "--full-split", str(full), "--pair", "digit_0", "digit_1"
    )
    for expected in (
        "training:",
        "held-out mean attribute accuracy",
        "sweep (",
        "Pearson r =",
        "strongest co-moving pair",
        "digit_0 / digit_1: output-shift correlation",
        "| rank |",
        "whole training split ranked",
        "at 3 checkpoints, steps [0, 2, 4]",
        "over the 3 checkpoints whose time the sweep recorded",
        "GiB over 3 checkpoints",
        "step 4: |S| max",
    ):
        assert expected in out, (expected, out)


def test_own_loop_is_recorded_and_checked_from_the_command_line(tmp_path):
    pytest.importorskip(
        "transformers", reason="transformers is not installed (pip install -e '.[hf]')"
    )
    run = tmp_path / "own_loop"
    out = run_example("own_loop.py", "--run-dir", str(run), "--steps", "40", "--save-every", "20")
    assert "held-out next-token loss" in out
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "perturbative.cli",
            "order-check",
            str(run),
            "--checkpoints",
            "1",
            *("--logged-pairs", "3", "--example-pairs", "0", "--batch-pairs", "0"),
            *("--exchanges", "0", "--windows", "0", "--horizons", "0", "--lr-scales", "1"),
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "logged   h=0   pairs 3" in done.stdout and "sign acc" in done.stdout


def test_the_lstm_on_docstrings_is_recorded_and_phase_checked(tmp_path):
    run = tmp_path / "lstm"
    out = run_example(
        "lstm_docstrings.py", "--run-dir", str(run), "--steps", "20", "--save-every", "10"
    )
    assert "held-out next-character loss" in out and "training sequences (" in out
    out_dir = tmp_path / "check"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "perturbative.cli", "phase-check", str(run)),
            *("--steps", "10", "--ks", "1", "--sources", "3", "--triples", "0"),
            *("--expansion-up-to", "0", "--heldout-examples", "16", "--out-dir", str(out_dir)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "anchored" in done.stdout and "most right here at k=1:" in done.stdout


def test_the_vision_transformer_on_celeba_is_recorded_and_phase_checked(tmp_path):
    from cases import SHARED_CELEBA

    if not SHARED_CELEBA.is_dir():
        pytest.skip(f"CelebA subset not found at {SHARED_CELEBA}")
    run = tmp_path / "vit"
    flags = ["--run-dir", str(run), "--steps", "20", "--save-every", "10"]
    out = run_example("vit_celeba.py", "--celeba", str(SHARED_CELEBA), *flags)
    assert "training faces (Male " in out and "held-out loss" in out
    done = subprocess.run(
        [
            *(sys.executable, "-m", "perturbative.cli", "phase-check", str(run)),
            *("--steps", "10", "--ks", "1", "--sources", "3", "--triples", "0"),
            *("--expansion-up-to", "0", "--heldout-examples", "16"),
            *("--out-dir", str(tmp_path / "check")),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1", PERTURBATIVE_CELEBA=str(SHARED_CELEBA)),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "anchored-cycle" in done.stdout and "most right here at k=1:" in done.stdout

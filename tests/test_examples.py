"""The examples run and assert what they show (each in a fresh interpreter, one thread)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.slow
def test_tilted_diffusion(tmp_path):
    out = run_example("tilted_diffusion.py", str(tmp_path / "tilt"))
    assert "predicted -0.200" in out

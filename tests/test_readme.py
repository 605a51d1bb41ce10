"""Every python block of the README runs as written, in a fresh interpreter, injecting nothing;
the README stays a front page (at most about 200 lines) with its install section."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_block_runs_as_written(index, tmp_path):
    script = tmp_path / f"readme_block_{index}.py"
    script.write_text(python_blocks()[index])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore::UserWarning")
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]


def test_readme_is_a_front_page():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert headings[:3] == ["Install", "Quickstart: your model, your optimizer", "Tilted training"]
    install = text.split("## Install", 1)[1].split("\n## ", 1)[0]
    assert "python3 dev.py demo" in install and "python3 dev.py test" in install
    assert 'pip install ".[experiments]"' in install
    assert "## What we measured" in text and "docs/results/" in text

"""The documentation site builds with ``mkdocs build --strict`` (a broken reference fails), and
its API reference has a section for every public name of ``perturbative``."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import perturbative as pt

ROOT = Path(__file__).resolve().parents[1]


def test_the_site_builds_strictly_with_every_public_name(tmp_path):
    pytest.importorskip(
        "mkdocstrings", reason="the docs extra is not installed: pip install '.[docs]'"
    )
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    pages = "".join(p.read_text() for p in (tmp_path / "site" / "reference").rglob("*.html"))
    documented = set(re.findall(r'id="perturbative\.[\w.]*?(\w+)"', pages))
    missing = sorted(set(pt.__all__) - documented)
    assert not missing, f"no reference section for {missing}"

"""The documentation site builds with ``mkdocs build --strict`` and prints no WARNING (a broken
reference or a docstring griffe cannot read fails), and its API reference has a section for every
public name of ``perturbative``."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import perturbative as pt

ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# A log record at WARNING level, not a word such as NO_MKDOCS_2_WARNING inside another message.
WARNING = re.compile(r"\bWARNING\b")


def test_the_site_builds_strictly_with_every_public_name(tmp_path):
    pytest.importorskip(
        "mkdocstrings", reason="the docs extra is not installed: pip install '.[docs]'"
    )
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    output = ANSI.sub("", done.stdout + done.stderr)
    warnings = [line for line in output.splitlines() if WARNING.search(line)]
    assert not warnings, "mkdocs printed warnings:\n" + "\n".join(warnings)
    assert done.returncode == 0, output[-6000:]
    pages = "".join(p.read_text() for p in (tmp_path / "site" / "reference").rglob("*.html"))
    documented = set(re.findall(r'id="perturbative\.[\w.]*?(\w+)"', pages))
    missing = sorted(set(pt.__all__) - documented)
    assert not missing, f"no reference section for {missing}"

"""Set up a local environment and run the demo or the tests.

    python3 dev.py demo    # train -> brackets -> report on the embedded digits data
    python3 dev.py test    # ruff, then the test suite
    python3 dev.py grab    # GraB's sampler for benchmarks/ordering.py (not needed otherwise)

Creates ``.venv`` beside this file on first use (CPU torch from the local wheel
cache when available) and reinstalls only when ``pyproject.toml`` changes.
Extra arguments are passed on: ``python3 dev.py test -k bracket``,
``python3 dev.py demo --steps 200``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
STAMP = VENV / ".perturbative-install"
TORCH = "torch==2.13.0"  # the CPU build; any torch>=2.3 works if you install it yourself
GRAB = "grab-sampler==0.1.3"


def _run(*args: str | Path) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], check=True)


def ensure_venv() -> None:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    if not PY.exists():
        print(f"creating {VENV.name}/ ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    has_torch = subprocess.run([str(PY), "-c", "import torch"], capture_output=True).returncode == 0
    if not has_torch:
        _run(PY, "-m", "pip", "install", "-q", TORCH)
    _run(PY, "-m", "pip", "install", "-q", "-e", f"{ROOT}[dev,hf,lightning,experiments,docs]")
    STAMP.write_text(digest)


def ensure_browser() -> None:
    """Install Debian's Chromium for the report's browser test when we may (root, apt)."""
    if shutil.which("chromium") or os.environ.get("PERTURBATIVE_NO_BROWSER_INSTALL"):
        return
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("apt-get"):
        print("chromium not found: the browser test of the report will be skipped", flush=True)
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=300)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env, timeout=600
        )
    except (subprocess.SubprocessError, OSError) as err:
        print(f"could not install chromium ({err}): the browser test will be skipped", flush=True)


def install_grab() -> None:
    """GraB's own sampler, for benchmarks/ordering.py. ``grab-sampler`` declares ``torch-sparse``,
    a compiled package with no wheel for this torch that only its sparse random projection
    imports (the benchmark does not use it): install the sampler without its dependencies and
    the ones it uses, pinned, so nothing replaces the installed torch."""
    _run(PY, "-m", "pip", "install", "-q", "-e", f"{ROOT}[grab]")
    _run(PY, "-m", "pip", "install", "-q", "--no-deps", GRAB)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "grab"}:
        print(__doc__)
        return 2
    ensure_venv()
    command, rest = argv[0], argv[1:]
    if command == "grab":
        install_grab()
        return 0
    if command == "demo":
        return subprocess.run([str(BIN / "perturbative"), "demo", *rest]).returncode
    ensure_browser()
    for check in (["format", "--check"], ["check"]):
        folders = ["src", "tests", "benchmarks", "examples"]
        code = subprocess.run([str(BIN / "ruff"), *check, *folders], cwd=ROOT).returncode
        if code:
            print("ruff failed: run .venv/bin/ruff format . && .venv/bin/ruff check --fix .")
            return code
    return subprocess.run([str(PY), "-m", "pytest", *rest], cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

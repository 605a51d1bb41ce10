"""Optional packages: the core imports without them, and what needs one says which extra to
install, in one line from the command line."""

import subprocess
import sys

import pytest

from perturbative._core.extras import MissingExtraError, require

BLOCK = "import sys\nfor m in ('matplotlib', 'sklearn', 'PIL'):\n    sys.modules[m] = None\n"


def test_require_names_the_extra_of_a_missing_package(monkeypatch):
    for name in ("matplotlib", "matplotlib.figure"):  # as if never installed, even if imported
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingExtraError, match=r"needs matplotlib.*perturbative\[experiments\]"):
        require("matplotlib.figure", "the report")
    assert require("json", "anything").dumps([]) == "[]"


def test_the_core_imports_and_predicts_without_the_experiments_extra():
    code = BLOCK + "import perturbative as pt\nprint(pt.predict_swap.__name__)\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "predict_swap", done.stderr


def test_the_command_line_says_which_extra_to_install(tmp_path):
    code = BLOCK + (
        "from perturbative.cli import main\n"
        f"sys.exit(main(['demo', '--run-dir', {str(tmp_path / 'run')!r}, '--threads', '1']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'perturbative[experiments]'" in lines[0], lines

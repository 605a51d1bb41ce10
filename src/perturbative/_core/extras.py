"""Optional dependencies: the packages of the ``experiments`` extra, imported where used.

The core library (brackets, predictions, tilted training, sweeps into files) needs torch, numpy,
safetensors and tqdm only. The command line's experiments, the report and the data sets also
need matplotlib, scikit-learn and pillow, installed by ``pip install "perturbative[experiments]"``
(from a clone: ``pip install ".[experiments]"``). :func:`require` imports one of them and, when
it is missing, raises :class:`MissingExtraError` saying which extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRA = "experiments"

# import name -> the package on the package index
PACKAGES = {"matplotlib": "matplotlib", "sklearn": "scikit-learn", "PIL": "pillow"}


class MissingExtraError(ImportError):
    """An optional package is not installed; the message names the extra that installs it."""


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` (e.g. ``"matplotlib.figure"``), needed for ``what``.

    Raises:
        MissingExtraError: the module's package is not installed.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        top = module.split(".")[0]
        if (error.name or "").split(".")[0] != top:
            raise  # something the package itself imports is missing: its own error says what
        package = PACKAGES.get(top, top)
        raise MissingExtraError(
            f"{what} needs {package}, which is not installed: pip install "
            f"'perturbative[{EXTRA}]' (from a clone: pip install '.[{EXTRA}]')"
        ) from None

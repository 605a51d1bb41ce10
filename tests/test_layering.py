"""The package's layering, as ``docs/architecture.md`` draws it, enforced on the source.

* Lower layers never import higher ones, and packages of one layer never import each other:
  ``_core`` <- ``models``, ``data`` <- ``brackets``, ``tilt``, ``reference`` <- ``pipeline``,
  ``demos`` <- ``report`` <- ``cli``; only ``perturbative/__init__.py`` sees everything.
* An underscore name never leaves its module; an underscore module is imported only inside its
  own package (``_core`` is the private core every package builds on).
* No function shadows a submodule (``perturbative.brackets.bracket`` is a function because no
  module has that name).
* Every module has a test module mirroring its path: ``src/perturbative/brackets/_hvp.py`` ->
  ``tests/brackets/test_hvp*.py``.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import types
from pathlib import Path

import pytest

import perturbative

SRC = Path(perturbative.__file__).resolve().parent
TESTS = Path(__file__).resolve().parent
LAYERS = {
    "_core": 0,
    "models": 1,
    "data": 1,
    "brackets": 2,
    "tilt": 2,
    "reference": 2,
    "pipeline": 3,
    "demos": 3,
    "report": 4,
    "integrations": 4,
    "cli": 5,
}
# Modules whose behaviour is covered by the named test module instead of one of their own.
TESTED_ELSEWHERE = {
    "_core/errors.py": "cli/test_*.py (bad input prints one line, exit 2)",
    "cli/_flags.py": "cli/test_*.py (every subcommand parses through it)",
    "cli/__main__.py": "_core/test_distributed.py (torchrun -m perturbative.cli brackets)",
}


def source_files() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """``(module, imported names, line)`` of every ``perturbative`` import in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "perturbative":
                found.append((node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "perturbative":
                    found.append((alias.name, [], node.lineno))
    return found


def package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


@pytest.mark.parametrize("path", source_files(), ids=lambda p: str(p.relative_to(SRC)))
def test_lower_layers_never_import_higher_ones(path):
    own = package_of(module_name(path))
    if own is None:  # perturbative/__init__.py: the public API sees everything
        return
    for target, names, line in imports(path):
        other = package_of(target)
        if other is None:  # `from perturbative import x`: the top level
            pytest.fail(
                f"{path.name}:{line} imports the top-level package; import {names} "
                "from the package that defines it"
            )
        if other == own:
            continue
        assert LAYERS[other] < LAYERS[own], (
            f"{path.relative_to(SRC)}:{line} ({own}, layer {LAYERS[own]}) imports {target} "
            f"({other}, layer {LAYERS[other]})"
        )


# What a layer may read of a lower package, where it may not read all of it (docs/architecture.md)
READS_ONLY = {
    ("report", "pipeline"): {
        "perturbative.pipeline.results",
        "perturbative.pipeline.order_records",
        "perturbative.pipeline.phase_records",
        "perturbative.pipeline.recorded_records",
        "perturbative.pipeline.config",
    }
}


@pytest.mark.parametrize("path", source_files(), ids=lambda p: str(p.relative_to(SRC)))
def test_the_report_reads_pipeline_files_and_configs_only(path):
    own = package_of(module_name(path))
    for target, _, line in imports(path):
        allowed = READS_ONLY.get((own, package_of(target)))
        assert allowed is None or target in allowed, (
            f"{path.relative_to(SRC)}:{line} imports {target}; {own} may read only {allowed}"
        )


def all_files() -> list[Path]:
    return source_files() + sorted(TESTS.rglob("*.py"))


@pytest.mark.parametrize("path", all_files(), ids=lambda p: p.name)
def test_no_underscore_name_crosses_a_module(path):
    own = module_name(path) if path.is_relative_to(SRC) else None
    for target, names, line in imports(path):
        private = [n for n in names if n.startswith("_")]
        assert not private, f"{path.name}:{line} imports private names {private} from {target}"
        parts = target.split(".")
        for depth, part in enumerate(parts[2:], start=2):
            if part.startswith("_") and own is not None:
                package = ".".join(parts[:depth])
                assert own.startswith(package), (
                    f"{path.name}:{line} imports {target}, a private module of {package}"
                )
    if own is None:
        return
    tree = ast.parse(path.read_text())
    aliases = {
        a.asname or a.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for a in node.names
        if a.name.startswith("perturbative")
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in aliases and not node.attr.startswith("__"):
                pytest.fail(f"{path.name}:{node.lineno} reads the private name {node.attr}")


def test_private_core_is_imported_by_any_package():
    """``_core`` is the one private package others may import: it is their shared plumbing."""
    users = {
        package_of(module_name(p))
        for p in source_files()
        for target, _, _ in imports(p)
        if target.startswith("perturbative._core")
    }
    assert {"brackets", "tilt", "pipeline"} <= users


def packages() -> list[types.ModuleType]:
    found = [perturbative]
    for info in pkgutil.walk_packages(perturbative.__path__, "perturbative."):
        if info.ispkg:
            found.append(importlib.import_module(info.name))
    return found


@pytest.mark.parametrize("package", packages(), ids=lambda m: m.__name__)
def test_no_function_shadows_a_submodule(package):
    for info in pkgutil.iter_modules(package.__path__):
        if hasattr(package, info.name):
            value = getattr(package, info.name)
            assert isinstance(value, types.ModuleType), (
                f"{package.__name__}.{info.name} is a {type(value).__name__}, shadowing the "
                f"module {package.__name__}.{info.name}"
            )


@pytest.mark.parametrize(
    "path",
    [p for p in source_files() if p.name != "__init__.py"],
    ids=lambda p: str(p.relative_to(SRC)),
)
def test_every_module_has_a_test_module(path):
    relative = path.relative_to(SRC)
    if str(relative) in TESTED_ELSEWHERE:
        return
    name = relative.stem.lstrip("_")
    matches = list((TESTS / relative.parent).glob(f"test_{name}*.py"))
    assert matches, f"no tests/{relative.parent}/test_{name}*.py for {relative}"

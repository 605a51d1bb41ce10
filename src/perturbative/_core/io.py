"""Files written whole or not at all: every file the package writes goes through here.

A writer fills a temporary file beside the target and moves it into place with ``os.replace``, so
a reader sees the old file or the new one, never half of one, and a failed write leaves the old
file untouched.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import Tensor


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it into place.

    A reader sees the old file or the new one, never half of one; on any error the temporary
    file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_tensors(path: str | os.PathLike, tensors: dict[str, Tensor], metadata=None) -> Path:
    """Save tensors (moved to the CPU, contiguous) as safetensors, atomically."""
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(cpu, tmp, metadata=metadata))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, value: Any, indent: int | None = 1) -> Path:
    """Write ``value`` atomically as strict JSON: ``NaN`` and infinities become ``null``."""
    return write_text(path, json.dumps(json_safe(value), indent=indent, allow_nan=False) + "\n")


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None``, so it is valid JSON."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def step_file(folder: str | os.PathLike, step: int) -> Path:
    """``<folder>/step_NNNNNN.safetensors``: the one name pattern of per-step files (checkpoints
    and sweep results alike), zero-padded to 6 digits so names sort by step."""
    return Path(folder) / f"step_{step:06d}.safetensors"


def list_step_files(folder: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of every per-step file in ``folder``, ascending by step."""
    found = []
    for path in Path(folder).glob("step_*.safetensors"):
        suffix = path.stem.removeprefix("step_")
        if suffix.isdigit():
            found.append((int(suffix), path))
    return sorted(found)

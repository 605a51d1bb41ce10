"""Files written whole or not at all: every file the package writes goes through here.

A writer fills a temporary file beside the target and moves it into place with ``os.replace``, so
a reader sees the old file or the new one, never half of one, and a failed write leaves the old
file untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from perturbative._core.errors import InputError


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
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a written file is a normal file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_tensors(path: str | os.PathLike, tensors: dict[str, Tensor], metadata=None) -> Path:
    """Save tensors (moved to the CPU, contiguous) as safetensors, atomically. Tensors that
    share memory (tied weights) are stored as copies: safetensors refuses shared storage."""
    cpu, seen = {}, set()
    for key, value in tensors.items():
        value = value.detach().to("cpu").contiguous()
        if value.numel() and value.untyped_storage().data_ptr() in seen:
            value = value.clone()
        seen.add(value.untyped_storage().data_ptr())
        cpu[key] = value
    return atomic_write(path, lambda tmp: save_file(cpu, tmp, metadata=metadata))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, value: Any, indent: int | None = 1) -> Path:
    """Write ``value`` atomically as strict JSON: ``NaN`` and infinities become ``null``."""
    return write_text(path, json.dumps(json_safe(value), indent=indent, allow_nan=False) + "\n")


def append_json_line(path: str | os.PathLike, value: Any, allow_nan: bool = False) -> None:
    """Add ``value`` to ``path`` as one JSON line, flushed before returning."""
    with Path(path).open("a") as handle:
        handle.write(json.dumps(value, allow_nan=allow_nan) + "\n")


def read_json_lines(path: str | os.PathLike) -> list[Any]:
    """The value of each line of ``path`` (none if it is missing); a line still being written,
    or cut short when its writer stopped, is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    values = []
    for line in path.read_text().splitlines():
        try:
            values.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return values


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


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, hex: the identity of a checkpoint's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def tensors_sha256(*tensors: Tensor | None) -> str:
    """The SHA-256 of tensors' shapes, dtypes and values, hex (``None`` entries count too)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        if tensor is None:
            digest.update(b"none")
            continue
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{tuple(t.shape)}{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@contextmanager
def folder_lock(folder: str | os.PathLike, what: str) -> Iterator[Path]:
    """Hold ``<folder>/.lock`` while ``what`` writes there, so a second writer is refused.

    A lock left by a process that no longer runs on this host is taken over.

    Raises:
        InputError: another live process holds the lock (the message names it).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / ".lock"
    me = {"pid": os.getpid(), "host": socket.gethostname(), "what": what, "since": time.time()}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holder = _lock_holder(lock)
            if holder is None:
                lock.unlink(missing_ok=True)  # left by a process that is gone
                continue
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
            raise InputError(
                f"{folder} is in use by {holder.get('what', 'another job')} (pid "
                f"{holder.get('pid')} on {holder.get('host')}, since {started}); wait for it to "
                f"finish, or delete {lock} if that process is gone"
            ) from None
        with os.fdopen(fd, "w") as handle:
            json.dump(me, handle)
        break
    else:  # a stale lock was taken over, and another process took it first
        raise InputError(f"{folder} is in use by another job that started just now; try again")
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)


def _lock_holder(lock: Path) -> dict[str, Any] | None:
    """Who holds ``lock``, or ``None`` when it is stale (its process is gone from this host)."""
    try:
        holder = json.loads(lock.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {"pid": "?", "host": "?", "what": "a job whose lock file is unreadable"}
    if holder.get("host") != socket.gethostname():
        return holder
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return None
    except (PermissionError, KeyError, ValueError, TypeError):
        return holder
    return holder

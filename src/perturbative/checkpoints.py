"""Training checkpoints as single safetensors files: atomic writes, no code executed on load.

A checkpoint file holds tensors under prefixed keys and one metadata entry, ``perturbative``,
with a JSON object of everything else:

* ``model/<name>``: the model's ``state_dict()`` (parameters and buffers);
* ``optimizer/<param index>/<key>``: the tensors of ``optimizer.state_dict()["state"]``; its
  non-tensor entries go to the JSON as ``optimizer_scalars`` and its param groups as
  ``optimizer_param_groups``;
* ``rng/torch``: ``torch.get_rng_state()``;
* JSON: ``format_version``, ``step`` and whatever the writer adds (config, sampler position).

Files are named ``<run_dir>/checkpoints/step_NNNNNN.safetensors`` (zero-padded to 6 digits) and
written to a temporary file in the same folder, then moved into place with ``os.replace``, so a
reader never sees half a checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

CHECKPOINT_FORMAT_VERSION = 1


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    """``<run_dir>/checkpoints/step_NNNNNN.safetensors``."""
    return Path(run_dir) / "checkpoints" / f"step_{step:06d}.safetensors"


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of every checkpoint of a run, ascending by step."""
    found = []
    for path in (Path(run_dir) / "checkpoints").glob("step_*.safetensors"):
        suffix = path.stem.removeprefix("step_")
        if suffix.isdigit():
            found.append((int(suffix), path))
    return sorted(found)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it into place.

    A reader sees the old file or the new one, never half of one; on any error the temporary
    file is removed and ``path`` is untouched. Used for checkpoints, metrics and sweep results.
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


def save_checkpoint(path: Path, tensors: dict[str, Tensor], info: dict[str, Any]) -> None:
    """Write tensors and a JSON-ready ``info`` dict atomically (temporary file, ``os.replace``).

    Raises:
        Whatever the write raises; the temporary file is removed and ``path`` is untouched.
    """
    info = {"format_version": CHECKPOINT_FORMAT_VERSION, **info}
    save_tensors(path, tensors, metadata={"perturbative": json.dumps(info)})


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(tensors, info)`` of a file written by :func:`save_checkpoint`.

    Raises:
        ValueError: if the file has no ``perturbative`` metadata or another format version.
    """
    path = Path(path)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        if "perturbative" not in metadata:
            raise ValueError(f"{path} is not a checkpoint written by perturbative train")
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    info = json.loads(metadata["perturbative"])
    if info.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format {info.get('format_version')}; this version of "
            f"perturbative reads format {CHECKPOINT_FORMAT_VERSION}"
        )
    return tensors, info


def pack_training_state(
    model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Model, optimizer and torch RNG state as ``(tensors, info)`` for :func:`save_checkpoint`."""
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    saved = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in saved["state"].items():
        for key, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer/{index}/{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    tensors["rng/torch"] = torch.get_rng_state()
    info = {"optimizer_scalars": scalars, "optimizer_param_groups": saved["param_groups"]}
    return tensors, info


def unpack_training_state(tensors: dict[str, Tensor], info: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`pack_training_state`.

    Returns:
        ``{"model": state dict, "optimizer": optimizer state dict, "rng_state": uint8 tensor}``.
    """
    model = {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            _, index, name = key.split("/", 2)
            state.setdefault(int(index), {})[name] = value
    for index, extra in info["optimizer_scalars"].items():
        state.setdefault(int(index), {}).update(extra)
    # JSON turns tuples into lists; Adam's betas were a tuple
    groups = [
        {k: tuple(v) if k == "betas" else v for k, v in group.items()}
        for group in info["optimizer_param_groups"]
    ]
    return {
        "model": model,
        "optimizer": {"state": state, "param_groups": groups},
        "rng_state": tensors["rng/torch"],
    }

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

import copy
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor, nn

from perturbative._core.errors import InputError
from perturbative._core.io import list_step_files, save_tensors, step_file
from perturbative.pipeline.config import TrainConfig

CHECKPOINT_FORMAT_VERSION = 1


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    """``<run_dir>/checkpoints/step_NNNNNN.safetensors``."""
    return step_file(Path(run_dir) / "checkpoints", step)


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of every checkpoint of a run, ascending by step."""
    return list_step_files(Path(run_dir) / "checkpoints")


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
        FileNotFoundError: if there is no such file.
        InputError: if the file is damaged, has no ``perturbative`` metadata or another format
            version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise InputError(
            f"could not read checkpoint {path} ({error}): the file is truncated or damaged; "
            "delete it to resume from the checkpoint before it"
        ) from error
    if "perturbative" not in metadata:
        raise InputError(f"{path} is not a checkpoint written by perturbative train")
    info = json.loads(metadata["perturbative"])
    if info.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise InputError(
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


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`train` (safetensors: no code is executed).

    Returns:
        ``{"step", "config" (TrainConfig), "model" (state dict), "optimizer" (state dict for
        ``torch.optim.Adam.load_state_dict``), "sampler", "rng_state", "attribute_names",
        "num_outputs", "in_channels", "dataset", "loss_sum", "loss_count", "format_version"}``.

    Raises:
        InputError: if the file is damaged or not a perturbative checkpoint of this format.
    """
    tensors, info = read_checkpoint(path)
    keys = ("format_version", "step", "sampler", "attribute_names", "num_outputs", "in_channels")
    keys += ("dataset", "loss_sum", "loss_count")
    return {
        **{key: info[key] for key in keys},
        "config": TrainConfig.from_dict(info["config"]),
        **unpack_training_state(tensors, info),
    }


def copied_in(model, step, dtype: torch.dtype):
    """``(model, step)``: copies of a model and its :class:`~perturbative.TrainingStep` (the
    optimizer with its state) in ``dtype``, e.g. the float64 twin a float32 check measures its
    rounding floor against."""
    model, optimizer = copy.deepcopy((model, step.optimizer))
    model.to(dtype)
    cast_optimizer_state(optimizer, dtype)
    return model, dataclasses.replace(step, optimizer=optimizer)


def cast_optimizer_state(optimizer: torch.optim.Optimizer, dtype: torch.dtype) -> None:
    """Cast an optimizer's floating state tensors (not its step counts) to ``dtype``."""
    for values in optimizer.state.values():
        for key, value in values.items():
            if isinstance(value, Tensor) and value.is_floating_point() and key != "step":
                values[key] = value.to(dtype)

"""A recorded run on disk, opened for analysis: its ``run.json``, its order log (read
strictly: :func:`perturbative.pipeline.recorder.read_order_log`), and a checkpoint rebuilt with
the run's own training step.

:func:`open_recorded_checkpoint` rebuilds the model from the task's factory and the checkpoint's
weights, the optimizer of the recorded class from its param groups and state, and the loop's
step from them: a :class:`~perturbative.TrainingStep` with the run's clipping and each group's
logged lr at each step after the checkpoint. Every check of a recorded run starts here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from perturbative._core.errors import InputError
from perturbative.brackets import TrainingStep
from perturbative.pipeline.checkpoints import (
    cast_optimizer_state,
    list_checkpoints,
    read_checkpoint,
    unpack_training_state,
)
from perturbative.pipeline.config import is_training_run
from perturbative.pipeline.recorder import RECORDED_FORMAT, RUN_FILE, read_order_log
from perturbative.pipeline.run import training_task
from perturbative.pipeline.sweep import select_examples
from perturbative.pipeline.task import Task, load_task


def read_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``run.json`` of a recorded run.

    Raises:
        InputError: the folder holds no recorded run (the message says what it holds).
    """
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        if (Path(run_dir) / "config.json").is_file():
            raise InputError(
                f"{run_dir} is a run of `perturbative train` made before 0.4 (no {RUN_FILE}): "
                f"convert it with `perturbative upgrade {run_dir}` (writes {RUN_FILE} and "
                "order.jsonl from its config; the checkpoints are not touched)"
            )
        raise InputError(
            f"{run_dir} holds no run: neither a run of `perturbative train` nor one recorded by "
            f"perturbative.Recorder (no {RUN_FILE}); check the path"
        )
    run = json.loads(path.read_text())
    if run.get("format") != RECORDED_FORMAT:
        raise InputError(f"{path} is not a perturbative recorded run")
    return run


def run_task(
    run_dir: str | os.PathLike, task: str | Task | None = None, data_root: str | None = None
) -> Task:
    """The run's task: ``task`` if given (a :class:`Task` or ``"module:attribute"``), else the
    one ``run.json`` names (a run of ``perturbative train``: its own, with its CelebA data at
    ``data_root`` if that has moved).

    Raises:
        InputError: no task given and none recorded, it cannot be imported, or ``data_root``
            for a run not made by ``perturbative train``.
    """
    if data_root is not None and not is_training_run(run_dir):
        raise InputError(f"--celeba applies to runs of `perturbative train`, not {run_dir}")
    if isinstance(task, Task):
        return task
    if task is None and data_root is not None:
        return training_task(run_dir, data_root)
    spec = task or read_run(run_dir).get("task")
    if not spec:
        raise InputError(
            f"{run_dir} names no task: pass --task module:attribute (a perturbative.Task)"
        )
    return load_task(spec, search=Path(run_dir).resolve().parent, run_dir=run_dir)


@dataclass
class RecordedCheckpoint:
    """A recorded checkpoint, rebuilt: the model and optimizer in the run's state at ``step``,
    and the loop's training step from there (clipping, each group's logged lr per step)."""

    step: int
    model: nn.Module
    optimizer: torch.optim.Optimizer
    next_steps: list[dict]  # the order log from step + 1 on, the steps a scaler skipped left out
    training: TrainingStep


def open_recorded_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    task: Task,
    dtype: torch.dtype = torch.float64,
    log: list[dict] | None = None,
    checkpoint: tuple[dict, dict] | None = None,
    device: torch.device | str = "cpu",
) -> RecordedCheckpoint:
    """Rebuild the model (``task.model()`` plus the checkpoint's weights) and the optimizer of
    the recorded class (its param groups and state) at ``step``, in ``dtype`` on ``device``.

    Args:
        log: the run's order log, if already read (:func:`read_order_log`).
        checkpoint: ``(tensors, info)`` of the checkpoint file, if already read.
        device: where the model and the optimizer's state go (:func:`analysis_device`).

    Raises:
        InputError: no such checkpoint, a model whose names or shapes do not match the
            checkpoint, or an optimizer class torch does not have.
    """
    paths = dict(list_checkpoints(run_dir))
    if step not in paths:
        raise InputError(f"{run_dir} has no checkpoint at step {step}; it has {sorted(paths)}")
    run = read_run(run_dir)
    tensors, info = read_checkpoint(paths[step]) if checkpoint is None else checkpoint
    model, optimizer = rebuild(run, tensors, info, task, dtype, device)
    log = read_order_log(run_dir) if log is None else log
    later = steps_after(log, step)
    return RecordedCheckpoint(step, model, optimizer, later, loop_step(optimizer, run, later, log))


def analysis_device(run: dict, wanted: str | None = None) -> torch.device:
    """Where an analysis of a recorded run runs: ``wanted`` ("cpu", "cuda", "cuda:1"), else
    where the run trained (``run.json``'s ``device``) when that device is here, else the CPU.

    Raises:
        InputError: ``wanted`` names a device this machine does not have.
    """
    if wanted is not None:
        try:
            device = torch.device(wanted)
        except RuntimeError as error:
            raise InputError(f"--device {wanted!r} is not a device torch knows ({error})") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InputError(
                f"--device {wanted}: this machine has no CUDA device; use --device cpu"
            )
        if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
            raise InputError(
                f"--device {wanted}: this machine has {torch.cuda.device_count()} CUDA devices"
            )
        return device
    trained = str(run.get("device") or "cpu")
    if trained.startswith("cuda") and torch.cuda.is_available():
        return torch.device(trained)
    return torch.device("cpu")


def steps_after(log: list[dict], step: int) -> list[dict]:
    """The logged steps the loop took after checkpoint ``step``, in order: a step its gradient
    scaler skipped moved nothing and is left out."""
    return [r for r in log if r["step"] > step and not r.get("skipped")]


def lr_never_changed(run: dict, log: list[dict]) -> bool:
    """Whether the run's lr held still: no scheduler recorded, and every logged step at the
    first step's lrs (its lr then holds past the log's end too)."""
    return bool(log) and run.get("scheduler") is None and all(r["lr"] == log[0]["lr"] for r in log)


def refuse_batchnorm_flags(run: dict, run_dir: str | os.PathLike, flags: list[str]) -> None:
    """How BatchNorm is met (``flags``, the options set) applies only to a run that trained
    some on batch statistics (``run.json``'s ``model_mode``)."""
    if flags and not (run.get("model_mode") or {}).get("batch_statistics"):
        named = ", ".join("--" + name.replace("_", "-") for name in flags)
        verb, them = ("applies", "it") if len(flags) == 1 else ("apply", "them")
        raise InputError(
            f"{named} {verb} to runs whose BatchNorm trained on batch statistics; {run_dir} "
            f"recorded none: leave {them} out"
        )


def loop_step(
    optimizer: torch.optim.Optimizer,
    run: dict,
    later: list[dict],
    log: list[dict] | None = None,
) -> TrainingStep:
    """The loop's training step from a rebuilt optimizer: the run's clipping, and each of the
    ``later`` logged steps' lr per param group (:func:`steps_after`). A run whose lr never
    changed (no scheduler recorded, and every step of its whole ``log`` at the checkpoint's
    lrs) keeps that lr past the log's end too: its step holds no schedule, so a check may train
    more steps than the run logged after the checkpoint."""
    clip = run.get("max_grad_norm")
    current = [float(group["lr"]) for group in optimizer.param_groups]
    if lr_never_changed(run, log or []) and log[0]["lr"] == current:
        return TrainingStep(optimizer, clip)
    return TrainingStep(optimizer, clip, rates=[r["lr"] for r in later])


def _param_names(run: dict, info: dict, model: nn.Module) -> list[list[str]]:
    """Each optimizer group's parameter names: the checkpoint's, else (a run of ``train`` made
    before 0.4, converted by ``perturbative upgrade``: one group over ``model.parameters()``)
    the model's own, in order."""
    if "optimizer_param_names" in info:
        return info["optimizer_param_names"]
    if (
        run.get("loop", {}).get("made_by") == "perturbative train"
        and len(info["optimizer_param_groups"]) == 1
    ):
        return [[name for name, _ in model.named_parameters()]]
    raise InputError(
        f"the checkpoint at step {info['step']} does not name the parameters its optimizer "
        "updates: it was not written by perturbative.Recorder"
    )


def model_weights(tensors: dict[str, Tensor], model: nn.Module) -> tuple[dict, str]:
    """The checkpoint's model tensors named as ``model`` names them, and the wrapper prefix
    taken off (:func:`_wrapper_prefix`)."""
    weights = {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
    prefix = wrapper_prefix(set(weights), set(model.state_dict()))
    return {k.removeprefix(prefix): v for k, v in weights.items() if k.startswith(prefix)}, prefix


def rebuild(
    run: dict,
    tensors: dict,
    info: dict,
    task: Task,
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
):
    """``(model, optimizer)`` of a read checkpoint: the task's model with the weights (in eval
    mode, but for the BatchNorm layers that trained on batch statistics: :func:`as_it_trained`),
    the recorded optimizer class over its groups (by parameter name) with its state, in
    ``dtype`` on ``device`` (the optimizer's state follows its parameters there)."""
    model = task.model()
    weights, prefix = model_weights(tensors, model)
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        first = str(error).splitlines()[0] if str(error) else "mismatch"
        raise InputError(
            f"the task's model does not match the checkpoint at step {info['step']} ({first}): "
            "the task builds another architecture than the one recorded"
        ) from None
    model.to(device=device, dtype=dtype).eval()
    as_it_trained(model, run, prefix)
    kind = getattr(torch.optim, run["optimizer"], None)
    if kind is None:
        raise InputError(f"the run's optimizer {run['optimizer']} is not a torch.optim class")
    by_name = dict(model.named_parameters())
    names = [[n.removeprefix(prefix) for n in group] for group in _param_names(run, info, model)]
    missing = sorted({n for group in names for n in group} - set(by_name))
    if missing:
        raise InputError(
            f"the checkpoint's optimizer updates {missing[:3]}, which the task's model lacks"
        )
    optimizer = kind(
        [
            {**{k: v for k, v in g.items() if k != "params"}, "params": [by_name[n] for n in group]}
            for g, group in zip(info["optimizer_param_groups"], names, strict=True)
        ]
    )
    optimizer.load_state_dict(unpack_training_state(tensors, info)["optimizer"])
    cast_optimizer_state(optimizer, dtype)
    return model, optimizer


def batch_statistics(run_dir: str | os.PathLike) -> list[str]:
    """The BatchNorm layers the run trained on batch statistics (``run.json``'s
    ``model_mode``; none for a folder holding no recorded run)."""
    if not (Path(run_dir) / RUN_FILE).is_file():
        return []
    return (read_run(run_dir).get("model_mode") or {}).get("batch_statistics") or []


def as_it_trained(model: nn.Module, run: dict, prefix: str = "") -> nn.Module:
    """``model`` (in eval mode) with the BatchNorm layers that the run trained on batch
    statistics (``run.json``'s ``model_mode``) back in train mode: each batch the checks train
    or evaluate is normalised by its own statistics, as the loop normalised it. Dropout stays
    off (a run that trained with it is refused by the replay gate)."""
    recorded = (run.get("model_mode") or {}).get("batch_statistics") or []
    names = {name.removeprefix(prefix) for name in recorded}
    for name, module in model.named_modules():
        if name in names:
            module.train()
    return model


def batchnorm_statistics(model: nn.Module, task: Task, examples: int, seed: int) -> None:
    """Replace ``model``'s BatchNorm running statistics by those of ``examples`` of the task's
    training examples (drawn with ``seed``) at its current weights, in batches of 64
    (``torch.optim.swa_utils.update_bn``), and leave it in eval mode: the eval-mode network is
    then the one that trained, not one whose statistics lag its weights. Nothing happens for
    ``examples == 0``.

    Raises:
        InputError: the task's batches are keyword batches (their inputs are not one tensor).
    """
    if examples <= 0:
        return
    chosen = select_examples(range(len(task.train)), examples, seed + 2)
    batch = task.batch(chosen.tolist())
    if not isinstance(batch, tuple) or not isinstance(batch[0], Tensor):
        raise InputError(
            "recomputing BatchNorm statistics needs batches whose inputs are one tensor; use "
            "batchnorm='batch'"
        )
    dtype = next(model.parameters()).dtype
    inputs = batch[0].to(dtype)
    torch.optim.swa_utils.update_bn([inputs[i : i + 64] for i in range(0, len(inputs), 64)], model)
    model.eval()


def wrapper_prefix(recorded: set[str], wanted: set[str]) -> str:
    """The prefix the recorded names carry over the task model's (``"net."`` when the run
    trained a wrapper, a ``LightningModule`` holding the task's model as ``self.net``), or ""."""
    if recorded == wanted:
        return ""
    heads = {k.split(".", 1)[0] for k in recorded if "." in k}
    for head in heads:
        prefix = head + "."
        if {k.removeprefix(prefix) for k in recorded if k.startswith(prefix)} == wanted:
            return prefix
    return ""

"""Record any training loop into a run folder the instrument can read: :class:`Recorder`.

Call ``recorder.step(indices)`` at the end of each training step, after ``optimizer.step()`` and
``scheduler.step()``, with the dataset indices that step trained on. The folder it writes:

* ``run.json``: format and version, the task (``"module:attribute"``), the optimizer's class, the
  scheduler's class, the gradient-clipping norm, the save schedule, and (from the first step)
  how the model trains: ``model_mode`` with its train flag, the stochastic layers active in
  train mode (dropout: a :class:`StochasticTrainingWarning` says so when recording starts) and
  the BatchNorm layers that use batch statistics;
* ``order.jsonl``: one line per step, ``{"step", "indices", "lr"}`` (``lr`` per param group, the
  rate that step used, read by a hook when the optimizer's ``step()`` runs, so a loop may set
  its lr before the step or a scheduler after it; under DDP ``indices`` holds every rank's, rank
  by rank), with ``"micro"`` (micro-batch sizes under gradient accumulation) and ``"skipped"``
  (the optimizer's ``step()`` did not run: a gradient scaler skipped it) where they apply;
* ``checkpoints/step_NNNNNN.safetensors`` at the chosen steps (step 0 first): the model's
  parameters and buffers, the optimizer's state and param groups, the scheduler's state and the
  torch RNG state, written atomically (:mod:`perturbative.pipeline.checkpoints`' format).

A killed loop leaves every finished checkpoint readable; ``Recorder(..., resume=True)`` (after
restoring the model and optimizer with :meth:`Recorder.restore`) drops the log lines past the
last checkpoint and continues the log from there. Only rank 0 writes; a second recorder on the
same folder is refused while the first holds it.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from perturbative._core import checks
from perturbative._core.distributed import all_gather_objects, rank_and_world
from perturbative._core.errors import InputError
from perturbative._core.io import (
    folder_lock,
    read_json_lines,
    write_json,
    write_text,
)
from perturbative.pipeline.checkpoints import (
    checkpoint_path,
    list_checkpoints,
    pack_training_state,
    read_checkpoint,
    save_checkpoint,
    unpack_training_state,
)

RECORDED_FORMAT = "perturbative-recorded-run"
RECORDED_VERSION = 1
RUN_FILE = "run.json"
ORDER_LOG = "order.jsonl"


class StochasticTrainingWarning(UserWarning):
    """The recorded model trains with dropout or another stochastic layer active."""


def read_order_log(run_dir: str | os.PathLike) -> list[dict]:
    """The order log of a recorded run, every line checked: line ``n`` is step ``n``'s
    ``{"step": n, "indices": [...], "lr": [...]}``.

    A log that cannot be trusted is refused rather than read around: a line that is not JSON or
    lacks a field (a skipped line would make the next steps look like the ones trained after a
    checkpoint), a step out of sequence, a log that ends before the run's last checkpoint (cut
    short: the steps after it are unknown).

    Raises:
        InputError: naming the file and the first bad line, and what to do.
    """
    path = Path(run_dir) / ORDER_LOG
    if not path.is_file():
        raise InputError(f"{run_dir} has no {ORDER_LOG}: record the run with perturbative.Recorder")
    text = path.read_text()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    log: list[dict] = []
    for number, line in enumerate(lines, start=1):
        where = f"{path} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            cut = number == len(lines) and not text.endswith("\n")
            raise InputError(
                f"{where} is {'cut short' if cut else 'not valid JSON'} ({error.msg}): the order "
                f"log is {'truncated' if cut else 'corrupt'}, so the steps from {number} on are "
                "unknown; restore the log, or resume the recording from the last checkpoint "
                "(Recorder(..., resume=True) drops the lines past it)"
            ) from None
        fields = isinstance(record, dict) and {"step", "indices", "lr"} <= set(record)
        if not fields or not isinstance(record["indices"], list):
            raise InputError(f"{where} lacks step, indices or lr: the order log is corrupt")
        groups = len(log[0]["lr"]) if log else len(record["lr"])
        micro = record.get("micro")
        if (
            not isinstance(record["lr"], list)
            or len(record["lr"]) != groups
            or not isinstance(record.get("skipped", False), bool)
            or (micro is not None and sum(micro) != len(record["indices"]))
        ):
            raise InputError(
                f"{where} does not add up (an lr per param group, micro-batch sizes that sum to "
                "the step's indices, skipped true or false): the order log is corrupt"
            )
        if record["step"] != number:
            raise InputError(
                f"{where} is step {record['step']}, not {number}: the order log skips or repeats "
                "steps (two recorders on one folder, or an edited log)"
            )
        log.append(record)
    saved = [step for step, _ in list_checkpoints(run_dir)]
    if saved and saved[-1] > len(log):
        raise InputError(
            f"{path} ends at step {len(log)} but checkpoints go to step {saved[-1]}: the log is "
            "truncated, so the steps after it are unknown; restore the full log"
        )
    return log


def save_steps(schedule: int | Sequence[int] | str, last: int | None = None) -> Any:
    """A predicate ``step -> bool`` for a save schedule: every ``N`` steps (an int), these steps
    (a list), or ``"log"``: 1, 2, 5, 10, 20, 50, ... (and every power of ten times 1, 2, 5)."""
    if isinstance(schedule, bool):
        raise TypeError("save_at must be an int, a list of steps or 'log'")
    if isinstance(schedule, int):
        if schedule < 1:
            raise ValueError(f"save_at={schedule}: save every N >= 1 steps")
        return lambda step: step % schedule == 0
    if schedule == "log":

        def logarithmic(step: int) -> bool:
            if step < 1:
                return False
            power = 10 ** int(math.floor(math.log10(step)))
            return step in (power, 2 * power, 5 * power)

        return logarithmic
    if isinstance(schedule, str):
        raise ValueError(f"save_at={schedule!r}: use an int, a list of steps or 'log'")
    steps = {int(s) for s in schedule}
    return lambda step: step in steps


def run_file(
    optimizer: torch.optim.Optimizer,
    *,
    task: str | None,
    scheduler: Any = None,
    max_grad_norm: float | None = None,
    save_at: int | Sequence[int] | str = 100,
    world_size: int = 1,
    autocast: torch.dtype | None = None,
    grad_scaler: bool = False,
    device: torch.device | str = "cpu",
    loop: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The contents of ``run.json`` (see :class:`Recorder` for each field); ``model_mode`` is
    added at the first step."""
    return {
        "format": RECORDED_FORMAT,
        "version": RECORDED_VERSION,
        "task": task,
        "optimizer": type(optimizer).__name__,
        "optimizer_module": type(optimizer).__module__,
        "scheduler": None if scheduler is None else type(scheduler).__name__,
        "max_grad_norm": max_grad_norm,
        "save_at": save_at if isinstance(save_at, (int, str)) else list(save_at),
        "world_size": world_size,
        "autocast": None if autocast is None else str(autocast).removeprefix("torch."),
        "grad_scaler": grad_scaler,
        "device": str(device),
        "tf32": bool(torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32),
        "loop": loop or {},
    }


def model_mode(model: nn.Module) -> dict[str, Any]:
    """How ``model`` trains, in its current mode: its train flag, the stochastic layers active
    and the BatchNorm layers on batch statistics (``run.json``'s ``model_mode``)."""
    return {
        "training": bool(model.training),
        "stochastic": checks.train_mode_dropout(model),
        "batch_statistics": checks.train_mode_batchnorm(model),
    }


class Recorder:
    """Record a training loop's checkpoints and example order into ``run_dir``.

    Args:
        run_dir: the run folder (created).
        model: the model being trained.
        optimizer: its optimizer (any ``torch.optim`` optimizer; the predictions model SGD with
            momentum, Nesterov and weight decay, Adam and AdamW, and refuse others by name).
        task: the importable ``"module:attribute"`` of the run's :class:`~perturbative.Task`,
            stored so that commands can rebuild the run (``--task`` overrides it).
        scheduler: a learning-rate scheduler whose state is saved with each checkpoint.
        save_at: when to write a checkpoint: every ``N`` steps, a list of steps, or ``"log"``.
        max_grad_norm: the gradient-clipping norm the loop uses (recorded; ``None`` if none).
        resume: continue an existing folder (see :meth:`restore`) instead of refusing it.
        autocast: the dtype the loop's forward passes run in under ``torch.autocast``
            (``torch.bfloat16`` or ``torch.float16``; ``None``: none). The replay gate replays
            the run's own precision under it, so the rounding it allows is the run's.
        scaler: the loop's ``torch.amp.GradScaler``, if any (unscale before clipping,
            ``scaler.unscale_(optimizer)``, as torch's recipe says). A step whose
            ``optimizer.step()`` never ran (the scaler skipped it: infinite gradients) is logged
            as skipped and not replayed; the recorder sees that, and each step's lr, from a hook
            on the optimizer's ``step()``.
        checkpoint_info: ``() -> dict`` of JSON values saved into each checkpoint's metadata
            beside the recorder's own (a loop's sampler position, its config): what the loop
            needs to resume from a checkpoint, read back by :meth:`restore`'s caller with
            :func:`perturbative.pipeline.checkpoints.load_checkpoint`.
        loop: JSON facts about the loop that the checks cannot see, kept in ``run.json`` as
            ``"loop"`` (``perturbative train`` notes its tilt: a weighted loss the checks'
            mean loss does not model).

    Example:
        >>> recorder = Recorder("runs/mine", model, optimizer, task="my_tasks:task", save_at=50)
        ... # doctest: +SKIP
        >>> for indices, batch in loader:  # doctest: +SKIP
        ...     loss(model(batch)).backward(); optimizer.step(); recorder.step(indices)
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        task: str | None = None,
        scheduler: Any = None,
        save_at: int | Sequence[int] | str = 100,
        max_grad_norm: float | None = None,
        resume: bool = False,
        autocast: torch.dtype | None = None,
        scaler: Any = None,
        checkpoint_info: Callable[[], dict[str, Any]] | None = None,
        loop: dict[str, Any] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        # the torch optimizer a wrapper (accelerate's, Lightning's) holds: its class, groups,
        # state and step() are what the run is
        optimizer = _torch_optimizer(optimizer) or optimizer
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.checkpoint_info = checkpoint_info
        self.should_save = save_steps(save_at)
        self.rank, self.world = rank_and_world()
        self.step_count = 0
        self._exit = contextlib.ExitStack()
        self._lr = self._rates()  # the rates the next step will use, if no hook reports them
        # the rates the optimizer really stepped with, read when its step() runs: right whether
        # the loop sets its lr before the step (nanoGPT) or a scheduler after it; a step() that
        # never runs is a step the loop skipped (a gradient scaler's, on infinite gradients)
        self._stepped: list[list[float]] = []
        self._hooked = False
        if isinstance(optimizer, torch.optim.Optimizer):
            self._exit.callback(optimizer.register_step_pre_hook(self._on_step).remove)
        self._log = None
        self._noted = False  # the model's training mode, read at the first step
        self.scaler = scaler
        self._scale = self._current_scale()
        if self.rank != 0:
            return
        existing = (self.run_dir / RUN_FILE).is_file()
        if existing and not resume:
            raise InputError(
                f"{self.run_dir} already holds a recorded run: pass resume=True to continue it "
                "(after Recorder.restore), or choose another folder"
            )
        self._exit.enter_context(folder_lock(self.run_dir, "a Recorder"))
        if existing:
            self.step_count = self._resume_log()
            self._noted = "model_mode" in json.loads((self.run_dir / RUN_FILE).read_text())
            return
        write_text(self.run_dir / ORDER_LOG, "")
        self.save()  # step 0 first: a folder with run.json always has a checkpoint
        write_json(
            self.run_dir / RUN_FILE,
            run_file(
                optimizer,
                task=task,
                scheduler=scheduler,
                max_grad_norm=max_grad_norm,
                save_at=save_at,
                world_size=self.world,
                autocast=autocast,
                grad_scaler=scaler is not None,
                device=next(iter(model.parameters()), torch.zeros(0)).device,
                loop=loop,
            ),
        )

    def step(
        self,
        indices: Iterable[int] | Tensor,
        micro_batches: Sequence[Iterable[int] | Tensor] | None = None,
    ) -> None:
        """Log one training step's example indices and the lr it used; save a checkpoint when
        the schedule says so. Call it at the end of the step, after ``optimizer.step()`` and
        ``scheduler.step()``.

        Args:
            indices: the dataset indices the step trained on (every micro-batch's).
            micro_batches: under gradient accumulation, the indices of each micro-batch, in
                order (their concatenation is ``indices``), for a loop whose step is the mean
                of its micro-batches' mean losses: logged as their sizes, and replayed so.
        """
        own = [int(i) for i in (indices.tolist() if isinstance(indices, Tensor) else indices)]
        sizes = None
        if micro_batches is not None:
            parts = [
                [int(i) for i in (m.tolist() if isinstance(m, Tensor) else m)]
                for m in micro_batches
            ]
            if [i for part in parts for i in part] != own:
                raise ValueError(
                    "micro_batches must hold the step's indices in order: their concatenation "
                    "is indices"
                )
            sizes = [len(part) for part in parts]
            if self.world > 1:
                raise ValueError("micro_batches are not recorded under DDP yet: log each step once")
        taken, self._stepped = self._stepped, []
        if self._hooked:
            skipped, rates = not taken, (taken[-1] if taken else self._rates())
        else:  # no hook reached (a wrapper that hides the optimizer): the scaler tells, at the
            # price of reading its scale (a device sync) each step
            skipped, rates = self._skipped(), self._lr
        gathered = all_gather_objects(own) if self.world > 1 else [own]
        self.step_count += 1
        if self.rank != 0:
            return
        if not self._noted:
            self._note_mode()
        record = {
            "step": self.step_count,
            "indices": [i for rank in gathered for i in rank],
            "lr": rates,
        }
        self._lr = self._rates()
        if self.world > 1:
            record["rank_sizes"] = [len(rank) for rank in gathered]
        if sizes is not None and len(sizes) > 1:
            record["micro"] = sizes
        if skipped:
            record["skipped"] = True
        if self._log is None:  # held open: a line per step, flushed to the OS (a kill keeps it)
            self._log = self._exit.enter_context(open(self.run_dir / ORDER_LOG, "a"))
        self._log.write(json.dumps(record) + "\n")
        self._log.flush()
        if self.should_save(self.step_count):
            self.save()

    def save(self) -> Path | None:
        """Write the checkpoint of the current step now (rank 0; others return ``None``)."""
        if self.rank != 0:
            return None
        model = self.model.module if hasattr(self.model, "module") else self.model  # DDP
        tensors, info = pack_training_state(model, self.optimizer)
        if self.checkpoint_info is not None:
            info |= self.checkpoint_info()
        names = {id(p): name for name, p in model.named_parameters()}
        # the optimizer's param ids count through its groups in its own order: keep the names
        info["optimizer_param_names"] = [
            [names.get(id(p)) for p in group["params"]] for group in self.optimizer.param_groups
        ]
        info["step"] = self.step_count
        info["kind"] = RECORDED_FORMAT
        if self.scheduler is not None:
            info["scheduler"] = _json_ready(self.scheduler.state_dict())
        path = checkpoint_path(self.run_dir, self.step_count)
        save_checkpoint(path, tensors, info)
        return path

    def _note_mode(self) -> None:
        """Read how the model trains (at the first step, in the loop's own mode), write it into
        ``run.json`` and say so when it makes the run's steps random: dropout (or another
        stochastic layer) in train mode draws masks no replay or reordering can repeat."""
        model = self.model.module if hasattr(self.model, "module") else self.model
        mode = model_mode(model)
        run = json.loads((self.run_dir / RUN_FILE).read_text())
        write_json(self.run_dir / RUN_FILE, {**run, "model_mode": mode})
        self._noted = True
        if mode["stochastic"]:
            warnings.warn(
                f"recording a model that trains with {len(mode['stochastic'])} stochastic layers "
                f"active ({', '.join(mode['stochastic'][:3])}): each step draws random masks that "
                "no replay or reordering repeats, so order checks of this run will refuse (their "
                "replay gap is the masks'); train with dropout 0 (or model.eval() for those "
                "layers) to check order effects",
                StochasticTrainingWarning,
                stacklevel=3,
            )

    def _on_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._hooked = True
        self._stepped.append(self._rates())

    def _current_scale(self) -> float | None:
        if self.scaler is None or not self.scaler.is_enabled():
            return None
        return float(self.scaler.get_scale())

    def _skipped(self) -> bool:
        """Whether the scaler skipped the step just taken: it lowers its scale exactly when it
        found infinite gradients and did not step."""
        before, self._scale = self._scale, self._current_scale()
        return before is not None and self._scale is not None and self._scale < before

    def _rates(self) -> list[float]:
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def _resume_log(self) -> int:
        """Drop the log lines past the last checkpoint; return that checkpoint's step."""
        checkpoints = list_checkpoints(self.run_dir)
        if not checkpoints:
            raise InputError(f"{self.run_dir} has no checkpoint to resume from; record anew")
        last = checkpoints[-1][0]
        lines = [r for r in read_json_lines(self.run_dir / ORDER_LOG) if r["step"] <= last]
        write_text(self.run_dir / ORDER_LOG, "".join(json.dumps(r) + "\n" for r in lines))
        return last

    @staticmethod
    def restore(
        run_dir: str | os.PathLike,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any = None,
    ) -> int:
        """Load the last checkpoint of ``run_dir`` into ``model``, ``optimizer`` (and
        ``scheduler``) and torch's RNG; return its step, from which to continue the loop."""
        checkpoints = list_checkpoints(run_dir)
        if not checkpoints:
            raise InputError(f"{run_dir} has no checkpoint to restore")
        step, path = checkpoints[-1]
        tensors, info = read_checkpoint(path)
        state = unpack_training_state(tensors, info)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and "scheduler" in info:
            scheduler.load_state_dict(info["scheduler"])
        torch.set_rng_state(state["rng_state"])
        return step

    def close(self) -> None:
        """Release the folder (the lock); the files stay."""
        self._exit.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _torch_optimizer(optimizer: Any) -> torch.optim.Optimizer | None:
    """The ``torch.optim`` optimizer whose ``step()`` really runs: ``optimizer``, or the one a
    wrapper holds (accelerate's ``AcceleratedOptimizer.optimizer``, Lightning's
    ``LightningOptimizer._optimizer``)."""
    seen = 0
    while seen < 4:
        inner = getattr(optimizer, "optimizer", None) or getattr(optimizer, "_optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer):
            break
        optimizer, seen = inner, seen + 1
    return optimizer if isinstance(optimizer, torch.optim.Optimizer) else None


def watch_batches(batch_sampler: Any) -> collections.deque:
    """Make ``batch_sampler`` note each batch of indices it yields; return the queue they go to.

    The object gets a subclass of its own class whose ``__iter__`` appends every batch it
    yields (the same batches, in the same order, from the same random state): how the
    training-framework callbacks learn which examples a step trained on without touching the
    user's dataset."""
    if hasattr(batch_sampler, "_perturbative_batches"):
        return batch_sampler._perturbative_batches
    base = type(batch_sampler)

    def __iter__(self):  # noqa: N807 - the subclass's own iteration
        for batch in base.__iter__(self):
            self._perturbative_batches.append([int(i) for i in batch])
            yield batch

    batch_sampler.__class__ = type(f"Watched{base.__name__}", (base,), {"__iter__": __iter__})
    batch_sampler._perturbative_batches = collections.deque()
    return batch_sampler._perturbative_batches


def _json_ready(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return None  # a function (LambdaLR's lambdas) is code, rebuilt by the loop, not data

"""Any run's checkpoints -> the bracket sweep's results files, for the report.

One path for every run: a run of ``perturbative train`` and one recorded by
:class:`~perturbative.pipeline.recorder.Recorder` are both a :class:`perturbative.Task`
(:func:`perturbative.pipeline.recorded_run.run_task`) with checkpoints and an order log. The
sweep takes the model, loss and examples from the task, each checkpoint's lr from the log, and
ranks training examples by their order scores with the run's optimizer. The analysis itself is
:func:`perturbative.pipeline.sweep.bracket_sweep`; for a model and data outside any run, call
it directly (``examples/own_model.py``).
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from perturbative._core.errors import InputError
from perturbative._core.io import file_sha256
from perturbative.brackets import (
    UPDATE_RULES,
    Observable,
    adam_preconditioner,
    optimizer_order_scores,
)
from perturbative.pipeline.checkpoints import list_checkpoints, read_checkpoint
from perturbative.pipeline.config import (
    SweepOptions,
    SweepSettings,
    is_training_run,
    load_run_config,
)
from perturbative.pipeline.recorded_run import (
    analysis_device,
    loop_step,
    lr_never_changed,
    model_weights,
    read_run,
    rebuild,
    run_task,
    steps_after,
)
from perturbative.pipeline.recorder import read_order_log
from perturbative.pipeline.sweep import bracket_sweep, task_sweep_data
from perturbative.pipeline.task import Task, as_dtype


def sweep_run(
    run_dir: str | os.PathLike,
    options: SweepOptions | None = None,
    task: str | Task | None = None,
    data_root: str | None = None,
) -> Path:
    """The bracket sweep (:func:`perturbative.bracket_sweep`) at every checkpoint of a run, into
    ``RUN/brackets`` (or ``options.out_dir``), for the report.

    The test batch and the ranking pool are drawn from the task's held-out and training
    examples (their positions in each split are the indices recorded), tuples of tensors or
    keyword batches; the loss meets the task's own targets, and the report draws class indices
    in their class's cell (:func:`perturbative.pipeline.sweep.report_targets`). What the report
    shows of each example is the task's ``measure`` (default: the outputs), named by
    ``task.output_names``; examples are shown as the task's images, text snippets and tokens
    where it gives them. Each checkpoint's output shifts are at the lr the run took right after
    it. The ranking pool is ranked by :func:`perturbative.brackets.optimizer_order_scores` with
    the run's optimizer in its state at each checkpoint (``options.ranking_window`` of its
    next batches: the logged ones, past the log the task's ``batches_after`` where the lr is
    constant) where the predictions model that optimizer, by the plain bracket scores where
    ``ranking_window=0`` or they do not; a checkpoint with too few known batches after it is
    left unranked.

    Args:
        run_dir: the run's folder (made by ``perturbative train`` or recorded).
        options: what to sweep; default :class:`SweepOptions`.
        task: the run's task if not the one it names (a :class:`Task` or ``"module:attr"``).
        data_root: where a ``train`` run's CelebA data is now, if it has moved.

    Returns:
        The results directory (``docs/results-format.md``).

    Raises:
        InputError: the folder holds no run, or no checkpoint of a step asked for.
    """
    options = options or SweepOptions()
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    task = run_task(run_dir, task, data_root)
    log = read_order_log(run_dir)
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        raise InputError(f"{run_dir} has no checkpoints yet: train (or record) some steps first")
    # every checkpoint's identity, also of steps not swept now, so that results swept from
    # them earlier are checked, and kept, rather than taken for stale
    sources = {s: file_sha256(p) for s, p in checkpoints}
    if options.only_steps is not None:
        available = [s for s, _ in checkpoints]
        missing = sorted(set(options.only_steps) - set(available))
        if missing:
            raise InputError(
                f"{run_dir} has no checkpoint at step(s) {missing}; its checkpoints are at "
                f"steps {available}"
            )
        checkpoints = [(s, p) for s, p in checkpoints if s in options.only_steps]
    if options.preconditioner == "adam":
        checkpoints = [(s, p) for s, p in checkpoints if s > 0]
    trained = is_training_run(run_dir)
    config = load_run_config(run_dir, data_root) if trained else None
    # where the run trained when that device is here (a run of `train` records where its
    # "auto" put it), else the CPU; or where the options say
    device = analysis_device(run, options.device)
    model = task.model().to(device).eval()
    data = task_sweep_data(task, options, model)

    read = functools.lru_cache(maxsize=1)(read_checkpoint)  # weights, then the state: once
    paths = dict(checkpoints)

    def weights(path: Path):
        return lambda: model_weights(read(path)[0], model)[0]

    @functools.lru_cache(maxsize=1)  # the preconditioner, then the scores: rebuilt once
    def rebuilt_at(step: int, dtype: torch.dtype):
        rebuilt, optimizer = rebuild(run, *read(paths[step]), task, dtype, device)
        return rebuilt.eval(), optimizer  # the sweep's fields: BatchNorm on running statistics

    def opened(step: int, at_model: nn.Module):
        return rebuilt_at(step, next(at_model.parameters()).dtype)

    def adam_at(step: int, at_model: nn.Module):
        rebuilt, optimizer = opened(step, at_model)
        with warnings.catch_warnings():
            # zero second moments are weights no example's gradient reaches (an MXResNet's conv
            # taps that only ever see padding): P = 0 there changes no field
            warnings.simplefilter("ignore", RuntimeWarning)
            pre = adam_preconditioner(optimizer, dict(rebuilt.named_parameters()))
        by_name = dict(at_model.named_parameters())
        return {k: v.to(by_name[k]) for k, v in pre.items()}

    window = options.ranking_window
    modelled = getattr(torch.optim, run["optimizer"], None) in UPDATE_RULES

    def scores_at(step: int, at_model: nn.Module) -> Tensor | None:
        later = steps_after(log, step)[:window]
        batches = [r["indices"] for r in later]
        if len(batches) < window and lr_never_changed(run, log) and task.batches_after:
            # a constant lr: the batches the loop draws next, past the log
            batches = task.batches_after(step, window)
        if len(batches) < window:  # too few known steps after it to move examples across
            return None
        rebuilt, optimizer = opened(step, at_model)
        training = loop_step(optimizer, run, later, log)
        dtype = next(at_model.parameters()).dtype
        return optimizer_order_scores(
            rebuilt,
            task.loss_fn,
            training,
            as_dtype(data.ranking_data(), dtype, device),
            Observable.mean_loss(task.loss_fn, as_dtype(data.test_data(), dtype, device)),
            [as_dtype(task.batch(list(b)), dtype, device) for b in batches],
        ).scores

    optimizer_aware = window >= 2 and modelled and data.ranking_data() is not None
    settings = SweepSettings(
        # the schedule's largest (each checkpoint's shifts take its own); no steps, no lr
        lr=max((float(r["lr"][0]) for r in log), default=math.nan),
        bracket_examples=options.bracket_examples,
        dataset=config.dataset if config is not None else "recorded",
        observable=f"held-out mean loss of the {len(data.test_indices)}-example test batch",
        preconditioner=options.preconditioner,
        engine=options.engine,
        save_brackets=options.save_brackets,
    )
    out = Path(options.out_dir) if options.out_dir else run_dir / "brackets"
    # results inside the run folder are this run's: stale ones (a retrained run) are recomputed;
    # anywhere else they may be another run's, and are never overwritten
    inside = out.resolve().is_relative_to(run_dir.resolve())
    return bracket_sweep(
        model,
        task.loss_fn,
        [(s, weights(p)) for s, p in checkpoints],
        data,
        out,
        settings,
        preconditioner_at=adam_at if options.preconditioner == "adam" else None,
        sources=sources,
        replace_stale=inside,
        scores_at=scores_at if optimizer_aware else None,
        lr_at=lambda step: _lr_after(log, step),
        scores_model=(
            f"order scores with the run's {run['optimizer']} in its recorded state: an example "
            f"trained in the first rather than the last of the run's next {window} batches "
            f"(checkpoints with fewer than {window} known batches after them are not ranked)"
            if optimizer_aware
            else None
        ),
    )


def _lr_after(log: list[dict], step: int) -> float:
    """The first group's lr of the step the run took after checkpoint ``step`` (a step a
    gradient scaler skipped is not one; the last logged lr for the last checkpoint)."""
    after = steps_after(log, step)[:1] or log[-1:]
    return float(after[0]["lr"][0]) if after else math.nan

"""A recorded run's bracket sweep (any training loop, recorded by
:class:`~perturbative.pipeline.recorder.Recorder`): :func:`sweep_recorded_run` sweeps its
checkpoints for the report, ranking examples by their order scores with the run's optimizer.
Its order check is every run's, :func:`perturbative.pipeline.order_check.order_check`.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from perturbative._core.io import file_sha256
from perturbative.brackets import (
    UPDATE_RULES,
    Observable,
    adam_preconditioner,
    optimizer_order_scores,
)
from perturbative.pipeline.checkpoints import (
    list_checkpoints,
    read_checkpoint,
)
from perturbative.pipeline.config import SweepOptions, SweepSettings
from perturbative.pipeline.recorded_run import (
    loop_step,
    model_weights,
    read_run,
    rebuild,
    run_task,
    steps_after,
)
from perturbative.pipeline.recorder import read_order_log
from perturbative.pipeline.sweep import bracket_sweep, task_sweep_data
from perturbative.pipeline.task import Task, as_dtype


def sweep_recorded_run(
    run_dir: str | os.PathLike,
    options: SweepOptions | None = None,
    task: str | Task | None = None,
) -> Path:
    """The bracket sweep of a recorded run (:func:`perturbative.bracket_sweep`) at every
    checkpoint, into ``RUN/brackets`` (or ``options.out_dir``), for the report.

    The test batch and the ranking pool are drawn from the task's held-out and training
    examples, tuples of tensors or keyword batches; the loss meets the task's own targets, and
    the report draws class indices in their class's cell
    (:func:`perturbative.pipeline.sweep.report_targets`). What the report shows of each example
    is the task's ``measure`` (default: the outputs), named by ``task.output_names``; examples
    are shown as the task's text snippets and tokens where it gives them. The ranking pool is
    ranked by :func:`perturbative.brackets.optimizer_order_scores` with the run's optimizer at
    each checkpoint (``options.ranking_window`` of its logged batches), where the predictions
    model that optimizer; by the plain bracket scores otherwise.
    """
    options = options or SweepOptions()
    task = run_task(run_dir, task)
    run = read_run(run_dir)
    log = read_order_log(run_dir)
    checkpoints = list_checkpoints(run_dir)
    if options.only_steps is not None:
        checkpoints = [(s, p) for s, p in checkpoints if s in options.only_steps]
    if options.preconditioner == "adam":
        checkpoints = [(s, p) for s, p in checkpoints if s > 0]
    model = task.model().eval()
    data = task_sweep_data(task, options, model)

    read = functools.lru_cache(maxsize=1)(read_checkpoint)  # weights, then Adam's state: once

    def weights(path: Path):
        return lambda: model_weights(read(path)[0], model)[0]

    paths = dict(checkpoints)

    @functools.lru_cache(maxsize=1)  # the preconditioner, then the scores: rebuilt once
    def rebuilt_at(step: int, dtype: torch.dtype):
        model, optimizer = rebuild(run, *read(paths[step]), task, dtype)
        return model.eval(), optimizer  # the sweep's fields: BatchNorm on running statistics

    def opened(step: int, at_model: nn.Module):
        return rebuilt_at(step, next(at_model.parameters()).dtype)

    def adam_at(step: int, at_model: nn.Module):
        rebuilt, optimizer = opened(step, at_model)
        pre = adam_preconditioner(optimizer, dict(rebuilt.named_parameters()))
        by_name = dict(at_model.named_parameters())
        return {k: v.to(by_name[k]) for k, v in pre.items()}

    window = options.ranking_window
    modelled = getattr(torch.optim, run["optimizer"], None) in UPDATE_RULES

    def scores_at(step: int, at_model: nn.Module) -> Tensor | None:
        later = steps_after(log, step)[:window]
        if len(later) < window:  # too few logged steps after it to move examples across
            return None
        rebuilt, optimizer = opened(step, at_model)
        dtype = next(at_model.parameters()).dtype
        return optimizer_order_scores(
            rebuilt,
            task.loss_fn,
            loop_step(optimizer, run, later),
            data.ranking_data(),
            Observable.mean_loss(task.loss_fn, data.test_data()),
            [as_dtype(task.batch(r["indices"]), dtype) for r in later],
        ).scores

    optimizer_aware = window >= 2 and modelled and data.ranking_data() is not None
    settings = SweepSettings(
        # the schedule's largest (each step takes its own); a run of no steps has none
        lr=max((float(r["lr"][0]) for r in log), default=math.nan),
        bracket_examples=options.bracket_examples,
        dataset="recorded",
        observable=f"held-out mean loss of the {len(data.test_indices)}-example test batch",
        preconditioner=options.preconditioner,
        engine=options.engine,
        save_brackets=options.save_brackets,
    )
    out = Path(options.out_dir) if options.out_dir else Path(run_dir) / "brackets"
    return bracket_sweep(
        model,
        task.loss_fn,
        [(s, weights(p)) for s, p in checkpoints],
        data,
        out,
        settings,
        preconditioner_at=adam_at if options.preconditioner == "adam" else None,
        sources={s: file_sha256(p) for s, p in list_checkpoints(run_dir)},
        replace_stale=True,
        scores_at=scores_at if optimizer_aware else None,
        lr_at=lambda step: _lr_after(log, step),
        scores_model=(
            f"order scores with the run's {run['optimizer']} in its recorded state: an example "
            f"trained in the first rather than the last of the run's next {window} batches "
            f"(checkpoints with fewer than {window} logged steps after them are not ranked)"
            if optimizer_aware
            else None
        ),
    )


def _lr_after(log: list[dict], step: int) -> float:
    """The first group's lr of the step the run took after checkpoint ``step`` (the last
    logged lr for the last checkpoint)."""
    after = [r for r in log if r["step"] == step + 1] or log[-1:]
    return float(after[0]["lr"][0]) if after else math.nan

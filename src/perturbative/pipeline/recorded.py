"""A recorded run (any training loop, :class:`~perturbative.pipeline.recorder.Recorder`) opened
for analysis, and its order predictions checked against really reordering it.

:func:`open_recorded_checkpoint` rebuilds the model from the task's factory and the checkpoint's
weights, and the optimizer of the recorded class from its param groups and state.
:func:`check_recorded_run` then takes, at each chosen checkpoint, pairs of minibatches of the
run's own batches (the two the run trained next, and random pairs of later ones), predicts
``O(A then B) - O(B then A)`` with the run's optimizer, state and scheduled lr, trains both
orders on copies in float64 and compares, beside the baselines (a fair coin, larger gradient
first, the plain-SGD bracket that ignores the optimizer), and the order scores of single
training examples with the run's optimizer against really moving each of them.
:func:`sweep_recorded_run` sweeps its checkpoints for the report.
"""

from __future__ import annotations

import functools
import math
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from perturbative._core.errors import InputError
from perturbative._core.io import file_sha256, folder_lock, write_json
from perturbative.brackets import (
    UPDATE_RULES,
    Expansion,
    Observable,
    adam_preconditioner,
    best_order,
    moved_first_or_last,
    optimizer_order_scores,
    predict_swap,
    values_along_steps,
)
from perturbative.pipeline.checkpoints import (
    list_checkpoints,
    read_checkpoint,
)
from perturbative.pipeline.config import SweepOptions, SweepSettings
from perturbative.pipeline.partial import PartialCheck, partial_header
from perturbative.pipeline.recorded_records import (
    RECORDED_CHECK,
    RecordedCheck,
    RecordedPair,
    RecordedScore,
    RecordedWindow,
)
from perturbative.pipeline.recorded_records import summary as summary
from perturbative.pipeline.recorded_run import (
    RecordedCheckpoint as RecordedCheckpoint,
)
from perturbative.pipeline.recorded_run import (
    loop_step,
    model_weights,
    open_recorded_checkpoint,
    read_run,
    rebuild,
    run_task,
    steps_after,
)
from perturbative.pipeline.recorder import read_order_log
from perturbative.pipeline.replay import gate, replay_gap
from perturbative.pipeline.sweep import bracket_sweep, task_sweep_data
from perturbative.pipeline.task import Task, as_dtype

#: the finished pairs, windows and scores of an unfinished recorded check
PROGRESS = "recorded.progress.jsonl"


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


@dataclass
class RecordedCheckOptions:
    """How :func:`check_recorded_run` checks order predictions on a recorded run.

    Attributes:
        checkpoints: how many checkpoints after step 0, spread over the run.
        steps: check exactly these checkpoint steps instead.
        pairs: minibatch pairs per checkpoint: the two batches the run trained next, then random
            pairs of the run's later batches.
        windows: windows of three of the run's later batches per checkpoint, whose predicted
            best of the ``3!`` orders is checked against training all six.
        scored_examples: training examples per checkpoint whose optimizer-aware order score
            (the example trained in the first rather than the last of the run's next
            ``score_window`` batches) is checked against really training both.
        score_window: the run's batches an example is moved across for the order scores.
        seed: picks the random pairs and windows.
        expansion: 2 or 3, the order of the predictions' expansion.
        replay_steps: the replay gate replays at most this many logged steps to the nearest
            checkpoint (:mod:`perturbative.pipeline.replay`).
        allow_replay_gap: check even where the replay gate fails (the gap is kept in the
            results and shown first in the report).
    """

    checkpoints: int = 3
    steps: tuple[int, ...] = ()
    pairs: int = 20
    windows: int = 0
    scored_examples: int = 0
    score_window: int = 4
    seed: int = 0
    expansion: int = 3
    replay_steps: int = 200
    allow_replay_gap: bool = False


def check_recorded_run(
    run_dir: str | os.PathLike,
    task: str | Task | None = None,
    options: RecordedCheckOptions | None = None,
    out_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> RecordedCheck:
    """Check order predictions against really reordering a recorded run (module docstring).

    At each chosen checkpoint the replay gate runs first
    (:func:`perturbative.pipeline.replay.replay_gap`): the logged steps replayed with the
    modelled training step must land on the next recorded checkpoint to within rounding, or the
    check refuses (``options.allow_replay_gap`` checks anyway and keeps the gap). Each pair then
    trains two minibatches of the run's batch size in both orders on copies of the model and
    optimizer (float64), from the checkpoint, as the loop would have trained them next: the
    first at the lr of each param group that the log holds for the step after the checkpoint,
    the second at the next step's, with the run's gradient clipping, in the predictions and the
    real steps alike (a pair whose gradient norm exceeds the clipping is marked ``clipped``).

    A check that stops continues where it stopped when run again with the same options (each
    finished pair, window and set of scores is saved in ``recorded.progress.jsonl`` beside
    ``recorded.json``: :class:`perturbative.pipeline.partial.PartialCheck`); a folder holding a
    finished check is refused, never overwritten.

    Raises:
        InputError: not a recorded run, no task, an optimizer the predictions cannot model
            (named), a corrupt or truncated order log (the line named), a run with no
            checkpoint after step 0, or a replay gap beyond rounding (the gap and the likely
            causes).
    """
    options = options or RecordedCheckOptions()
    if options.pairs < 0 or options.windows < 0 or options.scored_examples < 0:
        raise InputError("pairs, windows and scored_examples must be >= 0")
    run, task = read_run(run_dir), run_task(run_dir, task)
    kind = getattr(torch.optim, run["optimizer"], None)
    if kind not in UPDATE_RULES:
        raise InputError(
            f"the run's optimizer {run['optimizer']} is not modelled by the predictions (SGD, "
            "Adam and AdamW are); brackets and the report still work"
        )
    log = read_order_log(run_dir)
    steps = _chosen([s for s, _ in list_checkpoints(run_dir) if s > 0], options, log)
    rng = random.Random(options.seed)
    result = RecordedCheck(options=asdict(options), optimizer=run["optimizer"])
    result.replay = gate(  # the modelled step held to the run's own checkpoints first
        lambda step: replay_gap(run_dir, step, task, run, log, max_steps=options.replay_steps),
        steps,
        options.allow_replay_gap,
    )
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "order_check"
    settings = asdict(options)
    with folder_lock(out, "an order check"):
        unfinished = PartialCheck.open(
            out,
            partial_header(Path(run_dir), steps, settings),
            progress=PROGRESS,
            finished=RECORDED_CHECK,
            what="recorded order check",
        )
        for step in steps:
            at = open_recorded_checkpoint(run_dir, step, task, log=log)
            observable = task.build_observable(at.model)
            later = range(len(at.next_steps))
            drawn = [(0, 1)] + [tuple(rng.sample(later, 2)) for _ in range(options.pairs - 1)]
            for index, (i, j) in enumerate(drawn[: options.pairs]):
                record = RecordedPair.from_json(
                    unfinished.get(
                        (step, "pair", index),
                        lambda p=(i, j), at=at, o=observable: asdict(
                            _pair(at, task, o, p, options.expansion)
                        ),
                    )
                )
                result.pairs.append(record)
                if progress:
                    print(
                        f"step {step}: batches {record.batches}: predicted "
                        f"{record.predicted:+.3e} real {record.real:+.3e}",
                        flush=True,
                    )
            for index in range(options.windows):
                positions = rng.sample(later, 3)
                window = unfinished.get(
                    (step, "window", index),
                    lambda p=positions, at=at, o=observable: asdict(
                        _window(at, task, o, p, options.expansion)
                    ),
                )
                result.windows.append(RecordedWindow.from_json(window))
            if options.scored_examples:
                examples = rng.sample(range(len(task.train)), options.scored_examples)
                scores = unfinished.get(
                    (step, "scores"),
                    lambda e=examples, at=at, o=observable: [
                        asdict(r) for r in _scores(at, task, o, e, options.score_window)
                    ],
                )
                result.scores.extend(RecordedScore(**r) for r in scores)
        write_json(out / RECORDED_CHECK, result.to_json())
        unfinished.finish()
    return result


def _batches(at: RecordedCheckpoint, task: Task, positions) -> list[Any]:
    """The run's logged batches at these positions after the checkpoint, in float64."""
    return [as_dtype(task.batch(at.next_steps[i]["indices"]), torch.float64) for i in positions]


def _pair(at, task, observable, positions, order) -> RecordedPair:
    """Predict and really train one minibatch pair from the checkpoint, as the next two steps
    of the loop (each at its own logged lrs, with the run's clipping)."""
    a, b = _batches(at, task, positions)
    args = (at.model, task.loss_fn, at.training)
    pred = predict_swap(*args, a, b, observable, expansion=Expansion(order=order))
    ab, ba = (
        values_along_steps(*args, steps, observable.value, [2])[0] for steps in ([a, b], [b, a])
    )
    clip = at.training.max_grad_norm
    return RecordedPair(
        step=at.step,
        batches=tuple(at.next_steps[i]["step"] for i in positions),
        lr=float(at.training.rates_at(0)[0]),
        predicted=pred.predicted,
        second_order=pred.second_order,
        sgd_bracket=pred.sgd_bracket,
        state_part=pred.state_part,
        real=ab - ba,
        gradient_norms=pred.gradient_norms,
        clipped=clip is not None and max(pred.gradient_norms) > float(clip),
    )


def _scores(at, task, observable, examples, size) -> list[RecordedScore]:
    """Optimizer-aware order scores of training examples, each moved between the first and the
    last of the run's next ``size`` batches, and the real difference of training both."""
    if len(at.next_steps) < size:
        raise InputError(
            f"step {at.step} has {len(at.next_steps)} logged steps after it, fewer than the "
            f"score window of {size}: lower --score-window"
        )
    window = _batches(at, task, range(size))
    args = (at.model, task.loss_fn, at.training)
    data = as_dtype(task.batch(examples), torch.float64)
    scores = optimizer_order_scores(*args, data, observable, window)
    out = []
    for x, index in enumerate(examples):
        example = as_dtype(task.batch([index]), torch.float64)
        first, last = moved_first_or_last(*args, example, observable, window)
        out.append(
            RecordedScore(
                step=at.step,
                example=index,
                predicted=float(scores.scores[x]),
                state_part=float(scores.state_part[x]),
                curvature_part=float(scores.curvature_part[x]),
                sgd=float(scores.sgd[x]),
                real=first - last,
            )
        )
    return out


def _window(at, task, observable, positions, order) -> RecordedWindow:
    """Predict the best of the ``3!`` orders of three of the run's batches and really train
    every order."""
    batches = _batches(at, task, positions)
    args = (at.model, task.loss_fn, at.training)
    prediction = best_order(*args, batches, observable, expansion=Expansion(order=order))
    real = [
        values_along_steps(*args, [batches[i] for i in o], observable.value, [len(o)])[0]
        for o in prediction.orders
    ]
    return RecordedWindow(
        step=at.step,
        batches=tuple(at.next_steps[i]["step"] for i in positions),
        orders=[list(o) for o in prediction.orders],
        predicted=prediction.predicted.tolist(),
        real=real,
    )


def _lr_after(log: list[dict], step: int) -> float:
    """The first group's lr of the step the run took after checkpoint ``step`` (the last
    logged lr for the last checkpoint)."""
    after = [r for r in log if r["step"] == step + 1] or log[-1:]
    return float(after[0]["lr"][0]) if after else math.nan


def _chosen(steps: list[int], options: RecordedCheckOptions, log: list[dict]) -> list[int]:
    last = max((r["step"] for r in log), default=0)
    usable = [s for s in steps if last - s >= 2]  # two logged batches after it
    if options.steps:
        missing = sorted(set(options.steps) - set(usable))
        if missing:
            raise InputError(
                f"steps {missing} are not checkpoints with two logged steps after them; "
                f"usable: {usable}"
            )
        return list(options.steps)
    if not usable:
        raise InputError("the run has no checkpoint after step 0 with two logged steps after it")
    picks = np.linspace(0, len(usable) - 1, min(options.checkpoints, len(usable)))
    return sorted({usable[int(round(p))] for p in picks})

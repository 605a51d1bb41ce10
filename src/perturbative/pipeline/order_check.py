"""Order predictions tested against really reordering a run, at its checkpoints: one check for
every run (``perturbative train`` records its runs as a user's loop is recorded).

At each chosen checkpoint the model AND its optimizer state are rebuilt from the run's files
with the run's task, and the loop's own step (its clipping, each step's logged lr: a
:class:`~perturbative.TrainingStep`); the replay gate has first held that step to the run's next
checkpoint (:mod:`perturbative.pipeline.replay`). The observable is the task's, or the mean
loss of ``heldout_examples`` held-out examples. BatchNorm that trained on batch statistics is
met the same way in the predictions and in the real training, so that a swap changes nothing
but the order: with the default ``batchnorm="batch"`` minibatches run on their own statistics
exactly as the run trained, the held-out batch on its own, and a single example is trained
inside a minibatch of the run's batch size whose other examples weigh 0
(``examples="in-batch"``); with ``examples="alone"`` or ``batchnorm="running"`` it runs alone
in eval mode, on running statistics recomputed for the checkpoint's weights. The pairs:

* **logged**: two of the run's own logged batches, the two it trained next and then random
  pairs of later ones, trained from the checkpoint as its next two steps;
* **example**, **batch**, **exchange**: random pairs of single training examples, of
  minibatches of the run's batch size, and of examples exchanged between two consecutive
  minibatches (example ``x`` of the first and ``y`` of the second change places, so each keeps
  batch companions, as single examples do in the run).

For each:

1. predict ``O(x then y) - O(y then x)`` (:func:`perturbative.brackets.predict_swap`,
   :func:`perturbative.brackets.predict_exchange`);
2. really train both orders on copies of the model and optimizer, then the run's own next
   batches for ``h`` further identical steps (past the end of its log: the batches its task
   says the loop would draw next, else random ones), and measure the real difference of ``O``
   at each horizon ``h``;
3. compare: sign accuracy (over all pairs, and over pairs above the float32 rounding floor,
   measured by repeating pairs in float32, and at third order over the settled pairs, whose
   third-order term is smaller than the prediction), Spearman correlation and calibration slope
   ``sum(p r) / sum(p^2)`` (1 when predictions are right on average), and the same for
   baselines: a fair coin, the descending-gradient-norm heuristic (the larger gradient first is
   taken to lower ``O``), the plain-SGD bracket ``lr^2 u . [v_x, v_y]`` ignoring the optimizer,
   and the optimizer-state part of the prediction alone.

For windows of ``k = 3`` and ``4`` minibatches all ``k!`` orders are really trained: how often the
predicted best order (:func:`perturbative.brackets.best_order`) is the real best, and which share
of the real best-to-worst gap it captures. Scored examples: each training example's
optimizer-aware order score (:func:`perturbative.brackets.optimizer_order_scores`, the example
trained in the first rather than the last of the run's next ``score_window`` batches) against
really training both. Everything but the logged pairs and the scores is repeated at smaller
learning rates (the whole schedule scaled).

Writes ``<out>/order_check.json`` (every pair's numbers and the summaries), read by the report.
A check that stops continues where it stopped when run again (:class:`PartialCheck`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from perturbative._core import checks
from perturbative._core.calls import LossFn
from perturbative._core.errors import InputError
from perturbative._core.io import folder_lock
from perturbative._core.memory import PeakMemory
from perturbative.brackets import (
    UPDATE_RULES,
    Observable,
    TrainingStep,
    best_order,
    exchanged,
    moved_first_or_last,
    optimizer_order_scores,
    predict_exchange,
    predict_swap,
    values_along_steps,
)
from perturbative.pipeline.checkpoints import copied_in, list_checkpoints
from perturbative.pipeline.config import OrderCheckOptions, examples_in_batch
from perturbative.pipeline.order_records import (
    CheckpointRecord,
    OrderCheckRecord,
    PairRecord,
    ScaleRecord,
    ScoreRecord,
    WindowRecord,
)
from perturbative.pipeline.order_sampling import (
    DTYPES,
    PAIR_KINDS,
    cast_batch,
    sample_pairs,
    sample_windows,
)
from perturbative.pipeline.order_summary import summarize
from perturbative.pipeline.partial import PartialCheck, partial_header
from perturbative.pipeline.recorded_run import (
    analysis_device,
    batchnorm_statistics,
    lr_never_changed,
    open_recorded_checkpoint,
    read_run,
    refuse_batchnorm_flags,
    run_task,
    steps_after,
)
from perturbative.pipeline.recorder import read_order_log
from perturbative.pipeline.replay import gate, replay_gap
from perturbative.pipeline.results import ORDER_CHECK, write_order_check
from perturbative.pipeline.sweep import select_examples
from perturbative.pipeline.task import Task

#: The finished pairs, floors, windows and scores of an unfinished check (:class:`PartialCheck`).
PROGRESS = "order_check.progress.jsonl"


def order_check(
    run_dir: str | os.PathLike,
    options: OrderCheckOptions | None = None,
    task: str | Task | None = None,
    progress: bool = True,
    data_root: str | None = None,
) -> Path:
    """Run the check on a run's checkpoints (module docstring); returns
    ``<out>/order_check.json``.

    Args:
        run_dir: a run of ``perturbative train`` or one recorded by
            :class:`~perturbative.Recorder`.
        options: what to check (:class:`~perturbative.pipeline.config.OrderCheckOptions`).
        task: the run's task (a :class:`~perturbative.Task` or ``"module:attribute"``), if not
            the one its ``run.json`` names.
        progress: show progress bars.
        data_root: where a ``train`` run's CelebA data is now, if it has moved.

    Raises:
        InputError: not a run (or one of ``train`` before 0.4: the message says how to convert
            it), no task, an optimizer the predictions cannot model (named), a corrupt or
            truncated order log (the line named), a checkpoint with too few logged steps after
            it for what is asked (a scheduled run's lrs are known only where it logged them), a
            replay gap beyond rounding (the gap and the likely causes), or an out folder
            holding a finished check.
    """
    options = options or OrderCheckOptions()
    run_dir = Path(run_dir)
    run, task = read_run(run_dir), run_task(run_dir, task, data_root)
    if getattr(torch.optim, run["optimizer"], None) not in UPDATE_RULES:
        raise InputError(
            f"the run's optimizer {run['optimizer']} is not modelled by the predictions (SGD, "
            "Adam and AdamW are); brackets and the report still work"
        )
    defaults = OrderCheckOptions.__dataclass_fields__
    refuse_batchnorm_flags(
        run,
        run_dir,
        [
            name
            for name in ("batchnorm", "batchnorm_examples", "examples")
            if getattr(options, name) != defaults[name].default
        ],
    )
    log = read_order_log(run_dir)
    batch_size = run_batch_size(run_dir, log)
    steps = choose_checkpoints(
        run_dir,
        options.checkpoints,
        options.steps,
        usable_checkpoints(run, log, _needed_steps(options)),
    )
    heldout = _heldout(task, options)
    generator = torch.Generator().manual_seed(options.seed)
    logged_rng = random.Random(options.seed)  # the logged pairs and the scored examples
    device = analysis_device(run, options.device)
    result = OrderCheckRecord(
        run=str(run_dir.resolve()),
        lr=max(float(r["lr"][0]) for r in log),
        options={k: getattr(options, k) for k in options.__dataclass_fields__},
        batch_statistics=list((run.get("model_mode") or {}).get("batch_statistics") or []),
    )
    result.replay = gate(  # the modelled step held to the run's own checkpoints first
        lambda step: replay_gap(run_dir, step, task, run, log, max_steps=options.replay_steps),
        steps,
        options.allow_replay_gap,
    )
    out = Path(options.out_dir) if options.out_dir else run_dir / "order_check"
    with folder_lock(out, "an order check"):
        unfinished = PartialCheck.open(
            out,
            partial_header(run_dir, steps, result.options),
            progress=PROGRESS,
            finished=ORDER_CHECK,
        )
        for step in tqdm(steps, desc="order-check", unit="ckpt", disable=not progress):
            started, peak = time.perf_counter(), PeakMemory(device)
            at = restore(run_dir, step, task, log, heldout, options, batch_size, device)
            entry = CheckpointRecord(step, [])
            floor = None  # measured at the run's lr; smaller scales reuse its h = 0 value
            for scale in sorted(options.lr_scales, key=lambda s: s != 1.0):
                checked = check_scale(at, scale, options, generator, progress, floor, unfinished)
                if scale == 1.0:
                    logged = logged_pairs(at, logged_rng, options, unfinished)
                    checked.pairs = [*logged, *checked.pairs]
                    if logged and not (checked.floor or {}).get("pairs"):
                        checked.floor = logged_floor(at, logged, options, unfinished)
                    checked.scores = scored_examples(at, logged_rng, options, unfinished)
                    checked.summary = summarize(
                        checked.pairs,
                        checked.horizons,
                        checked.floor,
                        checked.windows,
                        options.seed,
                        checked.scores,
                    )
                floor = floor or checked.floor
                entry.scales.append(checked)
            del at
            entry.seconds, entry.peak_memory_gib = time.perf_counter() - started, peak.gib()
            result.checkpoints.append(entry)
            write_order_check(out, result)  # each checkpoint's numbers kept as they come
        path = write_order_check(out, result)
        unfinished.finish()
    return path


def checkpoint_for_check(
    run_dir: str | os.PathLike,
    step: int,
    options: OrderCheckOptions | None = None,
    task: str | Task | None = None,
    data_root: str | None = None,
) -> Checkpoint:
    """A checkpoint as :func:`order_check` rebuilds it (the run's task and log, the held-out
    examples the options draw), for scripts that take the check's pieces."""
    options = options or OrderCheckOptions()
    task = run_task(run_dir, task, data_root)
    log = read_order_log(run_dir)
    heldout = _heldout(task, options)
    return restore(Path(run_dir), step, task, log, heldout, options, run_batch_size(run_dir, log))


def run_batch_size(run_dir: str | os.PathLike, log: list[dict]) -> int:
    """The run's batch size: its logged steps' most common size (a tilted run's vary)."""
    if not log:
        raise InputError(f"{run_dir} has an empty order log: record some steps first")
    sizes = [len(r["indices"]) for r in log]
    return max(set(sizes), key=sizes.count)


def _heldout(task: Task, options: OrderCheckOptions) -> Tensor | None:
    """The held-out examples of the observable (positions), drawn with the seed: the options'
    count, else the task's."""
    if task.heldout is None:
        if task.observable is None:
            raise InputError(
                "the check's observable is a held-out loss: give the task heldout=... (or an "
                "observable=...)"
            )
        return None
    count = options.heldout_examples or task.heldout_examples
    return select_examples(range(len(task.heldout)), count, options.seed)


def _needed_steps(options: OrderCheckOptions) -> int:
    """How many steps after a checkpoint the check trains at most (two swapped and the
    horizons, a window, the scores' window, the logged pairs' two)."""
    needed = 2 + max(options.horizons)
    if options.windows:
        needed = max(needed, max(options.window_sizes))
    if options.scored_examples:
        needed = max(needed, options.score_window)
    return needed


def usable_checkpoints(run: dict, log: list[dict], needed: int) -> Callable[[int], bool]:
    """Which checkpoints a check that trains ``needed`` steps after them can start from: every
    one for a run whose lr never changed (its lr holds past the log), else those with enough
    logged steps after them (a scheduled run's lrs are known where it logged them)."""
    if lr_never_changed(run, log):
        return lambda step: True
    return lambda step: len(steps_after(log, step)) >= needed


def choose_checkpoints(
    run_dir: Path,
    count: int,
    wanted: Sequence[int] = (),
    usable: Callable[[int], bool] = lambda step: True,
    shorter: str = "fewer --horizons, a smaller --score-window or smaller --window-sizes",
) -> list[int]:
    """``count`` checkpoint steps after step 0 that are ``usable``, spread evenly from the
    first to the last, or exactly the steps ``wanted`` (each must have a usable checkpoint).

    Raises:
        InputError: no usable checkpoint after step 0, or a wanted step without one.
    """
    saved = [s for s, _ in list_checkpoints(run_dir) if s > 0]
    if not saved:
        raise InputError(f"{run_dir} has no checkpoint after step 0: train it first")
    steps = [s for s in saved if usable(s)]
    if wanted:
        missing = sorted(set(wanted) - set(saved))
        if missing:
            raise InputError(f"{run_dir} has no checkpoint at step {missing}; it has steps {saved}")
        short = sorted(set(wanted) - set(steps))
        if short:
            raise InputError(
                f"the checkpoints at steps {short} have too few logged steps after them for "
                f"what the check trains (its lrs are known only where the run logged them); "
                f"usable: {steps}. Choose others (--steps), or {shorter}"
            )
        return sorted(set(wanted))
    if not steps:
        raise InputError(
            f"no checkpoint of {run_dir} after step 0 has enough logged steps after it for what "
            f"the check trains (a scheduled run's lrs are known only where it logged them): "
            f"{shorter}"
        )
    if count >= len(steps):
        return steps
    picks = np.linspace(0, len(steps) - 1, count).round().astype(int)
    return sorted({steps[i] for i in picks})


@dataclass
class Checkpoint:
    """A checkpoint rebuilt for the check: the model and its optimizer in the working
    precision, the loop's step from there, the observable, the run's next batches, what
    sampling needs, and the check's options (how BatchNorm is met, how predictions expand).

    Attributes:
        loop: the loop's training step from the checkpoint (clipping, each step's lr).
        continuation: the run's next batches (as many as the largest horizon).
        logged: the logged steps after the checkpoint (its own next batches).
        batchnorm: the BatchNorm layers the run trained on batch statistics.
    """

    step: int
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loop: TrainingStep
    observable: Observable
    continuation: list[Any]
    task: Task
    batch_size: int
    logged: list[dict] = field(default_factory=list)
    batchnorm: list[str] = field(default_factory=list)
    options: OrderCheckOptions = field(default_factory=OrderCheckOptions)

    @property
    def device(self) -> torch.device:
        """Where the check runs: the rebuilt model's device."""
        return next(self.model.parameters()).device

    def batch(self, indices: Sequence[int]) -> tuple:
        """Training examples ``indices`` as a batch in the working precision on the device."""
        return cast_batch(self.task.batch(list(indices)), self.options.dtype, self.device)

    @property
    def lr(self) -> float:
        """The first group's lr at the first step after the checkpoint."""
        return self.loop.rates_at(0)[0]

    def training(self, scale: float) -> TrainingStep:
        """The loop's step with its whole schedule times ``scale`` (the lr-scale diagnostics)."""
        return self.loop if scale == 1.0 else self.loop.scaled(scale)

    def expansion(self) -> dict[str, Any]:
        """The keywords every prediction of the check takes: how it expands."""
        return {"expansion": self.options.expansion_settings}

    @property
    def example_batch(self) -> int:
        """The size of the minibatch a single example is trained in: the run's where BatchNorm
        trained on batch statistics under ``examples="in-batch"``, 1 (alone) otherwise."""
        in_batch = self.batchnorm and examples_in_batch(vars(self.options))
        return self.batch_size if in_batch else 1

    def loss(self, kind: str) -> LossFn:
        """The loss of a kind of pair: a single example inside a minibatch carries a third
        column of weights (its own the batch's size, the others' 0), so that the batch's mean
        loss is the example's."""
        if kind == "example" and self.example_batch > 1:
            return partial(_weighted, self.task.loss_fn, self._target_columns)
        return self.task.loss_fn

    @functools.cached_property
    def _target_columns(self) -> int:
        """How many target columns the task's batches carry (read once, from one example)."""
        return len(cast_batch(self.task.batch([0]), torch.float64)) - 1

    def mode_for(self, kind: str) -> None:
        """Put the BatchNorm layers that trained on batch statistics in train mode where
        batches meet them with their own statistics (minibatches under ``batchnorm="batch"``,
        single examples trained in one), in eval mode otherwise; the rest stays in eval."""
        on = self.example_batch > 1 if kind == "example" else self.options.batchnorm == "batch"
        modules = dict(self.model.named_modules())
        for name in self.batchnorm:
            modules[name].train(on)


def _weighted(loss_fn: LossFn, targets: int, outputs: Any, *columns: Tensor) -> Tensor:
    """``loss_fn(outputs, *targets) * weight`` for a batch of one that carries a weight column
    after its ``targets`` columns; the plain loss for one without (the run's later batches)."""
    if len(columns) == targets:
        return loss_fn(outputs, *columns)
    return loss_fn(outputs, *columns[:targets]) * columns[targets].reshape(())


def restore(run_dir, step, task, log, heldout, options, batch_size, device=None) -> Checkpoint:
    """The checkpoint rebuilt in the working precision on ``device`` (BatchNorm in eval mode on
    running statistics recomputed at its weights), the loop's step, the observable on
    ``heldout``, and the run's next batches (as many as the largest horizon). ``device``:
    :func:`analysis_device`'s choice, read from the run when not given."""
    dtype = DTYPES[options.dtype]
    device = device or analysis_device(read_run(run_dir), options.device)
    at = open_recorded_checkpoint(run_dir, step, task, dtype, log, device=device)
    batchnorm = checks.train_mode_batchnorm(at.model)  # as the run trained
    model = at.model.eval()
    if batchnorm:
        batchnorm_statistics(model, task, options.batchnorm_examples, options.seed)
    count = max(options.horizons)
    continuation = [
        cast_batch(task.batch(indices), dtype, device)
        for indices in next_batches(task, at.next_steps, step, count, batch_size, options.seed)
    ]
    if task.observable is not None:
        observable = task.build_observable(model)
    else:
        observable = Observable.mean_loss(
            task.loss_fn,
            cast_batch(task.batch(heldout.tolist(), "heldout"), dtype, device),
            f"held-out mean loss of {len(heldout)} examples",
        )
    return Checkpoint(
        step,
        model,
        at.optimizer,
        at.training,
        observable,
        continuation,
        task,
        batch_size,
        at.next_steps,
        batchnorm,
        options,
    )


def next_batches(task, logged, step, count, batch_size, seed) -> list[list[int]]:
    """The indices of the ``count`` batches the run trains after checkpoint ``step``: its
    logged ones, then (past its log) the ones its task says the loop would draw next
    (``Task.batches_after``), else random batches of the run's size drawn with ``seed``."""
    batches = [r["indices"] for r in logged[:count]]
    if len(batches) < count and task.batches_after is not None:
        batches = [list(b) for b in task.batches_after(step, count)]
    known = len(batches)
    generator = torch.Generator().manual_seed(seed + 3)
    while len(batches) < count:
        drawn = torch.randperm(len(task.train), generator=generator)[:batch_size]
        batches.append(drawn.tolist())
    if known < count:  # said, not hidden: these steps are not the run's
        print(
            f"step {step}: {count - known} of the {count} batches trained after it are random "
            f"(the run logged {known} after it and its task gives no batches_after)"
        )
    return batches


def check_scale(
    at: Checkpoint, scale, options, generator, progress, floor_at_run_lr, unfinished=None
) -> ScaleRecord:
    """Random pairs and windows at one lr scale: all horizons at the run's lr (on
    ``horizon_pairs`` pairs of each kind), ``h = 0`` on fewer pairs at smaller scales. Each
    pair, floor and window already in ``unfinished`` (a :class:`PartialCheck`) is taken from
    it."""
    saved = unfinished.get if unfinished else (lambda key, compute: compute())
    full = scale == 1.0
    counts = (
        (options.example_pairs, options.batch_pairs, options.exchanges, options.windows)
        if full
        else (
            min(options.example_pairs, options.scaled_pairs),
            min(options.batch_pairs, options.scaled_pairs // 2),
            min(options.exchanges, options.scaled_pairs // 2),
            options.windows // 2,
        )
    )
    pairs = sample_pairs(
        at.task,
        at.batch_size,
        *counts[:3],
        generator,
        options.dtype,
        at.example_batch,
        at.device,
    )
    followed = dict.fromkeys(PAIR_KINDS, 0)
    records = []
    bar = tqdm(pairs, desc=f"step {at.step} lr x{scale:g}", leave=False, disable=not progress)
    for index, (kind, x, y) in enumerate(bar):
        follow = full and followed[kind] < options.horizon_pairs
        predict = follow and followed[kind] < options.horizon_predictions
        followed[kind] += follow
        at.mode_for(kind)
        horizons = options.horizons if follow else (0,)
        compute = partial(pair_record, at, x, y, kind, horizons, scale, predict_later=predict)
        records.append(
            PairRecord.from_json(
                saved((at.step, scale, "pair", index), lambda c=compute: asdict(c()))
            )
        )
    at.mode_for("example")
    if full:
        chosen = [
            (x, y, r.real)
            for (kind, x, y), r in zip(pairs, records, strict=True)
            if kind == "example" and len(r.horizons) == len(options.horizons)
        ][: options.floor_pairs]
        floor = saved(
            (at.step, scale, "floor"),
            lambda: rounding_floor(at, "example", chosen, options.horizons),
        )
    elif floor_at_run_lr is not None:
        floor = {**floor_at_run_lr, "float32": floor_at_run_lr["float32"][:1]}
    else:
        floor = None
    at.mode_for("window")
    drawn = sample_windows(
        at.task,
        at.batch_size,
        counts[3],
        generator,
        options.dtype,
        options.window_sizes,
        at.device,
    )
    windows = [
        WindowRecord.from_json(
            saved(
                (at.step, scale, "window", index),
                lambda batches=batches: asdict(window_record(at, batches, scale)),
            )
        )
        for index, batches in enumerate(drawn)
    ]
    at.mode_for("example")
    horizons = options.horizons if full else (0,)
    return ScaleRecord(
        scale=scale,
        lr=at.lr * scale,
        horizons=list(horizons),
        pairs=records,
        floor=floor,
        windows=windows,
        summary=summarize(records, horizons, floor, windows, options.seed),
    )


def pair_record(
    at: Checkpoint, x, y, kind: str, horizons, scale: float, predict_later: bool = True
) -> PairRecord:
    """Prediction and real differences of one swap at every horizon (predicted at ``h > 0``
    only with ``predict_later``, by following the run that took ``x`` then ``y``)."""
    args = (at.model, at.loss(kind), at.training(scale))
    later = dict(later=at.continuation, horizons=horizons) if predict_later else {}
    start = time.perf_counter()
    if kind == "exchange":  # the first examples of x and y change places
        prediction = predict_exchange(*args, x, y, 0, 0, at.observable, **at.expansion(), **later)
        orders = ((x, y), exchanged(x, y, 0, 0))
    else:
        prediction = predict_swap(*args, x, y, at.observable, **at.expansion(), **later)
        orders = ((x, y), (y, x))
    predicted = time.perf_counter()
    real = real_differences(at, *orders, horizons, scale, at.loss(kind))
    return PairRecord(
        kind=kind,
        predicted=prediction.predicted,
        second_order=prediction.second_order,
        sgd_bracket=prediction.sgd_bracket,
        state_part=prediction.state_part,
        gradient_norms=list(prediction.gradient_norms),
        horizons=list(horizons),
        real=real,
        predicted_horizons=prediction.later if predict_later else None,
        clipped=_clipped(at, prediction.gradient_norms),
        seconds=[predicted - start, time.perf_counter() - predicted],
    )


def _clipped(at: Checkpoint, gradient_norms: Sequence[float]) -> bool:
    """Whether the loop's clipping acts on either swapped step."""
    clip = at.loop.max_grad_norm
    return clip is not None and max(gradient_norms) > float(clip)


def real_differences(at: Checkpoint, one, other, horizons, scale: float, loss=None) -> list[float]:
    """``O(one, next h batches) - O(other, next h batches)`` for each ``h`` of ``horizons``,
    ``one`` and ``other`` two steps each (``(x, y)`` and ``(y, x)`` for a swap)."""
    after = [2 + h for h in horizons]
    loss = loss or at.task.loss_fn

    def run(steps):
        batches = [*steps, *at.continuation]
        return values_along_steps(
            at.model, loss, at.training(scale), batches, at.observable.value, after
        )

    return [a - b for a, b in zip(run(one), run(other), strict=True)]


def logged_pairs(at: Checkpoint, rng: random.Random, options, unfinished) -> list[PairRecord]:
    """Pairs of the run's own logged batches, the two it trained next and then random pairs of
    later ones, predicted and really trained from the checkpoint as its next two steps (each
    at its own logged lr, with the run's clipping); ``h = 0``."""
    later = range(len(at.logged))
    if options.logged_pairs == 0 or len(later) < 2:
        return []
    drawn = [(0, 1)] + [tuple(rng.sample(later, 2)) for _ in range(options.logged_pairs - 1)]
    at.mode_for("batch")
    records = []
    for index, (i, j) in enumerate(drawn[: options.logged_pairs]):

        def compute(i=i, j=j):
            x, y = (at.batch(at.logged[n]["indices"]) for n in (i, j))
            record = pair_record(at, x, y, "logged", (0,), 1.0, predict_later=False)
            record.batches = [at.logged[i]["step"], at.logged[j]["step"]]
            return asdict(record)

        records.append(PairRecord.from_json(unfinished.get((at.step, "logged", index), compute)))
    at.mode_for("example")
    return records


def scored_examples(at: Checkpoint, rng: random.Random, options, unfinished) -> list[ScoreRecord]:
    """Optimizer-aware order scores of random training examples, each moved between the first
    and the last of the run's next ``score_window`` batches, and the real difference of
    training both (single examples, so BatchNorm in eval mode on the recomputed statistics)."""
    if not options.scored_examples:
        return []
    if options.scored_examples > len(at.task.train):
        raise InputError(
            f"--scored-examples {options.scored_examples} is more than the run's "
            f"{len(at.task.train)} training examples"
        )
    examples = rng.sample(range(len(at.task.train)), options.scored_examples)
    window = [
        at.batch(indices)
        for indices in next_batches(
            at.task, at.logged, at.step, options.score_window, at.batch_size, options.seed
        )
    ]

    def compute():
        at.model.eval()
        args = (at.model, at.task.loss_fn, at.loop)
        data = at.batch(examples)
        start = time.perf_counter()
        scores = optimizer_order_scores(*args, data, at.observable, window)
        scoring = time.perf_counter() - start
        out = []
        for x, index in enumerate(examples):
            example = at.batch([index])
            start = time.perf_counter()
            first, last = moved_first_or_last(*args, example, at.observable, window)
            out.append(
                ScoreRecord(
                    example=index,
                    predicted=float(scores.scores[x]),
                    state_part=float(scores.state_part[x]),
                    curvature_part=float(scores.curvature_part[x]),
                    sgd=float(scores.sgd[x]),
                    real=first - last,
                    seconds=[scoring, time.perf_counter() - start],
                )
            )
        return [asdict(r) for r in out]

    saved = unfinished.get((at.step, "scores"), compute)
    at.mode_for("example")
    return [ScoreRecord.from_json(r) for r in saved]


def rounding_floor(at: Checkpoint, kind: str, chosen: Sequence[tuple], horizons) -> dict:
    """The float32 rounding floor of the real differences, per horizon: the 90th percentile of
    ``|D_float32 - D_float64|`` over the ``chosen`` pairs ``(x, y, real)`` of one ``kind``, each
    trained again in the other precision (the working precision's real differences ``real``
    against float64, or float32 against a float64 check's), and the difference of repeating the
    first pair's orders in the working precision (0 on a CPU). Only real training runs in the
    other precision, so a check in float32 of a model whose predictions do not fit in float64
    still measures its floor against float64. ``pairs`` says how many pairs measured it."""
    if not chosen:
        return {"float32": [0.0] * len(horizons), "repeat": 0.0, "pairs": 0}
    at.mode_for(kind)
    # float32 against the working precision: float64, or float32 itself against float64
    other = torch.float32 if next(at.model.parameters()).dtype == torch.float64 else torch.float64
    model, loop = copied_in(at.model, at.loop, other)
    twin = dataclasses.replace(
        at,
        model=model,
        optimizer=loop.optimizer,
        loop=loop,
        observable=at.observable.to(other),
        continuation=[cast_batch(b, other) for b in at.continuation],
    )
    loss = at.loss(kind)
    gaps = []
    for x, y, real in chosen:
        x2, y2 = cast_batch(x, other), cast_batch(y, other)
        other_real = real_differences(twin, (x2, y2), (y2, x2), horizons, 1.0, loss)
        gaps.append([abs(a - b) for a, b in zip(other_real, real, strict=True)])
    del twin, model, loop
    x, y, real = chosen[0]
    again = real_differences(at, (x, y), (y, x), horizons, 1.0, loss)
    at.mode_for("example")
    return {
        "float32": np.quantile(np.asarray(gaps), 0.9, axis=0).tolist(),
        "repeat": max(abs(a - b) for a, b in zip(again, real, strict=True)),
        "pairs": len(chosen),
        "kind": kind,
    }


def logged_floor(at: Checkpoint, records: Sequence[PairRecord], options, unfinished) -> dict:
    """The rounding floor measured on the first ``floor_pairs`` logged pairs (``h = 0``): a
    check of the run's own batches only, with no single-example pairs to measure it on."""
    by_step = {r["step"]: r["indices"] for r in at.logged}
    chosen = [
        (*(at.batch(by_step[s]) for s in r.batches), r.real) for r in records[: options.floor_pairs]
    ]
    return unfinished.get(
        (at.step, "logged floor"), lambda: rounding_floor(at, "logged", chosen, (0,))
    )


def window_record(at: Checkpoint, batches, scale: float) -> WindowRecord:
    """Predicted best order of a window against all ``k!`` orders really trained."""
    training = at.training(scale)
    loss = at.task.loss_fn
    prediction = best_order(at.model, loss, training, batches, at.observable, **at.expansion())
    real = [
        values_along_steps(
            at.model, loss, training, [batches[i] for i in order], at.observable.value, [len(order)]
        )[0]
        for order in prediction.orders
    ]
    best, worst = min(real), max(real)
    picked = real[prediction.orders.index(prediction.best)]
    second = prediction.predicted if prediction.second_order is None else prediction.second_order
    return WindowRecord(
        k=len(batches),
        best_is_real_best=picked == best,
        gap_share=(worst - picked) / (worst - best) if worst > best else 1.0,
        second_order_best_is_real_best=real[int(second.argmin())] == best,
        real_gap=worst - best,
        predicted=prediction.predicted.tolist(),
        second_order=second.tolist(),
        real=real,
    )

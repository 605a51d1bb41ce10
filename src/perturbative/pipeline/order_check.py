"""Order predictions tested against real reordered training, at checkpoints of a real run.

At each chosen checkpoint the model AND its Adam state are restored (the checkpoint holds both)
and the observable is the mean loss of held-out examples. BatchNorm is treated the same way in
the predictions and in the real training, so that a swap changes nothing but the order: with
the default ``batchnorm="batch"`` minibatches run in train mode, each batch normalised by its
own statistics exactly as the run trained, with the held-out batch normalised by its own, and a
single example is trained inside a minibatch of the run's batch size whose other examples weigh
0 (``examples="in-batch"``); with ``examples="alone"`` or ``batchnorm="running"`` it runs alone
in eval mode, on running statistics recomputed for the checkpoint's weights.
For random pairs of single examples and of minibatches of the run's batch size, and for
random pairs of examples exchanged between two consecutive minibatches (example ``x`` of the
first and ``y`` of the second change places, so each keeps batch companions, as single
examples do in the run):

1. predict ``O(x then y) - O(y then x)`` (:func:`perturbative.brackets.predict_swap`,
   :func:`perturbative.brackets.predict_exchange`);
2. really train both orders on copies of the model and optimizer, then the run's own next
   batches for ``h`` further identical steps, and measure the real difference of ``O`` at each
   horizon ``h``;
3. compare: sign accuracy (over all pairs, and over pairs above the float32 rounding floor,
   measured by repeating pairs in float32, and at third order over the settled pairs, whose
   third-order term is smaller than the prediction), Spearman correlation and calibration slope
   ``sum(p r) / sum(p^2)`` (1 when predictions are right on average), and the same for
   baselines: a fair coin, the descending-gradient-norm heuristic (the larger gradient first is
   taken to lower ``O``), and the plain-SGD bracket ``lr^2 u . [v_x, v_y]`` ignoring Adam.

For windows of ``k = 3`` and ``4`` minibatches all ``k!`` orders are really trained: how often the
predicted best order (:func:`perturbative.brackets.best_order`) is the real best, and which share
of the real best-to-worst gap it captures. Everything is repeated at smaller learning rates.

Writes ``<out>/order_check.json`` (every pair's numbers and the summaries), read by the report.
A check that stops continues where it stopped when run again (:class:`PartialCheck`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from perturbative._core.errors import InputError
from perturbative._core.io import (
    folder_lock,
)
from perturbative.brackets import (
    Observable,
    TrainingStep,
    best_order,
    exchanged,
    predict_exchange,
    predict_swap,
    values_along_steps,
)
from perturbative.pipeline.checkpoints import (
    cast_optimizer_state,
    list_checkpoints,
    load_checkpoint,
)
from perturbative.pipeline.config import (
    OrderCheckOptions,
    examples_in_batch,
    load_run_config,
)
from perturbative.pipeline.order_records import (
    CheckpointRecord,
    OrderCheckRecord,
    PairRecord,
    ScaleRecord,
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
from perturbative.pipeline.recorded_run import read_run
from perturbative.pipeline.recorder import read_order_log
from perturbative.pipeline.replay import gate, replay_gap
from perturbative.pipeline.results import ORDER_CHECK, write_order_check
from perturbative.pipeline.run import training_task
from perturbative.pipeline.sweep import select_examples
from perturbative.pipeline.train import TrainingState, build_dataset, per_example_bce

#: What a pair swaps: two single examples, two minibatches, or two examples exchanged between
#: consecutive minibatches.
#: The finished pairs, floors and windows of an unfinished check (:class:`PartialCheck`).
PROGRESS = "order_check.progress.jsonl"


def order_check(
    run_dir: str | Path,
    options: OrderCheckOptions | None = None,
    progress: bool = True,
    data_root: str | None = None,
) -> Path:
    """Run the check on a training run's checkpoints; returns ``<out>/order_check.json``.

    ``data_root`` points at the run's CelebA data if it has moved since training.
    """
    options = options or OrderCheckOptions()
    run_dir = Path(run_dir)
    config = load_run_config(run_dir, data_root)
    dataset = build_dataset(config)
    steps = choose_checkpoints(run_dir, options.checkpoints, options.steps)
    heldout = select_examples(
        dataset.heldout_indices.tolist(), options.heldout_examples, options.seed
    )
    generator = torch.Generator().manual_seed(options.seed)
    result = OrderCheckRecord(
        run=str(run_dir.resolve()),
        lr=config.lr,
        options={k: getattr(options, k) for k in options.__dataclass_fields__},
    )
    run, log = read_run(run_dir), read_order_log(run_dir)
    task = training_task(run_dir, data_root)
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
            at = restore(run_dir, step, config, dataset, heldout, options)
            entry = CheckpointRecord(step, [])
            floor = None  # measured at the run's lr; smaller scales reuse its h = 0 value
            for scale in sorted(options.lr_scales, key=lambda s: s != 1.0):
                checked = check_scale(at, scale, options, generator, progress, floor, unfinished)
                floor = floor or checked.floor
                entry.scales.append(checked)
            result.checkpoints.append(entry)
            write_order_check(out, result)  # each checkpoint's numbers kept as they come
        path = write_order_check(out, result)
        unfinished.finish()
    return path


@dataclass
class Checkpoint:
    """A checkpoint restored for the check: model (eval mode) and optimizer in the working
    precision, the observable, the run's next batches, what sampling needs, and the check's
    options (how BatchNorm is met, how predictions expand)."""

    step: int
    model: nn.Module
    optimizer: torch.optim.Optimizer
    observable: Observable
    continuation: list[tuple[Tensor, ...]]
    dataset: Any
    batch_size: int
    lr: float
    options: OrderCheckOptions = field(default_factory=OrderCheckOptions)

    def training(self, lr: float) -> TrainingStep:
        """The run's step at ``lr`` (a `train` run holds its lr constant and does not clip; the
        lr-scale diagnostics shrink it)."""
        return TrainingStep(self.optimizer).scaled(lr / self.lr)

    def expansion(self) -> dict[str, Any]:
        """The keywords every prediction of the check takes: how it expands."""
        return {"expansion": self.options.expansion_settings}

    @property
    def example_batch(self) -> int:
        """The size of the minibatch a single example is trained in: the run's under
        ``examples="in-batch"`` (with batch statistics), 1 (alone, eval mode) otherwise."""
        return self.batch_size if examples_in_batch(vars(self.options)) else 1

    def mode_for(self, kind: str) -> None:
        """Put the model in train mode where batches meet BatchNorm with their own statistics
        (minibatches under ``batchnorm="batch"``, single examples trained in one), in eval mode
        otherwise."""
        if kind == "example":
            self.model.train(self.example_batch > 1)
        else:
            self.model.train(self.options.batchnorm == "batch")


def check_scale(
    at: Checkpoint, scale, options, generator, progress, floor_at_run_lr, unfinished=None
) -> ScaleRecord:
    """Pairs and windows at one lr scale: all horizons at the run's lr (on ``horizon_pairs``
    pairs of each kind), ``h = 0`` on fewer pairs at smaller scales. Each pair, floor and
    window already in ``unfinished`` (a :class:`PartialCheck`) is taken from it."""
    saved = unfinished.get if unfinished else (lambda key, compute: compute())
    lr, full = at.lr * scale, scale == 1.0
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
        at.dataset, at.batch_size, *counts[:3], generator, options.dtype, at.example_batch
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
        compute = partial(pair_record, at, x, y, kind, horizons, lr, predict_later=predict)
        records.append(
            PairRecord.from_json(
                saved((at.step, scale, "pair", index), lambda c=compute: asdict(c()))
            )
        )
    at.mode_for("example")
    if full:
        floor = saved(
            (at.step, scale, "floor"), lambda: rounding_floor(at, pairs, records, options, lr)
        )
    elif floor_at_run_lr is not None:
        floor = {**floor_at_run_lr, "float32": floor_at_run_lr["float32"][:1]}
    else:
        floor = None
    at.mode_for("window")
    drawn = sample_windows(
        at.dataset, at.batch_size, counts[3], generator, options.dtype, options.window_sizes
    )
    windows = [
        WindowRecord.from_json(
            saved(
                (at.step, scale, "window", index),
                lambda batches=batches: asdict(window_record(at, batches, lr)),
            )
        )
        for index, batches in enumerate(drawn)
    ]
    at.model.eval()
    horizons = options.horizons if full else (0,)
    return ScaleRecord(
        scale=scale,
        lr=lr,
        horizons=list(horizons),
        pairs=records,
        floor=floor,
        windows=windows,
        summary=summarize(records, horizons, floor, windows, options.seed),
    )


def choose_checkpoints(run_dir: Path, count: int, wanted: Sequence[int] = ()) -> list[int]:
    """``count`` checkpoint steps after step 0, spread evenly from the first to the last, or
    exactly the steps ``wanted`` (each must have a checkpoint)."""
    steps = [s for s, _ in list_checkpoints(run_dir) if s > 0]
    if not steps:
        raise InputError(f"{run_dir} has no checkpoint after step 0: train it first")
    if wanted:
        missing = sorted(set(wanted) - set(steps))
        if missing:
            raise InputError(f"{run_dir} has no checkpoint at step {missing}; it has steps {steps}")
        return sorted(set(wanted))
    if count >= len(steps):
        return steps
    picks = np.linspace(0, len(steps) - 1, count).round().astype(int)
    return sorted({steps[i] for i in picks})


def restore(run_dir, step, config, dataset, heldout, options) -> Checkpoint:
    """The model (eval mode) and Adam with its state at ``step`` in the working precision, the
    observable on ``heldout``, and the run's next batches (as many as the largest horizon)."""
    dtype = DTYPES[options.dtype]
    state = TrainingState(config, dataset)
    state.load_state_dict(load_checkpoint(dict(list_checkpoints(run_dir))[step]))
    model, optimizer = state.model.to(dtype).eval(), state.optimizer
    cast_optimizer_state(optimizer, dtype)
    recompute_batchnorm_statistics(model, dataset, options.batchnorm_examples, options.seed, dtype)
    batches = state.batches()
    continuation = [
        cast_batch(dataset.batch(dataset.train_indices[next(batches)]), dtype)
        for _ in range(max(options.horizons))
    ]
    inputs, targets = dataset.batch(heldout)
    observable = Observable.mean_loss(
        per_example_bce, (inputs.to(dtype), targets.to(dtype)), "held-out mean BCE"
    )
    return Checkpoint(
        step,
        model,
        optimizer,
        observable,
        continuation,
        dataset,
        config.batch_size,
        config.lr,
        options,
    )


def recompute_batchnorm_statistics(model, dataset, examples: int, seed: int, dtype) -> None:
    """Replace the BatchNorm running statistics by those of ``examples`` training examples at
    the model's current weights (batches of 64; ``torch.optim.swa_utils.update_bn``), so that the
    eval-mode network is the one that trained. Nothing happens for ``examples == 0``."""
    if examples <= 0:
        return
    chosen = select_examples(dataset.train_indices.tolist(), examples, seed + 2)
    inputs = dataset.batch(chosen)[0].to(dtype)
    torch.optim.swa_utils.update_bn([inputs[i : i + 64] for i in range(0, len(inputs), 64)], model)
    model.eval()


def pair_record(
    at: Checkpoint, x, y, kind: str, horizons, lr: float, predict_later: bool = True
) -> PairRecord:
    """Prediction and real differences of one swap at every horizon (predicted at ``h > 0``
    only with ``predict_later``, by following the run that took ``x`` then ``y``)."""
    args = (at.model, per_example_bce, at.training(lr))
    later = dict(later=at.continuation, horizons=horizons) if predict_later else {}
    if kind == "exchange":  # the first examples of x and y change places
        prediction = predict_exchange(*args, x, y, 0, 0, at.observable, **at.expansion(), **later)
        orders = ((x, y), exchanged(x, y, 0, 0))
    else:
        prediction = predict_swap(*args, x, y, at.observable, **at.expansion(), **later)
        orders = ((x, y), (y, x))
    return PairRecord(
        kind=kind,
        predicted=prediction.predicted,
        second_order=prediction.second_order,
        sgd_bracket=prediction.sgd_bracket,
        state_part=prediction.state_part,
        gradient_norms=list(prediction.gradient_norms),
        horizons=list(horizons),
        real=real_differences(at, *orders, horizons, lr),
        predicted_horizons=prediction.later if predict_later else None,
    )


def real_differences(at: Checkpoint, one, other, horizons, lr: float) -> list[float]:
    """``O(one, next h batches) - O(other, next h batches)`` for each ``h`` of ``horizons``,
    ``one`` and ``other`` two steps each (``(x, y)`` and ``(y, x)`` for a swap)."""
    after = [2 + h for h in horizons]

    def run(steps):
        batches = [*steps, *at.continuation]
        return values_along_steps(
            at.model, per_example_bce, at.training(lr), batches, at.observable.value, after
        )

    return [a - b for a, b in zip(run(one), run(other), strict=True)]


def rounding_floor(at: Checkpoint, pairs, records, options, lr: float) -> dict:
    """The float32 rounding floor of the real differences, per horizon: the 90th percentile of
    ``|D_float32 - D_float64|`` over the first ``floor_pairs`` followed single-example pairs
    (and the difference of repeating one order twice in the working precision, 0 on a CPU)."""
    chosen = [
        (p, r)
        for p, r in zip(pairs, records, strict=True)
        if p[0] == "example" and len(r.horizons) == len(options.horizons)
    ][: options.floor_pairs]
    if not chosen:
        return {"float32": [0.0] * len(options.horizons), "repeat": 0.0}
    # float32 against the working precision: float64, or float32 itself against float64
    other = torch.float32 if next(at.model.parameters()).dtype == torch.float64 else torch.float64
    model, optimizer = copy.deepcopy((at.model, at.optimizer))
    model.to(other)
    cast_optimizer_state(optimizer, other)
    observable = at.observable
    twin = Checkpoint(
        at.step,
        model,
        optimizer,
        observable.to(other),
        [cast_batch(b, other) for b in at.continuation],
        at.dataset,
        at.batch_size,
        at.lr,
        at.options,
    )
    gaps = []
    for (_, x, y), record in chosen:
        x2, y2 = cast_batch(x, other), cast_batch(y, other)
        other_real = real_differences(twin, (x2, y2), (y2, x2), options.horizons, lr)
        gaps.append([abs(a - b) for a, b in zip(other_real, record.real, strict=True)])
    (_, x, y), record = chosen[0]
    again = real_differences(at, (x, y), (y, x), options.horizons, lr)
    return {
        "float32": np.quantile(np.asarray(gaps), 0.9, axis=0).tolist(),
        "repeat": max(abs(a - b) for a, b in zip(again, record.real, strict=True)),
    }


def window_record(at: Checkpoint, batches, lr: float) -> WindowRecord:
    """Predicted best order of a window against all ``k!`` orders really trained."""
    prediction = best_order(
        at.model,
        per_example_bce,
        at.training(lr),
        batches,
        at.observable,
        **at.expansion(),
    )
    real = [
        values_along_steps(
            at.model,
            per_example_bce,
            at.training(lr),
            [batches[i] for i in order],
            at.observable.value,
            [len(order)],
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

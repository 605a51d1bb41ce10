"""The replay gate: before a check analyses a recorded checkpoint, it replays the run's logged
steps from it with the modelled training step and compares with the next recorded checkpoint.

Every order check and phase check of a run models the loop's step: the task's
model and loss, the logged batches, the optimizer in its saved state, the run's clipping and each
step's logged lr. If any of these is not what the loop did (clipping not given to the
:class:`~perturbative.Recorder`, dropout on, another architecture with the same names and
shapes, changed data, a schedule not recorded), predictions and "real" reorderings built on that
one model agree with each other and say nothing about the run. The recorded checkpoints are what
the check does not share with itself: replaying the logged steps from checkpoint ``s`` to the
next one ``s'`` must land on ``theta_s'``.

The gap is ``|theta_replayed - theta_s'| / |theta_s' - theta_s|`` over all trained parameters
(norms in float64): 1 means the replay missed by as much as the steps moved. The modelled step
is replayed in float64, the precision of the checks, while a run usually trained in float32 (or
under autocast), so even a right model misses by the run's rounding. That floor is measured,
not guessed: the loop is replayed as it ran (each micro-batch of a step under gradient
accumulation, the recorded autocast, the steps its gradient scaler skipped left out) twice, in
float64 and in the run's own precision (a float64 run: with each batch's rows reversed, which
reorders every sum); the two differ by the rounding alone. The gate passes when
``gap <= TOLERANCE_FACTOR * floor`` (plus a float64 epsilon): a modelling error larger than ten
times the run's own rounding over those steps fails it, including accumulation over
micro-batches of unequal sizes (a mean of means, which the checks' one mean per batch does not
model). The floor is measured on the CPU: a run trained on a GPU with TF32 matrix products
(torch's default for cuDNN convolutions) rounds more than that, and the gate names it as a
likely cause.

The gate replays at most ``max_steps`` logged steps (the checks' ``--replay-steps``): checkpoint
``s`` is compared with the next checkpoint when it is that close, else the previous checkpoint is
replayed to ``s`` when that is close, else the gate cannot run and says so.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from perturbative._core import calls
from perturbative._core.errors import InputError
from perturbative.brackets import parameters_after_steps
from perturbative.pipeline.checkpoints import list_checkpoints, read_checkpoint
from perturbative.pipeline.recorded_records import ReplayGap
from perturbative.pipeline.recorded_run import (
    RecordedCheckpoint,
    model_weights,
    open_recorded_checkpoint,
)
from perturbative.pipeline.task import Task, as_dtype, packed

#: the gap may be this many times the measured rounding floor. Rounding differences grow along
#: the replayed steps at a rate that differs between replays (another summation order, another
#: thread count); on every faithful run measured the gap was 0.9-1.1 times its floor, and the
#: modelling errors of the tests were 50 to 10^6 times it. The tolerance, printed with every gap,
#: is the gate's resolving power: an error of the modelled step below it does not show, so under
#: bfloat16 (a floor near 1e-3 of the movement) the gate sees less than under float32.
TOLERANCE_FACTOR = 10.0


def replay_gap(
    run_dir: str | os.PathLike,
    step: int,
    task: Task,
    run: dict[str, Any],
    log: list[dict],
    *,
    max_steps: int = 200,
) -> ReplayGap:
    """Replay the logged steps around checkpoint ``step`` with the modelled training step and
    measure the gap to the recorded checkpoint (module docstring).

    Raises:
        InputError: no recorded checkpoint within ``max_steps`` logged steps of ``step``.
    """
    start, end = replayed_span(run_dir, step, max_steps)
    files = dict(list_checkpoints(run_dir))
    first = read_checkpoint(files[start])  # read once, rebuilt for each replay

    def opened(dtype: torch.dtype) -> RecordedCheckpoint:
        # each replay's own copy: a rebuilt optimizer may hold the tensors it was given and
        # step them in place
        copied = ({k: v.clone() for k, v in first[0].items()}, first[1])
        return open_recorded_checkpoint(run_dir, start, task, dtype, log, copied)

    records = log[start:end]  # steps start + 1 .. end
    modelled, origin, model = _modelled(opened(torch.float64), task, records)
    target = {
        k: v.double() for k, v in model_weights(read_checkpoint(files[end])[0], model)[0].items()
    }
    # the loop as it ran (micro-batches, autocast, skipped steps) in float64 and in the run's
    # own precision: they differ by the rounding alone
    run_dtype = next(
        t.dtype for k, t in first[0].items() if k.startswith("model/") and t.is_floating_point()
    )
    autocast = _dtype(run.get("autocast"))
    faithful = [
        _as_the_loop_ran(opened(dtype), task, records, dtype, reverse, cast)
        for dtype, reverse, cast in _replay_precisions(run_dtype, autocast)
    ]
    replays = {"modelled": modelled, "float64": faithful[0], "rounded": faithful[1]}
    accumulated = any(r.get("micro") for r in records)
    return measured(step, start, end, replays, target, origin, likely_causes(run, accumulated))


def replayed_span(run_dir: str | os.PathLike, step: int, max_steps: int) -> tuple[int, int]:
    """``(start, end)``: the checkpoints to replay between for checkpoint ``step``, the next one
    within ``max_steps`` steps, else the one before it.

    Raises:
        InputError: no other checkpoint within ``max_steps`` steps.
    """
    saved = [s for s, _ in list_checkpoints(run_dir)]
    after = [s for s in saved if step < s <= step + max_steps]
    before = [s for s in saved if step - max_steps <= s < step]
    if after:
        return step, after[0]
    if before:
        return before[-1], step
    raise InputError(
        f"step {step} has no other checkpoint within {max_steps} logged steps, so the replay "
        "gate cannot check it: raise --replay-steps, or save checkpoints more often"
    )


def measured(step, start, end, replays: dict, target: dict, origin: dict, causes) -> ReplayGap:
    """The gap of the modelled replay to ``target`` and the floor between the two replays as
    the loop ran (``replays``: "modelled", "float64", "rounded"), as shares of the movement."""
    exact = replays["modelled"]
    moved = _norm({k: target[k] - origin[k] for k in exact})
    scale = moved if moved > 0 else 1.0
    gap = _norm({k: exact[k] - target[k] for k in exact}) / scale
    floor = _norm({k: replays["float64"][k] - replays["rounded"][k] for k in exact}) / scale
    tolerance = TOLERANCE_FACTOR * floor + 64 * torch.finfo(torch.float64).eps
    passed = bool(gap <= tolerance)
    return ReplayGap(
        step=step,
        start=start,
        end=end,
        steps=end - start,
        gap=gap,
        floor=floor,
        tolerance=tolerance,
        passed=passed,
        causes=() if passed else tuple(causes),
    )


def likely_causes(run: dict[str, Any], accumulated: bool = False) -> tuple[str, ...]:
    """What could make the modelled step differ from the loop's, the recorded ones first
    (``accumulated``: the replayed steps had micro-batches)."""
    mode = run.get("model_mode") or {}
    causes = []
    if mode.get("stochastic"):
        causes.append(
            f"dropout or other randomness on ({', '.join(mode['stochastic'][:2])}: recorded "
            "active; train with it off)"
        )
    tilt = (run.get("loop") or {}).get("tilt")
    if tilt:
        causes.append(
            f"the loop's loss is not the task's mean loss (a run of `perturbative train` tilted "
            f"by {tilt}: each example weighted by exp(-dH))"
        )
    if run.get("max_grad_norm") is None:
        causes.append("gradient clipping not given to the Recorder (max_grad_norm=)")
    causes.append("the task's model or data not the run's (another architecture, changed data)")
    if run.get("scheduler") is None:
        causes.append("an lr set outside the optimizer's param groups (a schedule not recorded)")
    if run.get("autocast") is None:
        causes.append("mixed precision not given to the Recorder (autocast=)")
    if str(run.get("device", "cpu")).startswith("cuda") and run.get("tf32", True):
        causes.append(
            "TF32 on the GPU the run trained on (its rounding is larger than the float32 replay's "
            "on the CPU): train with torch.backends.cudnn.allow_tf32 = False and "
            "torch.backends.cuda.matmul.allow_tf32 = False to check order effects"
        )
    causes.append(
        "a loss or step not the Task's (gradient accumulation over micro-batches of unequal "
        "sizes, which the checks do not model, or not recorded with micro_batches=)"
    )
    if accumulated:
        causes.insert(
            0,
            "gradient accumulation whose micro-batch losses are summed, not averaged (a step "
            "of k times the mean gradient: the Hugging Face Trainer sums them for a model that "
            "takes num_items_in_batch; set trainer.model_accepts_loss_kwargs = False if it "
            "does not use it)",
        )
    return tuple(causes)


def gate(
    gap_at: Callable[[int], ReplayGap], steps: Sequence[int], allow_gap: bool
) -> list[ReplayGap]:
    """The replay gate of a check, run before it trains anything: each checkpoint's gap
    (``gap_at(step)``) printed first, and the check refused at the first gap beyond rounding
    unless ``allow_gap`` (the gaps are then kept with the results).

    Raises:
        InputError: the measured gap and the likely causes, in one line.
    """
    gaps = []
    for step in steps:
        gap = gap_at(step)
        print(gap.line(), flush=True)
        gaps.append(gap)
        if not gap.passed and not allow_gap:
            raise InputError(
                gap.line() + ". Fix the recording (or the task), or pass --allow-replay-gap to "
                "check anyway (the gap is stored with the results and shown at the top of the "
                "report)"
            )
    return gaps


def _rows(indices: list[int], reverse: bool) -> list[int]:
    return list(reversed(indices)) if reverse else list(indices)


def _replay_precisions(run_dtype: torch.dtype, autocast: torch.dtype | None) -> list:
    """``(dtype, rows reversed, autocast)`` of the float64 replay, then of one that differs from
    it only in rounding: the run's own precision (and autocast), or a float64 run's rows
    reversed."""
    if run_dtype == torch.float64 and autocast is None:
        return [(torch.float64, False, None), (torch.float64, True, None)]
    return [(torch.float64, False, None), (run_dtype, False, autocast)]


def _modelled(at: RecordedCheckpoint, task: Task, records: list[dict]) -> tuple[dict, dict, Any]:
    """The parameters after ``records`` replayed from ``at`` (float64) with the checks' modelled
    step (its :class:`~perturbative.TrainingStep`, each step's batch as one mean loss), the
    parameters replayed from, and the model. A step the scaler skipped is left out, as the loop
    left it (and as ``at`` leaves it out of its steps and rates)."""
    names = [k for k, p in at.model.named_parameters() if p.requires_grad]
    taken = at.next_steps[: sum(not r.get("skipped") for r in records)]
    batches = [packed(as_dtype(task.batch(r["indices"]), torch.float64)) for r in taken]
    origin = {k: v.detach().double() for k, v in at.model.named_parameters() if k in names}
    if not batches:
        return origin, origin, at.model
    params = parameters_after_steps(at.model, task.loss_fn, at.training, batches)
    return {k: params[k].double() for k in names}, origin, at.model


def _as_the_loop_ran(at: RecordedCheckpoint, task, records, dtype, reverse, autocast) -> dict:
    """The parameters after ``records`` replayed as the loop ran them: each micro-batch's mean
    loss over their number (gradient accumulation), under ``autocast``, skipped steps left out,
    in ``dtype`` (rows reversed within each micro-batch with ``reverse``), from ``at`` (opened
    in ``dtype``)."""
    model, optimizer, training = at.model, at.optimizer, at.training
    params = {k: p for k, p in model.named_parameters() if p.requires_grad}
    loss = calls.batch_loss(model, task.loss_fn, calls.fixed_state(model, params))
    device = next(model.parameters()).device.type
    cast = (
        torch.autocast(device, dtype=autocast) if autocast is not None else contextlib.nullcontext()
    )
    taken = 0  # the checkpoint's step holds the rates of the steps taken (skipped left out)
    for record in records:
        if record.get("skipped"):
            continue
        optimizer.zero_grad(set_to_none=True)
        parts = _split(record["indices"], record.get("micro"))
        for part in parts:
            batch = packed(as_dtype(task.batch(_rows(part, reverse)), dtype))
            with cast:
                value = loss(params, *batch)
            (value / len(parts)).backward()
        training.clip(params.values())
        training.write_rates(optimizer, taken)
        optimizer.step()
        taken += 1
    return {k: p.detach().double() for k, p in params.items()}


def _split(indices: list[int], sizes: list[int] | None) -> list[list[int]]:
    if not sizes:
        return [indices]
    bounds = [0, *itertools.accumulate(sizes)]
    return [indices[a:b] for a, b in itertools.pairwise(bounds)]


def _dtype(name: str | None) -> torch.dtype | None:
    return None if name is None else getattr(torch, name)


def _norm(vector: dict[str, Tensor]) -> float:
    return math.sqrt(sum(float((v.double() ** 2).sum()) for v in vector.values()))

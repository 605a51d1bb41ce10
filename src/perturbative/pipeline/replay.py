"""The replay gate: before a check analyses a recorded checkpoint, it replays the run's logged
steps from it with the modelled training step and compares with the next recorded checkpoint.

Every order check, phase check and sweep of a recorded run models the loop's step: the task's
model and loss, the logged batches, the optimizer in its saved state, the run's clipping and each
step's logged lr. If any of these is not what the loop did (clipping not given to the
:class:`~perturbative.Recorder`, dropout on, another architecture with the same names and
shapes, changed data, a schedule not recorded), predictions and "real" reorderings built on that
one model agree with each other and say nothing about the run. The recorded checkpoints are what
the check does not share with itself: replaying the logged steps from checkpoint ``s`` to the
next one ``s'`` must land on ``theta_s'``.

The gap is ``|theta_replayed - theta_s'| / |theta_s' - theta_s|`` over all trained parameters
(norms in float64): 1 means the replay missed by as much as the steps moved. Replays are taken
in float64, the precision of the checks, while a run usually trained in float32, so even a right
model misses by the run's rounding. That floor is measured, not guessed: the same steps replayed
in the run's own precision (or, for a float64 run, with each batch's rows reversed, which
reorders every sum) differ from the float64 replay by the rounding alone. The gate passes when
``gap <= TOLERANCE_FACTOR * floor`` (plus a float64 epsilon); a modelling error of any size
above rounding fails it.

The gate replays at most ``max_steps`` logged steps (the checks' ``--replay-steps``): checkpoint
``s`` is compared with the next checkpoint when it is that close, else the previous checkpoint is
replayed to ``s`` when that is close, else the gate cannot run and says so.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from perturbative._core.errors import InputError
from perturbative.brackets import parameters_after_steps
from perturbative.pipeline.checkpoints import list_checkpoints, read_checkpoint
from perturbative.pipeline.recorded_run import model_weights, open_recorded_checkpoint
from perturbative.pipeline.task import Task, as_dtype

#: the gap may be this many times the measured rounding floor
TOLERANCE_FACTOR = 10.0


@dataclass
class ReplayGap:
    """What the gate measured at one checkpoint.

    Attributes:
        step: the checkpoint being checked.
        start: the checkpoint replayed from.
        end: the checkpoint replayed to.
        steps: logged steps replayed (``end - start``).
        gap: ``|theta_replayed - theta_end| / |theta_end - theta_start|``, replayed in float64.
        floor: the same measure between the float64 replay and one that differs only in
            rounding (the run's precision, or rows reversed).
        tolerance: the largest gap that passes, ``TOLERANCE_FACTOR * floor`` + epsilon.
        passed: ``gap <= tolerance``.
        causes: what would explain a failed gate, from what the run recorded.
    """

    step: int
    start: int
    end: int
    steps: int
    gap: float
    floor: float
    tolerance: float
    passed: bool
    causes: tuple[str, ...] = ()

    def line(self) -> str:
        """One line for the console: the measured gap first, then the verdict."""
        head = (
            f"replay gap at step {self.step}: {self.gap:.2e} of the movement over the "
            f"{self.steps} logged steps {self.start} -> {self.end} (rounding floor "
            f"{self.floor:.1e}, tolerance {self.tolerance:.1e})"
        )
        if self.passed:
            return head + ": the modelled step is the loop's"
        return head + ": the modelled step is NOT the loop's; likely " + "; or ".join(self.causes)

    @classmethod
    def from_json(cls, data: dict) -> ReplayGap:
        return cls(**{**data, "causes": tuple(data.get("causes", ()))})


def replay_gap(
    run_dir: str | os.PathLike,
    step: int,
    task: Task,
    run: dict[str, Any],
    log: list[dict],
    *,
    max_steps: int = 50,
) -> ReplayGap:
    """Replay the logged steps around checkpoint ``step`` with the modelled training step and
    measure the gap to the recorded checkpoint (module docstring).

    Raises:
        InputError: no recorded checkpoint within ``max_steps`` logged steps of ``step``.
    """
    saved = [s for s, _ in list_checkpoints(run_dir)]
    after = [s for s in saved if step < s <= step + max_steps]
    before = [s for s in saved if step - max_steps <= s < step]
    if after:
        start, end = step, after[0]
    elif before:
        start, end = before[-1], step
    else:
        raise InputError(
            f"step {step} has no other checkpoint within {max_steps} logged steps, so the replay "
            "gate cannot check it: raise --replay-steps, or save checkpoints more often"
        )
    target = _trained_weights(run_dir, end, task)
    replays = {}
    run_dtype = _run_dtype(run_dir, start)
    for dtype, reverse in _replay_precisions(run_dtype):
        at = open_recorded_checkpoint(run_dir, start, task, dtype=dtype, log=log)
        names = [k for k, p in at.model.named_parameters() if p.requires_grad]
        batches = [
            _packed(as_dtype(task.batch(_rows(r["indices"], reverse)), dtype))
            for r in at.next_steps[: end - start]
        ]
        params = parameters_after_steps(at.model, task.loss_fn, at.training, batches)
        replays[dtype, reverse] = {k: params[k].double() for k in names}
        if (dtype, reverse) == (torch.float64, False):
            origin = {k: v.detach().double() for k, v in at.model.named_parameters() if k in names}
    exact, *others = replays.values()
    moved = _norm({k: target[k] - origin[k] for k in exact})
    scale = moved if moved > 0 else 1.0
    gap = _norm({k: exact[k] - target[k] for k in exact}) / scale
    floor = max(_norm({k: exact[k] - other[k] for k in exact}) / scale for other in others)
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
        causes=() if passed else likely_causes(run),
    )


def likely_causes(run: dict[str, Any]) -> tuple[str, ...]:
    """What could make the modelled step differ from the loop's, the recorded ones first."""
    mode = run.get("model_mode") or {}
    causes = []
    if mode.get("stochastic"):
        causes.append(
            f"dropout or other randomness on ({', '.join(mode['stochastic'][:2])}: recorded "
            "active; train with it off)"
        )
    if mode.get("batch_statistics"):
        causes.append("BatchNorm trained on batch statistics, replayed on running statistics")
    if run.get("max_grad_norm") is None:
        causes.append("gradient clipping not given to the Recorder (max_grad_norm=)")
    causes.append("the task's model or data not the run's (another architecture, changed data)")
    if run.get("scheduler") is None:
        causes.append("an lr set outside the optimizer's param groups (a schedule not recorded)")
    causes.append("a loss or step not the Task's (gradient accumulation, mixed precision)")
    return tuple(causes)


def refuse(gap: ReplayGap) -> None:
    """Raise the gate's refusal: the measured gap and the likely causes, in one line."""
    raise InputError(
        gap.line() + ". Fix the recording (or the task), or pass --allow-replay-gap to check "
        "anyway (the gap is stored with the results and shown at the top of the report)"
    )


def _rows(indices: list[int], reverse: bool) -> list[int]:
    return list(reversed(indices)) if reverse else list(indices)


def _replay_precisions(run_dtype: torch.dtype) -> list[tuple[torch.dtype, bool]]:
    """The float64 replay, then one that differs only in rounding."""
    if run_dtype == torch.float64:
        return [(torch.float64, False), (torch.float64, True)]
    return [(torch.float64, False), (run_dtype, False)]


def _run_dtype(run_dir: str | os.PathLike, step: int) -> torch.dtype:
    tensors, _ = read_checkpoint(dict(list_checkpoints(run_dir))[step])
    floating = [
        t.dtype for k, t in tensors.items() if k.startswith("model/") and t.is_floating_point()
    ]
    return floating[0] if floating else torch.float32


def _trained_weights(run_dir: str | os.PathLike, step: int, task: Task) -> dict[str, Tensor]:
    """The recorded weights at ``step`` in float64, named like the task's model."""
    tensors, _ = read_checkpoint(dict(list_checkpoints(run_dir))[step])
    weights, _ = model_weights(tensors, task.model())
    return {k: v.double() for k, v in weights.items()}


def _norm(vector: dict[str, Tensor]) -> float:
    return math.sqrt(sum(float((v.double() ** 2).sum()) for v in vector.values()))


def _packed(batch: Any) -> Any:
    return batch if isinstance(batch, (tuple, dict)) else (batch,)

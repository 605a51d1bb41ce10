"""Brackets over the checkpoints of a training run, saved as plain files for the report.

For every checkpoint: the first ``B`` examples of a fixed held-out batch are bracketed pairwise
(``B(B-1)/2`` brackets, one bracket matrix computation), each bracket is pushed to the outputs of
all ``T`` examples of the batch (``lr^2 J_f [v_i, v_j]``), norms and per-parameter-tensor RMS are
recorded, and ``M`` training examples are ranked by how much their position in training moves
the held-out loss (their order scores, :func:`perturbative.brackets.order_scores`). The file
layout is documented in ``docs/results-format.md``; the report reads only these files.

Compute, save, then render: nothing here draws, and nothing in the report computes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from perturbative._core import calls
from perturbative._core.calls import LossFn
from perturbative._core.checks import Params
from perturbative._core.distributed import (
    all_gather_objects,
    barrier,
    broadcast_object,
    rank_and_world,
)
from perturbative._core.errors import InputError
from perturbative._core.io import folder_lock, tensors_sha256
from perturbative._core.memory import process_peak_gib
from perturbative.brackets import (
    bracket_terms,
    cancellation_ratio,
    layer_rms,
    mean_gradient,
    order_scores,
    output_shift,
    pair_indices,
    upper_pairs,
    vector_norm,
)
from perturbative.pipeline.config import SweepOptions, SweepSettings
from perturbative.pipeline.results import (
    META,
    RESULTS_FORMAT_VERSION,
    finished_steps,
    read_meta,
    write_meta,
    write_step,
    write_thumbnails,
)
from perturbative.pipeline.task import Task

T = TypeVar("T")

# what a sweep measures of each step it computes, recorded in meta.json beside its source:
# wall-clock seconds (loading, brackets, shifts, ranking, writing) and the sweeping process's
# peak resident memory so far, in GiB
MEASURED = ("seconds", "peak_memory_gib", "step_lr")


@dataclass
class SweepData:
    """The fixed examples a sweep looks at (same at every checkpoint).

    Attributes:
        test_inputs: ``(T, ...)`` held-out inputs, or a keyword batch of ``T`` examples (a
            mapping of the model's keyword arguments, which carries its own targets); the first
            ``bracket_examples`` are bracketed.
        test_targets: ``(T, ...)`` their targets (``None`` for keyword batches).
        attribute_names: ``K`` names, one per column of what the report shows of each example
            (the model's outputs, or ``measure``'s).
        ranking_inputs: ``(M, ...)`` training inputs (or a keyword batch) ranked by order
            sensitivity (may be None).
        ranking_targets: ``(M, ...)`` their targets (``None`` for keyword batches).
        test_indices: ``(T,)`` dataset indices of the test batch (for the record).
        ranking_indices: ``(M,)`` dataset indices of the ranked training examples.
        thumbnails: ``(B, C, H, W)`` images in ``[0, 1]`` of the bracketed examples, or None.
        measure: ``(outputs, *targets) -> (T, K)``, what of the outputs the brackets are pushed
            to and the report shows (called like the loss, on the whole test batch): default
            the outputs themselves; for a language model, e.g. each target token's
            log-probability. Every sweep also records each test example's loss shift.
        texts: a text snippet of each test example, for a report that shows examples as text.
        tokens: ``T`` lists of ``K`` strings: the token behind each column of ``measure``, per
            test example (the report's text view colours them by their shift).
    """

    test_inputs: Tensor | Mapping[str, Tensor]
    test_targets: Tensor | None
    attribute_names: list[str]
    ranking_inputs: Tensor | Mapping[str, Tensor] | None = None
    ranking_targets: Tensor | None = None
    test_indices: Tensor | None = None
    ranking_indices: Tensor | None = None
    thumbnails: Tensor | None = None
    measure: Callable[..., Tensor] | None = None
    texts: list[str] | None = None
    tokens: list[list[str]] | None = None

    def test_data(self) -> tuple[Any, ...]:
        """The test batch as a data tuple (``(inputs, targets)``, or ``(keyword batch,)``)."""
        return _as_data(self.test_inputs, self.test_targets, "test")

    def ranking_data(self) -> tuple[Any, ...] | None:
        """The ranking pool as a data tuple, or None when there is no pool of 2 or more."""
        if self.ranking_inputs is None:
            return None
        data = _as_data(self.ranking_inputs, self.ranking_targets, "ranking")
        return data if calls.num_examples(data) >= 2 else None


def _as_data(inputs: Any, targets: Tensor | None, what: str) -> tuple[Any, ...]:
    if isinstance(inputs, Mapping):
        if targets is not None:
            raise InputError(
                f"{what}_targets were given beside a keyword batch of {what}_inputs: a keyword "
                "batch carries its own targets (e.g. 'labels'); pass None"
            )
        return (dict(inputs),)
    return (inputs,) if targets is None else (inputs, targets)


def _loss_arguments(data: tuple[Any, ...]) -> tuple[Any, ...]:
    """What the loss (and ``measure``) take after the outputs: the targets, or the keyword
    batch."""
    return data if isinstance(data[0], Mapping) else data[1:]


def checkpoint_results(
    model: nn.Module,
    loss_fn: LossFn,
    data: SweepData,
    settings: SweepSettings,
    preconditioner: Params | None = None,
    scores: Callable[[], Tensor | None] | None = None,
) -> dict[str, Tensor]:
    """Everything one checkpoint contributes to the results (see ``docs/results-format.md``).

    ``model`` must already hold the checkpoint's weights and be in eval mode. ``scores``, if
    given, replaces the ranking pool's plain (or preconditioned) order scores: ``() -> (M,)``,
    e.g. :func:`perturbative.brackets.optimizer_order_scores` with the run's optimizer, or
    ``None`` where they cannot be had at this checkpoint (the step then has no ranking).
    """
    params = {k: v for k, v in model.named_parameters() if v.requires_grad}
    b = settings.bracket_examples
    device = next(iter(params.values())).device
    test = tuple(_to(item, device) for item in data.test_data())
    t = calls.num_examples(test)
    if not 2 <= b <= t:
        raise InputError(f"bracket_examples must be between 2 and the test batch size {t}, not {b}")
    terms = bracket_terms(
        model,
        loss_fn,
        params,
        calls.take_all(test, slice(0, b)),
        preconditioner=preconditioner,
        engine=settings.engine,
    )
    matrix = terms.brackets()
    pairs = upper_pairs(matrix)
    shown_and_loss = _shown_and_loss(loss_fn, data.measure, test)
    shifts = output_shift(
        model,
        params,
        pairs,
        test[0],
        lr=settings.lr,
        engine=settings.engine,
        measure=shown_and_loss,
    )
    with torch.no_grad():
        values = shown_and_loss(
            calls.call_model(model, params, calls.fixed_state(model, params), test[0])
        )
    width = values.shape[1] - 1

    idx = pair_indices(b)
    rows = torch.tensor([i for i, _ in idx])
    cols = torch.tensor([j for _, j in idx])
    cancellation = cancellation_ratio(terms).cpu()[rows, cols]

    result = {
        "output_shift": shifts[..., :width].float(),
        "loss_shift": shifts[..., width].float(),
        "outputs": values[:, :width].float(),
        "losses": values[:, width].float(),
        "grad_norm": vector_norm(terms.gradients, leading=1).float(),
        "bracket_norm": vector_norm(pairs, leading=1).float(),
        "bracket_layer_rms": layer_rms(pairs, leading=1)[0].float(),
        "grad_layer_rms": layer_rms(terms.gradients, leading=1)[0].float(),
        "cancellation": cancellation.float(),
    }
    labels = _keyword_labels(data.test_inputs, width)
    if data.test_targets is not None or labels is not None:
        result["targets"] = report_targets(
            data.test_targets if data.test_targets is not None else labels, width
        )
    if data.test_indices is not None:
        result["test_indices"] = data.test_indices.long()
    ranked = data.ranking_data()
    ranking = scores() if scores is not None and ranked is not None else None
    if ranked is not None and (scores is None or ranking is not None):
        if ranking is None:
            u = mean_gradient(model, loss_fn, params, test)
            ranked = tuple(_to(item, device) for item in ranked)
            ranking = order_scores(model, loss_fn, params, ranked, u, preconditioner=preconditioner)
        order = torch.argsort(ranking.abs(), descending=True)
        indices = (
            data.ranking_indices if data.ranking_indices is not None else torch.arange(len(ranking))
        )
        result["ranking_indices"] = indices.cpu()[order.cpu()].long()
        result["ranking_scores"] = ranking[order].float()
    if settings.save_brackets:
        result.update({f"bracket.{k}": v.float() for k, v in pairs.items()})
    return {k: v.detach().cpu() for k, v in result.items()}


def _keyword_labels(inputs: Any, width: int) -> Tensor | None:
    """A keyword batch's class labels (Hugging Face's ``labels``, one class index per example
    below ``width``), for the report to draw in their class's cell; None for anything else."""
    labels = inputs.get("labels") if isinstance(inputs, Mapping) else None
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.is_floating_point():
        return None
    return labels if bool(((labels >= 0) & (labels < width)).all()) else None


def _to(item: Any, device: torch.device) -> Any:
    if isinstance(item, Mapping):
        return {k: v.to(device) for k, v in item.items()}
    return item.to(device)


def _shown_and_loss(
    loss_fn: LossFn, measure: Callable[..., Tensor] | None, test: tuple[Any, ...]
) -> Callable[[Any], Tensor]:
    """``outputs -> (T, K + 1)``: what the report shows of each test example (the output
    values, or ``measure``'s), and its loss in the last column."""
    t, rest = calls.num_examples(test), _loss_arguments(test)

    def shown_and_loss(outputs: Any) -> Tensor:
        shown = calls.output_values(outputs) if measure is None else measure(outputs, *rest)
        try:
            losses = calls.example_losses(outputs, loss_fn, test)
        except ValueError as error:
            raise InputError(
                f"each test example's loss cannot be read from one forward pass ({error}): "
                "make the loss read its example's rows of the outputs (e.g. outputs.logits), "
                "not a batch-wide field such as outputs.loss"
            ) from error
        return torch.cat([shown.reshape(t, -1), losses.reshape(t, 1).to(shown)], 1)

    return shown_and_loss


def _meta(
    data: SweepData,
    settings: SweepSettings,
    model: nn.Module,
    steps: list[int],
    sources: Mapping[int, str],
    data_sha256: str,
    measured: Mapping[str, Mapping[int, float]],
    ranking_model: str,
) -> dict:
    named = [(k, v) for k, v in model.named_parameters() if v.requires_grad]
    b = settings.bracket_examples
    return {
        "format_version": RESULTS_FORMAT_VERSION,
        "dataset": settings.dataset,
        "attribute_names": list(data.attribute_names),
        "steps": sorted(steps),
        "lr": settings.lr,
        "bracket_examples": b,
        "pairs": [list(p) for p in pair_indices(b)],
        "test_examples": calls.num_examples(data.test_data()),
        "param_names": [k for k, _ in named],
        "param_sizes": [int(v.numel()) for _, v in named],
        "ranking_examples": 0
        if data.ranking_data() is None
        else calls.num_examples(data.ranking_data()),
        "observable": settings.observable,
        "ranking_model": ranking_model,
        "texts": data.texts,
        "tokens": data.tokens,
        "preconditioner": settings.preconditioner,
        "settings": asdict(settings),
        "data_sha256": data_sha256,
        "sources": {str(s): sources[s] for s in sorted(steps) if s in sources},
        **{
            key: {str(s): values[s] for s in sorted(steps) if s in values}
            for key, values in measured.items()
        },
    }


def bracket_sweep(
    model: nn.Module,
    loss_fn: LossFn,
    checkpoints: Iterable[tuple[int, Callable[[], Mapping[str, Tensor]]]],
    data: SweepData,
    out_dir: Path | str,
    settings: SweepSettings,
    *,
    preconditioner_at: Callable[[int, nn.Module], Params | None] | None = None,
    sources: Mapping[int, str] | None = None,
    replace_stale: bool = False,
    progress: bool = True,
    scores_at: Callable[[int, nn.Module], Tensor | None] | None = None,
    scores_model: str | None = None,
    lr_at: Callable[[int], float] | None = None,
) -> Path:
    """Run the sweep over ``checkpoints`` and write the results directory.

    Every results directory records what produced it: the settings, a hash of the examples
    (``data_sha256``) and, per step, the identity of the checkpoint (``sources``, e.g. the
    checkpoint file's SHA-256). A step already there is reused only when all of it matches.

    Args:
        model: the model, any ``nn.Module``; its weights are replaced by each checkpoint's.
        loss_fn: per-example loss ``loss_fn(outputs, targets) -> scalar`` (batch of one).
        checkpoints: ``(step, load)`` pairs; ``load()`` returns a ``state_dict`` for ``model``.
        data: the fixed test batch, ranking pool and thumbnails.
        out_dir: results directory (created). Step files already there from a sweep with the
            same settings are kept and skipped, so a killed sweep resumes; a directory holding
            a different sweep is refused rather than overwritten.
        settings: see :class:`SweepSettings`.
        preconditioner_at: ``(step, model) -> P`` for ``settings.preconditioner == "adam"``.
        sources: ``{step: identity}`` of the checkpoints (their content hashes); steps whose
            recorded identity differs are stale. Give every checkpoint of the run, not only
            those swept now: a step swept earlier is checked only where its identity is given
            (and kept as recorded otherwise).
        replace_stale: recompute stale steps (the directory belongs to this run, retrained
            since); ``False`` refuses instead, so another run's results are never overwritten.
        scores_at: ``(step, model) -> (M,)`` order scores of the ranking pool in place of the
            plain (or preconditioned) bracket scores, e.g. with the run's optimizer
            (:func:`perturbative.brackets.optimizer_order_scores`), or ``None`` for a step that
            cannot be scored (it is then left unranked).
        scores_model: what ``scores_at`` models, for the report (e.g. "AdamW, the run's state,
            window of 4 batches").
        lr_at: ``step -> lr``, the lr the run trained with after each checkpoint (a schedule):
            each step's shifts ``lr^2 J [v_x, v_y]`` take its own (kept in ``meta.json`` as
            ``step_lr``); ``None``: ``settings.lr`` at every step.

    Returns:
        ``out_dir`` as a ``Path``.

    Raises:
        FileExistsError: ``out_dir`` holds results of other settings, data or checkpoints
            (and ``replace_stale`` is false for the checkpoints).
        InputError: another process is sweeping into ``out_dir``.
    """
    out_dir = Path(out_dir)
    checkpoints = list(checkpoints)
    if not checkpoints:
        raise InputError("no checkpoints to sweep: train first (perturbative train)")
    if settings.preconditioner == "adam" and preconditioner_at is None:
        raise InputError(
            "settings.preconditioner is 'adam' but no preconditioner_at was given, so the "
            "brackets would be plain ones recorded as Adam's: pass preconditioner_at=(step, "
            "model) -> adam_preconditioner(optimizer, params), or use preconditioner='none'"
        )
    if settings.preconditioner == "none" and preconditioner_at is not None:
        raise InputError(
            "preconditioner_at was given but settings.preconditioner is 'none': set "
            "preconditioner='adam' so the results say what they hold"
        )
    names = data.attribute_names
    model.eval()
    width = output_width(model, loss_fn, data)
    if width != len(names):
        raise InputError(
            f"{len(names)} attribute names for the model's {width} outputs per example; pass "
            "one name per output (for integer class labels: one name per class, e.g. "
            "[f'class_{k}' for k in range(num_classes)])"
        )
    if scores_model is None:
        scores_model = (
            "plain-SGD bracket score lr^2 S_x (ignores the optimizer)"
            if settings.preconditioner == "none"
            else "Adam-preconditioned bracket score (frozen P; ignores the optimizer's state)"
        )
    if data.tokens is not None and [len(row) for row in data.tokens] != [width] * len(data.tokens):
        raise InputError(f"tokens must hold {width} strings per test example, one per column")
    sources = {int(k): str(v) for k, v in (sources or {}).items()}
    rank, world = rank_and_world()
    examples = tensors_sha256(
        *_tensors(data.test_inputs),
        data.test_targets,
        *_tensors(data.ranking_inputs),
        data.ranking_targets,
    )
    # Under torch.distributed the checkpoints are dealt out to the ranks; rank 0 holds the lock,
    # checks what is there, and writes meta.json; each step file is written by one rank only.
    with folder_lock(out_dir, "a bracket sweep") if rank == 0 else contextlib.nullcontext():
        fresh = _meta(data, settings, model, [], sources, examples, {}, scores_model)
        kept, measured = _agreed(
            lambda: _steps_already_done(out_dir, fresh, sources, replace_stale)
        )
        done = list(kept)
        # the steps kept carry their recorded checkpoints and times into meta.json
        sources = {**{s: v for s, v in kept.items() if v is not None}, **sources}
        if data.thumbnails is not None and rank == 0:
            write_thumbnails(out_dir, data.thumbnails)
        model.eval()
        todo = [(s, load) for s, load in checkpoints if s not in done][rank::world]
        bar = tqdm(todo, desc="brackets", unit="ckpt", disable=not progress or rank != 0)
        for step, load in bar:
            started = time.perf_counter()
            model.load_state_dict(load())
            model.eval()
            precond = preconditioner_at(step, model) if preconditioner_at is not None else None
            scores = functools.partial(scores_at, step, model) if scores_at is not None else None
            lr = settings.lr if lr_at is None else float(lr_at(step))
            at_lr = dataclasses.replace(settings, lr=lr)
            results = checkpoint_results(model, loss_fn, data, at_lr, precond, scores)
            measured["step_lr"][step] = lr
            write_step(out_dir, step, results)
            measured["seconds"][step] = round(time.perf_counter() - started, 3)
            peak = process_peak_gib()
            measured["peak_memory_gib"][step] = None if peak is None else round(peak, 3)
            done.append(step)
            if world == 1:
                write_meta(
                    out_dir,
                    _meta(data, settings, model, done, sources, examples, measured, scores_model),
                )
        if world > 1:
            finished = sorted({s for steps in all_gather_objects(done) for s in steps})
            measured = {
                key: {s: v for part in all_gather_objects(values) for s, v in part.items()}
                for key, values in measured.items()
            }
            if rank == 0:
                write_meta(
                    out_dir,
                    _meta(
                        data, settings, model, finished, sources, examples, measured, scores_model
                    ),
                )
            barrier()
    return out_dir


def output_width(model: nn.Module, loss_fn: LossFn, data: SweepData) -> int:
    """How many values the report shows of each test example: the model's outputs, or
    ``data.measure``'s, per example."""
    device = next(model.parameters()).device
    first = tuple(_to(item, device) for item in calls.take_all(data.test_data(), slice(0, 1)))
    model.eval()
    with torch.no_grad():
        return _shown_and_loss(loss_fn, data.measure, first)(_call(model, first[0])).shape[1] - 1


def _call(model: nn.Module, inputs: Any) -> Any:
    return model(**inputs) if isinstance(inputs, Mapping) else model(inputs)


def _tensors(inputs: Any) -> list[Tensor | None]:
    """A keyword batch's tensors in the order of their keys, or ``[inputs]``."""
    if isinstance(inputs, Mapping):
        return [inputs[k] for k in sorted(inputs)]
    return [inputs]


def _agreed(check: Callable[[], T]) -> T:
    """``check()`` run on rank 0 and its answer, or its error, given to every rank."""
    rank, world = rank_and_world()
    answer: list[int] | BaseException | None = None
    if rank == 0:
        try:
            answer = check()
        except (FileExistsError, InputError) as error:
            answer = error
    if world > 1:
        answer = broadcast_object(answer)
    if isinstance(answer, BaseException):
        raise answer
    return answer


def _steps_already_done(
    out_dir: Path, fresh: dict, sources: Mapping[int, str], replace_stale: bool
) -> tuple[dict[int, str | None], dict[str, dict[int, float]]]:
    """Steps a previous sweep of the same settings, data and checkpoints finished in
    ``out_dir`` (to skip them), with the checkpoint identity recorded for each, and what was
    measured of each (``{key: {step: value}}`` for the keys of :data:`MEASURED`, where
    recorded).

    Raises:
        FileExistsError: ``out_dir`` holds a sweep of other settings or data, or of other
            checkpoints while ``replace_stale`` is false.
    """
    if not (out_dir / META).exists():
        return {}, {key: {} for key in MEASURED}
    old = read_meta(out_dir)
    keys = ("settings", "attribute_names", "param_names", "data_sha256", "ranking_model")
    differ = [k for k in keys if old.get(k) != fresh[k]]
    if differ:
        raise FileExistsError(
            f"{out_dir} already holds a sweep with other {', '.join(differ)}; choose another "
            "output directory (--out) or delete that one first"
        )
    done = finished_steps(out_dir, old)
    recorded = old.get("sources", {})
    # a step is checked against its checkpoint where that is given; one swept earlier whose
    # checkpoint is not (not asked for now, or deleted since) is kept as it was recorded
    stale = [s for s in done if s in sources and recorded.get(str(s)) != sources[s]]
    if stale and not replace_stale:
        raise FileExistsError(
            f"{out_dir} holds results of other checkpoints (steps {stale[:5]}: the recorded "
            "checkpoint hashes differ); it belongs to another run or an earlier training. Choose "
            "another output directory (--out) or delete that one first"
        )
    if stale:
        print(f"{out_dir}: {len(stale)} step(s) came from earlier checkpoints; recomputing them")
    kept = {s: recorded.get(str(s)) for s in done if s not in stale}
    measured = {key: old.get(key, {}) for key in MEASURED}
    return kept, {
        key: {s: values[str(s)] for s in kept if values.get(str(s)) is not None}
        for key, values in measured.items()
    }


def report_targets(targets: Tensor, width: int) -> Tensor:
    """The targets as the report draws them, ``(T, K)`` against the ``K`` outputs: class indices
    ``(T,)`` become one-hot rows (each target in its class's cell), anything else is flattened
    per example."""
    if not targets.is_floating_point() and targets.dim() == 1:
        return torch.nn.functional.one_hot(targets.long(), width).float()
    return targets.reshape(len(targets), -1).float()


def task_sweep_data(task: Task, options: SweepOptions, model: nn.Module) -> SweepData:
    """The examples a sweep of a task's run looks at: ``options.test_examples`` of its held-out
    set and ``options.ranking_examples`` of its training set (positions in each, as indices),
    what the report shows of them (the task's measure, texts, tokens, images) and the names of
    the shown columns (the task's, or one per column of ``model``'s outputs).

    Raises:
        InputError: the task has no held-out examples, or fewer than ``bracket_examples``.
    """
    if task.heldout is None:
        raise InputError("the sweep brackets held-out examples: give the task heldout=...")
    test = select_examples(range(len(task.heldout)), options.test_examples, options.seed)
    if len(test) < options.bracket_examples:
        raise InputError(
            f"only {len(test)} held-out examples; need at least bracket_examples="
            f"{options.bracket_examples}"
        )
    pool = select_examples(range(len(task.train)), options.ranking_examples, options.seed + 1)
    shown = [task.heldout[i] for i in test.tolist()] if task.describe or task.tokens else []
    data = SweepData(
        *_inputs_and_targets(task.batch(test.tolist(), "heldout")),
        attribute_names=list(task.output_names),
        test_indices=test,
        ranking_indices=pool,
        measure=task.measure,
        texts=[task.describe(e) for e in shown] if task.describe else None,
        tokens=[task.tokens(e) for e in shown] if task.tokens else None,
    )
    if len(pool) >= 2:
        data.ranking_inputs, data.ranking_targets = _inputs_and_targets(task.batch(pool.tolist()))
    if task.examples_view == "image":
        data.thumbnails = _thumbnails(data.test_inputs, options.bracket_examples)
    if not data.attribute_names:
        data.attribute_names = [
            f"token {k}" if task.tokens else f"output_{k}"
            for k in range(output_width(model, task.loss_fn, data))
        ]
    return data


def _inputs_and_targets(batch: Any) -> tuple[Any, Tensor | None]:
    """A collated batch as the sweep's ``(inputs, targets)``: a keyword batch carries its own."""
    if isinstance(batch, Mapping):
        return batch, None
    return batch[0], batch[1] if len(batch) > 1 else None


def _thumbnails(inputs: Any, count: int) -> Tensor | None:
    """The first ``count`` inputs as images in ``[0, 1]`` (each scaled from its own range) for
    the report, or None where the inputs are not images ``(n, C, H, W)`` or ``(n, H, W)``."""
    if not isinstance(inputs, Tensor) or inputs.dim() not in (3, 4):
        return None
    images = inputs[:count].detach().float()
    images = images[:, None] if images.dim() == 3 else images
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    high = images.amax(dim=(1, 2, 3), keepdim=True)
    return (images - low) / (high - low).clamp_min(1e-12)


def select_examples(indices: Sequence[int], count: int, seed: int) -> Tensor:
    """A deterministic subset of ``count`` of ``indices`` (all of them if fewer)."""
    indices = torch.as_tensor(list(indices), dtype=torch.long)
    if count >= len(indices):
        return indices
    generator = torch.Generator().manual_seed(seed)
    return indices[torch.randperm(len(indices), generator=generator)[:count]].sort().values

"""Which data first? Phase-order predictions against real sequential training, at checkpoints
of a run (``perturbative phase-check``).

A *source* is a named set of training examples (the run's task names them: digit classes,
CelebA attribute groups, text domains); a *phase* is ``k`` batches of the run's batch size drawn
from one source with a seed. At each chosen checkpoint (model and optimizer in float64 or as
``dtype`` says, on ``device``, each
batch meeting BatchNorm with its own statistics as the run trained), for each ``k``:

1. draw ``sources`` sources and one phase from each;
2. really train every pair both ways (``A then B`` and ``B then A``) on copies of the model AND
   the optimizer (each first phase once, every second phase branching from its copy: ``N^2 k``
   steps), and measure each target: the held-out loss, and the loss of one held-out
   source; this is the real tournament (``R[i, j] = O(i then j) - O(j then i)``), and its
   rounding floor is measured by training one order again with each batch's rows reversed (in
   float32: that order again in float64);
3. predict the same matrix with every method (:func:`perturbative.brackets.phase_tournament`'s
   composition and last-phase, :func:`perturbative.brackets.anchored_tournaments` from each
   source trained before and after a phase of the sources' mixture (``(3N + 1) k`` steps of
   real training, none of them a pair of the tournament), the same with an anchor whose
   batches each come from one source, cycling through them ("anchored-cycle"), and from each
   source then the mixture alone, read after the source and after the anchor
   ("anchored-alone", ``2 N k`` steps),
   :func:`perturbative.brackets.bracket_tournament` at the
   checkpoint and at a reference point, the expansion of
   :func:`perturbative.brackets.predict_phase_order` for small ``k``) and the heuristic
   baselines (larger gradient first, larger loss first, a coin), timing each;
4. for triples of the sources, really train all ``3!`` orders, and compare each method's
   predicted best order with the real best.

Writes ``<out>/phase_check.json``; the summary pools checkpoints per ``k``, target and method:
sign accuracy over all pairs and over pairs above the floor, Spearman, calibration slope, median
relative error, Kendall's tau of the ranking against the real tournament's, best of ``3!``, and
seconds against training every order. A check that stops continues where it stopped when run
again (the same :class:`~perturbative.pipeline.partial.PartialCheck` as the order check), and a
finished check of an earlier version gains the anchored methods it lacks without training its
pairs again (``from_check``, :mod:`perturbative.pipeline.phase_extend`).
"""

from __future__ import annotations

import itertools
import json
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from perturbative._core.errors import InputError
from perturbative._core.io import file_sha256, folder_lock, write_json
from perturbative._core.memory import PeakMemory
from perturbative.brackets import (
    Observable,
    TrainingStep,
)
from perturbative.pipeline.checkpoints import list_checkpoints
from perturbative.pipeline.order_check import (
    choose_checkpoints,
    run_batch_size,
    usable_checkpoints,
)
from perturbative.pipeline.order_sampling import DTYPES
from perturbative.pipeline.partial import UNSAVED, PartialCheck
from perturbative.pipeline.phase_extend import defaults_of, earlier_check, tournaments_to_extend
from perturbative.pipeline.phase_records import PhaseCheckRecord, TournamentRecord
from perturbative.pipeline.phase_summary import summarize
from perturbative.pipeline.phase_tournament import Tournament, tournament_record
from perturbative.pipeline.recorded_run import (
    analysis_device,
    batchnorm_statistics,
    open_recorded_checkpoint,
    read_run,
    refuse_batchnorm_flags,
    run_task,
)
from perturbative.pipeline.recorder import read_order_log
from perturbative.pipeline.replay import ReplayGap, gate, replay_gap
from perturbative.pipeline.results import PHASE_CHECK
from perturbative.pipeline.task import Task, as_dtype, packed

PROGRESS = "phase_check.progress.jsonl"


@dataclass
class PhaseCheckOptions:
    """How ``perturbative phase-check`` tests phase-order predictions against real training.

    Attributes:
        checkpoints: how many checkpoints after step 0, spread from the first to the last.
        steps: check exactly these checkpoint steps instead (``checkpoints`` is then ignored).
        ks: the phase lengths checked, in batches of the run's batch size per phase.
        sources: sources drawn per checkpoint and ``k``, every pair of them trained both ways
            (the real tournament: ``sources * (sources - 1) / 2`` pairs).
        triples: triples of those sources per checkpoint and ``k`` in ``triple_ks`` whose
            ``3!`` orders are all really trained, to check the predicted best order.
        triple_ks: the phase lengths at which triples are checked.
        expansion_up_to: the expansion at the checkpoint is predicted for ``k`` up to this (a
            pair costs it about ten times training both orders at ``k = 1``, and it grows with
            ``k``).
        target_source: the held-out source whose mean loss is the second target (default the
            first source with held-out examples; "none" for none).
        heldout_examples: the held-out examples each target averages (at most).
        lr_scale: the phases' learning rate over the run's.
        batchnorm: how a run that trained BatchNorm on batch statistics meets it (refused on
            any other run): "batch" (each batch normalised by its
            own statistics, as the run trained) or "running" (eval mode on running statistics
            recomputed at the checkpoint: a diagnostic of what one-source batches' statistics
            do).
        dtype: "float64", or "float32" where a large model's expansion does not fit in
            float64. The floor is then one order against the same order trained in float64
            (only real training runs in float64).
        device: where the check runs, "cpu" or "cuda" (default: where the run trained when
            that device is here, else the CPU).
        seed: draws the sources, phases and triples.
        replay_steps: the replay gate replays at most this many of the run's steps to the
            nearest checkpoint (:mod:`perturbative.pipeline.replay`).
        allow_replay_gap: check even where the replay gate fails (the gap is kept in the
            results).
        out_dir: the check's folder (default ``RUN/phase_check``).
        from_check: a finished check of this run with these same settings (an earlier
            version's): its real pairs, triples and predictions are kept and only the anchored
            methods it lacks are computed, into ``out_dir`` (the earlier check is not changed;
            the seconds of what is kept are its own). Two pairs of each of its tournaments are
            trained again first and must reproduce it, or the check stops
            (:mod:`perturbative.pipeline.phase_extend`).
    """

    checkpoints: int = 3
    steps: tuple[int, ...] = ()
    ks: tuple[int, ...] = (1, 5, 20, 50)
    sources: int = 6
    triples: int = 4
    triple_ks: tuple[int, ...] = (1, 5)
    expansion_up_to: int = 1
    target_source: str | None = None
    heldout_examples: int = 256
    lr_scale: float = 1.0
    batchnorm: str = "batch"
    dtype: str = "float64"
    device: str | None = None
    seed: int = 0
    out_dir: str | None = None
    replay_steps: int = 200
    allow_replay_gap: bool = False
    from_check: str | None = None


def phase_check(
    run_dir: str | Path,
    options: PhaseCheckOptions | None = None,
    task: str | Task | None = None,
    progress: bool = True,
    data_root: str | None = None,
) -> Path:
    """Run the check on a run of ``perturbative train`` or a recorded run (module docstring);
    returns ``<out>/phase_check.json``.

    The replay gate runs first at every chosen checkpoint and prints its gap
    (:mod:`perturbative.pipeline.replay`).

    Raises:
        InputError: a run whose task names fewer than two sources, sources too small for a
            batch, no checkpoint at a step asked for, an out folder holding another check, or
            a replay gap beyond rounding (the gap and the likely causes).
    """
    options = options or PhaseCheckOptions()
    if options.batchnorm not in ("batch", "running"):
        raise InputError(f"batchnorm must be 'batch' or 'running', not {options.batchnorm!r}")
    if options.dtype not in DTYPES:
        raise InputError(f"dtype must be one of {sorted(DTYPES)}, not {options.dtype!r}")
    settings = {k: v for k, v in asdict(options).items() if k not in UNSAVED}
    earlier = None
    if options.from_check is not None:
        earlier = earlier_check(
            options.from_check, json.loads(json.dumps(settings)), defaults_of(PhaseCheckOptions)
        )
    run = _Run.open(Path(run_dir), task, data_root)
    refuse_batchnorm_flags(run.run, run_dir, ["batchnorm"] if options.batchnorm != "batch" else [])
    usable = usable_checkpoints(run.run, run.log, _needed_steps(options))
    steps = choose_checkpoints(
        run.folder, options.checkpoints, options.steps, usable, "smaller --ks or --triple-ks"
    )
    extended = tournaments_to_extend(earlier, steps, options.ks) if earlier else {}
    sources = run.task.sources or {}
    names = _phase_sources(sources, run.batch_size)
    if len(names) < 2:
        raise InputError(
            f"the run's task names {len(sources)} sources with at least a batch "
            f"({run.batch_size}) of examples each; a phase check needs two: give "
            "Task(sources={name: training indices})"
        )
    target = _target_source(run.task, options.target_source)
    out = Path(options.out_dir) if options.out_dir else Path(run_dir) / "phase_check"
    run.replay = gate(  # the modelled step held to the run's own checkpoints first
        lambda step: run.replay_gap(step, options.replay_steps), steps, options.allow_replay_gap
    )
    header = json.loads(
        json.dumps(
            {
                "options": settings,
                "checkpoints": {str(s): file_sha256(run.checkpoint_files[s]) for s in steps},
            }
        )
    )
    records: list[TournamentRecord] = []
    costs: dict[str, dict] = {}
    with folder_lock(out, "a phase check"):
        unfinished = PartialCheck.open(
            out, header, progress=PROGRESS, finished=PHASE_CHECK, what="phase check"
        )
        for step in tqdm(steps, desc="phase-check", unit="ckpt", disable=not progress):
            started, peak = time.perf_counter(), PeakMemory(run.device(options))
            at = run.restore(step, options)
            targets = _targets(run.task, at.model, target, options.heldout_examples)
            for k in options.ks:
                drawn = phase_draws(run.task.sources, run.batch_size, step, k, options)
                chosen, triples = drawn.sources, drawn.triples
                phases = [_batches(run.task, p, at.model) for p in drawn.phases]
                anchor = _batches(run.task, drawn.mixture, at.model)
                cycled = _batches(run.task, drawn.cycle, at.model)

                tournament = Tournament(
                    step,
                    at.lr,
                    at.model,
                    at.training,
                    run.task.loss_fn,
                    str(run.folder),
                    targets,
                    chosen,
                    phases,
                    triples,
                    k,
                    expand=k <= options.expansion_up_to,
                    unfinished=unfinished,
                )
                record = tournament_record(
                    tournament,
                    anchors={
                        "anchored": (anchor, False),
                        "anchored-cycle": (cycled, False),
                        "anchored-alone": (anchor, True),
                    },
                    earlier=extended.get((step, k)),
                )
                records.append(record)
                _write(out, run, options, records, targets)
            costs[str(step)] = {
                "seconds": time.perf_counter() - started,
                "peak_memory_gib": peak.gib(),
            }
            _write(out, run, options, records, targets, costs=costs)
        path = _write(out, run, options, records, targets, final=True, costs=costs)
        unfinished.finish()
    return path


@dataclass
class _At:
    """A checkpoint restored for the check: the model in the check's precision on its device
    and the run's training step from it (its optimizer likewise, clipping, and each group's lr
    at each step after the checkpoint, times the check's lr scale)."""

    step: int
    model: nn.Module
    training: TrainingStep

    @property
    def lr(self) -> float:
        """The first group's lr at the first step after the checkpoint."""
        return self.training.rates_at(0)[0]


def _needed_steps(options: PhaseCheckOptions) -> int:
    """How many steps after a checkpoint the phases train at most: two phases of the largest
    ``k``, three of the triples' largest."""
    tripled = [k for k in options.triple_ks if k in options.ks] if options.triples else []
    return max(2 * max(options.ks), 3 * max(tripled, default=0))


@dataclass
class _Run:
    """What the check needs of a run, whoever made it (``perturbative train`` records its runs
    as any loop is recorded): its task (sources, batches), batch size, checkpoint files, order
    log, and how to restore a checkpoint."""

    folder: Path
    task: Task
    batch_size: int
    checkpoint_files: dict[int, Path]
    log: list[dict]
    run: dict  # run.json
    replay: list = field(default_factory=list)  # the replay gaps (ReplayGap)

    @classmethod
    def open(cls, folder: Path, task: str | Task | None, data_root: str | None) -> _Run:
        files = dict(list_checkpoints(folder))
        run = read_run(folder)  # a run of an earlier version is named, with how to convert it
        log = read_order_log(folder)
        chosen = run_task(folder, task, data_root)
        return cls(folder, chosen, run_batch_size(folder, log), files, log, run)

    def device(self, options: PhaseCheckOptions) -> torch.device:
        """Where the check runs (:func:`analysis_device`)."""
        return analysis_device(self.run, options.device)

    def replay_gap(self, step: int, max_steps: int) -> ReplayGap:
        """The replay gate at ``step`` (:mod:`perturbative.pipeline.replay`)."""
        return replay_gap(self.folder, step, self.task, self.run, self.log, max_steps=max_steps)

    def restore(self, step: int, options: PhaseCheckOptions) -> _At:
        """The checkpoint in the check's precision on its device, as the run trained (BatchNorm
        on each batch's statistics where the run's was; ``options.batchnorm == "running"``:
        eval mode on running statistics recomputed at the checkpoint's weights), and its
        training step scaled."""
        at = open_recorded_checkpoint(
            self.folder,
            step,
            self.task,
            DTYPES[options.dtype],
            self.log,
            device=self.device(options),
        )
        needed = _needed_steps(options)
        if at.training.rates is not None and len(at.next_steps) < needed:
            raise InputError(
                f"step {step} has {len(at.next_steps)} logged steps after it, fewer than the "
                f"{needed} its phases train (two phases of k = {max(options.ks)}, three of "
                f"the triples' k): their lrs are not known; choose an earlier checkpoint "
                "(--steps), smaller --ks or --triple-ks"
            )
        model = at.model
        if options.batchnorm == "running":
            batchnorm_statistics(model.eval(), self.task, 1024, options.seed)
        return _At(step, model, at.training.scaled(options.lr_scale))


def _target_source(task: Task, wanted: str | None) -> str | None:
    held = {n: m for n, m in (task.heldout_sources or {}).items() if len(m) > 0}
    if wanted == "none":
        return None
    if wanted is None:
        return next(iter(held), None)
    if wanted not in held:
        raise InputError(
            f"no held-out source {wanted!r}; the task has held-out examples of {sorted(held)}"
        )
    return wanted


def _targets(task: Task, model: nn.Module, source: str | None, count: int) -> dict:
    """The targets by name: the mean loss of the held-out examples, and of one held-out
    source's, in the model's precision on its device."""
    first = next(model.parameters())
    sets = {"held-out loss": range(min(count, len(task.heldout)))}
    if source is not None:
        sets[f"held-out loss of {source}"] = list(task.heldout_sources[source])[:count]
    return {
        name: Observable.mean_loss(
            task.loss_fn,
            packed(as_dtype(task.batch(indices, "heldout"), first.dtype, first.device)),
            name,
        )
        for name, indices in sets.items()
    }


@dataclass
class PhaseDraws:
    """One tournament's draws, as indices into the task's training examples.

    Attributes:
        sources: the sources drawn, in name order.
        phases: each source's phase, ``k`` batches of distinct examples (each drawn anew).
        triples: triples of the sources (indices into ``sources``) whose orders are trained.
        mixture: the anchor of ``anchored`` and ``anchored-alone``: ``k`` batches of the
            sources' mixture.
        cycle: the anchor of ``anchored-cycle``: ``k`` batches, each of one source.
        cycle_sources: the source of each of ``cycle``'s batches, the sources in a drawn
            order, in turn.
    """

    sources: list[str]
    phases: list[list[list[int]]]
    triples: list[list[int]]
    mixture: list[list[int]]
    cycle: list[list[int]]
    cycle_sources: list[str]


def phase_draws(
    sources: Mapping[str, Sequence[int]],
    batch_size: int,
    step: int,
    k: int,
    options: PhaseCheckOptions,
) -> PhaseDraws:
    """What the check draws at ``step`` and ``k`` from its seed (``options``' seed, sources,
    triples and triple phase lengths), among the sources with at least a batch of examples:
    the same draws whenever it runs, so that a stopped or extended check trains the same phases.
    The anchors are drawn after the rest, the cycle last, so that each method added left the
    earlier draws as they were."""
    rng = random.Random(f"{options.seed}/{step}/{k}")
    names = _phase_sources(sources, batch_size)
    chosen = sorted(rng.sample(names, min(options.sources, len(names))))

    def batches(members: Sequence[int], count: int) -> list[list[int]]:
        return [rng.sample(list(members), batch_size) for _ in range(count)]

    phases = [batches(sources[n], k) for n in chosen]
    triples = [
        sorted(rng.sample(range(len(chosen)), 3))
        for _ in range(options.triples if k in options.triple_ks else 0)
    ]
    mixture = batches(sorted({i for n in chosen for i in sources[n]}), k)
    order = rng.sample(chosen, len(chosen))
    turns = list(itertools.islice(itertools.cycle(order), k))
    cycle = [batches(sources[n], 1)[0] for n in turns]
    return PhaseDraws(chosen, phases, triples if len(chosen) >= 3 else [], mixture, cycle, turns)


def _phase_sources(sources: Mapping[str, Sequence[int]], batch_size: int) -> list[str]:
    """The sources with at least a batch of examples: those a phase can be drawn from."""
    return [n for n, members in sources.items() if len(members) >= batch_size]


def _batches(task: Task, drawn: Sequence[Sequence[int]], model: nn.Module) -> list:
    """The drawn batches of examples, in the model's precision on its device."""
    first = next(model.parameters())
    return [packed(as_dtype(task.batch(list(b)), first.dtype, first.device)) for b in drawn]


def _write(out, run, options, records, targets, final: bool = False, costs=None) -> Path:
    """``<out>/phase_check.json``: options, records and their summary (rewritten after each
    checkpoint and ``k``, so that what is done can be read while the check runs)."""
    check = PhaseCheckRecord(
        run=str(run.folder.resolve()),
        finished=final,
        options=asdict(options),
        targets=list(targets),
        replay=list(run.replay),
        tournaments=list(records),
        summary=summarize(records),
        costs=dict(costs or {}),
    )
    return write_json(out / PHASE_CHECK, check.to_json())

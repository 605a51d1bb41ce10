"""A training run's checkpoints -> the bracket sweep's results files.

Glue between :mod:`perturbative.pipeline.train` (runs and checkpoints) and
:mod:`perturbative.pipeline.sweep` (the analysis, written to files). A run of ``train`` is a
:class:`perturbative.Task` like any recorded run's (:func:`training_task`): the sweep takes its
model, loss and examples from it. For a model and data of your
own, call :func:`perturbative.pipeline.sweep.bracket_sweep` directly (``examples/own_model.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import warnings
from pathlib import Path

import torch
from torch import nn

from perturbative._core.errors import InputError
from perturbative._core.io import file_sha256
from perturbative.brackets import adam_preconditioner
from perturbative.pipeline.checkpoints import list_checkpoints, load_checkpoint
from perturbative.pipeline.config import (
    SweepOptions,
    SweepSettings,
    load_run_config,
    resolve_device,
)
from perturbative.pipeline.sweep import bracket_sweep, task_sweep_data
from perturbative.pipeline.task import Task
from perturbative.pipeline.train import (
    build_dataset,
    build_model,
    per_example_bce,
    training_sampler,
    training_weights,
)


def sweep_training_run(
    run_dir: str | Path, options: SweepOptions | None = None, data_root: str | None = None
) -> Path:
    """Sweep every checkpoint of a run made by :func:`perturbative.pipeline.train.train`.

    ``data_root`` points at the run's CelebA data if it has moved since training.

    Returns:
        The results directory (``docs/results-format.md``).
    """
    options = options or SweepOptions()
    run_dir = Path(run_dir)
    config = load_run_config(run_dir, data_root)
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        raise FileNotFoundError(
            f"no checkpoints in {run_dir / 'checkpoints'}: run `perturbative train` first"
        )
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
    dataset = build_dataset(config)
    task = _training_task(config, dataset)
    device = resolve_device(config.device)  # where the run trained: CUDA when "auto" finds one
    model = task.model().to(device)
    data = task_sweep_data(task, options, model)
    # the task's examples are positions in its splits; the results record dataset indices, and
    # the images as they are stored
    test = dataset.heldout_indices[data.test_indices]
    data.test_indices, data.ranking_indices = test, dataset.train_indices[data.ranking_indices]
    data.thumbnails = dataset.images01(test[: options.bracket_examples])
    settings = SweepSettings(
        lr=config.lr,
        bracket_examples=options.bracket_examples,
        dataset=config.dataset,
        observable=f"held-out mean BCE of the {len(test)}-example test batch",
        preconditioner=options.preconditioner,
        engine=options.engine,
        save_brackets=options.save_brackets,
    )
    paths = dict(checkpoints)

    # the sweep reads a checkpoint's model, then (with "adam") its optimizer: read each file once
    read = functools.lru_cache(maxsize=1)(load_checkpoint)

    def loader(path: Path):
        return lambda: read(path)["model"]

    def adam_at(step: int, model: nn.Module):
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        optimizer.load_state_dict(read(paths[step])["optimizer"])
        with warnings.catch_warnings():
            # MXResNet's zero second moments are conv taps that only ever see padding: their
            # gradient is zero for every example, so P = 0 there changes no field
            warnings.simplefilter("ignore", RuntimeWarning)
            return adam_preconditioner(optimizer, dict(model.named_parameters()))

    out_dir = Path(options.out_dir) if options.out_dir else run_dir / "brackets"
    # results inside the run folder are this run's: stale ones (a retrained run) are recomputed;
    # anywhere else they may be another run's, and are never overwritten
    inside = out_dir.resolve().is_relative_to(run_dir.resolve())
    return bracket_sweep(
        model,
        task.loss_fn,
        [(s, loader(p)) for s, p in checkpoints],
        data,
        out_dir,
        settings,
        preconditioner_at=adam_at if options.preconditioner == "adam" else None,
        sources=sources,
        replace_stale=inside,
    )


def training_task(run_dir: str | Path, data_root: str | None = None) -> Task:
    """A run of ``perturbative train`` as a :class:`perturbative.Task`: its MXResNet (the
    weights come from its checkpoints), the per-example BCE over the attributes, its training
    and held-out splits of digits or CelebA (indexed by position in the split, each example a
    tuple ``(image, attributes)``), the attributes as output names, images as the examples'
    view; its sampler's next batches past the log (``Task.batches_after``). What every check
    of such a run rebuilds it from.

    ``data_root`` points at the run's CelebA data if it has moved since training.
    """
    config = load_run_config(Path(run_dir), data_root)
    dataset = build_dataset(config)
    files = dict(list_checkpoints(run_dir))
    weights = training_weights(config, dataset)

    def batches_after(step: int, count: int) -> list[list[int]]:
        """The sampler's next ``count`` batches from checkpoint ``step`` (past the log too)."""
        sampler = training_sampler(config, weights)
        sampler.load_state_dict(load_checkpoint(files[step])["sampler"])
        drawn: list[list[int]] = []
        while len(drawn) < count:
            drawn.extend(list(b) for b in itertools.islice(iter(sampler), count - len(drawn)))
        return drawn

    return dataclasses.replace(_training_task(config, dataset), batches_after=batches_after)


#: The sources of a training run's phases (``perturbative phase-check``): the digit classes, and
#: CelebA's attribute groups.
PHASE_SOURCES = {
    "digits": tuple(f"digit_{d}" for d in range(10)),
    "celeba": (
        "Male",
        "not Male",
        "Smiling",
        "not Smiling",
        "Eyeglasses",
        "Young",
        "not Young",
        "Wearing_Hat",
    ),
}


def _training_task(config, dataset) -> Task:
    names = PHASE_SOURCES.get(dataset.name, ())
    return Task(
        model=functools.partial(build_model, config, dataset.num_attributes, dataset.num_channels),
        loss_fn=per_example_bce,
        train=torch.utils.data.Subset(dataset, dataset.train_indices.tolist()),
        heldout=torch.utils.data.Subset(dataset, dataset.heldout_indices.tolist()),
        output_names=tuple(dataset.attribute_names),
        examples_view="image",
        sources=dataset.attribute_groups(names),
        heldout_sources=dataset.attribute_groups(names, "heldout"),
    )

"""A run of ``perturbative train`` as a :class:`perturbative.Task` (:func:`training_task`),
like any recorded run's: every analysis of such a run (the sweep, the order and phase checks)
takes its model, loss and examples from it.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import torch

from perturbative.pipeline.checkpoints import list_checkpoints, load_checkpoint
from perturbative.pipeline.config import load_run_config
from perturbative.pipeline.task import Task
from perturbative.pipeline.train import (
    build_dataset,
    build_model,
    endless,
    per_example_bce,
    training_sampler,
    training_weights,
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
        """The sampler's next ``count`` batches from checkpoint ``step`` (past the log too); a
        run of several processes: each step's batches of every rank, rank by rank, as the log
        holds them (the checkpoint holds rank 0's position, where every rank stands)."""
        state = load_checkpoint(files[step])["sampler"]
        world = int(state.get("world_size", 1))
        ranks = []
        for rank in range(world):
            sampler = training_sampler(config, weights, rank, world)
            sampler.load_state_dict({**state, "rank": rank})
            ranks.append(endless(sampler))
        return [[i for batches in ranks for i in next(batches)] for _ in range(count)]

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

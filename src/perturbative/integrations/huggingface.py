"""Record a Hugging Face ``Trainer`` run: :class:`RecorderCallback`, a ``TrainerCallback``.

The Trainer does not tell callbacks which examples a step trained on, and the user's dataset
should not change to say it. The callback therefore watches the training dataloader's batch
sampler: when training begins it gives the sampler's object a subclass of its own class whose
``__iter__`` notes every batch of indices it yields (the same batches, in the same order, with
the same random state). Each optimizer step then takes the next ``gradient_accumulation_steps``
batches from that queue. Works with the Trainer's default sampling, workers and gradient
accumulation on one process; a run resumed from a Trainer checkpoint is refused (its skipped
batches would be noted as trained).
"""

from __future__ import annotations

import collections
import os
from typing import Any

import torch

from perturbative._core.extras import require
from perturbative.pipeline.recorder import Recorder, watch_batches

transformers = require("transformers", "the Hugging Face Trainer callback")


def _inner(wrapped: Any, attribute: str) -> Any:
    """The object accelerate wraps (``AcceleratedScheduler.scheduler``), or itself."""
    return getattr(wrapped, attribute, wrapped)


class RecorderCallback(transformers.TrainerCallback):
    """Record a ``transformers.Trainer`` run into ``run_dir`` (see :class:`perturbative.Recorder`).

    Args:
        run_dir: the run folder.
        task: the run's ``"module:attribute"`` :class:`perturbative.Task`, whose ``train`` set is
            the Trainer's ``train_dataset`` (indexed the same way).
        save_at: when to write a checkpoint (every ``N`` optimizer steps, a list, or ``"log"``).

    Example:
        >>> trainer = Trainer(model, args, train_dataset=data,
        ...                   callbacks=[RecorderCallback("runs/bert", task="tasks:bert")])
        ... # doctest: +SKIP
    """

    def __init__(
        self, run_dir: str | os.PathLike, *, task: str | None = None, save_at: Any = 100
    ) -> None:
        self.run_dir, self.task, self.save_at = run_dir, task, save_at
        self.recorder: Recorder | None = None
        self.batches: collections.deque | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step:
            raise ValueError(
                "RecorderCallback records a Trainer run from its start: a run resumed from a "
                "Trainer checkpoint skips batches the callback cannot tell from trained ones"
            )
        loader = kwargs["train_dataloader"]
        self.batches = watch_batches(loader.batch_sampler)
        self.recorder = Recorder(
            self.run_dir,
            kwargs["model"],
            kwargs["optimizer"],  # the Recorder reads the torch optimizer accelerate wraps
            task=self.task,
            scheduler=_inner(kwargs["lr_scheduler"], "scheduler"),
            save_at=self.save_at,
            max_grad_norm=float(args.max_grad_norm) if args.max_grad_norm else None,
            autocast=torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None,
        )

    def on_step_end(self, args, state, control, **kwargs):
        steps = max(1, int(args.gradient_accumulation_steps))
        parts = [self.batches.popleft() for _ in range(steps)]
        indices = [i for part in parts for i in part]
        self.recorder.step(indices, micro_batches=parts if steps > 1 else None)

    def on_train_end(self, args, state, control, **kwargs):
        if self.recorder is not None:
            self.recorder.close()

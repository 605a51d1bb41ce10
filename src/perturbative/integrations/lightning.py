"""Record a Lightning ``Trainer`` run: :class:`RecorderCallback`, a Lightning ``Callback``.

As for the Hugging Face Trainer, the callback learns which examples each step trained on from
the training dataloader's batch sampler, whose object it gives a subclass of its own class
that notes every batch of indices it yields (same batches, same order, same random state). It
must do so before Lightning draws the first batch, so it watches the dataloader as the run's
data source hands it out: the ``DataLoader`` given to ``fit``, or the one the module's or
datamodule's ``train_dataloader()`` returns. A batch is noted as trained when
``on_train_batch_end`` sees it, and the batches since the last optimizer step go to
``recorder.step`` when ``trainer.global_step`` moves (gradient accumulation included).
Single-process runs with automatic optimization and one optimizer.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from perturbative._core.extras import require
from perturbative.pipeline.recorder import Recorder, watch_batches

pl = require("pytorch_lightning", "the Lightning callback")


#: Lightning's mixed precisions and the dtype their autocast runs the forward pass in
AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


class RecorderCallback(pl.Callback):
    """Record a Lightning run into ``run_dir`` (see :class:`perturbative.Recorder`).

    Args:
        run_dir: the run folder.
        task: the run's ``"module:attribute"`` :class:`perturbative.Task` (its ``train`` set
            indexed like the training dataloader's dataset).
        save_at: when to write a checkpoint (every ``N`` optimizer steps, a list, or ``"log"``).
    """

    def __init__(
        self, run_dir: str | os.PathLike, *, task: str | None = None, save_at: Any = 100
    ) -> None:
        self.run_dir, self.task, self.save_at = run_dir, task, save_at
        self.recorder: Recorder | None = None
        self.batches = None
        self.pending: list[int] = []
        self.last_step = 0

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        source = trainer.fit_loop._data_source.instance  # the DataLoader, module or datamodule
        if hasattr(source, "batch_sampler"):
            self._watch(source)
            return
        original = source.train_dataloader

        def train_dataloader():  # watch the dataloader as the source hands it out
            loader = original()
            self._watch(loader)
            return loader

        source.train_dataloader = train_dataloader

    def _watch(self, loader: Any) -> None:
        if getattr(loader, "batch_sampler", None) is None:
            raise ValueError(
                "RecorderCallback needs a DataLoader with a batch sampler (batch_size set), "
                f"not {type(loader).__name__}"
            )
        self.batches = watch_batches(loader.batch_sampler)

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.global_step:
            raise ValueError("RecorderCallback records a Lightning run from its start")
        if len(trainer.optimizers) != 1:
            raise ValueError("RecorderCallback records runs with one optimizer")
        configs = trainer.lr_scheduler_configs
        clip = trainer.gradient_clip_val
        if clip and str(trainer.gradient_clip_algorithm or "norm").lower() != "norm":
            raise ValueError("only gradient clipping by norm is modelled")
        self.recorder = Recorder(
            self.run_dir,
            pl_module,
            trainer.optimizers[0],
            task=self.task,
            scheduler=configs[0].scheduler if configs else None,
            save_at=self.save_at,
            max_grad_norm=float(clip) if clip else None,
            autocast=AUTOCAST.get(str(trainer.precision)),
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.pending.append(self.batches.popleft())
        if trainer.global_step > self.last_step:  # an optimizer step was taken
            self.last_step = trainer.global_step
            indices = [i for part in self.pending for i in part]
            parts = self.pending if len(self.pending) > 1 else None  # gradient accumulation
            self.recorder.step(indices, micro_batches=parts)
            self.pending = []

    def on_train_end(self, trainer, pl_module) -> None:
        if self.recorder is not None:
            self.recorder.close()

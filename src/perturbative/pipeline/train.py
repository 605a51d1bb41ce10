"""Training an MXResNet on named binary attributes, with checkpoints a bracket sweep can read.

The loop, top to bottom (:func:`train`):

1. build the dataset and the model from a ``TrainConfig`` (:func:`build_dataset`,
   :func:`build_model`, model weights drawn after ``torch.manual_seed(config.seed)``);
2. Adam on the loss of each batch, the mean over examples and attributes of the binary
   cross-entropy of the logits (:func:`attribute_bce` is the per-example term
   ``L_x = (1/K) sum_k BCE(f_k(x), y_k)``); with a tilt, ``sum_j w_j L_j / B`` instead
   (:func:`perturbative.tilt.weighted_loss`);
3. batches from an :class:`~perturbative.tilt.AdjustedBatchSampler` over the training
   indices: with uniform weights it yields plain shuffled batches of ``batch_size`` (last partial
   batch of each epoch dropped), with tilt weights batches whose summed weight is about
   ``batch_size``;
4. every ``eval_every`` steps a line in ``metrics.jsonl`` (mean training loss since the last line,
   held-out loss and mean attribute accuracy, BatchNorm in eval mode);
5. the loop is recorded by a :class:`~perturbative.pipeline.recorder.Recorder`, as a user's own
   loop is: each step's examples (positions in the training split) and lr in ``order.jsonl``,
   and a checkpoint at step 0, every ``checkpoint_every`` steps and at the end. Its
   ``run.json`` names the run's task, :func:`perturbative.pipeline.run.training_task`, so every
   check reads this run the way it reads any recorded run.

Run directory::

    <run_dir>/config.json                 the TrainConfig
    <run_dir>/run.json                    the recorded run (optimizer, task, how the model trains)
    <run_dir>/order.jsonl                 one line per step: its examples and lr
    <run_dir>/metrics.jsonl               one JSON object per evaluation
    <run_dir>/checkpoints/step_000250.safetensors

A checkpoint is one safetensors file (loads without executing code, written atomically; layout
in :mod:`perturbative.pipeline.checkpoints`) holding the model, Adam's state and torch's RNG
state; its JSON metadata adds the step, the config, the sampler's position, the running loss
sum, the dataset's attribute names, ``num_outputs`` and ``in_channels``.
``train(config, resume=True)`` continues from the last checkpoint and produces the same
parameters, bit for bit on CPU, as a run never stopped.

Several processes (``torchrun --nproc-per-node N -m perturbative.cli train ...``): the model is
wrapped in ``DistributedDataParallel``, the sampler deals each epoch's examples out to the ranks
(rank ``r`` draws positions ``r, r + N, ...`` with the per-rank target ``batch_size / N``, and each
rank's weighted loss uses that target, so the averaged gradient is that of one batch of
adjusted size ``batch_size``), and only rank 0 evaluates and writes files. Every rank resumes
from the same checkpoint; a killed multi-process run resumes to the same weights as one never
stopped.

:func:`train` turns on ``torch.set_flush_denormal(True)`` for the process: denormal floats slowed
CPU training of the demo about fivefold and are far below any precision that matters here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from perturbative._core.distributed import barrier, rank_and_world
from perturbative._core.errors import InputError
from perturbative._core.io import write_json, write_text
from perturbative.data import AttributeDataset, load_celeba, load_digits_attributes
from perturbative.models import mxresnet
from perturbative.pipeline.checkpoints import list_checkpoints, load_checkpoint
from perturbative.pipeline.config import (
    RESUMABLE_CHANGES,
    TrainConfig,
    load_run_config,
    parse_tilt,
    resolve_device,
)
from perturbative.pipeline.recorder import ORDER_LOG, RUN_FILE, Recorder, model_mode, run_file
from perturbative.pipeline.results import METRICS, append_metrics, read_metrics, write_metrics
from perturbative.tilt import AdjustedBatchSampler, check_tilt, tilt_weights, weighted_loss

#: the task of a run of ``train`` (:func:`perturbative.pipeline.run.training_task`), as its
#: ``run.json`` names it: a factory of the run folder
TRAINING_TASK = "perturbative.pipeline.run:training_task"


def tilt_delta_h(dataset: AttributeDataset, spec: str, indices: Tensor) -> Tensor:
    """``dH(x) = -sum_a s_a y_a(x)`` for the examples ``indices``: ``(n,)`` float64."""
    strengths = parse_tilt(spec, dataset.attribute_names)
    vector = torch.zeros(dataset.num_attributes, dtype=torch.float64)
    for name, strength in strengths.items():
        vector[dataset.attribute_names.index(name)] = strength
    return -(dataset.targets[indices].double() @ vector)


def build_dataset(config: TrainConfig) -> AttributeDataset:
    """The dataset a config trains on (deterministic: the same config gives the same data)."""
    if config.dataset == "digits":
        return load_digits_attributes(config.image_size, config.heldout_fraction, config.split_seed)
    if config.data_root is None:
        raise InputError(
            "dataset 'celeba' needs data_root (a folder with img_align_celeba/ and "
            "list_attr_celeba.txt); use TrainConfig.demo() for the embedded digits"
        )
    return load_celeba(
        config.data_root,
        config.image_size,
        config.heldout_fraction,
        config.split_seed,
        limit=config.limit,
    )


def build_model(config: TrainConfig, num_outputs: int, in_channels: int) -> nn.Module:
    """A fresh MXResNet for a config (weights from torch's global RNG: seed it first).

    Args:
        num_outputs: ``K``, the dataset's number of attributes.
        in_channels: the dataset's image channels.
    """
    return mxresnet(
        config.depth, num_outputs=num_outputs, width=config.width, in_channels=in_channels
    )


def attribute_bce(outputs: Tensor, targets: Tensor) -> Tensor:
    """Per-example loss ``L_x = (1/K) sum_k BCE(f_k(x), y_k)``: ``(n, K), (n, K) -> (n,)``.

    Its mean over a batch is the training loss; on a batch of one, ``attribute_bce(...).sum()``
    is the ``loss_fn`` of the bracket engine.
    """
    return F.binary_cross_entropy_with_logits(outputs, targets, reduction="none").mean(dim=-1)


def model_from_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """The model of a checkpoint in eval mode (BatchNorm on running statistics), and the
    checkpoint dict of :func:`load_checkpoint`."""
    checkpoint = load_checkpoint(path)
    model = build_model(checkpoint["config"], checkpoint["num_outputs"], checkpoint["in_channels"])
    model.load_state_dict(checkpoint["model"])
    return model.eval(), checkpoint


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset: AttributeDataset, indices: Tensor, batch_size: int = 256
) -> dict[str, float]:
    """Held-out mean BCE and mean attribute accuracy (logit > 0 predicts 1), BatchNorm in eval
    mode; the model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum, correct, count = 0.0, 0.0, 0
    for start in range(0, len(indices), batch_size):
        inputs, targets = dataset.batch(indices[start : start + batch_size])
        outputs = model(inputs.to(device)).cpu()
        loss_sum += float(attribute_bce(outputs, targets).sum())
        correct += float(((outputs > 0).float() == targets).float().mean(dim=1).sum())
        count += len(targets)
    model.train(was_training)
    return {"heldout_loss": loss_sum / count, "heldout_accuracy": correct / count}


def per_example_bce(outputs: Tensor, targets: Tensor) -> Tensor:
    """``L_x``: mean BCE over the attributes of one example (batch of one) -> scalar; the
    ``loss_fn`` the bracket engine takes for these models."""
    return attribute_bce(outputs, targets).sum()


class TrainingState:
    """Everything that changes while training, in one object that a checkpoint saves whole.

    Attributes:
        model, optimizer, sampler: the model in train mode, its Adam, the batch sampler.
        step: optimizer steps taken.
        loss_sum, loss_count: training loss summed since the last metrics line, and its count.
    """

    def __init__(self, config: TrainConfig, dataset: AttributeDataset) -> None:
        self.config, self.dataset = config, dataset
        self.rank, self.world = rank_and_world()
        self.device = resolve_device(config.device)
        torch.manual_seed(config.seed)
        self.model = build_model(config, dataset.num_attributes, dataset.num_channels)
        self.model = self.model.to(self.device).train()
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=config.lr, betas=(config.beta1, config.beta2)
        )
        self.weights = training_weights(config, dataset)
        # Uniform weights give plain shuffled batches of exactly batch_size (the carry rule on
        # weights 1); the last partial batch of an epoch is dropped in both cases. BatchNorm in
        # train mode cannot take a batch of one, which a heavy tilted example would make: such
        # batches are merged with the next (weights unchanged, so the tilt stays exact).
        self.sampler = training_sampler(config, self.weights, self.rank, self.world)
        # the module the steps run through: the model, or DDP around it (gradients averaged)
        self.network = self.model if self.world == 1 else DistributedDataParallel(self.model)
        self.step, self.loss_sum, self.loss_count = 0, 0.0, 0

    def resume_info(self) -> dict[str, Any]:
        """What a checkpoint holds beside the model, the optimizer and the RNG (which the
        :class:`~perturbative.pipeline.recorder.Recorder` saves): the config, the sampler's
        position, the running loss and the dataset's names."""
        dataset = self.dataset
        return {
            "config": self.config.to_dict(),
            "sampler": self.sampler.state_dict(),
            "loss_sum": self.loss_sum,
            "loss_count": self.loss_count,
            "attribute_names": dataset.attribute_names,
            "num_outputs": dataset.num_attributes,
            "in_channels": dataset.num_channels,
            "dataset": dataset.name,
        }

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        """Continue from a checkpoint dict of :func:`load_checkpoint`."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        # checkpoints hold rank 0's sampler; every rank stands at the same batch of its own share
        self.sampler.load_state_dict({**checkpoint["sampler"], "rank": self.rank})
        torch.set_rng_state(checkpoint["rng_state"])
        self.step = checkpoint["step"]
        self.loss_sum, self.loss_count = checkpoint["loss_sum"], checkpoint["loss_count"]

    def train_step(self, positions: Tensor) -> None:
        """One Adam step on the batch at ``positions`` of the training indices."""
        inputs, targets = self.dataset.batch(self.dataset.train_indices[positions])
        dtype = next(self.model.parameters()).dtype  # the run's, or the replay gate's float64
        losses = attribute_bce(
            self.network(inputs.to(self.device, dtype)), targets.to(self.device, dtype)
        )
        if self.config.tilt is None:
            loss = losses.mean()
        else:
            weights = self.weights[positions].to(self.device)
            loss = weighted_loss(losses, weights, self.sampler.rank_target_batch_size)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        self.loss_sum += float(loss.detach())
        self.loss_count += 1

    def metrics(self) -> dict[str, Any]:
        """A ``metrics.jsonl`` line: mean training loss since the last line and held-out scores;
        starts a new running mean."""
        train_loss = self.loss_sum / self.loss_count if self.loss_count else None
        self.loss_sum, self.loss_count = 0.0, 0
        eval_indices = self.dataset.heldout_indices[: self.config.eval_examples]
        return {
            "step": self.step,
            "train_loss": train_loss,
            **evaluate(self.model, self.dataset, eval_indices),
        }

    def batches(self) -> Iterator[Tensor]:
        """Batches of positions, epoch after epoch, from where the sampler stands."""
        for batch in endless(self.sampler):
            yield torch.as_tensor(batch, dtype=torch.int64)


def endless(sampler: AdjustedBatchSampler) -> Iterator[list[int]]:
    """A batch sampler's batches from where it stands, on into the next epochs."""
    while True:
        yield from (list(batch) for batch in sampler)


def training_weights(config: TrainConfig, dataset: AttributeDataset) -> Tensor:
    """Per-example weights of the training indices: ones, or the tilt's ``exp(-dH) / Z``."""
    n = len(dataset.train_indices)
    if config.tilt is None:
        return torch.ones(n, dtype=torch.float64)
    return tilt_weights(tilt_delta_h(dataset, config.tilt, dataset.train_indices), 1.0)


def training_sampler(
    config: TrainConfig, weights: Tensor, rank: int = 0, world: int = 1
) -> AdjustedBatchSampler:
    """The run's batch sampler over its training examples' ``weights``
    (:func:`training_weights`): deterministic given the config, so a checkpoint's saved
    position continues it."""
    return AdjustedBatchSampler(
        weights,
        config.batch_size,
        seed=config.seed,
        drop_last=True,
        min_batch_size=2,
        rank=rank,
        world_size=world,
    )


def check_split(dataset: AttributeDataset, config: TrainConfig, heldout_needed: int = 2) -> None:
    """Refuse, before any training, a split the run cannot use.

    Raises:
        InputError: fewer than ``heldout_needed`` held-out examples (the sweep brackets
            ``bracket_examples`` of them), or fewer training examples than one batch.
    """
    heldout, trained = len(dataset.heldout_indices), len(dataset.train_indices)
    where = (
        f"{dataset.name} split (heldout_fraction {config.heldout_fraction}, limit {config.limit})"
    )
    if heldout < heldout_needed:
        raise InputError(
            f"the {where} holds out {heldout} example(s), but {heldout_needed} are needed; "
            "raise --limit or heldout_fraction"
        )
    if trained < config.batch_size:
        raise InputError(
            f"the {where} leaves {trained} training example(s), fewer than one batch of "
            f"{config.batch_size}; raise --limit, lower heldout_fraction or --batch-size"
        )


def train(
    config: TrainConfig, resume: bool = False, progress: bool = True, heldout_needed: int = 2
) -> Path:
    """Train a model as the config says; see the module docstring for the loop and the files.

    Args:
        config: the run.
        resume: continue from the run directory's last checkpoint (the config may differ only
            in ``steps`` and ``device``); with no checkpoint there yet, start afresh.
        progress: show a tqdm bar with the loss.
        heldout_needed: the fewest held-out examples the run's analysis needs (checked before
            training, with the training split's size).

    Returns:
        The run directory.

    Raises:
        FileExistsError: if the run directory already has checkpoints and ``resume`` is false.
        InputError: if resuming with a config that differs in other fields.
    """
    # setup
    run_dir = Path(config.run_dir)
    existing = list_checkpoints(run_dir)
    if existing and not resume:
        raise FileExistsError(
            f"{run_dir} already holds checkpoints up to step {existing[-1][0]}: resume it "
            "(--resume) or choose another run directory"
        )
    if existing and not (run_dir / RUN_FILE).is_file():
        raise InputError(
            f"{run_dir} was trained by perturbative < 0.4 (checkpoints but no {RUN_FILE}): "
            f"convert it first with `perturbative upgrade {run_dir}` (writes {RUN_FILE} and "
            "order.jsonl from its config; the checkpoints are not touched)"
        )
    if not existing and (run_dir / RUN_FILE).is_file():
        raise InputError(
            f"{run_dir} holds {RUN_FILE} but no checkpoint: a run begun elsewhere; remove "
            f"{RUN_FILE} and {ORDER_LOG} to train anew there, or choose another run directory"
        )
    barrier()  # every rank has looked before rank 0 writes the first checkpoint
    # Denormal floats (below 1.2e-38, from Mish tails and Adam's squared gradients) make CPU
    # arithmetic several times slower and carry no information here; this is process-wide.
    torch.set_flush_denormal(True)
    dataset = build_dataset(config)
    check_split(dataset, config, heldout_needed)
    state = TrainingState(config, dataset)
    metrics_path = run_dir / METRICS

    # resume, or start with step 0's metrics and checkpoint
    if existing:
        checkpoint = load_checkpoint(existing[-1][1])
        check_resumable(checkpoint["config"], config)
        state.load_state_dict(checkpoint)
        # lines written after the checkpoint belong to steps that will be run again
        if state.rank == 0:
            write_metrics(
                metrics_path, [m for m in read_metrics(metrics_path) if m["step"] <= state.step]
            )
    writer = state.rank == 0  # with several processes, rank 0 alone writes files
    if writer:
        write_run_files(run_dir, config, state.weights)
    if not existing and writer:
        write_metrics(metrics_path, [state.metrics()])

    # the loop, recorded as any loop is (run.json, order.jsonl, the checkpoints): every check
    # reads this run as it reads a run of the user's own
    recorder = Recorder(
        run_dir,
        state.model,
        state.optimizer,
        task=TRAINING_TASK,
        save_at=config.checkpoint_every,
        resume=bool(existing),
        checkpoint_info=state.resume_info,
        loop={"made_by": "perturbative train", "tilt": config.tilt},
    )
    batches = state.batches()
    bar = tqdm(
        total=config.steps,
        initial=state.step,
        disable=not progress or not writer,
        desc="train",
        unit="step",
    )
    with recorder:
        while state.step < config.steps:
            positions = next(batches)
            state.train_step(positions)
            bar.update(1)
            last = state.step == config.steps
            if state.step % 10 == 0 or last:
                bar.set_postfix(loss=f"{state.loss_sum / max(state.loss_count, 1):.4f}")
            if (state.step % config.eval_every == 0 or last) and writer:
                append_metrics(metrics_path, state.metrics())
            # the step's examples, by position in the training split (the task's indices)
            recorder.step(positions)
            if last and state.step % config.checkpoint_every != 0:
                recorder.save()
    bar.close()
    barrier()  # every rank returns once rank 0's files are written
    return run_dir


def upgrade_training_run(run_dir: str | os.PathLike, data_root: str | None = None) -> Path:
    """Convert a run of ``train`` made before 0.4 (``config.json`` and checkpoints, no
    ``run.json``) into the recorded form every check reads: ``order.jsonl`` and ``run.json``,
    written from the config. The sampler is deterministic given the config, so the batches are
    drawn again from step 0, and each checkpoint's saved sampler state (position, seed, split
    size, weights) must be the drawing's at its step (else the config or data are not the
    run's, and nothing is written; data changed in content alone is the replay gate's to
    find); every step's lr is the run's constant one. The checkpoints are not touched.

    Returns:
        ``run.json``'s path.

    Raises:
        InputError: the folder is already recorded, has no checkpoints, trained with several
            processes, or its checkpoints disagree with the batches drawn again.
    """
    run_dir = Path(run_dir)
    if (run_dir / RUN_FILE).is_file():
        raise InputError(f"{run_dir} already has {RUN_FILE}: it needs no upgrade")
    config = load_run_config(run_dir, data_root)
    saved = dict(list_checkpoints(run_dir))
    if not saved:
        raise InputError(f"{run_dir} has no checkpoints: there is no run to convert; train anew")
    positions = {step: load_checkpoint(path)["sampler"] for step, path in saved.items()}
    if any(p.get("world_size", 1) != 1 for p in positions.values()):
        raise InputError(
            f"{run_dir} trained with several processes, whose batches the conversion cannot "
            "draw again; train it anew with this version"
        )
    state = TrainingState(config, build_dataset(config))
    batches, lines = state.batches(), []
    for step in range(1, max(saved) + 1):
        indices = next(batches).tolist()
        lines.append(json.dumps({"step": step, "indices": indices, "lr": [config.lr]}) + "\n")
        if step in positions and state.sampler.state_dict() != positions[step]:
            raise InputError(
                f"the batches drawn again from {run_dir}'s config do not reach the sampler "
                f"state its checkpoint at step {step} saved (position, seed, split, weights): "
                "the config or the data are not the run's (pass --celeba with the run's CelebA "
                "folder); nothing was written"
            )
    run = run_file(
        state.optimizer,
        task=TRAINING_TASK,
        save_at=config.checkpoint_every,
        device=config.device if config.device != "auto" else "unknown",
        loop={"made_by": "perturbative train", "tilt": config.tilt, "upgraded": True},
    )
    write_text(run_dir / ORDER_LOG, "".join(lines))
    write_json(run_dir / RUN_FILE, {**run, "model_mode": model_mode(state.model)}, indent=2)
    return run_dir / RUN_FILE


def write_run_files(run_dir: Path, config: TrainConfig, weights: Tensor) -> None:
    """``config.json`` and, for a tilted run, ``tilt.json`` with the weights' diagnostics."""
    write_json(run_dir / "config.json", config.to_dict(), indent=2)
    if config.tilt is not None:
        diagnostics = check_tilt(weights, target_batch_size=config.batch_size)
        write_json(run_dir / "tilt.json", diagnostics.as_dict(), indent=2)


def check_resumable(saved: TrainConfig, config: TrainConfig) -> None:
    """Refuse to resume a run with a config that differs beyond ``RESUMABLE_CHANGES``."""
    old, new = saved.to_dict(), config.to_dict()
    changed = [k for k in old if old[k] != new[k] and k not in RESUMABLE_CHANGES]
    if changed:
        details = ", ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in changed)
        raise InputError(
            f"cannot resume with a different config ({details}); only {RESUMABLE_CHANGES} may "
            "change. On the command line `perturbative train --run-dir RUN --resume` uses the "
            "saved config; in Python, start from load_run_config(run_dir)"
        )

"""Training an MXResNet on named binary attributes, with checkpoints a bracket sweep can read.

The loop, top to bottom (:func:`train`):

1. build the dataset and the model from a :class:`TrainConfig` (:func:`build_dataset`,
   :func:`build_model`, model weights drawn after ``torch.manual_seed(config.seed)``);
2. Adam on the loss of each batch, the mean over examples and attributes of the binary
   cross-entropy of the logits (:func:`attribute_bce` is the per-example term
   ``L_x = (1/K) sum_k BCE(f_k(x), y_k)``); with a tilt, ``sum_j w_j L_j / B`` instead
   (:func:`perturbative.tilt.weighted_loss`);
3. batches from an :class:`~perturbative.sampler.AdjustedBatchSampler` over the training
   indices: with uniform weights it yields plain shuffled batches of ``batch_size`` (last partial
   batch of each epoch dropped), with tilt weights batches whose summed weight is about
   ``batch_size``;
4. every ``eval_every`` steps a line in ``metrics.jsonl`` (mean training loss since the last line,
   held-out loss and mean attribute accuracy, BatchNorm in eval mode);
5. at step 0, every ``checkpoint_every`` steps and at the end a checkpoint.

Run directory::

    <run_dir>/config.json                 the TrainConfig
    <run_dir>/metrics.jsonl               one JSON object per evaluation
    <run_dir>/checkpoints/step_000250.safetensors

A checkpoint is one safetensors file (loads without executing code, written atomically; layout
in :mod:`perturbative.checkpoints`) holding the model, Adam's state and torch's RNG state; its
JSON metadata adds the step, the config, the sampler's position, the running loss sum, the
dataset's attribute names, ``num_outputs`` and ``in_channels``. ``train(config, resume=True)``
continues from the last checkpoint and produces the same parameters, bit for bit on CPU, as a
run never stopped.

:func:`train` turns on ``torch.set_flush_denormal(True)`` for the process: denormal floats slowed
CPU training of the demo about fivefold and are far below any precision that matters here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from perturbative.checkpoints import (
    atomic_write,
    checkpoint_path,
    list_checkpoints,
    pack_training_state,
    read_checkpoint,
    save_checkpoint,
    unpack_training_state,
)
from perturbative.data import AttributeDataset, load_celeba, load_digits_attributes
from perturbative.models import mxresnet
from perturbative.sampler import AdjustedBatchSampler
from perturbative.tilt import check_tilt, tilt_weights, weighted_loss

DATASETS = ("digits", "celeba")
# fields that may differ between a run and its resumption
RESUMABLE_CHANGES = ("steps", "device")


@dataclass
class TrainConfig:
    """Everything that determines a training run; the defaults are the reference experiment.

    Use :meth:`reference` for CelebA, :meth:`demo` for the fast offline default, and
    :meth:`from_overrides` to apply command-line flags (unknown keys are an error).
    """

    # "celeba" is the reference experiment; "digits" is scikit-learn's embedded digits.
    dataset: str = "celeba"
    # folder in CelebA's on-disk layout; required for "celeba", unused for "digits".
    data_root: str | None = None
    # 64x64 keeps a 5000-step MXResNet-18 run within an hour on a CPU and is the original size.
    image_size: int = 64
    # a tenth held out where the official partitions leave one side empty (as in a subset).
    heldout_fraction: float = 0.1
    # the held-out split has its own seed, so runs with different seeds share one split.
    split_seed: int = 0
    # load only the first `limit` CelebA images (quick trials); None loads all.
    limit: int | None = None
    # MXResNet-18, the original experiment's model (34 and 50 also available).
    depth: int = 18
    # channel multiplier; 1.0 is the original MXResNet.
    width: float = 1.0
    # Adam, as in the original experiment: lr 5e-3, betas (0.8, 0.999).
    lr: float = 5e-3
    beta1: float = 0.8
    beta2: float = 0.999
    # 32 examples per step, as in the original experiment (tilted: target summed weight).
    batch_size: int = 32
    # 5000 steps: about 18 epochs of a 9,000-image training set.
    steps: int = 5000
    # 21 checkpoints over 5000 steps: enough points to see brackets change during training.
    checkpoint_every: int = 250
    # held-out metrics at every checkpoint by default.
    eval_every: int = 250
    # held-out examples evaluated (the first ones); bounds evaluation time on large sets.
    eval_examples: int = 1000
    # seeds the model's initial weights and the order of the batches.
    seed: int = 0
    # "Smiling=1.5,Male=-0.5": weight each example by exp(sum_a strength_a y_a) / Z, i.e.
    # dH(x) = -sum_a strength_a y_a(x) at lambda = 1; None trains untilted.
    tilt: str | None = None
    # "auto" takes CUDA when present; bit-exact determinism is promised on "cpu".
    device: str = "auto"
    # where config, metrics and checkpoints go.
    run_dir: str = "runs/celeba"

    def __post_init__(self) -> None:
        _check_types(self)
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        positive = ("image_size", "batch_size", "checkpoint_every", "eval_every", "eval_examples")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if not (self.lr > 0 and 0 <= self.beta1 < 1 and 0 <= self.beta2 < 1 and self.width > 0):
            raise ValueError(
                "need lr > 0, 0 <= beta1, beta2 < 1 and width > 0; got "
                f"lr={self.lr}, beta1={self.beta1}, beta2={self.beta2}, width={self.width}"
            )
        if self.tilt is not None:
            parse_tilt(self.tilt)

    @classmethod
    def reference(cls, celeba_root: str | os.PathLike, **overrides: Any) -> TrainConfig:
        """The reference experiment: MXResNet-18 on CelebA at 64x64, 40 outputs, Adam lr 5e-3
        betas (0.8, 0.999), batch 32, 5000 steps, a checkpoint every 250 steps."""
        base = cls(dataset="celeba", data_root=str(celeba_root), run_dir="runs/celeba")
        return cls.from_overrides(base, overrides)

    @classmethod
    def demo(cls, **overrides: Any) -> TrainConfig:
        """The embedded default: a quarter-width MXResNet-18 on the digits at 32x32.

        600 steps of batch 32 (about 13 epochs of 1,438 training images) take well under a
        minute on two CPU cores and reach about 98% held-out mean attribute accuracy; a
        checkpoint every 50 steps gives 13 checkpoints, enough to follow the brackets.
        """
        base = cls(
            dataset="digits",
            image_size=32,
            heldout_fraction=0.2,
            width=0.25,
            steps=600,
            checkpoint_every=50,
            eval_every=50,
            run_dir="runs/demo",
        )
        return cls.from_overrides(base, overrides)

    @classmethod
    def from_overrides(cls, base: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
        """``base`` with some fields replaced, checked like a fresh config.

        Values are converted from strings where the field's type allows (command-line flags):
        ``"1e-3" -> 0.001`` for floats, ``"none"`` -> ``None`` for optional fields.

        Raises:
            KeyError: for a key that is not a field (the message lists the fields).
            TypeError: for a value of the wrong type.
        """
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise KeyError(f"unknown TrainConfig keys {unknown}; valid keys: {', '.join(names)}")
        hints = typing.get_type_hints(cls)
        converted = {key: _convert(key, value, hints[key]) for key, value in overrides.items()}
        return dataclasses.replace(base, **converted)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from a dict (e.g. ``config.json``); unknown keys are an error."""
        return cls.from_overrides(cls(), values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _allowed_types(hint: Any) -> tuple[type, ...]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return tuple(t for arg in typing.get_args(hint) for t in _allowed_types(arg))
    return (type(None),) if hint is type(None) else (hint,)


def _convert(key: str, value: Any, hint: Any) -> Any:
    allowed = _allowed_types(hint)
    if isinstance(value, str) and str not in allowed:
        text = value.strip()
        if text.lower() in ("none", "null", "") and type(None) in allowed:
            return None
        for kind in (bool, int, float):
            if kind in allowed:
                try:
                    if kind is bool:
                        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                            continue
                        return text.lower() in ("true", "1", "yes")
                    return kind(text)
                except ValueError:
                    continue
        raise TypeError(
            f"{key}={value!r} cannot be read as {' or '.join(t.__name__ for t in allowed)}"
        )
    if isinstance(value, int) and not isinstance(value, bool) and float in allowed:
        if int not in allowed:
            return float(value)
    return value


def _check_types(config: TrainConfig) -> None:
    hints = typing.get_type_hints(type(config))
    for f in fields(config):
        value = getattr(config, f.name)
        allowed = _allowed_types(hints[f.name])
        if float in allowed and isinstance(value, int) and not isinstance(value, bool):
            setattr(config, f.name, float(value))
            continue
        ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
        if not ok:
            names = " or ".join(t.__name__ for t in allowed)
            raise TypeError(f"TrainConfig.{f.name} must be {names}, got {value!r}")


def parse_tilt(spec: str, attribute_names: list[str] | None = None) -> dict[str, float]:
    """Parse ``"Smiling=1.5,Male=-0.5"`` into ``{"Smiling": 1.5, "Male": -0.5}``.

    A positive strength weights examples *with* the attribute up: ``dH(x) = -sum_a s_a y_a(x)``
    and ``w(x) = exp(-dH(x)) / Z``.

    Raises:
        ValueError: for a malformed spec, or (given ``attribute_names``) an unknown attribute,
            listing the valid names.
    """
    strengths: dict[str, float] = {}
    for part in spec.split(","):
        name, sep, value = part.strip().partition("=")
        try:
            strength = float(value)
        except ValueError:
            strength = math.nan
        if not sep or not name.strip() or not math.isfinite(strength):
            raise ValueError(
                f"cannot read tilt {part.strip()!r} in {spec!r}: write ATTRIBUTE=STRENGTH, "
                "comma-separated, e.g. 'Smiling=1.5,Male=-0.5'"
            )
        strengths[name.strip()] = strength
    if attribute_names is not None:
        unknown = [name for name in strengths if name not in attribute_names]
        if unknown:
            raise ValueError(
                f"tilt names unknown attribute(s) {unknown}; valid names: "
                + ", ".join(attribute_names)
            )
    return strengths


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
        raise ValueError(
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


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`train` (safetensors: no code is executed).

    Returns:
        ``{"step", "config" (TrainConfig), "model" (state dict), "optimizer" (state dict for
        ``torch.optim.Adam.load_state_dict``), "sampler", "rng_state", "attribute_names",
        "num_outputs", "in_channels", "dataset", "loss_sum", "loss_count", "format_version"}``.

    Raises:
        ValueError: if the file is not a perturbative checkpoint of this format version.
    """
    tensors, info = read_checkpoint(path)
    keys = ("format_version", "step", "sampler", "attribute_names", "num_outputs", "in_channels")
    keys += ("dataset", "loss_sum", "loss_count")
    return {
        **{key: info[key] for key in keys},
        "config": TrainConfig.from_dict(info["config"]),
        **unpack_training_state(tensors, info),
    }


def model_from_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """The model of a checkpoint in eval mode (BatchNorm on running statistics), and the
    checkpoint dict of :func:`load_checkpoint`."""
    checkpoint = load_checkpoint(path)
    model = build_model(checkpoint["config"], checkpoint["num_outputs"], checkpoint["in_channels"])
    model.load_state_dict(checkpoint["model"])
    return model.eval(), checkpoint


def load_run_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The config of an existing run (its ``config.json``), e.g. to resume it."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {run_dir} is not a training run directory")
    return TrainConfig.from_dict(json.loads(path.read_text()))


def _device(config: TrainConfig) -> torch.device:
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(config.device)


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


def _write_metrics(path: Path, lines: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(line) + "\n" for line in lines)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _batches(sampler: AdjustedBatchSampler):
    while True:
        yield from sampler


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train a model as the config says; see the module docstring for the loop and the files.

    Args:
        config: the run.
        resume: continue from the run directory's last checkpoint (the config may differ only
            in ``steps`` and ``device``); with no checkpoint there yet, start afresh.
        progress: show a tqdm bar with the loss.

    Returns:
        The run directory.

    Raises:
        FileExistsError: if the run directory already has checkpoints and ``resume`` is false.
        ValueError: if resuming with a config that differs in other fields.
    """
    run_dir = Path(config.run_dir)
    existing = list_checkpoints(run_dir)
    if existing and not resume:
        raise FileExistsError(
            f"{run_dir} already holds checkpoints up to step {existing[-1][0]}: resume it "
            "(--resume) or choose another run directory"
        )
    device = _device(config)
    # Denormal floats (below 1.2e-38, from Mish tails and Adam's squared gradients) make CPU
    # arithmetic several times slower and carry no information here; this is process-wide.
    torch.set_flush_denormal(True)
    dataset = build_dataset(config)
    torch.manual_seed(config.seed)
    model = build_model(config, dataset.num_attributes, dataset.num_channels).to(device).train()
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.lr, betas=(config.beta1, config.beta2)
    )
    train_indices = dataset.train_indices
    eval_indices = dataset.heldout_indices[: config.eval_examples]
    if config.tilt is None:
        weights = torch.ones(len(train_indices), dtype=torch.float64)
    else:
        weights = tilt_weights(tilt_delta_h(dataset, config.tilt, train_indices), 1.0)
    # Uniform weights give plain shuffled batches of exactly batch_size (the carry rule on
    # weights 1); the last partial batch of an epoch is dropped in both cases.
    sampler = AdjustedBatchSampler(weights, config.batch_size, seed=config.seed, drop_last=True)

    step, loss_sum, loss_count = 0, 0.0, 0
    metrics_path = run_dir / "metrics.jsonl"
    if existing:
        checkpoint = load_checkpoint(existing[-1][1])
        _check_resumable(checkpoint["config"], config)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        sampler.load_state_dict(checkpoint["sampler"])
        torch.set_rng_state(checkpoint["rng_state"])
        step, loss_sum, loss_count = (
            checkpoint["step"],
            checkpoint["loss_sum"],
            checkpoint["loss_count"],
        )
        # lines written after the checkpoint belong to steps that will be run again
        _write_metrics(metrics_path, [m for m in _read_metrics(metrics_path) if m["step"] <= step])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    if config.tilt is not None:
        diagnostics = check_tilt(weights, target_batch_size=config.batch_size)
        (run_dir / "tilt.json").write_text(json.dumps(diagnostics.as_dict(), indent=2) + "\n")

    def log(entry: dict[str, Any]) -> None:
        with metrics_path.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")

    def checkpoint_now() -> None:
        tensors, info = pack_training_state(model, optimizer)
        info |= {
            "step": step,
            "config": config.to_dict(),
            "sampler": sampler.state_dict(),
            "loss_sum": loss_sum,
            "loss_count": loss_count,
            "attribute_names": dataset.attribute_names,
            "num_outputs": dataset.num_attributes,
            "in_channels": dataset.num_channels,
            "dataset": dataset.name,
        }
        save_checkpoint(checkpoint_path(run_dir, step), tensors, info)

    if not existing:
        metrics_path.unlink(missing_ok=True)
        log({"step": 0, "train_loss": None, **evaluate(model, dataset, eval_indices)})
        checkpoint_now()

    batches = _batches(sampler)
    bar = tqdm(total=config.steps, initial=step, disable=not progress, desc="train", unit="step")
    while step < config.steps:
        positions = torch.as_tensor(next(batches), dtype=torch.int64)
        inputs, targets = dataset.batch(train_indices[positions])
        losses = attribute_bce(model(inputs.to(device)), targets.to(device))
        if config.tilt is None:
            loss = losses.mean()
        else:
            loss = weighted_loss(losses, weights[positions].to(device), config.batch_size)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        loss_sum += float(loss.detach())
        loss_count += 1
        bar.update(1)
        if step % 10 == 0 or step == config.steps:
            bar.set_postfix(loss=f"{loss_sum / max(loss_count, 1):.4f}")
        if step % config.eval_every == 0 or step == config.steps:
            entry = {"step": step, "train_loss": loss_sum / max(loss_count, 1)}
            log({**entry, **evaluate(model, dataset, eval_indices)})
            loss_sum, loss_count = 0.0, 0
        if step % config.checkpoint_every == 0 or step == config.steps:
            checkpoint_now()
    bar.close()
    return run_dir


def _check_resumable(saved: TrainConfig, config: TrainConfig) -> None:
    old, new = saved.to_dict(), config.to_dict()
    changed = [k for k in old if old[k] != new[k] and k not in RESUMABLE_CHANGES]
    if changed:
        details = ", ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in changed)
        raise ValueError(
            f"cannot resume with a different config ({details}); only {RESUMABLE_CHANGES} may "
            "change. Use load_run_config(run_dir) to get the run's config"
        )

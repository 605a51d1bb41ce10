"""The reference experiment end to end: a training run's checkpoints -> bracket sweep -> report.

Glue between :mod:`perturbative.training` (runs and checkpoints), :mod:`perturbative.sweep`
(the analysis, written to files) and :mod:`perturbative.report` (rendering). For a model and
data of your own, call :func:`perturbative.sweep.bracket_sweep` directly
(``examples/own_model.py``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from perturbative.bracket import adam_preconditioner
from perturbative.report import write_report
from perturbative.sweep import SweepData, SweepSettings, bracket_sweep, select_examples
from perturbative.training import (
    TrainConfig,
    attribute_bce,
    build_dataset,
    build_model,
    list_checkpoints,
    load_checkpoint,
    load_run_config,
    train,
)
from perturbative.training import (
    _device as training_device,
)


@dataclass
class SweepOptions:
    """How to sweep a training run; each default with its reason.

    Attributes:
        bracket_examples: 6 held-out examples -> 15 brackets, the original experiment's grid.
        test_examples: 32 held-out examples (one batch) whose outputs the brackets move.
        ranking_examples: 256 training examples ranked by order sensitivity: enough to show a
            spread, and only 256 gradients + 256 HVPs per checkpoint.
        preconditioner: "none" brackets the plain gradient fields, as the original experiment
            did; "adam" uses each checkpoint's Adam preconditioner (step 0 has no Adam state and
            is skipped).
        engine: bracket engine; "auto" picks by device.
        save_brackets: also store the full bracket tensors (each the size of a checkpoint).
        seed: picks the test batch and the ranking pool, deterministically.
        out_dir: results directory; default ``<run>/brackets``.
    """

    bracket_examples: int = 6
    test_examples: int = 32
    ranking_examples: int = 256
    preconditioner: str = "none"
    engine: str = "auto"
    save_brackets: bool = False
    seed: int = 0
    out_dir: str | None = None


def per_example_bce(outputs: Tensor, targets: Tensor) -> Tensor:
    """``L_x``: mean BCE over the attributes of one example (batch of one) -> scalar."""
    return attribute_bce(outputs, targets).sum()


def sweep_training_run(run_dir: str | Path, options: SweepOptions | None = None) -> Path:
    """Sweep every checkpoint of a run made by :func:`perturbative.training.train`.

    Returns:
        The results directory (``docs/results-format.md``).
    """
    options = options or SweepOptions()
    if options.preconditioner not in ("none", "adam"):
        raise ValueError(f"preconditioner must be 'none' or 'adam', not {options.preconditioner!r}")
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        raise FileNotFoundError(
            f"no checkpoints in {run_dir / 'checkpoints'}: run `perturbative train` first"
        )
    if options.preconditioner == "adam":
        checkpoints = [(s, p) for s, p in checkpoints if s > 0]
    dataset = build_dataset(config)
    device = training_device(config)  # where the run trained: CUDA when "auto" finds one
    test = select_examples(dataset.heldout_indices.tolist(), options.test_examples, options.seed)
    if len(test) < options.bracket_examples:
        raise ValueError(
            f"only {len(test)} held-out examples; need at least bracket_examples="
            f"{options.bracket_examples}"
        )
    pool = select_examples(
        dataset.train_indices.tolist(), options.ranking_examples, options.seed + 1
    )
    test_inputs, test_targets = dataset.batch(test)
    pool_inputs, pool_targets = dataset.batch(pool)
    data = SweepData(
        test_inputs=test_inputs,
        test_targets=test_targets,
        attribute_names=list(dataset.attribute_names),
        ranking_inputs=pool_inputs if len(pool) >= 2 else None,
        ranking_targets=pool_targets if len(pool) >= 2 else None,
        test_indices=test,
        ranking_indices=pool,
        thumbnails=dataset.images01(test[: options.bracket_examples]),
    )
    model = build_model(config, dataset.num_attributes, dataset.num_channels).to(device)
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
        return adam_preconditioner(optimizer, dict(model.named_parameters()))

    out_dir = Path(options.out_dir) if options.out_dir else run_dir / "brackets"
    return bracket_sweep(
        model,
        per_example_bce,
        [(s, loader(p)) for s, p in checkpoints],
        data,
        out_dir,
        settings,
        preconditioner_at=adam_at if options.preconditioner == "adam" else None,
    )


def run_experiment(
    config: TrainConfig, options: SweepOptions | None = None, resume: bool = False
) -> Path:
    """Train -> brackets -> report. Returns the report's path (``<run>/report.html``)."""
    run_dir = train(config, resume=resume)
    results = sweep_training_run(run_dir, options)
    return write_report(results, Path(run_dir) / "report.html")

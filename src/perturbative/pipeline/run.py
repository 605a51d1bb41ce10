"""A training run's checkpoints -> the bracket sweep's results files.

Glue between :mod:`perturbative.pipeline.train` (runs and checkpoints) and
:mod:`perturbative.pipeline.sweep` (the analysis, written to files). For a model and data of your
own, call :func:`perturbative.pipeline.sweep.bracket_sweep` directly (``examples/own_model.py``).
"""

from __future__ import annotations

import functools
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
from perturbative.pipeline.sweep import SweepData, bracket_sweep, select_examples
from perturbative.pipeline.train import build_dataset, build_model, per_example_bce


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
    device = resolve_device(config.device)  # where the run trained: CUDA when "auto" finds one
    test = select_examples(dataset.heldout_indices.tolist(), options.test_examples, options.seed)
    if len(test) < options.bracket_examples:
        raise InputError(
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
        per_example_bce,
        [(s, loader(p)) for s, p in checkpoints],
        data,
        out_dir,
        settings,
        preconditioner_at=adam_at if options.preconditioner == "adam" else None,
        sources=sources,
        replace_stale=inside,
    )

"""How an order check draws what it trains: random pairs of single examples (alone or inside a
minibatch whose other rows weigh 0), of minibatches, of examples exchanged between two
minibatches, and windows of minibatches, from a run's training examples (its task's, by
position), with a seeded generator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from perturbative._core.errors import InputError
from perturbative.pipeline.task import Task, as_dtype, packed

DTYPES = {"float32": torch.float32, "float64": torch.float64}
PAIR_KINDS = ("logged", "example", "batch", "exchange")


def sample_pairs(
    task: Task,
    batch_size,
    examples,
    batches,
    exchanges,
    generator,
    dtype,
    example_batch=1,
    device=None,
) -> list[tuple]:
    """Random pairs: ``examples`` of single training examples, ``batches`` of minibatches of
    ``batch_size`` (disjoint within a pair), and ``exchanges`` of two such minibatches whose
    first examples change places.

    With ``example_batch > 1`` each single example is the first row of a minibatch of that size
    whose other rows are random training examples weighing 0 in the loss: a third column of
    weights, ``example_batch`` for the example and 0 for the rest, makes the batch's mean loss
    the example's own, with BatchNorm's statistics taken over the whole minibatch.

    Raises:
        InputError: single examples in a minibatch of keyword batches (no column to weigh).
    """
    pairs = []
    for kind, count, size in (
        ("example", examples, example_batch),
        ("batch", batches, batch_size),
        ("exchange", exchanges, batch_size),
    ):
        for _ in range(count):
            x, y = disjoint_batches(task, 2, size, generator, dtype, device)
            if kind == "example" and size > 1:
                if isinstance(x[0], Mapping):
                    raise InputError(
                        "single examples inside a minibatch need batches of tensors (a weight "
                        "column); use examples='alone' (--examples alone)"
                    )
                weight = torch.zeros(size, dtype=_weight_dtype(x, dtype), device=device)
                weight[0] = size
                x, y = (*x, weight), (*y, weight)
            pairs.append((kind, x, y))
    return pairs


def sample_windows(
    task: Task, batch_size, count, generator, dtype, sizes=(3, 4), device=None
) -> list[list]:
    """``count`` random windows of ``k`` disjoint minibatches for each ``k`` of ``sizes``."""
    return [
        disjoint_batches(task, k, batch_size, generator, dtype, device)
        for k in sizes
        for _ in range(count)
    ]


def disjoint_batches(task: Task, k: int, size: int, generator, dtype, device=None) -> list[tuple]:
    """``k`` minibatches of ``size`` random training examples, no example in two of them."""
    chosen = torch.randperm(len(task.train), generator=generator)[: k * size].tolist()
    return [
        cast_batch(task.batch(chosen[i * size : (i + 1) * size]), dtype, device) for i in range(k)
    ]


def cast_batch(batch: Any, dtype: Any, device: torch.device | str | None = None) -> tuple:
    """A collated batch as the data tuple the predictions take (a keyword batch as
    ``(batch,)``), its floating tensors cast to ``dtype`` (a torch dtype or its name) and every
    tensor moved to ``device`` where one is given."""
    return packed(as_dtype(batch, DTYPES.get(dtype, dtype), device))


def _weight_dtype(batch: tuple, dtype: Any) -> torch.dtype:
    """The weights' dtype: the targets' where they are floating, else the working one."""
    target = batch[1] if len(batch) > 1 else None
    if isinstance(target, torch.Tensor) and target.is_floating_point():
        return target.dtype
    return DTYPES.get(dtype, dtype)

"""How an order check draws what it trains: random pairs of single examples (alone or inside a
minibatch whose other rows weigh 0), of minibatches, of examples exchanged between two
minibatches, and windows of minibatches, from a run's training split, with a seeded generator.
"""

from __future__ import annotations

import torch

from perturbative.pipeline.task import as_dtype

DTYPES = {"float32": torch.float32, "float64": torch.float64}
PAIR_KINDS = ("example", "batch", "exchange")


def sample_pairs(
    dataset, batch_size, examples, batches, exchanges, generator, dtype, example_batch=1
) -> list[tuple]:
    """Random pairs: ``examples`` of single training examples, ``batches`` of minibatches of
    ``batch_size`` (disjoint within a pair), and ``exchanges`` of two such minibatches whose
    first examples change places.

    With ``example_batch > 1`` each single example is the first row of a minibatch of that size
    whose other rows are random training examples weighing 0 in the loss: a third column of
    weights, ``example_batch`` for the example and 0 for the rest, makes the batch's mean loss
    the example's own (:func:`perturbative.pipeline.train.per_example_bce`), with BatchNorm's
    statistics taken over the whole minibatch."""
    train = dataset.train_indices
    pairs = []
    for kind, count, size in (
        ("example", examples, example_batch),
        ("batch", batches, batch_size),
        ("exchange", exchanges, batch_size),
    ):
        for _ in range(count):
            chosen = train[torch.randperm(len(train), generator=generator)[: 2 * size]]
            x, y = (
                cast_batch(dataset.batch(chosen[i * size : (i + 1) * size]), dtype) for i in (0, 1)
            )
            if kind == "example" and size > 1:
                weight = torch.zeros(size, dtype=x[1].dtype)
                weight[0] = size
                x, y = (*x, weight), (*y, weight)
            pairs.append((kind, x, y))
    return pairs


def sample_windows(dataset, batch_size, count, generator, dtype, sizes=(3, 4)) -> list[list[tuple]]:
    """``count`` random windows of ``k`` disjoint minibatches for each ``k`` of ``sizes``."""
    train, windows = dataset.train_indices, []
    for k in sizes:
        for _ in range(count):
            chosen = train[torch.randperm(len(train), generator=generator)[: k * batch_size]]
            windows.append(
                [
                    cast_batch(dataset.batch(chosen[i * batch_size : (i + 1) * batch_size]), dtype)
                    for i in range(k)
                ]
            )
    return windows


def cast_batch(batch, dtype):
    """A data tuple with its floating tensors cast to ``dtype`` (a torch dtype or its name)."""
    return as_dtype(batch, DTYPES.get(dtype, dtype))

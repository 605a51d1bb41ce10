"""Batches of variable length whose summed weights stay near a target: ``AdjustedBatchSampler``.

With tilt weights ``w_i`` (mean 1, see :func:`perturbative.tilt.tilt_weights`), a batch's
*adjusted size* is ``B = sum_{j in batch} w_j``, the number of ordinary examples it counts as.
Fixed-length batches let ``B`` swing with the weights they happen to draw, and the step size with
it. The carry rule holds ``B`` near a target ``B_avg``:

    err = 0
    each step:  err += B_avg
                add examples, in the shuffled order, while B + w_next <= err
                err -= B;  emit the batch

In exact arithmetic, batch ``t`` (counting from 0) therefore holds the examples whose cumulative
weight ``C_k = w_0 + ... + w_k`` (in shuffled order) lies in ``(t B_avg, (t+1) B_avg]``; that form
is what is computed (no drift from summing and subtracting floats). After every batch but the
last, ``0 <= err < max_i w_i`` (when no weight exceeds ``B_avg``), so over ``T`` batches

    |mean adjusted size - B_avg| <= max_i w_i / T          (last batch dropped),
    |mean adjusted size - B_avg| <= (B_avg + max_i w_i) / T  (last, partial batch kept).

**Oversized examples.** An example whose weight alone exceeds what is left (``w > err`` while the
batch is still empty) is emitted as a batch of its own: a batch is never empty. ``err`` then goes
negative, and the following batches hold one example each until the carry has paid the overshoot
back. A :class:`~perturbative.tilt.TiltWarning` is issued once, when the sampler is built, if any
weight exceeds the per-rank target; ``oversize="error"`` raises instead.

**Smallest batch.** A model with BatchNorm in train mode cannot take a batch of one. With
``min_batch_size=m`` a batch of fewer than ``m`` examples is merged with the batches after it
until it holds ``m`` (an epoch's short tail joins the batch before it). Every example still
appears exactly once per epoch with its own weight, so the tilt stays exact: only the adjusted
size of the merged batches rises above the target, for the few steps that follow a heavy
example. Clipping weights would change the target distribution, and refusing would make a
strong tilt toward a rare attribute impossible, so merging is the policy.

**Epochs and state.** Each epoch is a permutation drawn from ``seed + epoch`` (identity if
``shuffle=False``), and the carry restarts at 0, so an epoch is a pure function of
``(weights, target, seed, epoch, rank, world_size)``. ``__iter__`` continues the current epoch from
the batch reached, and moves on to the next epoch when it finishes one; a loop that stops on an
epoch's last batch without asking past it (a ``DataLoader`` under Lightning takes ``len()``
batches) gets the next epoch from its next ``__iter__``, and ``len()`` counts that epoch's
batches (the rule of ``perturbative._core.epochs``, which ``OrderSampler`` also follows);
``set_epoch`` jumps.
``state_dict()`` / ``load_state_dict()`` save and restore ``(epoch, batch)``, so a resumed run
draws the same batches as an uninterrupted one.

**Distributed.** Rank ``r`` of ``world_size`` takes the examples at positions ``r, r + W, ...``
of the epoch's permutation (disjoint streams) and runs its own carry with target
``B_avg / world_size``, so one step over all ranks has adjusted size about ``B_avg``. Because
``DistributedDataParallel`` averages gradients over ranks, each rank's loss should be
``weighted_loss(L, w, sampler.rank_target_batch_size)``. With ``even_batches=True`` (default) every
rank emits the same number of batches (the smallest over ranks; every rank can compute all ranks'
batches), so no rank waits forever for another; the few examples at the tails are skipped that
epoch and land elsewhere in the next permutation.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Sampler

from perturbative._core.epochs import EpochPosition
from perturbative.tilt._diagnostics import TiltWarning

OVERSIZE_POLICIES = ("singleton", "error")


def adjusted_batch_ends(weights: np.ndarray, target: float) -> np.ndarray:
    """End positions (exclusive) of the batches of the carry rule over weights in stream order.

    Args:
        weights: ``(n,)`` float64 nonnegative weights, in the order examples are drawn.
        target: ``B_avg > 0``.

    Returns:
        ``(T,)`` int64 increasing positions; batch ``t`` is ``[ends[t-1], ends[t])``, and
        ``ends[-1] == n`` (the last batch may be partial).
    """
    n = len(weights)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    cum = np.cumsum(weights)
    if weights.max() <= target:
        # No example can skip over a multiple of the target: batch t holds C_k in (t B, (t+1) B].
        count = int(math.ceil(cum[-1] / target)) + 2
        thresholds = np.arange(1, count + 1, dtype=np.float64) * target
        batch_of = np.searchsorted(thresholds, cum, side="left")
        ends = np.flatnonzero(np.diff(batch_of)) + 1
        return np.append(ends, n).astype(np.int64)
    ends = []
    t = 0
    cum_list = cum.tolist()
    for k in range(1, n):
        # Example k joins batch t unless its cumulative weight passes (t + 1) B; a new batch
        # always takes its first example, which is how oversized examples become singletons.
        if cum_list[k] > (t + 1) * target:
            ends.append(k)
            t += 1
    ends.append(n)
    return np.asarray(ends, dtype=np.int64)


def merge_small_batches(batches: list[np.ndarray], min_size: int) -> list[np.ndarray]:
    """Merge each batch of fewer than ``min_size`` examples with the batches after it.

    Args:
        batches: index arrays in order.
        min_size: the fewest examples a batch may hold.

    Returns:
        Index arrays in order, each of at least ``min_size`` examples (unless all of them
        together hold fewer); the same examples in the same order.
    """
    if min_size <= 1:
        return batches
    merged, pending = [], []
    for batch in batches:
        pending.append(batch)
        if sum(len(b) for b in pending) >= min_size:
            merged.append(np.concatenate(pending))
            pending = []
    if pending:
        tail = np.concatenate(pending)
        if merged:
            merged[-1] = np.concatenate([merged[-1], tail])
        else:
            merged.append(tail)
    return merged


class AdjustedBatchSampler(Sampler[list[int]]):
    """Batch sampler whose batches' summed weights ``B = sum_j w_j`` average ``B_avg``.

    Use it as ``DataLoader(dataset, batch_sampler=sampler)`` and train on
    ``weighted_loss(per_example_losses, weights[batch], sampler.rank_target_batch_size)``. The
    module docstring states the carry rule, the bound on the mean adjusted size, the oversized-
    example policy, resumption and sharding.

    Args:
        weights: ``(N,)`` nonnegative finite weights (usually mean 1, from
            :func:`perturbative.tilt.tilt_weights`).
        target_batch_size: ``B_avg``, the target adjusted size of one step over all ranks.
        seed: seed of the per-epoch shuffles.
        shuffle: draw a fresh permutation each epoch; ``False`` keeps index order.
        drop_last: drop each epoch's last, partial batch.
        rank: this process's rank in ``[0, world_size)``.
        world_size: number of ranks.
        even_batches: with several ranks, truncate every rank to the smallest batch count.
        oversize: ``"singleton"`` (default): an example heavier than the per-rank target is a
            batch alone (but see ``min_batch_size``); ``"error"``: refuse such weights.
        min_batch_size: merge batches of fewer examples with the following ones (2 for a model
            with BatchNorm in train mode); 1 keeps the carry rule's batches as they are.

    Raises:
        ValueError: on bad weights, target, rank, or policy; with ``oversize="error"`` if an
            example outweighs the per-rank target.
    """

    def __init__(
        self,
        weights: Tensor | Sequence[float],
        target_batch_size: float,
        *,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        even_batches: bool = True,
        oversize: str = "singleton",
        min_batch_size: int = 1,
    ) -> None:
        w = torch.as_tensor(weights).detach().to("cpu", torch.float64)
        if w.ndim != 1 or w.numel() == 0:
            raise ValueError(f"weights must have shape (N,) with N >= 1, got {tuple(w.shape)}")
        bad = ~torch.isfinite(w) | (w < 0)
        if bad.any():
            idx = torch.nonzero(bad).flatten()[:10].tolist()
            raise ValueError(f"weights must be finite and nonnegative; not at indices {idx}")
        if not (isinstance(target_batch_size, (int, float)) and target_batch_size > 0):
            raise ValueError(
                f"target_batch_size must be a positive number, got {target_batch_size}"
            )
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
            )
        if not (isinstance(min_batch_size, int) and 1 <= min_batch_size <= w.numel()):
            raise ValueError(
                f"min_batch_size must be an integer in [1, {w.numel()}] (the number of "
                f"examples), got {min_batch_size!r}"
            )
        if oversize not in OVERSIZE_POLICIES:
            raise ValueError(f"oversize must be one of {OVERSIZE_POLICIES}, got {oversize!r}")
        self.weights = w.numpy()
        self.target_batch_size = float(target_batch_size)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.even_batches = even_batches
        self.oversize = oversize
        self.min_batch_size = min_batch_size
        self._epochs = EpochPosition()  # the epoch, and the batches of it already emitted
        self._cache: tuple[int, list[np.ndarray]] | None = None

        heavy = np.flatnonzero(self.weights > self.rank_target_batch_size)
        if heavy.size:
            what = (
                f"{heavy.size} example(s) (indices {heavy[:10].tolist()}) have weights up to "
                f"{self.weights[heavy].max():.3g}, above the per-rank target batch size "
                f"{self.rank_target_batch_size:.3g}"
            )
            if oversize == "error":
                raise ValueError(
                    f"{what}; raise target_batch_size, lower the tilt strength, or pass "
                    "oversize='singleton'"
                )
            then = (
                "each will be a batch of its own, and the next batches shrink to one example "
                "each until the carry has paid the overshoot back"
                if min_batch_size == 1
                else f"batches of fewer than {min_batch_size} examples after each are merged "
                "(weights unchanged, so the tilt stays exact; those steps count more than the "
                "target)"
            )
            warnings.warn(
                f"{what}: {then}",
                TiltWarning,
                stacklevel=2,
            )

    @property
    def rank_target_batch_size(self) -> float:
        """``B_avg / world_size``: the target adjusted size of this rank's batches."""
        return self.target_batch_size / self.world_size

    @property
    def epoch(self) -> int:
        """The current epoch."""
        return self._epochs.epoch

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its first batch at the next ``__iter__``."""
        self._epochs.set_epoch(epoch)

    def _permutation(self, epoch: int) -> np.ndarray:
        n = len(self.weights)
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(n, generator=generator).numpy()

    def _rank_batches(self, perm: np.ndarray, rank: int) -> list[np.ndarray]:
        stream = perm[rank :: self.world_size]
        ends = adjusted_batch_ends(self.weights[stream], self.rank_target_batch_size)
        batches = np.split(stream, ends[:-1])
        if self.drop_last and batches:
            last = self.weights[batches[-1]].sum()
            if last < self.rank_target_batch_size:
                batches.pop()
        return merge_small_batches(batches, self.min_batch_size)

    def epoch_batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """All batches of an epoch on this rank, as arrays of dataset indices.

        Args:
            epoch: which epoch; the current one if ``None``.

        Returns:
            List of ``(b_t,)`` int64 index arrays, in order.
        """
        epoch = self.epoch if epoch is None else epoch
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        perm = self._permutation(epoch)
        batches = self._rank_batches(perm, self.rank)
        if self.world_size > 1 and self.even_batches:
            count = min(
                len(batches) if r == self.rank else len(self._rank_batches(perm, r))
                for r in range(self.world_size)
            )
            batches = batches[:count]
        self._cache = (epoch, batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        # a loop that stopped on the epoch's last batch without asking past it: the next epoch
        self._epochs.start(len(self.epoch_batches()))
        batches = self.epoch_batches()
        while self._epochs.position < len(batches):
            # counted before yielding, so state_dict() after a batch includes it
            yield batches[self._epochs.take()].tolist()
        self._epochs.next_epoch()

    def __len__(self) -> int:
        """Number of batches of the epoch the next ``__iter__`` draws (all of them, including
        those emitted): the current epoch, or the next once every batch of it was emitted."""
        if self._epochs.finished(len(self.epoch_batches())):
            return len(self.epoch_batches(self.epoch + 1))
        return len(self.epoch_batches())

    def state_dict(self, batches_consumed: int | None = None) -> dict[str, Any]:
        """The position in the run, as plain values.

        Args:
            batches_consumed: batches of the current epoch the training loop has actually used.
                Pass it when a ``DataLoader`` with workers prefetches batches ahead of training;
                by default the batches this sampler has emitted are counted.

        Returns:
            ``{"epoch", "batch", "seed", "num_examples", "target_batch_size", "rank",
            "world_size", "weights_sum", "min_batch_size"}``; all but the first two guard against
            loading into a different sampler.
        """
        place = self._epochs.state_dict()
        if batches_consumed is not None:
            place["batch"] = int(batches_consumed)
        return {
            **place,
            "seed": self.seed,
            "num_examples": len(self.weights),
            "target_batch_size": self.target_batch_size,
            "rank": self.rank,
            "world_size": self.world_size,
            "weights_sum": float(self.weights.sum()),
            "min_batch_size": self.min_batch_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state``'s epoch and batch; the next ``__iter__`` continues from there.

        Raises:
            ValueError: if ``state`` comes from a sampler with other data, target or sharding.
        """
        mine = self.state_dict()
        keys = ("seed", "num_examples", "target_batch_size", "rank", "world_size", "min_batch_size")
        for key in keys:
            if key in state and state[key] != mine[key]:
                raise ValueError(
                    f"state has {key}={state[key]!r} but this sampler has {mine[key]!r}; build the "
                    "sampler with the same arguments as the run being resumed"
                )
        if "weights_sum" in state and not math.isclose(
            state["weights_sum"], mine["weights_sum"], rel_tol=1e-9
        ):
            raise ValueError(
                "state was saved with different weights (their sums differ); recompute the "
                "weights exactly as in the run being resumed"
            )
        self._epochs.load_state_dict(state)

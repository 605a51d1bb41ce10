"""Images with named binary attributes, a train/held-out split, and deterministic group splits.

Every dataset in the package is an :class:`AttributeDataset`: ``N`` images stored as uint8
``(N, C, H, W)`` (a quarter of the memory of float32; converted per batch), ``K`` binary
attributes as float ``0/1`` targets ``(N, K)``, and disjoint index sets for training and for
held-out evaluation. Model inputs are ``(image / 255 - mean) / std`` per channel, with ``mean``
and ``std`` taken over the training images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from perturbative._core.errors import InputError

IndexLike = Sequence[int] | Tensor


def group_heldout_split(
    groups: Tensor, heldout_fraction: float, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Split examples into train and held-out so that every group lies on one side only.

    The distinct group ids are sorted, shuffled by a ``torch.Generator`` seeded with ``seed``,
    and moved to the held-out side in that order until it holds at least
    ``round(heldout_fraction * N)`` examples. The result depends only on ``groups``,
    ``heldout_fraction`` and ``seed``.

    Args:
        groups: ``(N,)`` integer group ids (e.g. CelebA identities; ``arange(N)`` for none).
        heldout_fraction: target fraction of examples held out, in ``(0, 1)``.
        seed: seed of the shuffle of groups.

    Returns:
        ``(train_indices, heldout_indices)``, each int64, sorted ascending, disjoint, together
        ``arange(N)``.

    Raises:
        ValueError: for a fraction outside ``(0, 1)`` or fewer than two groups.
    """
    if not 0.0 < heldout_fraction < 1.0:
        raise InputError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    groups = torch.as_tensor(groups).reshape(-1)
    unique, inverse, counts = torch.unique(groups, return_inverse=True, return_counts=True)
    if len(unique) < 2:
        raise ValueError(
            f"cannot hold out whole groups: only {len(unique)} distinct group id(s) in "
            f"{len(groups)} examples"
        )
    order = torch.randperm(len(unique), generator=torch.Generator().manual_seed(seed))
    wanted = max(1, round(heldout_fraction * len(groups)))
    taken = torch.cumsum(counts[order], 0)
    # groups in shuffled order up to and including the first that reaches the target count,
    # but never all of them (training keeps at least one group)
    n_heldout_groups = min(int(torch.searchsorted(taken, wanted)) + 1, len(unique) - 1)
    heldout_group = torch.zeros(len(unique), dtype=torch.bool)
    heldout_group[order[:n_heldout_groups]] = True
    is_heldout = heldout_group[inverse]
    indices = torch.arange(len(groups))
    return indices[~is_heldout], indices[is_heldout]


class AttributeDataset(Dataset):
    """``N`` uint8 images with ``K`` named binary attributes and a train/held-out split.

    ``dataset[i]`` is ``(input, target)``: a float32 ``(C, H, W)`` normalised image and a float32
    ``(K,)`` vector of 0/1 attributes. Batches are faster through :meth:`batch`.

    Args:
        images: ``(N, C, H, W)`` uint8.
        targets: ``(N, K)`` with values 0 or 1 (stored as float32).
        attribute_names: ``K`` distinct names.
        train_indices: int indices of training examples.
        heldout_indices: int indices of held-out examples, disjoint from ``train_indices``.
        groups: optional ``(N,)`` int64 group ids (e.g. identities).
        name: short dataset name (``"celeba"``, ``"digits"``, ...).
        mean, std: optional ``(C,)`` per-channel statistics of ``image / 255``; by default
            computed over the training images.
        file_names: optional ``N`` names of the source files (for error messages and reports).

    Raises:
        ValueError: for wrong dtypes, shapes, non-binary targets or overlapping/out-of-range
            index sets.
    """

    def __init__(
        self,
        images: Tensor,
        targets: Tensor,
        attribute_names: Sequence[str],
        train_indices: IndexLike,
        heldout_indices: IndexLike,
        groups: Tensor | None = None,
        name: str = "custom",
        mean: Tensor | None = None,
        std: Tensor | None = None,
        file_names: Sequence[str] | None = None,
    ):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"images must be uint8 of shape (N, C, H, W), got {images.dtype} "
                f"{tuple(images.shape)}; convert floats in [0, 1] with (x * 255).round().byte()"
            )
        n = images.shape[0]
        targets = torch.as_tensor(targets, dtype=torch.float32)
        if targets.dim() != 2 or targets.shape[0] != n:
            raise ValueError(f"targets must be (N={n}, K), got {tuple(targets.shape)}")
        if not bool(((targets == 0) | (targets == 1)).all()):
            raise ValueError("targets must be 0 or 1 (map CelebA's -1 to 0)")
        names = list(attribute_names)
        if len(names) != targets.shape[1] or len(set(names)) != len(names):
            raise ValueError(
                f"need {targets.shape[1]} distinct attribute names, got {len(names)} "
                f"({len(set(names))} distinct)"
            )
        train = torch.as_tensor(train_indices, dtype=torch.int64).reshape(-1)
        heldout = torch.as_tensor(heldout_indices, dtype=torch.int64).reshape(-1)
        for label, idx in (("train_indices", train), ("heldout_indices", heldout)):
            if len(idx) == 0:
                raise ValueError(f"{label} is empty")
            if int(idx.min()) < 0 or int(idx.max()) >= n:
                raise ValueError(f"{label} out of range for {n} examples")
            if len(torch.unique(idx)) != len(idx):
                raise ValueError(f"{label} has repeated indices")
        if bool(torch.isin(train, heldout).any()):
            raise ValueError("train_indices and heldout_indices overlap")
        if groups is not None:
            groups = torch.as_tensor(groups, dtype=torch.int64).reshape(-1)
            if len(groups) != n:
                raise ValueError(f"groups must have N={n} entries, got {len(groups)}")
        if file_names is not None and len(file_names) != n:
            raise ValueError(f"file_names must have N={n} entries, got {len(file_names)}")
        self.images = images.contiguous()
        self.targets = targets
        self.attribute_names = names
        self.train_indices = train
        self.heldout_indices = heldout
        self.groups = groups
        self.name = name
        self.file_names = list(file_names) if file_names is not None else None
        if mean is None or std is None:
            mean, std = _channel_stats(self.images, train)
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if len(self.mean) != self.num_channels or len(self.std) != self.num_channels:
            raise ValueError(f"mean and std need {self.num_channels} entries (one per channel)")
        if bool((self.std <= 0).any()):
            raise ValueError(f"std must be positive, got {self.std.tolist()}")

    @property
    def num_channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_shape(self) -> tuple[int, int]:
        """``(H, W)``."""
        return tuple(self.images.shape[2:])

    @property
    def num_attributes(self) -> int:
        return self.targets.shape[1]

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        inputs, targets = self.batch([index])
        return inputs[0], targets[0]

    def images01(self, indices: IndexLike) -> Tensor:
        """``(n, C, H, W)`` float32 images in ``[0, 1]`` (for thumbnails)."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return self.images[idx].to(torch.float32) / 255.0

    def inputs(self, indices: IndexLike) -> Tensor:
        """``(n, C, H, W)`` float32 model inputs ``(image / 255 - mean) / std``."""
        shape = (1, -1, 1, 1)
        return (self.images01(indices) - self.mean.view(shape)) / self.std.view(shape)

    def batch(self, indices: IndexLike) -> tuple[Tensor, Tensor]:
        """``(inputs (n, C, H, W), targets (n, K))`` float32 for the given indices."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return self.inputs(idx), self.targets[idx]

    def attribute_groups(self, names: Sequence[str], split: str = "train") -> dict[str, list[int]]:
        """The examples of ``split`` ("train" or "heldout") with each named attribute set, as
        positions in the split; ``"not X"`` names those without attribute ``X``.

        Raises:
            ValueError: an unknown attribute (the message lists the known ones).
        """
        indices = self.train_indices if split == "train" else self.heldout_indices
        groups = {}
        for name in names:
            attribute = name.removeprefix("not ")
            if attribute not in self.attribute_names:
                raise ValueError(
                    f"no attribute {attribute!r}; the dataset has {self.attribute_names}"
                )
            values = self.targets[indices, self.attribute_names.index(attribute)] > 0.5
            chosen = ~values if name.startswith("not ") else values
            groups[name] = torch.nonzero(chosen)[:, 0].tolist()
        return groups

    def __repr__(self) -> str:
        c, (h, w) = self.num_channels, self.image_shape
        return (
            f"AttributeDataset({self.name!r}: {len(self)} images {c}x{h}x{w}, "
            f"{self.num_attributes} attributes, {len(self.train_indices)} train / "
            f"{len(self.heldout_indices)} held out)"
        )


def _channel_stats(images: Tensor, indices: Tensor, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std of ``images[indices] / 255`` (float64 sums, chunked)."""
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    count = 0
    for start in range(0, len(indices), chunk):
        block = images[indices[start : start + chunk]].to(torch.float64) / 255.0
        total += block.sum(dim=(0, 2, 3))
        total_sq += block.square().sum(dim=(0, 2, 3))
        count += block.shape[0] * block.shape[2] * block.shape[3]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
    # a constant channel would divide by zero; leave it unscaled
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return mean.float(), std.float()

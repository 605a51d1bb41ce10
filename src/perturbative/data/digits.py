"""The embedded default: scikit-learn's handwritten digits posed as named binary attributes.

scikit-learn ships 1,797 greyscale 8x8 digit images (values 0-16) inside the package, so the
demo runs offline on a fresh machine. Each image gets ``K = 14`` binary attributes, so the same
multi-label (sigmoid + BCE per attribute) analysis as CelebA's 40 attributes applies:

* ``digit_0`` ... ``digit_9``: one-vs-rest, exactly one is 1;
* ``even``: digit in {0, 2, 4, 6, 8};
* ``greater_than_4``: digit in {5, 6, 7, 8, 9};
* ``prime``: digit in {2, 3, 5, 7};
* ``closed_loop``: the usual glyph has an enclosed region, digit in {0, 4, 6, 8, 9}.

Images are scaled to uint8 (``round(v * 255 / 16)``) and upsampled to ``image_size`` with
bilinear interpolation; they have one channel. The digits carry no writer ids, so the held-out
split treats every image as its own group.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from perturbative._core.extras import require
from perturbative.data.dataset import AttributeDataset, group_heldout_split

DERIVED_ATTRIBUTES: dict[str, frozenset[int]] = {
    "even": frozenset({0, 2, 4, 6, 8}),
    "greater_than_4": frozenset({5, 6, 7, 8, 9}),
    "prime": frozenset({2, 3, 5, 7}),
    "closed_loop": frozenset({0, 4, 6, 8, 9}),
}
DIGIT_ATTRIBUTE_NAMES: list[str] = [f"digit_{d}" for d in range(10)] + list(DERIVED_ATTRIBUTES)


def digit_attributes(labels: torch.Tensor) -> torch.Tensor:
    """``(N,)`` digit labels 0-9 -> ``(N, 14)`` float32 0/1 attributes (order of
    ``DIGIT_ATTRIBUTE_NAMES``)."""
    labels = torch.as_tensor(labels, dtype=torch.int64)
    one_hot = F.one_hot(labels, 10).to(torch.float32)
    derived = [
        torch.isin(labels, torch.tensor(sorted(members))).to(torch.float32)
        for members in DERIVED_ATTRIBUTES.values()
    ]
    return torch.cat([one_hot, torch.stack(derived, dim=1)], dim=1)


def load_digits_attributes(
    image_size: int = 32, heldout_fraction: float = 0.2, seed: int = 0
) -> AttributeDataset:
    """scikit-learn's digits as an :class:`AttributeDataset` of ``(1797, 1, S, S)`` images.

    Args:
        image_size: side ``S`` of the upsampled images (8 keeps the originals).
        heldout_fraction: fraction of images held out.
        seed: seed of the held-out split.

    Returns:
        The dataset with ``name="digits"`` and the 14 attributes of the module docstring.
    """
    load_digits = require("sklearn.datasets", "the digits data").load_digits

    bunch = load_digits()
    pixels = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) * (255.0 / 16.0)
    if image_size != pixels.shape[-1]:
        pixels = F.interpolate(
            pixels, size=(image_size, image_size), mode="bilinear", align_corners=False
        )
    images = pixels.round().clamp(0, 255).to(torch.uint8)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    train, heldout = group_heldout_split(torch.arange(len(labels)), heldout_fraction, seed)
    return AttributeDataset(
        images,
        digit_attributes(labels),
        DIGIT_ATTRIBUTE_NAMES,
        train,
        heldout,
        name="digits",
    )

"""Attribute datasets: group splits, normalisation, the digits default, the CelebA reader."""

import torch

from perturbative.data import (
    DIGIT_ATTRIBUTE_NAMES,
    load_digits_attributes,
)


def test_digits_default():
    data = load_digits_attributes(image_size=16, heldout_fraction=0.2, seed=0)
    assert len(data) == 1797 and data.images.shape == (1797, 1, 16, 16)
    assert data.attribute_names == DIGIT_ATTRIBUTE_NAMES and data.num_attributes == 14
    assert data.name == "digits" and len(data.heldout_indices) == round(0.2 * 1797)
    digit = data.targets[:, :10].argmax(1)
    assert torch.equal(data.targets[:, :10].sum(1), torch.ones(1797))
    column = {name: data.targets[:, i] for i, name in enumerate(data.attribute_names)}
    assert torch.equal(column["even"], (digit % 2 == 0).float())
    assert torch.equal(column["greater_than_4"], (digit > 4).float())
    for d in range(10):
        rows = digit == d
        assert bool((column["prime"][rows] == float(d in (2, 3, 5, 7))).all())
        assert bool((column["closed_loop"][rows] == float(d in (0, 4, 6, 8, 9))).all())
    assert int(data.images.max()) == 255
    # native resolution keeps sklearn's pixels exactly (0..16 scaled to 0..255)
    from sklearn.datasets import load_digits

    native = load_digits_attributes(image_size=8)
    expected = torch.as_tensor(load_digits().images[5] * 255 / 16).round().to(torch.uint8)
    assert torch.equal(native.images[5, 0], expected)

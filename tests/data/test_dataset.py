"""Attribute datasets: group splits, normalisation, the digits default, the CelebA reader."""

import pytest
import torch
from torch.utils.data import DataLoader

from perturbative.data import (
    AttributeDataset,
    group_heldout_split,
)


def small_dataset(**kwargs) -> AttributeDataset:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (10, 2, 4, 5), dtype=torch.uint8, generator=generator)
    targets = torch.randint(0, 2, (10, 3), generator=generator).float()
    args = dict(
        images=images,
        targets=targets,
        attribute_names=["a", "b", "c"],
        train_indices=range(7),
        heldout_indices=[7, 8, 9],
    )
    args.update(kwargs)
    return AttributeDataset(**args)


def test_group_split_keeps_groups_apart_and_is_deterministic():
    groups = torch.randint(0, 40, (500,), generator=torch.Generator().manual_seed(1))
    train, heldout = group_heldout_split(groups, 0.2, seed=3)
    assert torch.equal(torch.sort(torch.cat([train, heldout])).values, torch.arange(500))
    assert not set(groups[train].tolist()) & set(groups[heldout].tolist())
    # at least the target count, overshooting by less than one group's size
    assert 100 <= len(heldout) < 100 + int(torch.bincount(groups).max())
    again = group_heldout_split(groups, 0.2, seed=3)
    assert torch.equal(again[0], train) and torch.equal(again[1], heldout)
    assert not torch.equal(group_heldout_split(groups, 0.2, seed=4)[1], heldout)
    with pytest.raises(ValueError, match="only 1 distinct"):
        group_heldout_split(torch.zeros(5), 0.5)
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        group_heldout_split(groups, 1.0)


def test_inputs_are_standardised_over_training_images():
    data = small_dataset()
    x = data.inputs(data.train_indices).double()
    torch.testing.assert_close(x.mean(dim=(0, 2, 3)), torch.zeros(2, dtype=torch.float64))
    std = x.std(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(std, torch.ones(2, dtype=torch.float64), atol=1e-5, rtol=1e-5)
    # slow twin of the formula
    raw = data.images[3].double() / 255
    expected = (raw - data.mean.double().view(-1, 1, 1)) / data.std.double().view(-1, 1, 1)
    torch.testing.assert_close(data[3][0].double(), expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(data[3][1], data.targets[3])
    assert torch.equal(data.images01([3])[0], data.images[3].float() / 255)


def test_dataset_works_with_a_dataloader():
    data = small_dataset()
    loader = DataLoader(data, batch_size=4, shuffle=False)
    inputs, targets = next(iter(loader))
    expected_inputs, expected_targets = data.batch(range(4))
    torch.testing.assert_close(inputs, expected_inputs)
    torch.testing.assert_close(targets, expected_targets)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(images=torch.zeros(10, 2, 4, 5)), "uint8"),
        (dict(targets=torch.full((10, 3), -1.0)), "0 or 1"),
        (dict(attribute_names=["a", "a", "c"]), "distinct"),
        (dict(heldout_indices=[6, 7]), "overlap"),
        (dict(heldout_indices=[10]), "out of range"),
        (dict(train_indices=[]), "empty"),
    ],
)
def test_dataset_validation(change, message):
    with pytest.raises(ValueError, match=message):
        small_dataset(**change)


def test_attribute_groups_are_positions_in_the_split():
    data = small_dataset()
    groups = data.attribute_groups(["a", "not a"])
    # positions in the training split: each example in exactly one of a group and its negation
    assert sorted(groups["a"] + groups["not a"]) == list(range(7))
    assert all(data.targets[data.train_indices[i], 0] == 1 for i in groups["a"])
    held = data.attribute_groups(["b"], "heldout")["b"]
    assert held == [i for i in range(3) if data.targets[7 + i, 1] == 1]
    with pytest.raises(ValueError, match="no attribute 'd'"):
        data.attribute_groups(["d"])

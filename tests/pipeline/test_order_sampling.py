"""``pipeline/order_sampling.py``: what an order check trains, drawn from a run's task."""

import pytest
import torch

from perturbative._core.errors import InputError
from perturbative.pipeline.order_sampling import cast_batch, sample_pairs, sample_windows
from perturbative.pipeline.task import Task


def split() -> Task:
    """A task of 20 training examples of 3 features (each its own index) and a 0/1 target."""
    train = [(torch.full((3,), float(i)), torch.tensor([float(i % 2)])) for i in range(20)]
    return Task(model=lambda: None, loss_fn=None, train=train)


def test_pairs_are_disjoint_and_examples_in_a_batch_carry_their_weight():
    generator = torch.Generator().manual_seed(0)
    pairs = sample_pairs(split(), 4, 2, 1, 1, generator, "float64", example_batch=4)
    assert [kind for kind, _, _ in pairs] == ["example", "example", "batch", "exchange"]
    for kind, x, y in pairs:
        assert x[0].dtype == torch.float64 and len(x[0]) == 4
        assert not set(x[0][:, 0].tolist()) & set(y[0][:, 0].tolist())  # disjoint in a pair
        if kind == "example":
            assert x[2].tolist() == [4.0, 0.0, 0.0, 0.0]  # the example's loss alone


def test_windows_and_casting():
    generator = torch.Generator().manual_seed(1)
    windows = sample_windows(split(), 3, 2, generator, "float32", sizes=(3,))
    assert len(windows) == 2 and all(len(w) == 3 for w in windows)
    rows = torch.cat([b[0][:, 0] for b in windows[0]])
    assert len(set(rows.tolist())) == 9
    assert (
        cast_batch((torch.zeros(2, dtype=torch.float64),), torch.float32)[0].dtype == torch.float32
    )


def test_keyword_batches_cannot_weigh_one_example_inside_a_minibatch():
    words = [{"input_ids": torch.tensor([i, i + 1])} for i in range(10)]
    task = Task(model=lambda: None, loss_fn=None, train=words)
    pairs = sample_pairs(task, 2, 1, 1, 0, torch.Generator().manual_seed(0), "float64")
    assert all(isinstance(x[0], dict) for _, x, _ in pairs)  # packed as (batch,)
    with pytest.raises(InputError, match="examples='alone'"):
        sample_pairs(task, 2, 1, 0, 0, torch.Generator(), "float64", example_batch=2)

"""``pipeline/order_sampling.py``: what an order check trains, drawn from a run's split."""

import torch

from perturbative.pipeline.order_sampling import cast_batch, sample_pairs, sample_windows


class Split:
    """A stand-in for a run's dataset: 20 training examples of 3 features and 2 targets."""

    train_indices = torch.arange(20)

    def batch(self, indices):
        indices = torch.as_tensor(indices)
        return indices.float()[:, None].expand(-1, 3), (indices % 2).float()[:, None]


def test_pairs_are_disjoint_and_examples_in_a_batch_carry_their_weight():
    generator = torch.Generator().manual_seed(0)
    pairs = sample_pairs(Split(), 4, 2, 1, 1, generator, "float64", example_batch=4)
    assert [kind for kind, _, _ in pairs] == ["example", "example", "batch", "exchange"]
    for kind, x, y in pairs:
        assert x[0].dtype == torch.float64 and len(x[0]) == 4
        assert not set(x[0][:, 0].tolist()) & set(y[0][:, 0].tolist())  # disjoint in a pair
        if kind == "example":
            assert x[2].tolist() == [4.0, 0.0, 0.0, 0.0]  # the example's loss alone


def test_windows_and_casting():
    generator = torch.Generator().manual_seed(1)
    windows = sample_windows(Split(), 3, 2, generator, "float32", sizes=(3,))
    assert len(windows) == 2 and all(len(w) == 3 for w in windows)
    rows = torch.cat([b[0][:, 0] for b in windows[0]])
    assert len(set(rows.tolist())) == 9
    assert (
        cast_batch((torch.zeros(2, dtype=torch.float64),), torch.float32)[0].dtype == torch.float32
    )

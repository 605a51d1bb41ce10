"""AdjustedBatchSampler: the carry rule against a literal twin, and the sampler's invariants."""

import itertools
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from perturbative.tilt import AdjustedBatchSampler, TiltWarning, adjusted_batch_ends, tilt_weights


def _weights(n=500, strength=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tilt_weights(torch.randn(n, generator=g, dtype=torch.float64), strength)


def _carry_rule_twin(weights, target):
    """The rule as the issue states it, with a running err; a batch always takes one example."""
    batches, err, k, n = [], 0.0, 0, len(weights)
    while k < n:
        err += target
        batch, size = [k], weights[k]
        k += 1
        while k < n and size + weights[k] <= err:
            size += weights[k]
            batch.append(k)
            k += 1
        err -= size
        batches.append(batch)
    return batches


@pytest.mark.parametrize("strength", [0.0, 0.5, 2.5])
@pytest.mark.parametrize("target", [3.7, 16.0])
def test_batches_match_literal_carry_rule(strength, target):
    # Targets that do not divide N = sum w: an exact tie at the end would be decided by rounding.
    w = _weights(300, strength, seed=3).numpy()
    ends = adjusted_batch_ends(w, target)
    ours = [list(range(a, b)) for a, b in zip(np.r_[0, ends[:-1]], ends, strict=True)]
    assert ours == _carry_rule_twin(w.tolist(), target)


def test_every_index_once_per_epoch_and_mean_size_within_bound():
    w = _weights(1000, 1.0)
    target = 25.0
    sampler = AdjustedBatchSampler(w, target, seed=0)
    wmax = w.max().item()
    sizes = []
    for epoch in range(5):
        batches = list(sampler)
        flat = sorted(itertools.chain.from_iterable(batches))
        assert flat == list(range(1000)), f"epoch {epoch} does not visit every index once"
        assert all(len(b) > 0 for b in batches)
        b = np.array([w[bb].sum().item() for bb in batches])
        # Stated bound: |mean B - B_avg| <= (B_avg + max w) / T with the partial batch kept,
        # and every full batch within max w of the target.
        assert abs(b.mean() - target) <= (target + wmax) / len(b)
        assert np.all(b[:-1] <= target + wmax) and np.all(b[:-1] > target - wmax)
        sizes.extend(b[:-1])
    # Long run (partial batches dropped): within max w / T of B_avg.
    assert abs(np.mean(sizes) - target) <= 5 * wmax / len(sizes)


def test_drop_last_bound_and_len():
    w = _weights(1000, 1.0)
    sampler = AdjustedBatchSampler(w, 25.0, drop_last=True, seed=2)
    assert len(sampler) == len(sampler.epoch_batches())
    batches = list(sampler)
    b = np.array([w[bb].sum().item() for bb in batches])
    assert abs(b.mean() - 25.0) <= w.max().item() / len(b)
    assert len(batches) == len(sampler.epoch_batches(0))


def test_same_seed_same_batches_other_seed_or_epoch_differs():
    w = _weights()
    a = [list(AdjustedBatchSampler(w, 10.0, seed=7)) for _ in range(2)]
    assert a[0] == a[1]
    assert list(AdjustedBatchSampler(w, 10.0, seed=8)) != a[0]
    s = AdjustedBatchSampler(w, 10.0, seed=7)
    first, second = list(s), list(s)
    assert first == a[0] and second != first
    s.set_epoch(1)
    assert list(s) == second
    ordered = list(AdjustedBatchSampler(w, 10.0, shuffle=False))
    assert list(itertools.chain.from_iterable(ordered)) == list(range(500))


@pytest.mark.parametrize("stop_after", [0, 13, 50, 87])
def test_resume_equals_uninterrupted(stop_after):
    w = _weights()
    reference = AdjustedBatchSampler(w, 10.0, seed=4)
    uninterrupted = [b for _ in range(3) for b in reference]

    run = AdjustedBatchSampler(w, 10.0, seed=4)
    drawn = []
    iterator = iter(run)
    for _ in range(stop_after):
        try:
            drawn.append(next(iterator))
        except StopIteration:
            iterator = iter(run)
            drawn.append(next(iterator))
    state = run.state_dict()

    resumed = AdjustedBatchSampler(w, 10.0, seed=4)
    resumed.load_state_dict(state)
    while len(drawn) < len(uninterrupted):
        drawn.extend(resumed)
    assert drawn == uninterrupted


def test_state_dict_counts_consumed_batches_and_refuses_other_samplers():
    w = _weights()
    s = AdjustedBatchSampler(w, 10.0, seed=1)
    it = iter(s)
    for _ in range(5):
        next(it)
    assert s.state_dict()["batch"] == 5
    assert s.state_dict(batches_consumed=3)["batch"] == 3
    with pytest.raises(ValueError, match="seed"):
        AdjustedBatchSampler(w, 10.0, seed=2).load_state_dict(s.state_dict())
    with pytest.raises(ValueError, match="different weights"):
        AdjustedBatchSampler(w * 2, 10.0, seed=1).load_state_dict(s.state_dict())


@pytest.mark.parametrize("even_batches", [True, False])
def test_ranks_have_disjoint_streams_and_split_target(even_batches):
    w = _weights(1200, 0.5)
    world = 3
    samplers = [
        AdjustedBatchSampler(w, 30.0, seed=5, rank=r, world_size=world, even_batches=even_batches)
        for r in range(world)
    ]
    per_rank = [list(s) for s in samplers]
    seen = [set(itertools.chain.from_iterable(b)) for b in per_rank]
    for a, b in itertools.combinations(seen, 2):
        assert not a & b
    for batches in per_rank:
        sizes = np.array([w[b].sum().item() for b in batches[:-1]])
        assert abs(sizes.mean() - 10.0) < 0.5
    if even_batches:
        assert len({len(b) for b in per_rank}) == 1
    else:
        assert set().union(*seen) == set(range(1200))
    with pytest.raises(ValueError, match="rank"):
        AdjustedBatchSampler(w, 30.0, rank=3, world_size=3)


def test_oversized_example_is_a_singleton_warned_once_and_never_loops():
    w = torch.ones(100, dtype=torch.float64)
    w[[10, 40]] = 35.0
    with pytest.warns(TiltWarning, match=r"indices \[10, 40\]") as record:
        sampler = AdjustedBatchSampler(w, 8.0, shuffle=False)
    assert len(record) == 1
    batches = list(sampler)
    assert all(len(b) > 0 for b in batches)
    assert sorted(itertools.chain.from_iterable(batches)) == list(range(100))
    assert [10] in batches and [40] in batches
    # The overshoot (35 - 8) is paid back by single-example batches right after.
    after = batches.index([10]) + 1
    assert all(len(b) == 1 for b in batches[after : after + 3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        list(sampler)  # iterating again does not warn again
    with pytest.raises(ValueError, match="oversize='singleton'"):
        AdjustedBatchSampler(w, 8.0, oversize="error")


@pytest.mark.parametrize("min_size", [2, 5])
def test_min_batch_size_merges_batches_after_heavy_examples_and_keeps_every_example(min_size):
    # weights far above the batch size, as a strong tilt toward a rare attribute gives
    w = torch.ones(300, dtype=torch.float64)
    w[[3, 50, 51, 200]] = 400.0
    with pytest.warns(TiltWarning, match="merged"):
        sampler = AdjustedBatchSampler(w, 8.0, seed=1, min_batch_size=min_size)
    with pytest.warns(TiltWarning):
        plain = AdjustedBatchSampler(w, 8.0, seed=1)
    for epoch in range(3):
        batches = sampler.epoch_batches(epoch)
        assert min(len(b) for b in batches) >= min_size
        # the same examples in the same order as the carry rule's batches, only regrouped
        assert (
            np.concatenate(batches).tolist() == np.concatenate(plain.epoch_batches(epoch)).tolist()
        )
        assert min(len(b) for b in plain.epoch_batches(epoch)) == 1
    # where no batch is small, nothing changes
    calm = _weights(200)
    assert list(AdjustedBatchSampler(calm, 16.0, min_batch_size=2)) == list(
        AdjustedBatchSampler(calm, 16.0)
    )
    state = sampler.state_dict()
    with pytest.warns(TiltWarning), pytest.raises(ValueError, match="min_batch_size"):
        AdjustedBatchSampler(w, 8.0, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="min_batch_size must be"):
        AdjustedBatchSampler(torch.ones(3), 1.0, min_batch_size=4)


def test_zero_weights_and_bad_input():
    w = torch.tensor([0.0, 0.0, 1.0, 0.0, 2.0, 0.0])
    batches = list(AdjustedBatchSampler(w, 2.0, shuffle=False))
    assert sorted(itertools.chain.from_iterable(batches)) == list(range(6))
    assert all(len(b) > 0 for b in batches)
    with pytest.raises(ValueError, match="indices"):
        AdjustedBatchSampler(torch.tensor([1.0, float("nan")]), 1.0)
    with pytest.raises(ValueError, match="positive"):
        AdjustedBatchSampler(torch.ones(3), 0.0)


def test_works_as_dataloader_batch_sampler():
    w = _weights(200)
    x = torch.arange(200)
    sampler = AdjustedBatchSampler(w, 16.0, seed=3)
    loader = DataLoader(TensorDataset(x), batch_sampler=sampler)
    expected = sampler.epoch_batches(0)
    got = [xb.tolist() for (xb,) in loader]
    assert got == [b.tolist() for b in expected]
    assert len(loader) == len(sampler)


def _draw_len_batches(sampler, through):
    """One epoch as a loader under Lightning draws it: len() batches, never asking past them."""
    if through == "loader":
        dataset = TensorDataset(torch.arange(len(sampler.weights)))
        loader = DataLoader(dataset, batch_sampler=sampler)
        count = len(loader)
        batches = [xb.tolist() for (xb,) in itertools.islice(loader, count)]
    else:
        count = len(sampler)
        batches = list(itertools.islice(sampler, count))
    assert len(batches) == count
    return batches


@pytest.mark.parametrize("through", ["sampler", "loader"])
@pytest.mark.parametrize("world_size", [1, 2])
def test_a_loop_that_stops_at_len_gets_every_epoch(through, world_size):
    # Stopping on an epoch's last batch leaves the sampler there: the next iteration is the next
    # epoch, and len() already counts that epoch's batches (two ranks' epochs differ in length).
    w = _weights(200)
    samplers = [
        AdjustedBatchSampler(w, 20.0, seed=0, rank=r, world_size=world_size, even_batches=False)
        for r in range(world_size)
    ]
    epochs = [[_draw_len_batches(s, through) for s in samplers] for _ in range(3)]
    for epoch, per_rank in enumerate(epochs):
        for sampler, batches in zip(samplers, per_rank, strict=True):
            assert batches == [b.tolist() for b in sampler.epoch_batches(epoch)]
        drawn = itertools.chain.from_iterable(itertools.chain.from_iterable(per_rank))
        assert sorted(drawn) == list(range(200))
    assert epochs[0] != epochs[1] != epochs[2]
    if world_size == 2:
        assert len({len(per_rank[0]) for per_rank in epochs}) > 1
    # saved on an epoch's last batch, a resumed sampler starts the next epoch
    resumed = AdjustedBatchSampler(w, 20.0, seed=0, world_size=world_size, even_batches=False)
    resumed.load_state_dict(samplers[0].state_dict())
    assert len(resumed) == len(samplers[0].epoch_batches(3))
    assert list(resumed) == [b.tolist() for b in samplers[0].epoch_batches(3)]

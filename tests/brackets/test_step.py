"""``brackets/_step.py``: the user's training step as one value, held against a loop written
out here (warm-up then cosine, two param groups, clipping), the way nanoGPT writes its step."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

import perturbative as pt

WARMUP, TOTAL, CLIP = 6, 40, 1.0


def warmup_cosine(step: int) -> float:
    """The lr factor of step ``step``: linear warm-up over WARMUP steps, then a cosine to 0."""
    if step < WARMUP:
        return (step + 1) / WARMUP
    return 0.5 * (1 + math.cos(math.pi * (step - WARMUP) / (TOTAL - WARMUP)))


def problem(seed=0):
    """A smooth float64 MLP regression, AdamW with two param groups (weights decayed, biases
    not, another lr each), its warm-up/cosine scheduler; 24 batches of 4."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 2)).double()
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    optimizer = torch.optim.AdamW(
        [{"params": weights, "weight_decay": 0.1}, {"params": biases, "lr": 4e-2}],
        lr=2e-2,
        weight_decay=0.0,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine)
    x = torch.randn(96, 5, dtype=torch.float64)
    y = torch.stack([x[:, 0] * x[:, 1], torch.sin(x[:, 2])], 1) * 3
    batches = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 96, 4)]
    return model, optimizer, scheduler, batches


def loss_fn(outputs, targets):
    return 0.5 * ((outputs - targets) ** 2).sum()


def loop_step(model, optimizer, scheduler, batch):
    """The user's step, written out: backward, clip, step, then the scheduler."""
    optimizer.zero_grad()
    inputs, targets = batch
    torch.stack(
        [loss_fn(model(inputs[i : i + 1]), targets[i : i + 1]) for i in range(len(inputs))]
    ).mean().backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
    optimizer.step()
    scheduler.step()


def loop_value(model, optimizer, scheduler, batches, observable):
    """O after the user's own loop trains ``batches`` on copies from here."""
    model, optimizer, scheduler = copy.deepcopy((model, optimizer, scheduler))
    for batch in batches:
        loop_step(model, optimizer, scheduler, batch)
    return observable.value(model)


def at_checkpoint(steps: int, seed=0):
    """The problem trained ``steps`` steps by the loop: the checkpoint to analyse."""
    model, optimizer, scheduler, batches = problem(seed)
    for batch in batches[:steps]:
        loop_step(model, optimizer, scheduler, batch)
    heldout = (batches[-1][0], batches[-1][1])
    return model, optimizer, scheduler, batches[steps:-1], pt.Observable.mean_loss(loss_fn, heldout)


def test_the_schedule_is_read_as_the_loop_steps_it_and_the_callers_objects_stay():
    model, optimizer, scheduler, _ = problem()
    before = (scheduler.state_dict(), [g["lr"] for g in optimizer.param_groups])
    step = pt.TrainingStep(optimizer, max_grad_norm=CLIP, scheduler=scheduler)
    expected = [(2e-2 * warmup_cosine(i), 4e-2 * warmup_cosine(i)) for i in range(12)]
    np.testing.assert_allclose(step.schedule(12), expected, rtol=1e-15)
    assert (scheduler.state_dict(), [g["lr"] for g in optimizer.param_groups]) == before
    np.testing.assert_allclose(step.scaled(0.5).rates_at(3), np.array(expected[3]) / 2)
    given = pt.TrainingStep(optimizer, rates=[0.1, (0.2, 0.3)])
    assert given.rates_at(0) == (0.1, 0.1) and given.rates_at(1) == (0.2, 0.3)
    with pytest.raises(IndexError, match="holds the rates of 2 steps"):
        given.rates_at(2)
    with pytest.raises(ValueError, match="2 param groups"):
        pt.TrainingStep(optimizer, rates=[(0.1, 0.2, 0.3)])
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        pt.TrainingStep(model)
    assert pt.TrainingStep(optimizer).rates_at(7) == (
        2e-2 * warmup_cosine(0),
        4e-2 * warmup_cosine(0),
    )


def both_ways(value, x, y) -> float:
    """``value([x, y]) - value([y, x])``: what training x first rather than y does."""
    return value([x, y]) - value([y, x])


def swaps(checkpoint: int, pairs):
    """At the loop's checkpoint, for each pair: the loop's own reordering, the library's real
    one with the step followed and frozen at the checkpoint's lr, and the prediction."""
    model, optimizer, scheduler, batches, observable = at_checkpoint(checkpoint)
    step = pt.TrainingStep(optimizer, max_grad_norm=CLIP, scheduler=scheduler)
    frozen = pt.TrainingStep(optimizer, max_grad_norm=CLIP)  # the schedule frozen: what not to do

    def real(training):
        values = pt.brackets.values_along_steps
        return lambda order: values(model, loss_fn, training, order, observable.value, [2])[0]

    def loop(order):
        return loop_value(model, optimizer, scheduler, order, observable)

    for a, b in pairs:
        x, y = batches[a], batches[b]
        yield (
            both_ways(loop, x, y),
            both_ways(real(step), x, y),
            both_ways(real(frozen), x, y),
            pt.predict_swap(model, loss_fn, step, x, y, observable).predicted,
        )


def test_real_reordering_at_a_warmup_checkpoint_equals_the_loops_own_and_predictions_follow():
    """The issue's case: at a warm-up checkpoint two steps have different lrs, so a swap has a
    first-order term; the library's real reordering must be the loop's, the prediction near it."""
    errors, frozen_errors = [], []
    for loop, real, stale, predicted in swaps(
        3, [(0, 1), (2, 5), (3, 4), (6, 9), (7, 8), (10, 11)]
    ):
        assert real == pytest.approx(loop, rel=1e-6, abs=1e-15)
        assert np.sign(predicted) == np.sign(loop)
        frozen_errors.append(abs(stale - loop) / abs(loop))
        errors.append(abs(predicted - loop) / abs(loop))
    assert np.median(errors) < 0.02, errors
    assert np.median(frozen_errors) > 10 * np.median(errors), (frozen_errors, errors)


def test_signs_hold_after_the_warmup_and_clipping_is_the_loops():
    for loop, real, _, predicted in swaps(14, [(0, 1), (2, 3), (4, 7)]):
        assert real == pytest.approx(loop, rel=1e-6, abs=1e-15)
        assert np.sign(predicted) == np.sign(loop)

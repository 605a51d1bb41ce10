"""``brackets/_phases.py``: the order of two training phases, predicted, against really training
both orders (float64, tiny models)."""

import pytest
import torch
import torch.nn.functional as F
from cases import mlp_bce, warm_up
from torch import nn

import perturbative as pt
from perturbative.brackets import (
    kendall_tau,
    phase_tournament,
    predict_phase_order,
    values_along_steps,
)

DTYPE = torch.float64


def real_difference(model, loss_fn, optimizer, a, b, observable):
    """O(A then B) - O(B then A), really trained on copies of the model and optimizer."""
    ab, ba = (
        values_along_steps(model, loss_fn, optimizer, steps, observable.value, [len(steps)])[0]
        for steps in ([*a, *b], [*b, *a])
    )
    return ab - ba


def least_squares(kind, **hyper):
    """A linear model, squared error, phases of 3 batches from two sources, and a linear
    observable (the mean output on held-out inputs)."""
    torch.manual_seed(0)
    model = nn.Linear(4, 2).to(DTYPE)
    x = torch.randn(64, 4, dtype=DTYPE)
    y = x @ torch.randn(4, 2, dtype=DTYPE) + 0.3 * torch.randn(64, 2, dtype=DTYPE)
    y[32:] += 1.0  # the second source is shifted: its phase pulls the bias elsewhere

    def loss_fn(outputs, targets):
        return ((outputs - targets) ** 2).mean()

    optimizer = kind(model.parameters(), **hyper)
    for s in range(4):
        optimizer.zero_grad()
        loss_fn(model(x[8 * s : 8 * s + 8]), y[8 * s : 8 * s + 8]).backward()
        optimizer.step()
    phases = [
        [(x[s + 4 * t : s + 4 * t + 4], y[s + 4 * t : s + 4 * t + 4]) for t in range(3)]
        for s in (0, 32)
    ]
    observable = pt.Observable(inputs=x[12:44], fn=lambda outputs: outputs.mean())
    return model, loss_fn, optimizer, phases, observable


@pytest.mark.parametrize("method", ["composition", "exact-state"])
@pytest.mark.parametrize(
    "kind, hyper",
    [(torch.optim.SGD, {"lr": 0.05}), (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9})],
)
def test_composition_is_exact_for_sgd_on_least_squares_with_a_linear_observable(
    kind, hyper, method
):
    """Affine steps (with or without momentum) make each phase an affine map of where it starts
    (parameters and momentum), and a linear O has one gradient: nothing is left out."""
    model, loss_fn, optimizer, (a, b), observable = least_squares(kind, **hyper)
    got = predict_phase_order(model, loss_fn, optimizer, a, b, observable, method=method)
    real = real_difference(model, loss_fn, optimizer, a, b, observable)
    assert got.method == method and abs(real) > 1e-4
    assert got.predicted == pytest.approx(real, rel=1e-9, abs=1e-14)


def test_one_batch_per_phase_is_the_swap_of_two_batches():
    case = mlp_bce()
    optimizer = torch.optim.Adam(case.model.parameters(), lr=1e-2)
    warm_up(case, optimizer, steps=6)
    a, b, held = case.minibatches()
    observable = pt.Observable.mean_loss(case.loss_fn, held)
    got = predict_phase_order(case.model, case.loss_fn, optimizer, [a], [b], observable)
    swap = pt.predict_swap(case.model, case.loss_fn, optimizer, a, b, observable)
    assert got.method == "expansion"
    assert got.predicted == pytest.approx(swap.predicted, rel=1e-9, abs=1e-15)


def adam_phases():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).to(DTYPE)
    x = torch.randn(96, 3, dtype=DTYPE)
    y = (x[:, :1] > 0).to(DTYPE)

    def loss_fn(outputs, targets):
        return F.binary_cross_entropy_with_logits(outputs, targets)

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for s in range(10):
        rows = slice(8 * (s % 4), 8 * (s % 4) + 8)
        optimizer.zero_grad()
        loss_fn(model(x[rows]), y[rows]).backward()
        optimizer.step()
    phases = [
        [(x[mask][4 * t : 4 * t + 4], y[mask][4 * t : 4 * t + 4]) for t in range(4)]
        for mask in (x[:, 0] > 0, x[:, 0] <= 0)  # two sources: one class each
    ]
    observable = pt.Observable.mean_loss(loss_fn, (x[64:], y[64:]))
    return model, loss_fn, optimizer, phases, observable


def test_the_tournament_is_every_pairs_prediction_and_ranks_by_row_sums():
    model, loss_fn, optimizer, (a, b), observable = adam_phases()
    c = [(x[:, [1, 0, 2]], y) for x, y in a]  # a third source
    tournament = phase_tournament(model, loss_fn, optimizer, [a, b, c], observable)
    matrix = tournament.preference
    torch.testing.assert_close(matrix, -matrix.T)
    pair = predict_phase_order(model, loss_fn, optimizer, b, c, observable, method="composition")
    assert float(matrix[1, 2]) == pytest.approx(pair.predicted, rel=1e-12)
    torch.testing.assert_close(tournament.scores, matrix.sum(1))
    assert tournament.ranking == torch.argsort(matrix.sum(1)).tolist()
    assert tournament.cost["gradients_to_train_every_pair_both_ways"] == 2 * 3 * 2 * 4


def test_kendall_tau_and_bad_phases():
    assert kendall_tau([0, 1, 2], [0, 1, 2]) == 1.0 and kendall_tau([2, 1, 0], [0, 1, 2]) == -1.0
    model, loss_fn, optimizer, (a, b), observable = adam_phases()
    with pytest.raises(ValueError, match="same number of batches"):
        predict_phase_order(model, loss_fn, optimizer, a, b[:2], observable)
    with pytest.raises(ValueError, match="method must be one of"):
        predict_phase_order(model, loss_fn, optimizer, a, b, observable, method="magic")

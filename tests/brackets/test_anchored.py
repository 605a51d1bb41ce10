"""The anchored tournament (brackets/_anchored.py): exact where the order's effect is a
difference of potentials (a closed form), and its measured pairs against really training them."""

import itertools

import pytest
import torch
from torch import nn

import perturbative as pt
from perturbative.brackets import anchored_tournaments, values_along_steps

DTYPE = torch.float64


def really(model, step, phases, observable, i, j):
    """``O(i then j) - O(j then i)``, both orders really trained."""

    def value(order):
        batches = [b for s in order for b in phases[s]]
        return values_along_steps(model, squared, step, batches, observable.value, [len(batches)])[
            0
        ]

    return value((i, j)) - value((j, i))


def squared(outputs, targets):
    return 0.5 * ((outputs - targets) ** 2).mean()


def test_exact_where_every_phase_map_shares_its_linear_part():
    """Plain SGD with a momentum and a schedule, on squared losses whose batches all share one
    Hessian (the same inputs, each source its own targets), and ``O`` linear: each phase maps
    ``(theta, momentum)`` by one affine map whose linear part is every source's, so ``O(A then
    B) = c + f_A + l_B`` and the anchored tournament is every pair's real difference."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1, bias=False).to(DTYPE)
    inputs = torch.randn(4, 3, dtype=DTYPE)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rates = [(0.1 + 0.02 * t,) for t in range(6)]
    step = pt.TrainingStep(optimizer, rates=rates)
    centres = torch.randn(5, 3, 1, dtype=DTYPE)

    def phase(centre):
        return [(inputs, inputs @ centre + 0.1 * torch.randn(4, 1, dtype=DTYPE)) for _ in range(3)]

    phases = [phase(c) for c in centres[:4]]
    anchor = phase(centres[4])
    linear = pt.Observable.mean_loss(lambda out: out.mean(), (torch.randn(6, 3, dtype=DTYPE),))
    got = anchored_tournaments(model, squared, step, phases, {"O": linear}, anchor)["O"]
    assert got.method == "anchored"
    assert got.cost == {"gradients": 39, "gradients_to_train_every_pair_both_ways": 72}
    real = torch.zeros(4, 4, dtype=DTYPE)
    for i, j in itertools.combinations(range(4), 2):
        real[i, j] = really(model, step, phases, linear, i, j)
        real[j, i] = -real[i, j]
    assert real.abs().max() > 1e-3  # the order matters here
    torch.testing.assert_close(got.preference, real, rtol=1e-9, atol=1e-13)


def test_a_source_against_the_anchor_is_its_real_pair():
    """With the anchor one source's own phase, its column is measured, not predicted: every
    source against it equals really training the pair both ways (Adam, an MLP, a non-linear
    ``O``: the branch from the anchor's trained copy continues its optimizer state and
    schedule)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1)).to(DTYPE)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2, betas=(0.8, 0.999))
    x = torch.randn(60, 3, dtype=DTYPE)
    y = torch.randn(60, 1, dtype=DTYPE)
    for s in range(5):  # a state to start from
        optimizer.zero_grad()
        squared(model(x[8 * s : 8 * s + 8]), y[8 * s : 8 * s + 8]).backward()
        optimizer.step()
    step = pt.TrainingStep(optimizer, max_grad_norm=0.5, rates=[(3e-2 * 0.9**t,) for t in range(4)])
    phases = [[(x[4 * s + 2 * b : 4 * s + 2 * b + 2], y[4 * s + 2 * b : 4 * s + 2 * b + 2])
               for b in range(2)] for s in range(3)]  # fmt: skip
    observable = pt.Observable.mean_loss(squared, (x[40:], y[40:]))
    got = anchored_tournaments(model, squared, step, phases, {"O": observable}, phases[2])["O"]
    for i in range(2):
        assert float(got.preference[i, 2]) == pytest.approx(
            really(model, step, phases, observable, i, 2), rel=1e-10, abs=1e-14
        )


def test_phases_and_anchor_of_different_lengths_are_refused():
    model = nn.Linear(3, 1).to(DTYPE)
    batch = (torch.randn(2, 3, dtype=DTYPE), torch.randn(2, 1, dtype=DTYPE))
    observable = pt.Observable.mean_loss(squared, batch)
    step = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="same number of batches"):
        anchored_tournaments(model, squared, step, [[], []], {"O": observable}, [])
    with pytest.raises(ValueError, match="same number of batches"):
        anchored_tournaments(
            model, squared, step, [[batch], [batch]], {"O": observable}, [batch] * 2
        )

"""The real and the anchored tournaments (brackets/_anchored.py): the real one bit for bit
against training each order from the start; the anchored one exact where the order's effect is a
difference of potentials (a closed form), and its measured pairs against really training them."""

import itertools

import pytest
import torch
from cases import warm_adam_mlp
from torch import nn

import perturbative as pt
from perturbative.brackets import anchored_tournaments, trained_tournaments, values_along_steps

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


def shared_hessian():
    """A linear model, four sources' phases and an anchor of three batches on the same inputs
    (one Hessian), each source its own targets, and a linear ``O``."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1, bias=False).to(DTYPE)
    inputs = torch.randn(4, 3, dtype=DTYPE)
    centres = torch.randn(5, 3, 1, dtype=DTYPE)

    def phase(centre):
        return [(inputs, inputs @ centre + 0.1 * torch.randn(4, 1, dtype=DTYPE)) for _ in range(3)]

    phases = [phase(c) for c in centres[:4]]
    anchor = phase(centres[4])
    linear = pt.Observable.mean_loss(lambda out: out.mean(), (torch.randn(6, 3, dtype=DTYPE),))
    return model, phases, anchor, linear


def test_exact_where_every_phase_map_shares_its_linear_part():
    """Plain SGD with a momentum and a schedule, on squared losses whose batches all share one
    Hessian (the same inputs, each source its own targets), and ``O`` linear: each phase maps
    ``(theta, momentum)`` by one affine map whose linear part is every source's, so ``O(A then
    B) = c + f_A + l_B`` and the anchored tournament is every pair's real difference."""
    model, phases, anchor, linear = shared_hessian()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    step = pt.TrainingStep(optimizer, rates=[(0.1 + 0.02 * t,) for t in range(6)])
    got = anchored_tournaments(model, squared, step, phases, {"O": linear}, anchor)["O"]
    assert got.method == "anchored"
    assert got.cost == {"gradients": 39, "gradients_to_train_every_pair_both_ways": 48}
    real = torch.zeros(4, 4, dtype=DTYPE)
    for i, j in itertools.combinations(range(4), 2):
        real[i, j] = really(model, step, phases, linear, i, j)
        real[j, i] = -real[i, j]
    assert real.abs().max() > 1e-3  # the order matters here
    torch.testing.assert_close(got.preference, real, rtol=1e-9, atol=1e-13)


def test_alone_is_exact_at_a_constant_lr_and_not_under_a_schedule():
    """``alone=True`` reads each potential as what the anchor does after the source, with the
    source alone standing in for it in second place: exact for plain SGD with a momentum at a
    constant lr on one shared Hessian (a phase's effect does not depend on its place), off under
    a schedule that gives the second place other lrs, where the full anchored method stays
    exact."""
    model, phases, anchor, linear = shared_hessian()
    errors = {}
    for schedule in ("constant", "decaying"):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        rates = [(0.1 * (0.7**t if schedule == "decaying" else 1.0),) for t in range(6)]
        step = pt.TrainingStep(optimizer, rates=rates)
        real = torch.zeros(4, 4, dtype=DTYPE)
        for i, j in itertools.permutations(range(4), 2):
            real[i, j] = really(model, step, phases, linear, i, j)
        got = anchored_tournaments(model, squared, step, phases, {"O": linear}, anchor, alone=True)
        assert got["O"].method == "anchored-alone"
        assert got["O"].cost == {"gradients": 24, "gradients_to_train_every_pair_both_ways": 48}
        errors[schedule] = float((got["O"].preference - real).abs().max() / real.abs().max())
        full = anchored_tournaments(model, squared, step, phases, {"O": linear}, anchor)["O"]
        torch.testing.assert_close(full.preference, real, rtol=1e-9, atol=1e-13)
    assert errors["constant"] < 1e-10
    assert errors["decaying"] > 1e-2


def test_a_source_against_the_anchor_is_its_real_pair():
    """With the anchor one source's own phase, its column is measured, not predicted: every
    source against it equals really training the pair both ways (Adam, an MLP, a non-linear
    ``O``: the branch from the anchor's trained copy continues its optimizer state and
    schedule)."""
    model, optimizer, (x, y), phases = warm_adam_mlp(1, sources=3)
    step = pt.TrainingStep(optimizer, max_grad_norm=0.5, rates=[(3e-2 * 0.9**t,) for t in range(4)])
    observable = pt.Observable.mean_loss(squared, (x[40:], y[40:]))
    got = anchored_tournaments(model, squared, step, phases, {"O": observable}, phases[2])["O"]
    for i in range(2):
        assert float(got.preference[i, 2]) == pytest.approx(
            really(model, step, phases, observable, i, 2), rel=1e-10, abs=1e-14
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_trained_tournament_is_every_order_trained_from_the_start(dtype):
    """Each first phase trained once and every second phase branching from its copy (Adam with
    a state, clipping, a schedule that differs at every step): every pair's difference equals,
    bit for bit, both orders each trained from the checkpoint, in float32 as in float64."""
    model, optimizer, (x, y), phases = warm_adam_mlp(2, dtype)
    step = pt.TrainingStep(optimizer, max_grad_norm=0.3, rates=[(3e-2 * 0.8**t,) for t in range(4)])
    observables = {
        "loss": pt.Observable.mean_loss(squared, (x[40:], y[40:])),
        "mean": pt.Observable.mean_loss(lambda out: out.mean(), (x[50:],)),
    }
    got = trained_tournaments(model, squared, step, phases, observables)
    assert got["loss"].method == "trained"
    assert got["loss"].cost == {"gradients": 32, "gradients_to_train_every_pair_both_ways": 32}
    for name, observable in observables.items():
        assert got[name].preference.abs().max() > 1e-4  # the order matters here
        for i, j in itertools.permutations(range(4), 2):
            assert float(got[name].preference[i, j]) == really(
                model, step, phases, observable, i, j
            )


def test_a_trained_tournament_of_one_phase_is_refused():
    model = nn.Linear(3, 1).to(DTYPE)
    batch = (torch.randn(2, 3, dtype=DTYPE), torch.randn(2, 1, dtype=DTYPE))
    observable = {"O": pt.Observable.mean_loss(squared, batch)}
    step = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="at least two phases"):
        trained_tournaments(model, squared, step, [[batch]], observable)
    with pytest.raises(ValueError, match="same number of batches"):
        trained_tournaments(model, squared, step, [[batch], [batch, batch]], observable)


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

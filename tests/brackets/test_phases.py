"""``brackets/_phases.py``: the order of two training phases, predicted, against really training
both orders (float64, tiny models)."""

import pytest
import torch
import torch.nn.functional as F
from cases import at_lr, mlp_bce, warm_up
from torch import nn

import perturbative as pt
from perturbative.brackets import (
    best_order,
    bracket_tournament,
    kendall_tau,
    phase_tournament,
    phase_tournaments,
    predict_phase_order,
    predict_phase_orders,
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


@pytest.mark.parametrize("scheduled", [False, True])
@pytest.mark.parametrize("method", ["composition", "exact-state", "expansion"])
@pytest.mark.parametrize(
    "kind, hyper",
    [(torch.optim.SGD, {"lr": 0.05}), (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9})],
)
def test_composition_is_exact_for_sgd_on_least_squares_with_a_linear_observable(
    kind, hyper, method, scheduled
):
    """Affine steps (with or without momentum) make each phase an affine map of where it starts
    (parameters and momentum), and a linear O has one gradient: nothing is left out. With a
    rising lr every step's own rate must be used: the phase in second place runs at the rates
    of steps k to 2k - 1, so a position off by one would show."""
    model, loss_fn, optimizer, (a, b), observable = least_squares(kind, **hyper)
    if scheduled:
        optimizer = pt.TrainingStep(optimizer, rates=[0.05 * (1 + 0.3 * i) for i in range(6)])
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


def test_the_tournament_ranks_by_row_sums_and_its_best_orders_follow_them():
    model, loss_fn, optimizer, (a, b), observable = adam_phases()
    c = [(x[:, [1, 0, 2]], y) for x, y in a]  # a third source
    tournament = phase_tournament(model, loss_fn, optimizer, [a, b, c], observable)
    matrix = tournament.preference
    torch.testing.assert_close(matrix, -matrix.T)
    torch.testing.assert_close(tournament.scores, matrix.sum(1))
    assert tournament.ranking == torch.argsort(matrix.sum(1)).tolist()
    assert tournament.best_order([0, 1, 2]) == tournament.ranking
    assert tournament.cost["gradients_to_train_every_pair_both_ways"] == 3 * 3 * 4
    assert tournament.cost["backward_passes"] == 3  # one per source, not one per pair
    # the pair method differs only in where it takes grad O: near it for a smooth observable
    pair = predict_phase_order(model, loss_fn, optimizer, b, c, observable, method="composition")
    assert float(matrix[1, 2]) == pytest.approx(pair.predicted, rel=0.2)


def test_the_tournament_pulls_back_step_by_step_as_through_the_held_graph():
    """The tournament pulls each observable's gradient back through a phase one recomputed
    step at a time (memory of k starts, not k steps' graphs): its composition is the one built
    from each phase's held graph (:func:`phase_effect`), parameters and optimizer state, under
    Adam with a schedule and clipping that acts, and with fresh optimizers whose state the
    phase creates (SGD's momentum; Adam's moments and step count)."""
    from perturbative.brackets._phases import phase_effect

    model, loss_fn, optimizer, (a, b), observable = adam_phases()
    c = [(x[:, [1, 0, 2]], y) for x, y in a]
    phases = [a, b, c]
    observables = {"held-out": observable, "other": pt.Observable.mean_loss(loss_fn, a[0])}
    rates = [[1e-2 * (0.5 + 0.2 * t)] for t in range(8)]  # second place: positions 4 to 7
    for x, y in b:  # the clipping below acts on the phase's batches
        grads = torch.autograd.grad(loss_fn(model(x), y), list(model.parameters()))
        assert float(torch.sqrt(sum((g**2).sum() for g in grads))) > 0.1
    steps = [
        pt.TrainingStep(optimizer, max_grad_norm=0.05, rates=rates),
        pt.TrainingStep(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), rates=rates),
        pt.TrainingStep(torch.optim.Adam(model.parameters()), rates=rates),
    ]

    def dot(x, y):
        return sum(float((x[k] * y[k]).sum()) for k in x if k in y)

    for step in steps:
        got = phase_tournaments(model, loss_fn, step, phases, observables)["composition"]
        for key, o in observables.items():
            effects = [phase_effect(model, loss_fn, step, p, o) for p in phases]
            point = {
                m: (t + 2 * sum(e.delta[f"p/{m}"] for e in effects) / 3).requires_grad_()
                for m, t in effects[0].theta.items()
            }
            u = o.gradient(model, point)
            pulled = [e.pullback(u) for e in effects]
            state = [k for k in pulled[0] if k.startswith("s/")]
            assert bool(state) == (step.optimizer is optimizer)  # a fresh one starts empty
            for i in range(3):
                for j in range(3):
                    if i != j:
                        want = (
                            dot(u, effects[j].shifted)
                            - dot(u, effects[i].shifted)
                            + dot(pulled[j], effects[i].delta)
                            - dot(pulled[i], effects[j].delta)
                        )
                        assert float(got[key].preference[i, j]) == pytest.approx(
                            want, rel=1e-9, abs=1e-15
                        )


def test_the_composition_tournament_is_exact_where_the_pair_method_is():
    """SGD on least squares with a linear observable: every pair of the tournament is the real
    difference, however many sources share its one gradient of O."""
    model, loss_fn, optimizer, (a, b), observable = least_squares(torch.optim.SGD, lr=0.05)
    c = [(x.flip(1), y) for x, y in a]
    tournament = phase_tournament(model, loss_fn, optimizer, [a, b, c], observable)
    for i, j, p, q in ((0, 1, a, b), (0, 2, a, c), (1, 2, b, c)):
        real = real_difference(model, loss_fn, optimizer, p, q, observable)
        assert float(tournament.preference[i, j]) == pytest.approx(real, rel=1e-9, abs=1e-14)


def test_the_last_phase_baseline_is_each_phase_alone():
    model, loss_fn, optimizer, (a, b), observable = least_squares(torch.optim.SGD, lr=0.05)
    got = phase_tournament(model, loss_fn, optimizer, [a, b], observable, method="last-phase")
    alone = [
        values_along_steps(model, loss_fn, optimizer, p, observable.value, [3])[0] for p in (a, b)
    ]
    assert float(got.preference[0, 1]) == pytest.approx(alone[1] - alone[0], rel=1e-12)
    assert got.cost["backward_passes"] == 0


def test_the_bracket_tournament_of_one_batch_phases_is_the_plain_sgd_bracket_of_a_swap():
    case = mlp_bce()
    optimizer = torch.optim.Adam(case.model.parameters(), lr=1e-2)
    warm_up(case, optimizer, steps=6)
    a, b, held = case.minibatches()
    observable = pt.Observable.mean_loss(case.loss_fn, held)
    got = bracket_tournament(case.model, case.loss_fn, [[a], [b]], observable, lr=1e-2)
    swap = pt.predict_swap(case.model, case.loss_fn, optimizer, a, b, observable)
    assert float(got.preference[0, 1]) == pytest.approx(swap.sgd_bracket, rel=1e-9)
    assert got.gradient_norms == pytest.approx(list(swap.gradient_norms), rel=1e-9)
    # k batches per phase: the displacement is k times a step's, the bracket k^2 times
    doubled = bracket_tournament(case.model, case.loss_fn, [[a, a], [b, b]], observable, lr=1e-2)
    assert float(doubled.preference[0, 1]) == pytest.approx(4 * swap.sgd_bracket, rel=1e-9)


def test_kendall_tau_and_bad_phases():
    assert kendall_tau([0, 1, 2], [0, 1, 2]) == 1.0 and kendall_tau([2, 1, 0], [0, 1, 2]) == -1.0
    model, loss_fn, optimizer, (a, b), observable = adam_phases()
    with pytest.raises(ValueError, match="same number of batches"):
        predict_phase_order(model, loss_fn, optimizer, a, b[:2], observable)
    with pytest.raises(ValueError, match="method must be one of"):
        predict_phase_order(model, loss_fn, optimizer, a, b, observable, method="magic")
    with pytest.raises(ValueError, match="method must be one of"):
        phase_tournament(model, loss_fn, optimizer, [a, b], observable, method="magic")
    with pytest.raises(ValueError, match="at least two phases"):
        bracket_tournament(model, loss_fn, [a], observable, lr=0.1)


def test_the_value_of_every_order_of_phases_is_the_expansion_of_their_window():
    model, loss_fn, optimizer, (a, b), observable = adam_phases()
    c = [(x[:, [1, 0, 2]], y) for x, y in a]
    # single-batch phases: the predictions of best_order for every order of the three batches
    window = best_order(model, loss_fn, optimizer, [a[0], b[0], c[0]], observable)
    got = predict_phase_orders(
        model, loss_fn, optimizer, [a[:1], b[:1], c[:1]], window.orders, observable
    )
    assert got == pytest.approx(window.predicted.tolist(), rel=1e-10)
    # phases of several batches: two orders of two phases differ as predict_phase_order says
    ab, ba = predict_phase_orders(model, loss_fn, optimizer, [a, b], [[0, 1], [1, 0]], observable)
    pair = predict_phase_order(model, loss_fn, optimizer, a, b, observable)
    assert ab - ba == pytest.approx(pair.predicted, rel=1e-9)
    with pytest.raises(ValueError, match="permutation"):
        predict_phase_orders(model, loss_fn, optimizer, [a, b], [[0, 0]], observable)


def sgd_with_momentum(model):
    """SGD with momentum 0.9 whose buffers hold a past: the phase order then moves O at first
    order in lr, as under Adam (the last phase's gradients are still in the buffer)."""
    torch.manual_seed(2)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        sgd.state[p]["momentum_buffer"] = 0.1 * torch.randn_like(p)
    return sgd


@pytest.mark.parametrize(
    "kind, method, lrs, ratio",
    [
        # the expansion of every gradient to third order: the residual is O(lr^4)
        ("adam", "expansion", (4e-3, 2e-3, 1e-3), 16),
        # the state carried exactly, the parameters' dependence linearised: O(lr^3)
        ("adam", "exact-state", (4e-3, 2e-3, 1e-3), 8),
        # momentum is linear in its buffer; linearising the parameters leaves O(lr^2)
        ("momentum", "composition", (0.1, 0.05, 0.025), 4),
        # Adam's moments move by O(1) whatever lr, and m / sqrt(v) is not linear in them: the
        # composition's residual is of the order of the effect itself, O(lr) (its known limit)
        ("adam", "composition", (4e-3, 2e-3, 1e-3), 2),
    ],
)
def test_the_residual_shrinks_with_lr_as_each_method_claims(kind, method, lrs, ratio):
    """Under Adam and under SGD with a momentum, ``O(A then B) - O(B then A)`` is O(lr); each
    method's residual shrinks like the order it is exact to (halving lr divides it by
    ``ratio``), on a float64 MLP with phases of two batches from two classes."""
    model, loss_fn, optimizer, (a, b), observable = adam_phases()
    optimizer = sgd_with_momentum(model) if kind == "momentum" else optimizer
    a, b = a[:2], b[:2]
    residuals = []
    for lr in lrs:
        step = at_lr(optimizer, lr)
        got = predict_phase_order(model, loss_fn, step, a, b, observable, method=method)
        ab, ba = (
            values_along_steps(model, loss_fn, step, o, observable.value, [4])[0]
            for o in ([*a, *b], [*b, *a])
        )
        residuals.append(abs(got.predicted - (ab - ba)))
    shrink = [residuals[0] / residuals[1], residuals[1] / residuals[2]]
    assert all(0.7 * ratio < r < 1.3 * ratio for r in shrink), shrink

"""``optimizer_order_scores`` (brackets/_scores.py): moving an example first rather than last in
a pool, with the run's optimizer, against really training both orders."""

import pytest
import torch
from cases import mlp_bce, warm_up

import perturbative as pt
from perturbative.brackets import optimizer_order_scores, order_scores, values_along_steps


def real_first_minus_last(case, optimizer, observable, n, lr):
    examples = [case.rows(slice(i, i + 1)) for i in range(n)]
    out = []
    for x in range(n):
        rest = [examples[i] for i in range(n) if i != x]
        first, last = (
            values_along_steps(
                case.model, case.loss_fn, optimizer, steps, observable.value, [n], lr=lr
            )[0]
            for steps in ([examples[x], *rest], [*rest, examples[x]])
        )
        out.append(first - last)
    return torch.tensor(out, dtype=torch.float64)


def test_adam_scores_follow_real_reordering_and_converge_as_lr_shrinks():
    case = mlp_bce()
    optimizer = torch.optim.Adam(case.model.parameters(), lr=1e-2, betas=(0.8, 0.999))
    warm_up(case, optimizer, steps=20)
    observable = pt.Observable.mean_loss(case.loss_fn, case.minibatches()[2])
    n = 5
    errors = []
    for lr in (1e-2, 1e-3):
        got = optimizer_order_scores(
            case.model, case.loss_fn, optimizer, case.rows(slice(0, n)), observable, lr=lr
        )
        real = real_first_minus_last(case, optimizer, observable, n, lr)
        assert bool((torch.sign(got.scores) == torch.sign(real)).all()), (got.scores, real)
        errors.append(float(((got.scores - real).abs() / real.abs()).median()))
        assert got.optimizer == "Adam" and got.lr == lr
    assert errors[1] < 0.03 and errors[0] / errors[1] > 5, errors  # the error is O(lr)


def test_plain_sgd_scores_are_the_bracket_scores():
    case = mlp_bce()
    optimizer = torch.optim.SGD(case.model.parameters(), lr=1e-3)
    observable = pt.Observable.mean_loss(case.loss_fn, case.minibatches()[2])
    pool = case.rows(slice(0, 5))
    got = optimizer_order_scores(case.model, case.loss_fn, optimizer, pool, observable)
    u = observable.gradient(case.model, case.params)
    expected = 1e-6 * order_scores(case.model, case.loss_fn, case.params, pool, u)
    torch.testing.assert_close(got.sgd, expected, rtol=1e-12, atol=0)
    assert float(got.state_part.abs().max()) < 1e-9 * float(expected.abs().max())  # rounding
    torch.testing.assert_close(got.scores, got.sgd, rtol=1e-9, atol=1e-16)
    real = real_first_minus_last(case, optimizer, observable, 5, 1e-3)
    assert float(((got.scores - real).abs() / real.abs()).median()) == pytest.approx(0, abs=0.05)

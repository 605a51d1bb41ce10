"""Bracket engines against slow twins, closed forms and defining properties; bad input."""

import pytest
import torch
from cases import embedding_ce, mlp_bce

from perturbative.brackets import (
    adam_preconditioner,
    mean_gradient,
)


def test_adam_preconditioner_matches_hand_computed_second_moment():
    case = mlp_bce()
    params = case.params
    betas, eps = (0.8, 0.99), 1e-6
    optimizer = torch.optim.Adam(params.values(), lr=1e-2, betas=betas, eps=eps)
    second = {k: torch.zeros_like(v) for k, v in params.items()}
    steps = 4
    for t in range(steps):
        optimizer.zero_grad()
        x = case.example(t)
        case.loss_fn(case.model(x[0]), x[1]).backward()
        for k, p in params.items():
            second[k] = betas[1] * second[k] + (1 - betas[1]) * p.grad**2
        optimizer.step()
    got = adam_preconditioner(optimizer, params)
    for k in params:
        v_hat = second[k] / (1 - betas[1] ** steps)
        torch.testing.assert_close(got[k], 1 / (v_hat.sqrt() + eps), rtol=1e-12, atol=0)


def test_adam_preconditioner_refuses_a_fresh_or_foreign_optimizer():
    case = mlp_bce()
    fresh = torch.optim.Adam(case.params.values())
    with pytest.raises(ValueError, match="take at least one optimizer step"):
        adam_preconditioner(fresh, case.params)
    sgd = torch.optim.SGD(case.params.values(), lr=0.1)
    with pytest.raises(ValueError, match="Adam"):
        adam_preconditioner(sgd, case.params)
    other = {k: v.detach().clone().requires_grad_() for k, v in case.params.items()}
    with pytest.raises(ValueError, match="named_parameters"):
        adam_preconditioner(fresh, other)


def test_zero_second_moment_gets_what_the_next_real_adam_step_does():
    """Embedding rows no example has touched: with the next step's gradient, P is that step's
    exact denominator (the real update is -lr m_hat P); without it, P = 0 there and a warning."""
    case = embedding_ce()
    params = case.params
    lr, (b1, b2) = 1e-2, (0.8, 0.999)
    optimizer = torch.optim.Adam(params.values(), lr=lr, betas=(b1, b2))
    for _ in range(5):
        optimizer.zero_grad()
        case.loss_fn(case.model(case.data[0][:3]), case.data[1][:3]).backward()
        optimizer.step()
    with pytest.warns(RuntimeWarning, match=r"second moment is zero on \d+ coordinates \(0.weight"):
        plain = adam_preconditioner(optimizer, params)
    assert plain["0.weight"][8:].abs().max() == 0  # never seen: P = 0, not 1/eps
    # the next step sees token 9 for the first time
    batch = (torch.tensor([[9, 1, 2], [3, 9, 9]]), torch.tensor([0, 2]))
    gradient = mean_gradient(case.model, case.loss_fn, params, batch)
    pre = adam_preconditioner(optimizer, params, gradient)
    before = {k: v.detach().clone() for k, v in params.items()}
    m_hat = {}
    for k, p in params.items():
        m = b1 * optimizer.state[p]["exp_avg"] + (1 - b1) * gradient[k]
        m_hat[k] = m / (1 - b1 ** (float(optimizer.state[p]["step"]) + 1))
    optimizer.zero_grad()
    case.loss_fn(case.model(batch[0]), batch[1]).backward()
    optimizer.step()
    for k, p in params.items():
        torch.testing.assert_close(
            p.detach() - before[k], -lr * m_hat[k] * pre[k], rtol=1e-10, atol=1e-15
        )
    row = params["0.weight"].detach()[9] - before["0.weight"][9]  # a fixed-size sign step
    expected = lr * (1 - b1) / (1 - b1**6) * ((1 - b2**6) / (1 - b2)) ** 0.5
    # up to eps against |g|: the step is the same size on every coordinate of the row
    torch.testing.assert_close(row.abs(), torch.full_like(row, expected), rtol=1e-4, atol=0)

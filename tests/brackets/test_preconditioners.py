"""Bracket engines against slow twins, closed forms and defining properties; bad input."""

import pytest
import torch
from cases import mlp_bce

from perturbative.brackets import (
    adam_preconditioner,
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

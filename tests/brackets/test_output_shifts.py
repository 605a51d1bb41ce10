"""Output shifts and the projected bracket matrix against direct computations."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from perturbative.brackets import (
    bracket_matrix,
    mean_gradient,
    order_sensitivity,
    output_shift,
    projected_bracket_matrix,
    upper_pairs,
)
from perturbative.reference import flatten


def _problem(seed=0, n=5, classes=3):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, classes),
    ).double()
    model[1].running_mean.normal_()
    model[1].running_var.uniform_(0.5, 2.0)
    model.eval()
    params = dict(model.named_parameters())
    x = torch.randn(n, 2, 4, 4, dtype=torch.float64)
    y = torch.randint(0, classes, (n,))
    return model, params, (x, y)


def _cross_entropy(outputs, targets):
    return F.cross_entropy(outputs, targets)


@pytest.mark.parametrize("engine", ["forward", "double_backward"])
def test_output_shift_is_lr_squared_jacobian_times_bracket(engine):
    model, params, data = _problem()
    pairs = upper_pairs(bracket_matrix(model, _cross_entropy, params, data))
    test_inputs = torch.randn(4, 2, 4, 4, dtype=torch.float64)
    lr = 0.3
    shifts = output_shift(model, params, pairs, test_inputs, lr=lr, engine=engine)
    assert shifts.shape == (10, 4, 3)

    names = list(params)
    flat = flatten({k: v.detach() for k, v in params.items()}, names)
    sizes = [params[k].numel() for k in names]

    def outputs_of_flat(theta):
        pieces = torch.split(theta, sizes)
        p = {k: t.reshape(params[k].shape) for k, t in zip(names, pieces, strict=True)}
        return torch.func.functional_call(model, p, (test_inputs,))

    jacobian = torch.autograd.functional.jacobian(outputs_of_flat, flat)  # (T, K, N)
    directions = torch.stack(
        [flatten({k: v[p] for k, v in pairs.items()}, names) for p in range(10)]
    )
    expected = lr**2 * torch.einsum("tkn,pn->ptk", jacobian, directions)
    torch.testing.assert_close(shifts, expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("engine", ["forward", "double_backward"])
def test_projected_matrix_equals_observable_gradient_dot_brackets(engine):
    model, params, data = _problem(seed=1, n=6)
    test = (torch.randn(5, 2, 4, 4, dtype=torch.float64), torch.randint(0, 3, (5,)))
    u = mean_gradient(model, _cross_entropy, params, test)
    matrix = projected_bracket_matrix(model, _cross_entropy, params, data, u, engine=engine)
    brackets = bracket_matrix(model, _cross_entropy, params, data)
    expected = sum(
        torch.einsum("ijk,k->ij", brackets[k].reshape(6, 6, -1), u[k].reshape(-1)) for k in u
    )
    torch.testing.assert_close(matrix, expected, rtol=1e-9, atol=1e-14)
    torch.testing.assert_close(matrix, -matrix.T)


def test_projected_matrix_with_preconditioner_matches_preconditioned_brackets():
    model, params, data = _problem(seed=2, n=4)
    torch.manual_seed(3)
    precond = {k: torch.rand_like(v.detach()) + 0.5 for k, v in params.items()}
    u = {k: torch.randn_like(v.detach()) for k, v in params.items()}
    matrix = projected_bracket_matrix(
        model, _cross_entropy, params, data, u, preconditioner=precond
    )
    brackets = bracket_matrix(model, _cross_entropy, params, data, preconditioner=precond)
    expected = sum(
        torch.einsum("ijk,k->ij", brackets[k].reshape(4, 4, -1), u[k].reshape(-1)) for k in u
    )
    torch.testing.assert_close(matrix, expected, rtol=1e-9, atol=1e-14)


def test_order_sensitivity_is_rms_over_partners():
    m = torch.tensor([[0.0, 3.0, -4.0], [-3.0, 0.0, 0.0], [4.0, 0.0, 0.0]])
    torch.testing.assert_close(order_sensitivity(m), torch.tensor([12.5**0.5, 4.5**0.5, 8.0**0.5]))
    with pytest.raises(ValueError, match="square"):
        order_sensitivity(torch.zeros(2, 3))


def test_output_shift_rejects_mismatched_directions():
    model, params, _ = _problem()
    bad = {k: v.detach()[None] for k, v in params.items()}
    bad["4.weight"] = torch.zeros(1, 2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="shape"):
        output_shift(model, params, bad, torch.zeros(1, 2, 4, 4, dtype=torch.float64))


def test_projected_matrix_in_blocks_equals_one_block(case):
    u = mean_gradient(case.model, case.loss_fn, case.params, case.minibatches()[0])
    whole = projected_bracket_matrix(case.model, case.loss_fn, case.params, case.data, u)
    one_tensor = sum(v.numel() * v.element_size() for v in case.params.values())
    blocked = projected_bracket_matrix(
        case.model, case.loss_fn, case.params, case.data, u, memory_budget=6 * one_tensor
    )
    torch.testing.assert_close(blocked, whole, rtol=1e-12, atol=1e-14)

"""Bracket engines against slow twins, closed forms and defining properties; bad input."""

import pytest
import torch
import torch.nn.functional as F
from cases import DTYPE, ENGINES, mean_squared_error, mlp_bce
from torch import nn

from perturbative.brackets import (
    bracket,
    bracket_matrix,
)


def test_parameters_that_do_not_require_grad_are_refused():
    case = mlp_bce()
    params = {k: v.detach() for k, v in case.params.items()}
    with pytest.raises(ValueError, match="does not require grad"):
        bracket_matrix(case.model, case.loss_fn, params, case.data)


def test_params_as_a_list_is_refused_with_the_fix():
    case = mlp_bce()
    with pytest.raises(TypeError, match=r"dict\(model.named_parameters\(\)\)"):
        bracket_matrix(case.model, case.loss_fn, list(case.params.values()), case.data)


def test_shape_mismatches_are_refused():
    case = mlp_bce()
    params = dict(case.params)
    params["0.weight"] = torch.zeros(2, 2, dtype=DTYPE, requires_grad=True)
    with pytest.raises(ValueError, match=r"shape \(2, 2\).*\(5, 3\)"):
        bracket_matrix(case.model, case.loss_fn, params, case.data)
    x, y = case.data
    with pytest.raises(ValueError, match="disagree on the number of examples"):
        bracket_matrix(case.model, case.loss_fn, case.params, (x, y[:4]))
    with pytest.raises(ValueError, match="preconditioner"):
        pre = {k: torch.ones(3, dtype=DTYPE) for k in case.params}
        bracket_matrix(case.model, case.loss_fn, case.params, case.data, preconditioner=pre)


@pytest.mark.parametrize("engine", ENGINES)
def test_non_scalar_per_example_loss_is_refused(engine):
    case = mlp_bce()

    def unreduced(outputs, targets):
        return F.binary_cross_entropy_with_logits(outputs, targets, reduction="none")

    with pytest.raises(ValueError, match="must return a scalar"):
        bracket_matrix(case.model, unreduced, case.params, case.data, engine=engine)


def test_empty_example_sets_are_refused():
    case = mlp_bce()
    empty = tuple(t[:0] for t in case.data)
    with pytest.raises(ValueError, match="holds no examples"):
        bracket_matrix(case.model, case.loss_fn, case.params, empty)
    with pytest.raises(ValueError, match="holds no examples"):
        bracket(case.model, case.loss_fn, case.params, case.data, empty)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_gradients_are_an_error(engine, bad):
    case = mlp_bce()
    x, y = case.data
    x = x.clone()
    x[2, 0] = bad
    with pytest.raises(FloatingPointError, match=r"not finite \(NaN or inf\) in \["):
        bracket_matrix(case.model, case.loss_fn, case.params, (x, y), engine=engine)


def test_train_mode_batchnorm_is_refused_without_a_batch_context():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 1))
    model = model.to(DTYPE).train()
    data = (torch.randn(3, 3, dtype=DTYPE), torch.randn(3, 1, dtype=DTYPE))
    with pytest.raises(ValueError, match=r"train mode.*model.eval\(\).*batch_context"):
        bracket_matrix(model, mean_squared_error, dict(model.named_parameters()), data)

"""Bracket engines against slow twins, closed forms and defining properties; bad input."""

import pytest
import torch
import torch.nn.functional as F
from cases import DTYPE, ENGINES, assert_dicts_close, mean_squared_error, mlp_bce
from torch import nn

from perturbative.brackets import (
    bracket,
    bracket_matrix,
    bracket_terms,
    cancellation_ratio,
)
from perturbative.reference import (
    dense_hessian,
    flatten,
    reference_bracket_matrix,
)


def random_preconditioner(params, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.rand(v.shape, generator=g, dtype=v.dtype) + 0.5 for k, v in params.items()}


class _MishNet(nn.Module):
    """Pre-activations of 90-100: torch's fused mish has a NaN second derivative there in fp32."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(2, 3)
        self.out = nn.Linear(3, 1)
        with torch.no_grad():
            self.hidden.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
            self.hidden.bias.zero_()

    def forward(self, x):
        return self.out(F.mish(self.hidden(x)))


@pytest.mark.parametrize("engine", ENGINES)
def test_bracket_matrix_matches_per_pair_reference(case, engine):
    got = bracket_matrix(case.model, case.loss_fn, case.params, case.data, engine=engine)
    expected = reference_bracket_matrix(case.model, case.loss_fn, case.params, case.data)
    assert_dicts_close(got, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
def test_preconditioned_bracket_matrix_matches_reference(case, engine):
    pre = random_preconditioner(case.params)
    got = bracket_matrix(
        case.model, case.loss_fn, case.params, case.data, preconditioner=pre, engine=engine
    )
    expected = reference_bracket_matrix(case.model, case.loss_fn, case.params, case.data, pre)
    assert_dicts_close(got, expected, rtol=1e-9, atol=1e-12)
    x, y = case.example(0), case.example(2)
    single = bracket(case.model, case.loss_fn, case.params, x, y, preconditioner=pre, engine=engine)
    assert_dicts_close(single, {k: v[0, 2] for k, v in expected.items()}, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
def test_brackets_match_dense_hessians(engine):
    case = mlp_bce()
    names = list(case.params)
    n = case.data[0].shape[0]
    hessians, grads = [], []
    for i in range(n):
        example = case.example(i)
        hessians.append(dense_hessian(case.model, case.loss_fn, case.params, example))
        loss = case.loss_fn(case.model(example[0]), example[1])
        grads.append(
            flatten(dict(zip(names, torch.autograd.grad(loss, case.params.values()), strict=True)))
        )
    got = bracket_matrix(case.model, case.loss_fn, case.params, case.data, engine=engine)
    for i in range(n):
        for j in range(n):
            expected = hessians[j] @ grads[i] - hessians[i] @ grads[j]  # H_j g_i - H_i g_j
            actual = flatten({k: v[i, j] for k, v in got.items()}, names)
            torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
def test_least_squares_bracket_has_closed_form(least_squares_case, engine):
    case = least_squares_case
    w = case.model.weight.detach()[0]
    a = [torch.outer(x, x) for x in case.data[0]]
    b = [y * x for x, y in zip(case.data[0], case.data[1][:, 0], strict=True)]
    got = bracket_matrix(case.model, case.loss_fn, case.params, case.data, engine=engine)
    for i in range(5):
        for j in range(5):
            expected = (a[j] @ a[i] - a[i] @ a[j]) @ w - a[j] @ b[i] + a[i] @ b[j]
            torch.testing.assert_close(got["weight"][i, j, 0], expected, rtol=1e-10, atol=1e-12)
    one = bracket(case.model, case.loss_fn, case.params, case.example(1), case.example(3))
    expected = (a[3] @ a[1] - a[1] @ a[3]) @ w - a[3] @ b[1] + a[1] @ b[3]
    torch.testing.assert_close(one["weight"][0], expected, rtol=1e-10, atol=1e-12)


def test_bracket_matrix_is_antisymmetric_with_zero_diagonal(case):
    got = bracket_matrix(case.model, case.loss_fn, case.params, case.data)
    for v in got.values():
        torch.testing.assert_close(v, -v.transpose(0, 1), rtol=0, atol=0)
        assert torch.count_nonzero(torch.diagonal(v, dim1=0, dim2=1)) == 0
    assert any(bool(v.abs().max() > 1e-6) for v in got.values())  # not trivially zero


@pytest.mark.parametrize("engine", ENGINES)
def test_bracket_of_a_field_with_itself_is_zero(case, engine):
    x = case.example(1)
    got = bracket(case.model, case.loss_fn, case.params, x, x, engine=engine)
    for v in got.values():
        torch.testing.assert_close(v, torch.zeros_like(v), rtol=0, atol=1e-14)


@pytest.mark.parametrize("engine", ENGINES)
def test_minibatch_bracket_is_mean_of_pairwise_brackets(case, engine):
    batches = case.minibatches()
    a, b = batches[0], batches[-1]
    n_a, n_b = a[0].shape[0], b[0].shape[0]
    assert n_a != n_b  # uneven on purpose
    matrix = bracket_matrix(case.model, case.loss_fn, case.params, case.data)
    n = case.data[0].shape[0]
    rows, cols = range(n_a), range(n - n_b, n)
    expected = {k: v[rows][:, cols].mean(dim=(0, 1)) for k, v in matrix.items()}
    got = bracket(case.model, case.loss_fn, case.params, a, b, engine=engine)
    assert_dicts_close(got, expected, rtol=1e-9, atol=1e-12)


def test_bracket_terms_engines_agree_on_every_product(case):
    forward = bracket_terms(case.model, case.loss_fn, case.params, case.data, engine="forward")
    backward = bracket_terms(
        case.model, case.loss_fn, case.params, case.data, engine="double_backward"
    )
    assert_dicts_close(forward.gradients, backward.gradients, rtol=1e-10, atol=1e-13)
    assert_dicts_close(forward.hessian_gradients, backward.hessian_gradients, rtol=1e-9, atol=1e-12)


def test_fp32_brackets_agree_with_fp64_within_roundoff_over_cancellation(case):
    """Bound: per pair, ``|B32 - B64| <= 64 u32 |B64| / rho`` with ``u32 = 2^-24``.

    A bracket is a difference of two products of size ``|B| / rho``; each carries a relative
    rounding error of a few ``u32`` times the depth of the computation.
    """
    terms = bracket_terms(case.model, case.loss_fn, case.params, case.data)
    b64 = terms.brackets()
    rho = cancellation_ratio(terms)
    model32 = case.model.float()
    data32 = tuple(t.float() if t.is_floating_point() else t for t in case.data)
    b32 = bracket_matrix(model32, case.loss_fn, dict(model32.named_parameters()), data32)
    names = list(b64)
    n = case.data[0].shape[0]
    worst = 0.0
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            exact = flatten({k: b64[k][i, j] for k in names})
            approx = flatten({k: b32[k][i, j].double() for k in names})
            relative = float((approx - exact).norm() / exact.norm())
            bound = 64 * 2.0**-24 / float(rho[i, j])
            assert relative <= bound, (i, j, relative, bound)
            worst = max(worst, relative)
    assert worst < 1e-3


def test_batch_context_brackets_match_an_example_prepended_to_the_context():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 1))
    model = model.to(DTYPE).train()
    params = dict(model.named_parameters())
    context = torch.randn(4, 3, dtype=DTYPE)
    data = (torch.randn(3, 3, dtype=DTYPE), torch.randn(3, 1, dtype=DTYPE))
    running = model[1].running_mean.clone()

    def loss_in_context(p, i):  # example i joins the context batch, train-mode statistics
        buffers = {k: v.clone() for k, v in model.named_buffers()}
        joined = torch.cat([data[0][i : i + 1], context])
        outputs = torch.func.functional_call(model, (p, buffers), (joined,))[:1]
        return mean_squared_error(outputs, data[1][i : i + 1])

    names = list(params)
    leaves = [params[k] for k in names]
    grads = [
        torch.autograd.grad(loss_in_context(params, i), leaves, create_graph=True) for i in range(3)
    ]
    got = bracket_matrix(model, mean_squared_error, params, data, batch_context=context)
    for i in range(3):
        for j in range(3):
            h_j_gi = torch.autograd.grad(
                grads[j], leaves, [g.detach() for g in grads[i]], retain_graph=True
            )
            h_i_gj = torch.autograd.grad(
                grads[i], leaves, [g.detach() for g in grads[j]], retain_graph=True
            )
            for k, a, b in zip(names, h_j_gi, h_i_gj, strict=True):
                torch.testing.assert_close(got[k][i, j], a - b, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(model[1].running_mean, running, rtol=0, atol=0)  # discarded


@pytest.mark.parametrize("engine", ENGINES)
def test_fp32_fused_mish_nan_curvature_is_an_error_naming_the_fix(engine):
    torch.manual_seed(6)
    model = _MishNet()
    data = (torch.tensor([[95.0, 1.0], [90.0, -3.0], [-2.0, 99.0]]), torch.randn(3, 1))
    with pytest.raises(FloatingPointError, match=r"hidden\..*mish.*x \* tanh\(softplus\(x\)\)"):
        bracket_matrix(
            model, mean_squared_error, dict(model.named_parameters()), data, engine=engine
        )


def test_forward_engine_with_torch_mse_loss_matches_reference_or_says_why():
    case = mlp_bce()
    expected = reference_bracket_matrix(case.model, F.mse_loss, case.params, case.data)
    try:
        got = bracket_matrix(case.model, F.mse_loss, case.params, case.data, engine="forward")
    except RuntimeError as err:
        assert "forward" in str(err).lower() and "double_backward" in str(err)
        return
    assert_dicts_close(got, expected, rtol=1e-9, atol=1e-12)

"""Per-example gradients and Hessian-vector products against plain autograd and dense Hessians."""

import pytest
import torch
from cases import DTYPE, ENGINES, autograd_gradient, mlp_bce

from perturbative.brackets import hvp, per_example_gradients, per_example_hvps
from perturbative.reference import dense_hessian, flatten


def random_vector(params, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in params.items()}


def dot(u, v):
    return sum(float((u[k] * v[k]).sum()) for k in u)


def test_forward_over_reverse_equals_reverse_over_reverse(case):
    u = random_vector(case.params, 0)
    a = hvp(case.model, case.loss_fn, case.params, case.data, u, engine="forward")
    b = hvp(case.model, case.loss_fn, case.params, case.data, u, engine="double_backward")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("engine", ENGINES)
def test_hessian_is_symmetric_under_the_dot_product(case, engine):
    u, v = random_vector(case.params, 1), random_vector(case.params, 2)
    hu = hvp(case.model, case.loss_fn, case.params, case.data, u, engine=engine)
    hv = hvp(case.model, case.loss_fn, case.params, case.data, v, engine=engine)
    lhs, rhs = dot(u, hv), dot(hu, v)
    assert abs(lhs - rhs) <= 1e-10 * (abs(lhs) + abs(rhs))
    assert abs(lhs) > 1e-6


@pytest.mark.parametrize("engine", ENGINES)
def test_hvp_matches_dense_hessian_of_the_minibatch_mean(engine):
    case = mlp_bce()
    n = case.data[0].shape[0]
    dense = (
        sum(dense_hessian(case.model, case.loss_fn, case.params, case.example(i)) for i in range(n))
        / n
    )
    u = random_vector(case.params, 3)
    got = hvp(case.model, case.loss_fn, case.params, case.data, u, engine=engine)
    torch.testing.assert_close(
        flatten(got, list(case.params)),
        dense @ flatten(u, list(case.params)),
        rtol=1e-10,
        atol=1e-13,
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_per_example_hvps_match_single_example_hvps(case, engine):
    u = random_vector(case.params, 4)
    grads, products = per_example_hvps(
        case.model, case.loss_fn, case.params, case.data, u, engine=engine
    )
    for i in range(case.data[0].shape[0]):
        example = case.example(i)
        expected = hvp(case.model, case.loss_fn, case.params, example, u, engine="double_backward")
        g = autograd_gradient(case, example)
        for k in u:
            torch.testing.assert_close(products[k][i], expected[k], rtol=1e-10, atol=1e-13)
            torch.testing.assert_close(grads[k][i], g[k], rtol=1e-10, atol=1e-13)


def test_bad_vectors_and_engines_are_refused():
    case = mlp_bce()
    u = random_vector(case.params, 5)
    with pytest.raises(ValueError, match="missing"):
        hvp(case.model, case.loss_fn, case.params, case.data, {"0.weight": u["0.weight"]})
    u["0.bias"] = torch.zeros(7, dtype=DTYPE)
    with pytest.raises(ValueError, match=r"vector\['0.bias'\] has shape \(7,\); expected \(5,\)"):
        hvp(case.model, case.loss_fn, case.params, case.data, u)
    with pytest.raises(ValueError, match="engine must be one of"):
        per_example_gradients(case.model, case.loss_fn, case.params, case.data, engine="fast")
    with pytest.raises(TypeError, match="tuple of tensors"):
        per_example_gradients(case.model, case.loss_fn, case.params, [case.data[0].tolist()])
    with pytest.raises(ValueError, match="not a parameter of"):
        per_example_gradients(
            case.model, case.loss_fn, {"nope": torch.zeros(1, requires_grad=True)}, case.data
        )

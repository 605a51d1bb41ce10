"""Per-example gradients and Hessian-vector products against plain autograd and dense Hessians."""

import pytest
import torch
from cases import DTYPE, ENGINES, autograd_gradient, bce_loss, mlp_bce, train_mode_batchnorm_net

from perturbative.brackets import hvp, per_example_gradients, per_example_hvps, third_derivative
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


@pytest.mark.parametrize("engine", ENGINES)
def test_third_derivative_is_the_derivative_of_the_hessian_along_d(case, engine):
    """D^3 L[d, d, .] from either engine against a central difference of H(theta + e d) d."""
    params = case.params
    batch = case.minibatches()[0]
    g = torch.Generator().manual_seed(3)
    d = {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in params.items()}
    got = third_derivative(case.model, case.loss_fn, leaves(params), batch, d, engine=engine)
    other = "double_backward" if engine == "forward" else "forward"
    twin = third_derivative(case.model, case.loss_fn, leaves(params), batch, d, engine=other)
    eps = 1e-5
    plus, minus = (
        hvp(case.model, case.loss_fn, {k: v + s * eps * d[k] for k, v in params.items()}, batch, d)
        for s in (1, -1)
    )
    for k in params:
        torch.testing.assert_close(got[k], twin[k], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got[k], (plus[k] - minus[k]) / (2 * eps), rtol=1e-6, atol=1e-8)


def leaves(params):
    """Fresh leaves that require grad, as the derivative functions want."""
    return {k: v.detach().clone().requires_grad_() for k, v in params.items()}


def test_third_derivative_with_train_mode_batchnorm_uses_the_batch_statistics():
    """Reverse mode three times through the loss training computes (batch statistics), against
    a central difference of train-mode HVPs; running statistics are left alone."""
    model, batch = train_mode_batchnorm_net()
    x = batch(6)
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(4)
    d = {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in params.items()}
    running = model[1].running_mean.clone()
    got = third_derivative(model, bce_loss, leaves(params), x, d, engine="auto")
    eps = 1e-5
    plus, minus = (
        hvp(model, bce_loss, leaves({k: v + s * eps * d[k] for k, v in params.items()}), x, d)
        for s in (1, -1)
    )
    for k in params:
        torch.testing.assert_close(got[k], (plus[k] - minus[k]) / (2 * eps), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(model[1].running_mean, running, rtol=0, atol=0)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    "norm", ["layer_norm", "instance_norm", "batch_norm_no_running", "batch_norm_eval"]
)
def test_third_derivative_through_normalization_layers(norm, engine):
    """Torch's fused normalisation kernels get third derivatives wrong; written out in
    elementary ops (engines.elementary_normalization) they match a central difference of HVPs."""
    torch.manual_seed(5)
    layer = {
        "layer_norm": lambda: torch.nn.LayerNorm([4, 3, 3]),
        "instance_norm": lambda: torch.nn.InstanceNorm2d(4, affine=True),
        "batch_norm_no_running": lambda: torch.nn.BatchNorm2d(4, track_running_stats=False),
        "batch_norm_eval": lambda: torch.nn.BatchNorm2d(4).eval(),
    }[norm]()
    model = torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3), layer, torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(36, 2)
    ).double()
    g = torch.Generator().manual_seed(6)
    batch = (
        torch.randn(3, 2, 5, 5, generator=g, dtype=torch.float64),
        torch.rand(3, 2, generator=g, dtype=torch.float64).round(),
    )
    params = dict(model.named_parameters())
    d = {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in params.items()}
    got = third_derivative(model, bce_loss, leaves(params), batch, d, engine=engine)
    eps = 1e-5
    plus, minus = (
        hvp(model, bce_loss, leaves({k: v + s * eps * d[k] for k, v in params.items()}), batch, d)
        for s in (1, -1)
    )
    for k in params:
        torch.testing.assert_close(got[k], (plus[k] - minus[k]) / (2 * eps), rtol=1e-5, atol=1e-6)

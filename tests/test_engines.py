"""Bracket engines agree with each other and with the naive twin; chunking; forward-AD fallback."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from perturbative.bracket import (
    ForwardADUnsupportedError,
    bracket_matrix,
    bracket_terms,
    pairs_per_chunk,
)
from perturbative.reference import reference_bracket_matrix

# The module itself (the package exports a function of the same name).
bracket_module = importlib.import_module("perturbative.bracket")


class SafeMish(nn.Module):
    def forward(self, x):
        return x * torch.tanh(F.softplus(x))


class SineNoJvp(torch.autograd.Function):
    """sin with a twice differentiable backward and vmap support, but no forward derivative."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x.sin()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * x.cos()


class SineNoVmap(SineNoJvp):
    """The same without vmap support: torch.func cannot batch it."""

    generate_vmap_rule = False


class SineModule(nn.Module):
    def __init__(self, function=SineNoJvp):
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function.apply(x)


def convnet(activation: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        activation,
        nn.Conv2d(3, 3, 3, stride=2, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(3, 2),
    ).double()
    with torch.no_grad():
        bn = model[1]
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.3, 0.3)
    return model.eval()


def loss_fn(outputs, targets):
    return F.binary_cross_entropy_with_logits(outputs, targets)


@pytest.fixture
def problem():
    model = convnet(SafeMish())
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(4, 2, 5, 5, generator=generator, dtype=torch.float64)
    targets = (torch.rand(4, 2, generator=generator) < 0.5).double()
    params = dict(model.named_parameters())
    return model, params, (inputs, targets)


def assert_close(a, b, rtol=1e-9, atol=1e-12):
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=atol)


@pytest.mark.parametrize("engine", ["forward", "double_backward"])
def test_bracket_matrix_matches_naive_loop(problem, engine):
    model, params, data = problem
    expected = reference_bracket_matrix(model, loss_fn, params, data)
    got = bracket_matrix(model, loss_fn, params, data, engine=engine)
    assert_close(got, expected)
    assert max(float(v.abs().max()) for v in got.values()) > 1e-6  # not trivially zero


@pytest.mark.parametrize("engine", ["forward", "double_backward"])
def test_preconditioned_bracket_matrix_matches_naive_loop(problem, engine):
    model, params, data = problem
    generator = torch.Generator().manual_seed(2)
    precond = {
        k: torch.rand(v.shape, generator=generator, dtype=v.dtype) + 0.5 for k, v in params.items()
    }
    expected = reference_bracket_matrix(model, loss_fn, params, data, precond)
    got = bracket_matrix(model, loss_fn, params, data, preconditioner=precond, engine=engine)
    assert_close(got, expected)


def test_bracket_terms_engines_agree_including_diagonal(problem):
    model, params, data = problem
    fwd = bracket_terms(model, loss_fn, params, data, engine="forward")
    dbl = bracket_terms(model, loss_fn, params, data, engine="double_backward")
    assert_close(fwd.gradients, dbl.gradients)
    assert_close(fwd.hessian_gradients, dbl.hessian_gradients)
    # H_j g_j is computed, not left zero, and the brackets are those of bracket_matrix.
    diagonal = dbl.hessian_gradients["0.weight"].diagonal(0, 0, 1)
    assert float(diagonal.abs().max()) > 1e-6
    assert_close(dbl.brackets(), bracket_matrix(model, loss_fn, params, data))


def test_forward_engine_chunks_to_a_tiny_memory_budget(problem, monkeypatch):
    model, params, data = problem
    assert pairs_per_chunk(params, 1, 12) == 1
    assert pairs_per_chunk(params, 2**40, 12) == 12
    calls = []
    real_vmap = bracket_module.vmap

    def counting_vmap(*args, **kwargs):
        calls.append(kwargs.get("chunk_size"))
        return real_vmap(*args, **kwargs)

    monkeypatch.setattr(bracket_module, "vmap", counting_vmap)
    tiny = bracket_matrix(model, loss_fn, params, data, engine="forward", memory_budget=1)
    chunks_tiny = len(calls)
    calls.clear()
    whole = bracket_matrix(model, loss_fn, params, data, engine="forward", memory_budget=2**40)
    # One vmap for the gradients plus one per chunk of the 12 ordered pairs.
    assert chunks_tiny == 1 + 12
    assert len(calls) == 1 + 1
    assert_close(tiny, whole)


def problem_without_jvp(function=SineNoJvp):
    model = convnet(SineModule(function))
    generator = torch.Generator().manual_seed(3)
    inputs = torch.randn(3, 2, 5, 5, generator=generator, dtype=torch.float64)
    targets = (torch.rand(3, 2, generator=generator) < 0.5).double()
    return model, dict(model.named_parameters()), (inputs, targets)


@pytest.mark.parametrize("function", [SineNoJvp, SineNoVmap])
def test_forward_engine_names_the_function_without_jvp(function):
    model, params, data = problem_without_jvp(function)
    with pytest.raises(ForwardADUnsupportedError, match=function.__name__) as info:
        bracket_matrix(model, loss_fn, params, data, engine="forward")
    assert "engine='double_backward'" in str(info.value)
    with pytest.raises(ForwardADUnsupportedError, match=function.__name__):
        bracket_terms(model, loss_fn, params, data, engine="forward")


def test_auto_falls_back_to_double_backward_with_a_warning(monkeypatch):
    model, params, data = problem_without_jvp()
    # Pretend the parameters are on a GPU, where "auto" means the forward engine.
    monkeypatch.setattr(bracket_module, "resolve_engine", lambda engine, params, ctx: "forward")
    with pytest.warns(RuntimeWarning, match="SineNoJvp.*falling back"):
        got = bracket_matrix(model, loss_fn, params, data, engine="auto")
    with pytest.warns(RuntimeWarning, match="SineNoJvp"):
        terms = bracket_terms(model, loss_fn, params, data, engine="auto")
    expected = reference_bracket_matrix(model, loss_fn, params, data)
    assert_close(got, expected)
    assert_close(terms.brackets(), expected)


def test_failure_parsing_names_aten_ops_and_ignores_other_errors():
    err = NotImplementedError(
        "Trying to use forward AD with _embedding_bag that does not support it because it has "
        "not been implemented yet."
    )
    assert bracket_module._forward_ad_failure(err) == "the op _embedding_bag"
    assert bracket_module._forward_ad_failure(RuntimeError("shape mismatch")) is None


def test_other_errors_in_the_forward_engine_propagate(problem):
    model, params, data = problem
    bad_targets = data[1][:, :1].expand(-1, 3)  # 3 targets for 2 outputs
    with pytest.raises((RuntimeError, ValueError), match="size"):
        bracket_matrix(model, loss_fn, params, (data[0], bad_targets), engine="forward")


def test_hvp_forward_engine_names_a_forward_ad_failure_and_auto_falls_back():
    import torch.nn.functional as F

    from perturbative import ForwardADUnsupportedError, hvp, per_example_hvps

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).double()
    params = dict(model.named_parameters())
    data = (torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64))
    u = {k: torch.randn_like(v) for k, v in params.items()}
    with pytest.raises(ForwardADUnsupportedError, match="double_backward"):
        hvp(model, F.mse_loss, params, data, u, engine="forward")
    with pytest.raises(ForwardADUnsupportedError, match="ZeroTensor"):
        per_example_hvps(model, F.mse_loss, params, data, u, engine="forward")
    expected = hvp(model, F.mse_loss, params, data, u, engine="double_backward")
    got = per_example_hvps(model, F.mse_loss, params, data, u, engine="double_backward")[1]
    mean = {k: v.mean(0) for k, v in got.items()}
    for k in expected:
        torch.testing.assert_close(mean[k], expected[k])

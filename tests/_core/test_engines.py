"""Bracket engines agree with each other and with the naive twin; chunking; forward-AD fallback."""

from __future__ import annotations

import pytest
import torch
from cases import assert_dicts_close as assert_close
from cases import bce_loss as loss_fn
from cases import engine_convnet as convnet
from torch import nn

from perturbative._core import engines
from perturbative.brackets import (
    ForwardADUnsupportedError,
    bracket_matrix,
    bracket_terms,
)
from perturbative.reference import reference_bracket_matrix


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
    monkeypatch.setattr(engines, "resolve_engine", lambda engine, params, *context: "forward")
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
    assert engines.forward_ad_failure(err) == "the op _embedding_bag"
    assert engines.forward_ad_failure(RuntimeError("shape mismatch")) is None

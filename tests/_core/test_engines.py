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


NORMALIZATIONS = {
    "layer_norm": lambda: nn.LayerNorm([3, 4]),
    "batch_norm_train": lambda: nn.BatchNorm2d(3).train(),
    "batch_norm_no_running": lambda: nn.BatchNorm2d(3, track_running_stats=False),
    "instance_norm": lambda: nn.InstanceNorm2d(3, affine=True),
    "instance_norm_running": lambda: nn.InstanceNorm2d(3, affine=True, track_running_stats=True),
}


@pytest.mark.parametrize("name", sorted(NORMALIZATIONS))
def test_elementary_normalization_computes_what_torch_computes(name):
    torch.manual_seed(0)
    layer = NORMALIZATIONS[name]().double()
    with torch.no_grad():
        for p in layer.parameters():
            p.uniform_(0.5, 1.5)
        if getattr(layer, "running_var", None) is not None:
            layer.running_mean.normal_()
            layer.running_var.uniform_(0.5, 2.0)
    x = torch.randn(5, 3, 3, 4, dtype=torch.float64) * 2 + 1
    for mode in ("train", "eval"):
        getattr(layer, mode)()
        saved = {k: v.clone() for k, v in layer.named_buffers()}
        with engines.elementary_normalization():
            written_out = layer(x)
        for k in ("running_mean", "running_var"):  # left alone in the block
            if saved.get(k) is not None:
                torch.testing.assert_close(getattr(layer, k), saved[k], rtol=0, atol=0)
        torch.testing.assert_close(written_out, layer(x), rtol=1e-12, atol=1e-12)


def test_elementary_normalization_leaves_other_functions_alone():
    x = torch.randn(4, 6, dtype=torch.float64)
    with engines.elementary_normalization():
        got = torch.nn.functional.group_norm(x.reshape(4, 6, 1), 2).reshape(4, 6).softmax(-1)
    expected = torch.nn.functional.group_norm(x.reshape(4, 6, 1), 2).reshape(4, 6).softmax(-1)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)

"""Bracket engines agree with each other and with the naive twin; chunking; forward-AD fallback."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from cases import SafeMish, assert_dicts_close
from cases import bce_loss as loss_fn
from cases import engine_convnet as convnet

from perturbative.brackets import (
    bracket_matrix,
    bracket_terms,
    pairs_per_chunk,
)
from perturbative.reference import reference_bracket_matrix


def assert_close(a, b, rtol=1e-9, atol=1e-12):
    assert_dicts_close(a, b, rtol=rtol, atol=atol)


bracket_module = importlib.import_module("perturbative.brackets._bracket")


@pytest.fixture
def problem():
    model = convnet(SafeMish())
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(4, 2, 5, 5, generator=generator, dtype=torch.float64)
    targets = (torch.rand(4, 2, generator=generator) < 0.5).double()
    params = dict(model.named_parameters())
    return model, params, (inputs, targets)


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


def test_other_errors_in_the_forward_engine_propagate(problem):
    model, params, data = problem
    bad_targets = data[1][:, :1].expand(-1, 3)  # 3 targets for 2 outputs
    with pytest.raises((RuntimeError, ValueError), match="size"):
        bracket_matrix(model, loss_fn, params, (data[0], bad_targets), engine="forward")


def test_hvp_forward_engine_names_a_forward_ad_failure_and_auto_falls_back():

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

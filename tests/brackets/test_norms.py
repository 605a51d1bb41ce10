"""Norms, RMS and cancellation ratios against direct flattened computations."""

import itertools
import math

import pytest
import torch

from perturbative.brackets import (
    BracketTerms,
    bracket_terms,
    cancellation_ratio,
    layer_norms,
    layer_rms,
    layer_squared_norms,
    vector_norm,
    vector_rms,
)


def random_vectors(lead, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = {"conv.weight": (3, 2, 2, 2), "conv.bias": (3,), "fc.weight": (4, 5)}
    return {k: torch.randn(*lead, *s, generator=g, dtype=torch.float64) for k, s in shapes.items()}


@pytest.mark.parametrize("lead", [(), (4,), (3, 3)])
def test_norms_and_rms_match_flattened_vectors(lead):
    vectors = random_vectors(lead)
    names = list(vectors)
    norms, got_names = layer_norms(vectors, leading=len(lead))
    rms, _ = layer_rms(vectors, leading=len(lead))
    assert got_names == names
    assert norms.shape == (*lead, 3) and rms.shape == (*lead, 3)
    for idx in itertools.product(*[range(s) for s in lead]):
        blocks = [vectors[k][idx].reshape(-1) for k in names]
        for col, block in enumerate(blocks):
            assert math.isclose(norms[idx][col], block.norm(), rel_tol=1e-12)
            expected_rms = math.sqrt(float((block**2).mean()))
            assert math.isclose(rms[idx][col], expected_rms, rel_tol=1e-12)
        flat = torch.cat(blocks)
        assert math.isclose(
            vector_norm(vectors, leading=len(lead))[idx], flat.norm(), rel_tol=1e-12
        )
        assert math.isclose(
            vector_rms(vectors, leading=len(lead))[idx], flat.square().mean().sqrt(), rel_tol=1e-12
        )


def test_fp32_norms_do_not_overflow():
    vectors = {"w": torch.full((2, 3), 1e30, dtype=torch.float32)}
    squares, _ = layer_squared_norms(vectors, leading=1)
    assert squares.dtype == torch.float64 and torch.isfinite(squares).all()
    torch.testing.assert_close(
        vector_norm(vectors, leading=1), torch.full((2,), math.sqrt(3) * 1e30, dtype=torch.float64)
    )


def test_cancellation_ratio_matches_per_pair_definition(case):
    terms = bracket_terms(case.model, case.loss_fn, case.params, case.data)
    rho = cancellation_ratio(terms)
    n = case.data[0].shape[0]
    assert rho.shape == (n, n)
    names = list(case.params)

    def flat(d, *index):
        return torch.cat([d[k][index].reshape(-1) for k in names])

    for i in range(n):
        for j in range(n):
            h_j_gi = flat(terms.hessian_gradients, j, i)
            h_i_gj = flat(terms.hessian_gradients, i, j)
            expected = (
                0.0 if i == j else float((h_j_gi - h_i_gj).norm() / (h_j_gi.norm() + h_i_gj.norm()))
            )
            assert math.isclose(rho[i, j], expected, rel_tol=1e-12, abs_tol=0)
    torch.testing.assert_close(rho, rho.T, rtol=0, atol=0)
    off = rho[~torch.eye(n, dtype=torch.bool)]
    assert bool((off > 0).all() and (off <= 1).all())


def test_cancellation_ratio_is_zero_not_nan_where_both_products_vanish():
    zeros = {"w": torch.zeros(3, 3, 2, dtype=torch.float64)}
    gradients = {"w": torch.zeros(3, 2, dtype=torch.float64)}
    rho = cancellation_ratio(BracketTerms(gradients, zeros))
    assert torch.equal(rho, torch.zeros(3, 3, dtype=torch.float64))


def test_bad_vectors_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="non-empty dict"):
        vector_norm({})
    with pytest.raises(ValueError, match="leading dimension"):
        vector_norm({"a": torch.zeros(3, 2), "b": torch.zeros(4, 2)}, leading=1)
    with pytest.raises(ValueError, match="fewer than leading=2"):
        layer_rms({"a": torch.zeros(3)}, leading=2)
    with pytest.raises(TypeError, match="not a tensor"):
        layer_norms({"a": [1.0, 2.0]})

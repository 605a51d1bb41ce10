"""Tilt weights, the weighted loss, diagnostics and the first-order shift."""

import math

import pytest
import torch
from cases import random_dH as _dH

from perturbative.tilt import (
    AdjustedBatchSampler,
    check_tilt,
    first_order_shift,
    log_tilt_weights,
    tilt_weights,
    weighted_loss,
)


def test_weights_are_normalised_exp_minus_lambda_dH():
    dH = _dH()
    for strength in (0.0, 0.3, -2.0):
        w = tilt_weights(dH, strength)
        raw = torch.exp(-strength * dH)
        torch.testing.assert_close(w, raw / raw.mean())
        assert w.mean().item() == pytest.approx(1.0, abs=1e-12)


def test_weights_ignore_constant_shift_and_survive_huge_values():
    dH = _dH()
    torch.testing.assert_close(tilt_weights(dH + 1e4, 2.0), tilt_weights(dH, 2.0))
    # exp(-lambda dH) alone would overflow to inf/0 here; log space keeps it exact.
    big = tilt_weights(dH * 1e3, 1.0)
    assert torch.isfinite(big).all() and big.mean().item() == pytest.approx(1.0)
    assert int(big.argmax()) == int(dH.argmin())
    logw = log_tilt_weights(dH * 1e3)
    assert torch.logsumexp(logw, 0).item() == pytest.approx(math.log(50))


def test_zero_strength_is_uniform_and_dtype_follows_dH():
    assert torch.equal(tilt_weights(_dH().float(), 0.0), torch.ones(50))
    assert tilt_weights(_dH().float()).dtype == torch.float32
    assert tilt_weights(torch.arange(4)).dtype == torch.float32


def test_callable_dH_is_called_on_data():
    x = torch.randn(20, 2, dtype=torch.float64)
    w = tilt_weights(lambda d: d[:, 0], 0.7, data=x)
    torch.testing.assert_close(w, tilt_weights(x[:, 0], 0.7))
    with pytest.raises(ValueError, match="pass data="):
        tilt_weights(lambda d: d[:, 0], 0.7)


def test_non_finite_dH_names_indices():
    dH = _dH(10)
    dH[3] = float("nan")
    dH[7] = float("inf")
    with pytest.raises(ValueError, match=r"indices 3, 7"):
        tilt_weights(dH)
    with pytest.raises(ValueError, match="shape"):
        tilt_weights(torch.zeros(3, 2))


def test_weighted_loss_sums_weighted_terms_over_target():
    losses = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64, requires_grad=True)
    w = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    loss = weighted_loss(losses, w, 4.0)
    assert loss.item() == pytest.approx((0.5 + 2.0 + 8.0) / 4.0)
    loss.backward()
    torch.testing.assert_close(losses.grad, w / 4.0)
    # Uniform weights and the batch length as target: the ordinary mean loss.
    assert weighted_loss(losses, torch.ones(3), 3).item() == pytest.approx(7 / 3)
    with pytest.raises(ValueError, match="reduction='none'"):
        weighted_loss(torch.ones(3, 2), torch.ones(3), 1.0)
    with pytest.raises(ValueError, match="index the weights"):
        weighted_loss(losses, torch.ones(2), 1.0)


def test_first_order_shift_is_derivative_of_tilted_mean():
    dH = _dH(40, seed=1)
    obs = torch.stack([dH**2 + _dH(40, seed=2), torch.sin(dH)], 1)

    def tilted_mean(lam):
        w = tilt_weights(dH, lam)
        return (w[:, None] * obs).mean(0)

    eps = 1e-5
    finite_difference = (tilted_mean(eps) - tilted_mean(-eps)) / (2 * eps)
    torch.testing.assert_close(first_order_shift(obs, dH), finite_difference, rtol=1e-7, atol=1e-9)
    # Scalar observable: -Cov(O, dH), the population covariance.
    o = obs[:, 0]
    cov = ((o - o.mean()) * (dH - dH.mean())).mean()
    assert first_order_shift(o, dH).item() == pytest.approx(-cov.item())
    with pytest.raises(ValueError, match="leading dimension"):
        first_order_shift(o[:5], dH)


def test_categorical_model_trained_tilted_converges_to_p_prime():
    """Softmax over K outcomes, weighted NLL with adjusted batches -> p'(k) ~ p(k) exp(-dH(k)).

    The minimiser of sum_i w_i L_i is the weighted empirical distribution p'_N(k) = sum_{i: x_i=k}
    w_i / N, so the trained model must be within TV 0.01 of it (optimisation error only), and
    within TV 0.03 of the exact p' (plus the sampling error of N = 20000 draws, about 0.01).
    """
    g = torch.Generator().manual_seed(0)
    k_outcomes = 5
    p = torch.softmax(torch.randn(k_outcomes, generator=g, dtype=torch.float64), 0)
    dH_k = torch.randn(k_outcomes, generator=g, dtype=torch.float64)
    x = torch.multinomial(p, 20000, replacement=True, generator=g)
    w = tilt_weights(dH_k[x], 1.0)
    check_tilt(w, target_batch_size=64)  # a moderate tilt: must not warn

    p_prime = p * torch.exp(-dH_k)
    p_prime = p_prime / p_prime.sum()
    p_prime_n = torch.zeros(k_outcomes, dtype=torch.float64).index_add_(0, x, w) / len(x)

    logits = torch.zeros(k_outcomes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.05)
    sampler = AdjustedBatchSampler(w, 64.0, seed=0)
    steps = 3 * len(sampler)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)
    for _ in range(3):
        for batch in sampler:
            losses = -torch.log_softmax(logits, 0)[x[batch]]
            loss = weighted_loss(losses, w[batch], 64.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model = torch.softmax(logits.detach(), 0)
    assert 0.5 * (model - p_prime_n).abs().sum() < 0.01
    assert 0.5 * (model - p_prime).abs().sum() < 0.03
    # The untilted data is far from p': the test would fail without the weights.
    p_n = torch.bincount(x, minlength=k_outcomes).double() / len(x)
    assert 0.5 * (p_n - p_prime).abs().sum() > 0.1

"""The denoising diffusion model: schedule, sampler, losses and the batching schemes."""

import inspect

import pytest
import torch

from perturbative.demos.diffusion import (
    Denoiser,
    denoiser_settings,
    energy_distance,
    importance_resample,
    noise_schedule,
    sample_denoiser,
    train_denoiser,
)
from perturbative.demos.digits_tilt import DigitsTiltConfig
from perturbative.demos.two_moons import TiltDemoConfig, two_moons
from perturbative.tilt import tilt_weights


def test_noise_schedule_decreases_from_one_to_near_zero():
    abar = noise_schedule(100)
    assert abar.shape == (101,) and abar[0] == 1
    assert torch.all(abar[1:] < abar[:-1])
    assert abar[-1] < 1e-4
    with pytest.raises(ValueError, match="noise levels"):
        noise_schedule(10)


def test_sampler_with_exact_noise_predictor_of_a_gaussian_recovers_it():
    """For x_0 ~ N(0, I) the exact predictor is E[eps | x_t] = sqrt(1 - abar_t) x_t."""

    class Exact(torch.nn.Module):
        num_steps, dim = 100, 2

        def forward(self, x, t):
            return (1 - noise_schedule(100).float()[t]).sqrt()[:, None] * x

    x = sample_denoiser(Exact(), 8000, torch.Generator().manual_seed(0))
    # Standard errors 0.011 (mean) and 0.008 (std): 4-5 sigma bounds.
    torch.testing.assert_close(x.mean(0), torch.zeros(2), atol=0.05, rtol=0)
    torch.testing.assert_close(x.std(0), torch.ones(2), atol=0.04, rtol=0)


def test_energy_distance_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 2, generator=g, dtype=torch.float64)
    y = torch.randn(300, 2, generator=g, dtype=torch.float64)
    assert energy_distance(x, x) == pytest.approx(0.0, abs=1e-12)
    assert energy_distance(x, y) == pytest.approx(energy_distance(y, x))
    assert energy_distance(x, y) < 0.05 < energy_distance(x, y + 1.0)


def test_importance_resampling_draws_in_proportion_to_weights():
    data = torch.arange(4.0)[:, None]
    w = torch.tensor([0.5, 1.5, 2.0, 0.0])
    draws = importance_resample(data, w, 40000, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws[:, 0].long(), minlength=4) / 40000
    torch.testing.assert_close(freq, torch.tensor([0.125, 0.375, 0.5, 0.0]), atol=0.01, rtol=0)


def test_uniform_weights_reproduce_plain_training():
    data = two_moons(200, seed=1)
    kw = dict(steps=20, batch_size=32, num_steps=30, hidden=16, seed=3)
    plain = train_denoiser(data, batching="plain", **kw)
    weighted = train_denoiser(data, torch.ones(200), batching="weighted", **kw)
    for a, b in zip(plain.model.parameters(), weighted.model.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="batching"):
        train_denoiser(data, batching="magic")


def test_adjusted_batches_sum_to_target_on_average():
    data = two_moons(1000, seed=0)
    w = tilt_weights(data[:, 0].double(), 1.5).float()
    run = train_denoiser(data, w, batching="adjusted", steps=40, batch_size=50, hidden=8)
    full = run.adjusted_sizes[:-1]  # batch 20 ends the first epoch and may be partial
    assert abs(full.mean() - 50) < w.max().item()
    assert run.batch_lengths.std() > 0  # lengths vary, adjusted sizes do not
    assert run.adjusted_sizes[:19].std() < w.max().item()


def test_denoiser_shapes():
    model = Denoiser(50, hidden=8)
    out = model(torch.randn(5, 2), torch.randint(1, 51, (5,)))
    assert out.shape == (5, 2)


def test_both_demos_hand_their_own_training_settings_to_the_trainer():
    moons = TiltDemoConfig(steps=7, batch_size=5, lr=1e-3, hidden=9, diffusion_steps=11, seed=3)
    digits = DigitsTiltConfig(steps=8, batch_size=6, lr=2e-3, hidden=10, diffusion_steps=12)
    assert denoiser_settings(moons) == dict(
        steps=7, batch_size=5, lr=1e-3, hidden=9, num_steps=11, seed=3
    )
    assert denoiser_settings(digits)["num_steps"] == 12
    assert set(denoiser_settings(digits)) <= set(inspect.signature(train_denoiser).parameters)

"""Tilt weights, the weighted loss, diagnostics and the first-order shift."""

import warnings

import pytest
import torch
from cases import random_dH as _dH

from perturbative.tilt import (
    AdjustedBatchSampler,
    TiltWarning,
    check_tilt,
    effective_sample_size,
    max_weight_share,
    tilt_weights,
)


def test_kish_ess_and_max_share_closed_forms():
    assert effective_sample_size(torch.ones(7)) == pytest.approx(7)
    assert effective_sample_size([0.0, 3.0, 0.0]) == pytest.approx(1)
    # (1 + 3)^2 / (1 + 9) = 1.6
    assert effective_sample_size([1.0, 3.0]) == pytest.approx(1.6)
    assert max_weight_share([1.0, 3.0]) == pytest.approx(0.75)
    assert max_weight_share(torch.ones(4)) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="nonnegative"):
        effective_sample_size([1.0, -1.0])


def test_check_tilt_quiet_for_small_tilt_and_warns_for_large():
    dH = _dH(1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        diag = check_tilt(tilt_weights(dH, 0.1), target_batch_size=32)
    assert diag.problems == ()
    assert diag.ess_fraction == pytest.approx(
        1 / (1 + tilt_weights(dH, 0.1).var(0, unbiased=False).item())
    )
    with pytest.warns(TiltWarning, match="effective sample size") as record:
        diag = check_tilt(tilt_weights(dH, 4.0), target_batch_size=32)
    assert len(record) == 1
    assert len(diag.problems) == 3  # ESS, one example's share, heavier than a batch
    assert diag.max_weight > 32


def test_check_tilt_reports_batch_ess():
    w = tilt_weights(_dH(200), 0.5)
    sampler = AdjustedBatchSampler(w, 20.0, seed=1)
    batches = list(sampler)
    diag = check_tilt(w, batches=batches, warn=False)
    per_batch = [effective_sample_size(w[b]) for b in batches]
    assert diag.batch_ess_mean == pytest.approx(sum(per_batch) / len(per_batch))
    assert diag.batch_ess_min == pytest.approx(min(per_batch))
    assert set(diag.as_dict()) >= {"effective_sample_size", "max_weight_share", "problems"}

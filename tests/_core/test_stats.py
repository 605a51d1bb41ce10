"""Ranks and correlations against numpy."""

import numpy as np
import pytest

from perturbative._core.stats import average_ranks, pearson, spearman


def test_spearman_ranks_ties_by_their_mean_rank():
    np.testing.assert_array_equal(average_ranks(np.array([3.0, 1.0, 2.0, 2.0])), [3, 0, 1.5, 1.5])


def test_correlations_match_numpy():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=50)
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert np.isnan(pearson(np.ones(3), x[:3]))

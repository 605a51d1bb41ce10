"""Fixtures built from the problems in ``cases.py``."""

import pytest
from cases import CASES, least_squares


@pytest.fixture(params=sorted(CASES))
def case(request):
    """Each tiny float64 problem in turn (linear/MSE, MLP/BCE, convnet+BatchNorm/CE)."""
    return CASES[request.param]()


@pytest.fixture
def least_squares_case():
    """One-output linear model with loss ``1/2 (w . x - y)^2``."""
    return least_squares()

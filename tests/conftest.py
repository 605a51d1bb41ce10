"""Fixtures built from the problems in ``cases.py``."""

import os

import pytest
import torch
from cases import CASES, EVIL_NAMES, least_squares, write_synthetic_results

from perturbative.report import write_report

# The command line picks its thread count from the idle cores unless OMP_NUM_THREADS is set;
# tests that call it in-process must not change the suite's one thread.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tests run tiny models: one intra-op thread is as fast on a quiet machine and avoids the
    tens-fold slowdown of oversubscribed threads when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=sorted(CASES))
def case(request):
    """Each tiny float64 problem in turn (linear/MSE, MLP/BCE, convnet+BatchNorm/CE)."""
    return CASES[request.param]()


@pytest.fixture
def least_squares_case():
    """One-output linear model with loss ``1/2 (w . x - y)^2``."""
    return least_squares()


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """A synthetic results directory with names that must be escaped, and its report."""
    run = tmp_path_factory.mktemp("runs") / 'run<b>&"x'
    written = write_synthetic_results(run, attribute_names=EVIL_NAMES)
    return written, write_report(written["dir"])

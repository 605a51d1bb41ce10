"""Per-example gradients and Hessian-vector products against plain autograd and dense Hessians."""

import pytest
import torch
from cases import DTYPE, ENGINES, autograd_gradient

from perturbative.brackets import mean_gradient, per_example_gradients


class _WithUnusedHead(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.used = torch.nn.Linear(2, 1)
        self.unused = torch.nn.Linear(2, 1)

    def forward(self, x):
        return self.used(x)


@pytest.mark.parametrize("engine", ENGINES)
def test_per_example_gradients_match_one_backward_per_example(case, engine):
    got = per_example_gradients(case.model, case.loss_fn, case.params, case.data, engine=engine)
    n = case.data[0].shape[0]
    for i in range(n):
        expected = autograd_gradient(case, case.example(i))
        for k in expected:
            torch.testing.assert_close(got[k][i], expected[k], rtol=1e-10, atol=1e-13)


def test_forward_engine_chunks_give_the_same_gradients(case):
    whole = per_example_gradients(
        case.model, case.loss_fn, case.params, case.data, engine="forward"
    )
    chunked = per_example_gradients(
        case.model, case.loss_fn, case.params, case.data, engine="forward", chunk_size=2
    )
    for k in whole:
        torch.testing.assert_close(chunked[k], whole[k], rtol=1e-12, atol=1e-14)


def test_mean_gradient_is_mean_of_per_example_gradients_on_uneven_batches(case):
    per_example = per_example_gradients(case.model, case.loss_fn, case.params, case.data)
    start = 0
    for size in case.splits:
        batch = tuple(t[start : start + size] for t in case.data)
        got = mean_gradient(case.model, case.loss_fn, case.params, batch)
        for k in got:
            expected = per_example[k][start : start + size].mean(dim=0)
            torch.testing.assert_close(got[k], expected, rtol=1e-10, atol=1e-13)
        start += size


def test_parameters_the_loss_does_not_use_have_zero_fields_in_both_engines():
    torch.manual_seed(7)
    model = _WithUnusedHead().to(DTYPE)
    data = (torch.randn(3, 2, dtype=DTYPE), torch.randn(3, 1, dtype=DTYPE))
    params = dict(model.named_parameters())

    def loss_fn(outputs, targets):
        return ((outputs - targets) ** 2).mean()

    forward = per_example_gradients(model, loss_fn, params, data, engine="forward")
    assert float(forward["unused.weight"].abs().sum()) == 0.0
    backward = per_example_gradients(model, loss_fn, params, data, engine="double_backward")
    for k in forward:
        torch.testing.assert_close(backward[k], forward[k], rtol=1e-12, atol=0)

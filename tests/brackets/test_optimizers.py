"""The functional optimizer updates reproduce torch.optim's steps from any state."""

import copy

import pytest
import torch
from cases import CASES, autograd_gradient

from perturbative.brackets._optimizers import functional_optimizer

OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
    "momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.2),
    "nesterov_wd": lambda p: torch.optim.SGD(
        p, lr=0.1, momentum=0.8, nesterov=True, weight_decay=0.01
    ),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.999)),
    "adam_wd": lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.05),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.05),
}


@pytest.mark.parametrize("warmup", [0, 3])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_functional_steps_equal_torch_steps(name, warmup):
    case = CASES["mlp_bce"]()
    optimizer = OPTIMIZERS[name](case.model.parameters())
    for i in range(warmup):  # a real state to start from (or none at all)
        optimizer.zero_grad()
        case.loss_fn(case.model(case.data[0][i : i + 2]), case.data[1][i : i + 2]).backward()
        optimizer.step()
    grads = [autograd_gradient(case, case.example(i)) for i in range(3)]
    functional = functional_optimizer(optimizer, case.params)
    theta = {k: v.detach().clone() for k, v in case.params.items()}
    path = functional.run(theta, grads)

    model, real = copy.deepcopy((case.model, optimizer))
    for i, g in enumerate(grads):
        for k, p in model.named_parameters():
            p.grad = g[k].clone()
        real.step()
        for k, p in model.named_parameters():
            torch.testing.assert_close(path[i][k], p.detach(), rtol=1e-12, atol=1e-14)
    assert all(torch.equal(theta[k], v) for k, v in case.params.items())  # inputs untouched


def test_unmodelled_optimizers_are_named():
    case = CASES["linear_mse"]()
    with pytest.raises(ValueError, match="RMSprop is not modelled"):
        functional_optimizer(torch.optim.RMSprop(case.model.parameters()), case.params)
    with pytest.raises(ValueError, match="amsgrad"):
        functional_optimizer(torch.optim.Adam(case.model.parameters(), amsgrad=True), case.params)

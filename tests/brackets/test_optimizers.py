"""The functional optimizer updates reproduce torch.optim's steps from any state, and a training
step's schedule and clipping."""

import copy
import dataclasses

import pytest
import torch
from cases import CASES, assert_dicts_close, autograd_gradient

import perturbative as pt
from perturbative.brackets import vector_norm
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


@pytest.mark.parametrize("name", ["momentum", "adamw"])
def test_functional_steps_follow_the_loops_schedule_and_clipping(name):
    """Two param groups at their own lrs, a scheduler stepped after each step and clipping before
    it: the functional steps of the TrainingStep equal the loop's torch steps, and the schedule
    position ``start`` picks up where an earlier run left it."""
    case = CASES["mlp_bce"]()
    weights = [p for k, p in case.model.named_parameters() if k.endswith("weight")]
    biases = [p for k, p in case.model.named_parameters() if k.endswith("bias")]
    optimizer = OPTIMIZERS[name]([{"params": weights}, {"params": biases, "lr": 0.03}])
    for i in range(2):  # a real state to start from
        optimizer.zero_grad()
        case.loss_fn(case.model(case.data[0][i : i + 2]), case.data[1][i : i + 2]).backward()
        optimizer.step()
    lambdas = [lambda s: 0.5**s, lambda s: 1 + s]
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
    grads = [autograd_gradient(case, case.example(i)) for i in range(4)]
    clip = 0.5 * min(float(vector_norm(g)) for g in grads)  # every step clipped
    step = pt.TrainingStep(optimizer, max_grad_norm=clip, scheduler=schedule)
    functional = functional_optimizer(step, case.params)
    theta = {k: v.detach().clone() for k, v in case.params.items()}
    path = functional.run(theta, grads)

    model, real = copy.deepcopy((case.model, optimizer))
    real_schedule = torch.optim.lr_scheduler.LambdaLR(real, lambdas)  # the loop's, on the copy
    for i, g in enumerate(grads):
        for k, p in model.named_parameters():
            p.grad = g[k].clone()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()), clip)
        real.step()
        real_schedule.step()
        for k, p in model.named_parameters():
            torch.testing.assert_close(path[i][k], p.detach(), rtol=1e-12, atol=1e-14)
    assert schedule.last_epoch == 0 and optimizer.param_groups[1]["lr"] == 0.03  # untouched
    # from the state two steps in, at schedule position 2, the last two steps are the same
    params, state = theta, functional.state
    for i in range(2):
        params, state = functional.step(params, grads[i], state, i)
    resumed = dataclasses.replace(functional, state=state).run(params, grads[2:], start=2)
    for got, expected in zip(resumed, path[2:], strict=True):
        assert_dicts_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["momentum", "adam", "adamw"])
def test_a_recomputed_step_is_the_same_step_and_the_same_derivative(name):
    """``recompute=True`` holds no intermediate of the update rule for the backward pass: the
    step and its derivative along a later scalar are those of the plain step, in float64."""
    case = CASES["mlp_bce"]()
    optimizer = OPTIMIZERS[name](case.model.parameters())
    for i in range(2):
        optimizer.zero_grad()
        case.loss_fn(case.model(case.data[0][i : i + 2]), case.data[1][i : i + 2]).backward()
        optimizer.step()
    step = pt.TrainingStep(optimizer, max_grad_norm=0.5)
    functional = functional_optimizer(step, case.params)
    outcomes = []
    for recompute in (False, True):
        theta = {k: v.detach().clone().requires_grad_() for k, v in case.params.items()}
        grads = {k: torch.sin(3 * v) for k, v in theta.items()}  # depends on theta
        params, state = functional.step(theta, grads, functional.state, 0, recompute=recompute)
        params, _ = functional.step(params, grads, state, 1, recompute=recompute)
        value = sum((p**2).sum() for p in params.values())
        outcomes.append((params, torch.autograd.grad(value, list(theta.values()))))
    (plain, d_plain), (recomputed, d_recomputed) = outcomes
    assert_dicts_close(plain, recomputed, rtol=0, atol=0)
    for a, b in zip(d_plain, d_recomputed, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-15)

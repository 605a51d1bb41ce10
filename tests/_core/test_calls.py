"""A module and a loss bound into pure functions of the parameters."""

import torch
from cases import CASES

from perturbative._core.calls import batch_loss, example_loss, fixed_state, grad_or_zero, stack


def test_example_and_batch_losses_are_the_per_example_terms_and_their_mean():
    case = CASES["mlp_bce"]()
    state = fixed_state(case.model, case.params)
    per_example = example_loss(case.model, case.loss_fn, state)
    values = [per_example(case.params, *(t[i] for t in case.data)) for i in range(6)]
    for i, value in enumerate(values):
        direct = case.loss_fn(case.model(case.data[0][i : i + 1]), case.data[1][i : i + 1])
        torch.testing.assert_close(value, direct)
    mean = batch_loss(case.model, case.loss_fn, state)(case.params, *case.data)
    torch.testing.assert_close(mean, torch.stack(values).mean())


def test_parameters_left_out_of_params_are_held_fixed():
    case = CASES["linear_mse"]()
    params = {"weight": case.params["weight"]}
    state = fixed_state(case.model, params)
    assert set(state) == {"bias"} and not state["bias"].requires_grad


def test_an_unused_parameter_gets_a_zero_gradient():
    used, unused = torch.ones(2, requires_grad=True), torch.ones(3, requires_grad=True)
    grads = grad_or_zero([(used * 2).sum()], [used, unused])
    assert torch.equal(grads[0], torch.full((2,), 2.0)) and torch.equal(grads[1], torch.zeros(3))
    assert torch.equal(grad_or_zero([torch.tensor(1.0)], [used])[0], torch.zeros(2))


def test_stack_gives_a_leading_dimension():
    stacked = stack([{"w": torch.zeros(2)}, {"w": torch.ones(2)}])
    assert stacked["w"].shape == (2, 2) and stacked["w"][1].sum() == 2

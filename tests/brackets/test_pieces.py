"""The smooth piece of a network with ReLU and max pooling: recorded at one point, held at
another."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from perturbative.brackets import PieceMismatchError, on_pieces, record_pieces


class PooledNet(nn.Module):
    """Every piecewise call form: ``nn.ReLU``, ``Tensor.relu``, ``nn.MaxPool2d`` and
    ``F.max_pool1d`` asked for its indices."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.linear = nn.Linear(12, 4)

    def forward(self, x):
        h = self.pool(self.relu(self.conv(x)))  # (n, 3, 4, 4)
        h, _ = F.max_pool1d(h.flatten(2), 4, return_indices=True)  # (n, 3, 4)
        return self.linear(h.flatten(1)).relu().sum(1)


def perturbed(model, scale, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {
        k: v.detach() + scale * torch.randn(v.shape, generator=g, dtype=v.dtype)
        for k, v in model.named_parameters()
    }


def call(model, params, x):
    return torch.func.functional_call(model, params, (x,))


def test_a_held_piece_equals_the_network_where_it_was_recorded():
    model, x = PooledNet().double(), torch.randn(5, 1, 8, 8, dtype=torch.float64)
    there = perturbed(model, 0.3)
    selections = record_pieces(lambda: call(model, there, x))
    assert [s.kind for s in selections] == ["relu", "max_pool", "max_pool", "relu"]
    with on_pieces(selections):
        held = call(model, there, x)
        again = call(model, there, x)  # a second forward pass starts the sequence again
    torch.testing.assert_close(held, call(model, there, x), rtol=0, atol=0)
    torch.testing.assert_close(again, held, rtol=0, atol=0)


def test_the_piece_is_smooth_and_its_gradient_is_the_networks_where_it_was_recorded():
    # the piece recorded at `there`, differentiated at `there`, is the network's gradient; at
    # `here` (another piece: winners and signs differ) it is the gradient of the piece's
    # function, an affine-in-activations network with fixed masks and winners
    model, x = PooledNet().double(), torch.randn(5, 1, 8, 8, dtype=torch.float64)
    here, there = dict(model.named_parameters()), perturbed(model, 0.3)
    selections = record_pieces(lambda: call(model, there, x))
    assert any(
        not torch.equal(a.chosen, b.chosen)
        for a, b in zip(selections, record_pieces(lambda: call(model, here, x)), strict=True)
    )

    def gradient(params, holding):
        leaves = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
        if holding:
            with on_pieces(selections):
                value = call(model, leaves, x).sum()
        else:
            value = call(model, leaves, x).sum()
        return torch.autograd.grad(value, list(leaves.values()))

    for a, b in zip(gradient(there, True), gradient(there, False), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # the held piece is smooth at `here`: its gradient changes linearly along a direction
    # (central difference against the exact HVP of the piece, float64)
    direction = perturbed(model, 1.0, seed=2)
    direction = {k: direction[k] - model.get_parameter(k).detach() for k in direction}

    def piece_value(params):
        with on_pieces(selections):
            return call(model, params, x).sum()

    _, exact = torch.func.jvp(
        torch.func.grad(piece_value), ({k: v.detach() for k, v in here.items()},), (direction,)
    )
    eps = 1e-5
    plus = {k: here[k].detach() + eps * direction[k] for k in here}
    minus = {k: here[k].detach() - eps * direction[k] for k in here}
    for name, a, b in zip(here, gradient(plus, True), gradient(minus, True), strict=True):
        torch.testing.assert_close((a - b) / (2 * eps), exact[name], rtol=1e-6, atol=1e-8)


def test_a_forward_pass_unlike_the_recorded_one_is_refused():
    model = PooledNet().double()
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    selections = record_pieces(lambda: model(x))
    with on_pieces(selections), pytest.raises(PieceMismatchError, match="same batch"):
        model(x[:3])


def test_a_smooth_model_has_one_piece_and_nothing_is_held():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    x = torch.randn(2, 3, dtype=torch.float64)
    assert record_pieces(lambda: model(x)) == []
    with on_pieces([]):
        torch.testing.assert_close(model(x), model(x))

"""MXResNet structure, Mish's derivatives, zero-initialised residual branches."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from perturbative.models import Mish, MXResNet, ResBlock, mish, mxresnet


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and a busy machine makes two threads crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def analytic_mish_derivatives(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First and second derivative of x tanh(softplus(x)), by hand (float64).

    With s = sigmoid(x), t = tanh(softplus(x)): t' = (1 - t^2) s, s' = s (1 - s),
    t'' = -2 t t' s + (1 - t^2) s', f' = t + x t', f'' = 2 t' + x t''.
    """
    s = torch.sigmoid(x)
    t = torch.tanh(F.softplus(x))
    dt = (1 - t**2) * s
    ddt = -2 * t * dt * s + (1 - t**2) * s * (1 - s)
    return t + x * dt, 2 * dt + x * ddt


def test_mish_matches_torch_and_hand_derivatives():
    x = torch.linspace(-30, 30, 301, dtype=torch.float64, requires_grad=True)
    y = mish(x)
    torch.testing.assert_close(y, F.mish(x))
    (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), x)
    first, second = analytic_mish_derivatives(x.detach())
    torch.testing.assert_close(g, first)
    torch.testing.assert_close(h, second)


def test_mish_second_derivative_finite_in_float32_where_fused_mish_is_nan():
    x = torch.tensor([-1e4, -100.0, -5.0, 0.0, 5.0, 100.0, 1e4], requires_grad=True)

    def second(fn):
        (g,) = torch.autograd.grad(fn(x).sum(), x, create_graph=True)
        (h,) = torch.autograd.grad(g.sum(), x)
        return h

    ours = second(mish)
    assert torch.isfinite(ours).all()
    _, expected = analytic_mish_derivatives(x.detach().double())
    torch.testing.assert_close(ours.double(), expected, atol=1e-6, rtol=1e-5)
    # the reason Mish is written out: the fused kernel's double backward overflows
    assert torch.isnan(second(F.mish)).any()


@pytest.mark.parametrize(
    "depth, blocks, bottleneck", [(18, 8, False), (34, 16, False), (50, 16, True)]
)
def test_depths_shapes_and_block_counts(depth, blocks, bottleneck):
    model = mxresnet(depth, num_outputs=7, width=0.125, in_channels=1)
    res_blocks = [m for m in model.modules() if isinstance(m, ResBlock)]
    assert len(res_blocks) == blocks
    assert all((len(b.convs) == 3) == bottleneck for b in res_blocks)
    assert model(torch.randn(3, 1, 32, 32)).shape == (3, 7)


def test_stem_and_stage_layout_at_full_width():
    model = mxresnet(18, num_outputs=40)
    convs = [m for m in model.stem.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == [
        (3, 32, 2),
        (32, 64, 1),
        (64, 64, 1),
    ]
    assert isinstance(model.stem[-1], nn.MaxPool2d) and model.stem[-1].stride == 2
    assert not any(isinstance(m, (nn.ReLU, nn.MultiheadAttention)) for m in model.modules())
    x = torch.randn(2, 3, 64, 64)
    sizes = []
    h = model.stem(x)
    sizes.append(tuple(h.shape[1:]))
    for stage in model.stages:
        h = stage(h)
        sizes.append(tuple(h.shape[1:]))
    assert sizes == [(64, 16, 16), (64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)]
    assert model.head[-1].in_features == 512 and model.head[-1].out_features == 40
    assert mxresnet(50).num_features == 2048


def test_residual_blocks_start_as_their_shortcut():
    torch.manual_seed(0)
    same = ResBlock(8, 8, expansion=1, stride=1)
    down = ResBlock(8, 4, expansion=4, stride=2)
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(same(x), mish(x))
    assert isinstance(down.pool, nn.AvgPool2d) and isinstance(down.shortcut, nn.Sequential)
    torch.testing.assert_close(down(x), mish(down.shortcut(F.avg_pool2d(x, 2, ceil_mode=True))))
    assert down(x).shape == (2, 16, 3, 3)


def test_eval_mode_outputs_are_per_example():
    """BatchNorm in eval mode (as the brackets use it): an example's output ignores the batch."""
    torch.manual_seed(0)
    model = mxresnet(18, num_outputs=5, width=0.125, in_channels=1).double()
    model.train()
    model(torch.randn(16, 1, 16, 16, dtype=torch.float64))  # move the running statistics
    model.eval()
    x = torch.randn(4, 1, 16, 16, dtype=torch.float64)
    together = model(x)
    alone = torch.cat([model(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone)


def test_hessian_vector_products_are_finite_and_symmetric():
    """<u, H v> = <H u, v> on a tiny float64 model (second derivatives through every Mish)."""
    torch.manual_seed(0)
    model = mxresnet(18, num_outputs=3, width=0.0625, in_channels=1).double().eval()
    for module in model.modules():  # give the zero-initialised branches something to do
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 1.5)
    params = [p for p in model.parameters()]
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    loss = F.binary_cross_entropy_with_logits(model(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    u = [torch.randn_like(p) for p in params]
    v = [torch.randn_like(p) for p in params]

    def hvp(w):
        dot = sum((g * wi).sum() for g, wi in zip(grads, w, strict=True))
        return torch.autograd.grad(dot, params, retain_graph=True)

    hu, hv = hvp(u), hvp(v)
    u_hv = sum((a * b).sum() for a, b in zip(u, hv, strict=True))
    hu_v = sum((a * b).sum() for a, b in zip(hu, v, strict=True))
    assert all(torch.isfinite(t).all() for t in hv)
    torch.testing.assert_close(u_hv, hu_v)
    assert abs(float(u_hv)) > 0


def test_invalid_arguments():
    with pytest.raises(ValueError, match="depth must be one of"):
        mxresnet(19)
    with pytest.raises(ValueError, match="width"):
        MXResNet((1, 1, 1, 1), 1, width=0.0)
    assert isinstance(mxresnet(18).stem[0][2], Mish)

"""MXResNet: a fastai-style XResNet with Mish activations and no self-attention.

Layout (channel counts at ``width=1``; every count is scaled by ``width`` and rounded):

* stem: three 3x3 conv-BN-Mish layers ``in_channels -> 32 -> 64 -> 64``, the first at stride 2,
  then a 3x3 max-pool at stride 2 (so the stem divides the resolution by 4);
* four stages of residual blocks with ``64, 128, 256, 512`` channels (times 4 with bottlenecks),
  the first stage at stride 1 and the others starting at stride 2;
* each block computes ``mish(convs(x) + shortcut(x))``; the last BatchNorm of ``convs`` has its
  scale initialised to zero, so every block starts as the identity map of its shortcut;
* the shortcut is the identity where the shape is kept, else a 2x2 average pool (where the
  stride is 2) followed by a 1x1 conv-BN (where the channel count changes);
* head: global average pool, then one linear layer to ``num_outputs`` logits.

Depths: 18 and 34 use basic blocks (two 3x3 convs), 50 uses bottlenecks (1x1, 3x3, 1x1 convs with
expansion 4). Inputs are ``(N, in_channels, H, W)`` with ``H, W >= 8``; outputs are ``(N,
num_outputs)`` logits.

Mish is written as ``x * tanh(softplus(x))`` from differentiable primitives: the bracket needs
Hessian-vector products, i.e. second derivatives of the activation, and the double backward of
PyTorch's fused ``mish`` returns NaN in float32 for inputs above about 90 (its ``exp`` overflows).
``softplus`` switches to the identity above 20, so no ``exp`` overflows here.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

# Residual blocks per stage and the expansion (output channels / inner channels) of each depth.
DEPTHS: dict[int, tuple[tuple[int, ...], int]] = {
    18: ((2, 2, 2, 2), 1),
    34: ((3, 4, 6, 3), 1),
    50: ((3, 4, 6, 3), 4),
}


def mish(x: Tensor) -> Tensor:
    """Mish, ``x * tanh(softplus(x))``, twice differentiable with finite derivatives.

    Args:
        x: any shape.

    Returns:
        Same shape as ``x``; equals ``torch.nn.functional.mish(x)`` up to rounding.
    """
    return x * torch.tanh(F.softplus(x))


class Mish(nn.Module):
    """Module form of :func:`mish` (finite second derivatives, unlike ``nn.Mish``)."""

    def forward(self, x: Tensor) -> Tensor:
        return mish(x)


def _channels(count: int, width: float) -> int:
    return max(1, int(round(count * width)))


def conv_bn(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    activation: bool = True,
    zero_bn: bool = False,
) -> nn.Sequential:
    """Conv (no bias, 'same' padding) -> BatchNorm -> optional Mish.

    Args:
        zero_bn: start the BatchNorm scale at zero (the last layer of a residual branch).
    """
    conv = nn.Conv2d(
        in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False
    )
    nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
    bn = nn.BatchNorm2d(out_channels)
    nn.init.constant_(bn.weight, 0.0 if zero_bn else 1.0)
    layers: list[nn.Module] = [conv, bn]
    if activation:
        layers.append(Mish())
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    """Residual block ``mish(convs(x) + shortcut(x))``.

    Args:
        in_channels: channels of ``x``.
        inner_channels: channels inside the branch (the bottleneck width).
        expansion: 1 for a basic block (two 3x3 convs), 4 for a bottleneck (1x1, 3x3, 1x1);
            the block outputs ``inner_channels * expansion`` channels.
        stride: 1, or 2 to halve the resolution (in the first 3x3 conv of the branch and by a
            2x2 average pool in the shortcut).
    """

    def __init__(self, in_channels: int, inner_channels: int, expansion: int, stride: int):
        super().__init__()
        out_channels = inner_channels * expansion
        if expansion == 1:
            self.convs = nn.Sequential(
                conv_bn(in_channels, inner_channels, 3, stride=stride),
                conv_bn(inner_channels, out_channels, 3, activation=False, zero_bn=True),
            )
        else:
            self.convs = nn.Sequential(
                conv_bn(in_channels, inner_channels, 1),
                conv_bn(inner_channels, inner_channels, 3, stride=stride),
                conv_bn(inner_channels, out_channels, 1, activation=False, zero_bn=True),
            )
        self.pool = nn.AvgPool2d(2, ceil_mode=True) if stride != 1 else nn.Identity()
        self.shortcut = (
            conv_bn(in_channels, out_channels, 1, activation=False)
            if in_channels != out_channels
            else nn.Identity()
        )
        self.act = Mish()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.convs(x) + self.shortcut(self.pool(x)))


class MXResNet(nn.Module):
    """XResNet with Mish activations and no self-attention; see the module docstring.

    Args:
        layers: residual blocks per stage (four stages).
        expansion: 1 (basic blocks) or 4 (bottlenecks).
        num_outputs: logits per example.
        width: multiplier for every channel count (``0.25`` gives a quarter-width network).
        in_channels: channels of the input images.

    Attributes:
        stem, stages, head: the three parts, called in that order.
    """

    def __init__(
        self,
        layers: tuple[int, ...],
        expansion: int,
        num_outputs: int = 40,
        width: float = 1.0,
        in_channels: int = 3,
    ):
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        if num_outputs < 1 or in_channels < 1:
            raise ValueError(
                f"num_outputs and in_channels must be >= 1, got {num_outputs} and {in_channels}"
            )
        stem_sizes = [in_channels] + [_channels(c, width) for c in (32, 64, 64)]
        self.stem = nn.Sequential(
            *[
                conv_bn(stem_sizes[i], stem_sizes[i + 1], 3, stride=2 if i == 0 else 1)
                for i in range(3)
            ],
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        inner = [_channels(c, width) for c in (64, 128, 256, 512)]
        stages = []
        channels = stem_sizes[-1]
        for index, (blocks, inner_channels) in enumerate(zip(layers, inner, strict=True)):
            stage = []
            for block in range(blocks):
                stride = 2 if index > 0 and block == 0 else 1
                stage.append(ResBlock(channels, inner_channels, expansion, stride))
                channels = inner_channels * expansion
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_outputs)
        )
        nn.init.kaiming_normal_(self.head[2].weight, nonlinearity="linear")
        nn.init.zeros_(self.head[2].bias)
        self.num_features = channels

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in_channels, H, W)`` images -> ``(N, num_outputs)`` logits."""
        return self.head(self.stages(self.stem(x)))


def mxresnet(
    depth: int = 18, num_outputs: int = 40, width: float = 1.0, in_channels: int = 3
) -> MXResNet:
    """An MXResNet of the given depth (18, 34 or 50).

    Args:
        depth: 18 or 34 (basic blocks) or 50 (bottlenecks).
        num_outputs: logits per example (40 for the CelebA attributes).
        width: channel multiplier (1.0 is the original MXResNet).
        in_channels: input image channels (3 for RGB, 1 for grey).

    Returns:
        A freshly initialised model in train mode (weights drawn from torch's global RNG).

    Raises:
        ValueError: for any other depth.

    Example:
        >>> model = mxresnet(18, num_outputs=40)
        >>> model(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 40])
    """
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {sorted(DEPTHS)}, got {depth}")
    layers, expansion = DEPTHS[depth]
    return MXResNet(
        layers, expansion, num_outputs=num_outputs, width=width, in_channels=in_channels
    )

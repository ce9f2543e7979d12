"""Building blocks shared by every model of the family.

Each block registers its convolutions in the order Darknet stores their weights, so
``detector.darknet_weights`` can walk a model and read/write ``.weights`` files directly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Darknet's BatchNorm epsilon (normalize_cpu: sqrt(variance + .00001f)).
BN_EPS = 1e-5


def make_activation(name: str) -> nn.Module:
    if name == "mish":
        return nn.Mish()
    if name == "leaky":
        return nn.LeakyReLU(0.1)  # Darknet's leaky slope
    if name == "silu":
        return nn.SiLU()
    if name == "relu":
        return nn.ReLU()
    if name == "linear":
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r}")


def scale_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Channels of yolov4.cfg times ``width``, rounded up to a multiple of ``divisor``."""
    if width == 1.0:
        return channels
    return max(divisor, int(math.ceil(channels * width / divisor)) * divisor)


def scale_depth(blocks: int, depth: float) -> int:
    return max(1, round(blocks * depth))


class ConvBNAct(nn.Module):
    """Darknet ``[convolutional]`` with ``batch_normalize=1`` and ``pad=1``."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, act: str = "leaky"):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=0.03)
        self.act = make_activation(act)
        self.act_name = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class ResUnit(nn.Module):
    """1x1 -> 3x3 conv with a residual shortcut (Darknet ``[shortcut] from=-3``)."""

    def __init__(self, channels: int, hidden: int, act: str):
        super().__init__()
        self.reduce = ConvBNAct(channels, hidden, 1, act=act)
        self.expand = ConvBNAct(hidden, channels, 3, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.expand(self.reduce(x))


class CSPStage(nn.Module):
    """A CSPDarknet53 stage: stride-2 conv, then a cross-stage-partial residual stack.

    Darknet layer order (weights are stored in this order): downsample, the bypass
    ("part 2") 1x1, the main-path 1x1, the residual units, the main-path closing 1x1, and
    the transition 1x1 over ``concat(main, bypass)``.
    """

    def __init__(self, c_in: int, c_out: int, num_blocks: int, act: str, first: bool = False):
        super().__init__()
        # The first stage of CSPDarknet53 keeps full width in both paths and a half-width
        # residual hidden layer; the others split the channels in half.
        split = c_out if first else c_out // 2
        hidden = c_out // 2 if first else split
        self.downsample = ConvBNAct(c_in, c_out, 3, 2, act)
        self.bypass = ConvBNAct(c_out, split, 1, act=act)
        self.main_in = ConvBNAct(c_out, split, 1, act=act)
        self.blocks = nn.Sequential(*(ResUnit(split, hidden, act) for _ in range(num_blocks)))
        self.main_out = ConvBNAct(split, split, 1, act=act)
        self.transition = ConvBNAct(2 * split, c_out, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        bypass = self.bypass(x)
        main = self.main_out(self.blocks(self.main_in(x)))
        return self.transition(torch.cat([main, bypass], dim=1))


class SPP(nn.Module):
    """Spatial pyramid pooling: max-pools 5/9/13 at stride 1, concatenated as yolov4.cfg does."""

    def __init__(self, kernels: tuple[int, ...] = (5, 9, 13)):
        super().__init__()
        self.pools = nn.ModuleList(nn.MaxPool2d(k, stride=1, padding=k // 2) for k in kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # route layers=-1,-3,-5,-6: largest pool first, the input last.
        return torch.cat([pool(x) for pool in reversed(self.pools)] + [x], dim=1)


class ConvStack(nn.Module):
    """Alternating 1x1 (``c``) and 3x3 (``2c``) convs, the PANet/SPP "five convs" pattern."""

    def __init__(self, c_in: int, c: int, num_convs: int, act: str):
        super().__init__()
        layers, channels = [], c_in
        for i in range(num_convs):
            out, k = (c, 1) if i % 2 == 0 else (2 * c, 3)
            layers.append(ConvBNAct(channels, out, k, act=act))
            channels = out
        self.convs = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)


class TinyCSPBlock(nn.Module):
    """yolov4-tiny's CSP block: 3x3 conv, route half the channels through two 3x3 convs,
    1x1 over their concat, concat with the full conv, 2x2 max-pool.

    Returns the pooled output and the 1x1 feature (the tiny FPN taps the last one).
    """

    def __init__(self, c_in: int, c: int, act: str):
        super().__init__()
        self.conv = ConvBNAct(c_in, c, 3, act=act)
        self.part1 = ConvBNAct(c // 2, c // 2, 3, act=act)
        self.part2 = ConvBNAct(c // 2, c // 2, 3, act=act)
        self.merge = ConvBNAct(c, c, 1, act=act)
        self.pool = nn.MaxPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv(x)
        half = x.chunk(2, dim=1)[1]  # route groups=2 group_id=1
        a = self.part1(half)
        b = self.part2(a)
        feature = self.merge(torch.cat([b, a], dim=1))
        return self.pool(torch.cat([x, feature], dim=1)), feature

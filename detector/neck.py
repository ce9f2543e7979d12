"""Necks: SPP + PANet for the CSP family, and yolov4-tiny's two-level FPN."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from yolo4.detector.blocks import SPP, ConvBNAct, ConvStack, scale_channels

# Darknet cfgs declare the [yolo] layers in this order of our heads (ordered by stride).
DARKNET_HEAD_ORDER = {"csp": (0, 1, 2), "tiny": (1, 0)}


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


class PANet(nn.Module):
    """SPP on C5, top-down FPN to stride 8, bottom-up path back to stride 32 (yolov4.cfg).

    Returns (P3, P4, P5); their channels are ``out_channels``.
    """

    def __init__(self, in_channels: tuple[int, int, int], width: float = 1.0, act: str = "leaky"):
        super().__init__()
        c3, c4, c5 = in_channels
        n128, n256, n512 = (scale_channels(c, width) for c in (128, 256, 512))
        self.spp_in = ConvStack(c5, n512, 3, act)
        self.spp = SPP()
        self.spp_out = ConvStack(4 * n512, n512, 3, act)
        self.reduce_p5 = ConvBNAct(n512, n256, 1, act=act)
        self.lateral_c4 = ConvBNAct(c4, n256, 1, act=act)
        self.top_down_p4 = ConvStack(2 * n256, n256, 5, act)
        self.reduce_p4 = ConvBNAct(n256, n128, 1, act=act)
        self.lateral_c3 = ConvBNAct(c3, n128, 1, act=act)
        self.top_down_p3 = ConvStack(2 * n128, n128, 5, act)
        self.down_p3 = ConvBNAct(n128, n256, 3, 2, act)
        self.bottom_up_p4 = ConvStack(2 * n256, n256, 5, act)
        self.down_p4 = ConvBNAct(n256, n512, 3, 2, act)
        self.bottom_up_p5 = ConvStack(2 * n512, n512, 5, act)
        self.out_channels = (n128, n256, n512)

    def forward(self, features):
        c3, c4, c5 = features
        p5 = self.spp_out(self.spp(self.spp_in(c5)))  # (B, 512w, H/32, W/32)
        p4 = self.top_down_p4(torch.cat([self.lateral_c4(c4), upsample2x(self.reduce_p5(p5))], 1))
        p3 = self.top_down_p3(torch.cat([self.lateral_c3(c3), upsample2x(self.reduce_p4(p4))], 1))
        n4 = self.bottom_up_p4(torch.cat([self.down_p3(p3), p4], 1))  # (B, 256w, H/16, W/16)
        n5 = self.bottom_up_p5(torch.cat([self.down_p4(n4), p5], 1))  # (B, 512w, H/32, W/32)
        return p3, n4, n5

    def darknet_order(self, heads) -> list[nn.Module]:
        """Modules in yolov4.cfg order: the heads sit between the neck's convolutions."""
        return [
            self.spp_in, self.spp_out, self.reduce_p5, self.lateral_c4, self.top_down_p4,
            self.reduce_p4, self.lateral_c3, self.top_down_p3, heads[0],
            self.down_p3, self.bottom_up_p4, heads[1],
            self.down_p4, self.bottom_up_p5, heads[2],
        ]  # fmt: skip


class TinyFPN(nn.Module):
    """yolov4-tiny.cfg: 1x1 on C5, upsampled and concatenated with the C4 tap. Returns (P4, P5)."""

    def __init__(self, in_channels: tuple[int, int], act: str = "leaky"):
        super().__init__()
        c4, c5 = in_channels
        self.reduce_p5 = ConvBNAct(c5, 256, 1, act=act)
        self.reduce_for_p4 = ConvBNAct(256, 128, 1, act=act)
        self.out_channels = (128 + c4, 256)

    def forward(self, features):
        c4, c5 = features
        p5 = self.reduce_p5(c5)  # (B, 256, H/32, W/32)
        p4 = torch.cat([upsample2x(self.reduce_for_p4(p5)), c4], 1)  # (B, 384, H/16, W/16)
        return p4, p5

    def darknet_order(self, heads) -> list[nn.Module]:
        return [self.reduce_p5, heads[1], self.reduce_for_p4, heads[0]]

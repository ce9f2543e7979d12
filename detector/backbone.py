"""Backbones: CSPDarknet53 scaled by width/depth, and the yolov4-tiny backbone."""

from __future__ import annotations

import torch
from torch import nn
from yolo4.detector.blocks import ConvBNAct, CSPStage, TinyCSPBlock, scale_channels, scale_depth

# yolov4.cfg: stem of 32 channels, then five CSP stages (channels, residual units).
CSPDARKNET53_STAGES = ((64, 1), (128, 2), (256, 8), (512, 8), (1024, 4))


class CSPDarknet53(nn.Module):
    """Returns (C3, C4, C5) at strides 8, 16, 32."""

    def __init__(self, width: float = 1.0, depth: float = 1.0, act: str = "mish"):
        super().__init__()
        stem = scale_channels(32, width)
        self.stem = ConvBNAct(3, stem, 3, act=act)
        stages, c_in = [], stem
        for i, (channels, blocks) in enumerate(CSPDARKNET53_STAGES):
            c_out = scale_channels(channels, width)
            stages.append(CSPStage(c_in, c_out, scale_depth(blocks, depth), act, first=i == 0))
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        self.out_channels = tuple(scale_channels(c, width) for c, _ in CSPDARKNET53_STAGES[2:])

    def parts(self) -> list[nn.Module]:
        """The stem, then each stage, input side first (what ``freeze_stages`` counts)."""
        return [self.stem, *self.stages]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        x = self.stages[1](self.stages[0](x))
        c3 = self.stages[2](x)  # (B, 256w, H/8, W/8)
        c4 = self.stages[3](c3)  # (B, 512w, H/16, W/16)
        c5 = self.stages[4](c4)  # (B, 1024w, H/32, W/32)
        return c3, c4, c5


class TinyBackbone(nn.Module):
    """yolov4-tiny.cfg up to its last 3x3 conv. Returns (C4 tap, C5) at strides 16, 32."""

    def __init__(self, act: str = "leaky"):
        super().__init__()
        self.stem = nn.Sequential(ConvBNAct(3, 32, 3, 2, act), ConvBNAct(32, 64, 3, 2, act))
        self.block1 = TinyCSPBlock(64, 64, act)
        self.block2 = TinyCSPBlock(128, 128, act)
        self.block3 = TinyCSPBlock(256, 256, act)
        self.head_conv = ConvBNAct(512, 512, 3, act=act)
        self.out_channels = (256, 512)

    def parts(self) -> list[nn.Module]:
        """The stem, then each block, input side first (what ``freeze_stages`` counts)."""
        return [self.stem, self.block1, self.block2, self.block3, self.head_conv]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        x, _ = self.block1(x)
        x, _ = self.block2(x)
        x, c4 = self.block3(x)  # c4: (B, 256, H/16, W/16)
        return c4, self.head_conv(x)  # (B, 512, H/32, W/32)

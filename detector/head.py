"""YOLOv3-style heads: a 3x3 conv and a 1x1 prediction conv per scale. No decode, no loss."""

from __future__ import annotations

import torch
from torch import nn
from yolo4.detector.blocks import ConvBNAct


class YoloHead(nn.Module):
    """Returns the raw map ``(B, A, H, W, 5 + C)``: tx, ty, tw, th, objectness, class logits."""

    def __init__(self, c_in: int, c_mid: int, num_anchors: int, num_classes: int, act: str):
        super().__init__()
        self.num_anchors = num_anchors
        self.num_outputs = 5 + num_classes
        self.conv = ConvBNAct(c_in, c_mid, 3, act=act)
        self.pred = nn.Conv2d(c_mid, num_anchors * self.num_outputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pred(self.conv(x))  # (B, A*(5+C), H, W), anchor-major as in Darknet
        # unflatten/permute instead of view(B, A, ...) keeps ONNX export free of shape ints.
        return x.unflatten(1, (self.num_anchors, self.num_outputs)).permute(0, 1, 3, 4, 2)

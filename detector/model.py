"""The YOLOv4 detector: backbone + neck + heads, built from a ``ModelConfig``."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import DropBlock2d
from yolo4.core.config import ModelConfig
from yolo4.detector.backbone import CSPDarknet53, TinyBackbone
from yolo4.detector.blocks import ConvBNAct, scale_channels
from yolo4.detector.head import YoloHead
from yolo4.detector.neck import PANet, TinyFPN


class Yolo4(nn.Module):
    """``forward(images)`` always returns the raw head maps, one ``(B, A, H, W, 5 + C)`` per
    stride (increasing). Decoding lives in ``detector.decode``; the loss in ``training``."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        A, C = config.num_anchors, config.num_classes
        if config.arch == "csp":
            self.backbone = CSPDarknet53(config.width, config.depth, config.backbone_act)
            self.neck = PANet(self.backbone.out_channels, config.width, config.neck_act)
            mids = [scale_channels(c, config.width) for c in (256, 512, 1024)]
        else:
            self.backbone = TinyBackbone(config.backbone_act)
            self.neck = TinyFPN(self.backbone.out_channels, config.neck_act)
            mids = [256, 512]
        if len(config.heads) != len(mids):
            raise ValueError(f"{config.arch} models have {len(mids)} heads, config has {len(config.heads)}")
        self.heads = nn.ModuleList(
            YoloHead(c, m, A, C, config.neck_act) for c, m in zip(self.neck.out_channels, mids)
        )
        # DropBlock on the backbone features fed to the neck (YOLOv4's bag of freebies). The
        # trainer ramps the drop probability up with ``set_dropblock``; it is 0 until then and
        # torchvision's module is the identity in eval mode. Block size shrinks with the map.
        block_sizes = (7, 5, 3)[-len(self.backbone.out_channels) :]
        self.dropblocks = nn.ModuleList(DropBlock2d(0.0, b) for b in block_sizes)
        self._init_biases()

    def _init_biases(self) -> None:
        # Start with low objectness and uniform class priors so early training is stable
        # (focal-loss prior, as in YOLOv5/YOLOX); Darknet weights overwrite this.
        for head in self.heads:
            bias = head.pred.bias.detach().view(head.num_anchors, head.num_outputs)
            bias.zero_()
            bias[:, 4] = -4.6  # sigmoid -> 0.01
            bias[:, 5:] = -4.6

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        features = [drop(f) for drop, f in zip(self.dropblocks, self.backbone(images))]
        features = self.neck(features)
        return [head(f) for head, f in zip(self.heads, features)]

    def set_dropblock(self, p: float) -> None:
        for drop in self.dropblocks:
            drop.p = p

    def darknet_convs(self) -> list[nn.Module]:
        """Convolutions (``ConvBNAct`` or the bias-only prediction ``nn.Conv2d``) in the order
        the Darknet ``.cfg`` declares them, which is the order ``.weights`` stores them."""
        ordered = [self.backbone, *self.neck.darknet_order(self.heads)]
        return [m for part in ordered for m in part.modules() if _is_darknet_conv(m)]


def _is_darknet_conv(module: nn.Module) -> bool:
    if isinstance(module, ConvBNAct):
        return True
    return isinstance(module, nn.Conv2d) and module.bias is not None  # a head's prediction conv


def build_model(config: ModelConfig) -> Yolo4:
    return Yolo4(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

"""Raw head maps -> boxes in input pixels, with Darknet's grid-sensitivity decode."""

from __future__ import annotations

import torch
from torch import nn
from yolo4.core.config import ModelConfig


def decode_head(raw: torch.Tensor, anchors: torch.Tensor, stride: float, scale_x_y: float) -> torch.Tensor:
    """Decode one head.

    Args:
        raw: ``(B, A, H, W, 5 + C)`` raw map (tx, ty, tw, th, objectness logit, class logits).
        anchors: ``(A, 2)`` anchor (w, h) in input pixels.
        stride: input pixels per grid cell.
        scale_x_y: Darknet's grid sensitivity; centre offset = sigmoid(t) * s - (s - 1) / 2.

    Returns:
        ``(B, A * H * W, 5 + C)``: cx, cy, w, h in input pixels, objectness, class scores
        (all probabilities), ordered anchor-major then row then column.
    """
    # Grid indices from cumulative sums rather than arange(H): no Python ints from shapes,
    # so the exported ONNX graph stays dynamic in batch and image size.
    ones = torch.ones_like(raw[..., 0])  # (B, A, H, W)
    grid_x = ones.cumsum(3) - 1
    grid_y = ones.cumsum(2) - 1
    offset = raw[..., :2].sigmoid() * scale_x_y - 0.5 * (scale_x_y - 1.0)
    cx = (offset[..., 0] + grid_x) * stride
    cy = (offset[..., 1] + grid_y) * stride
    wh = raw[..., 2:4].exp() * anchors.view(1, -1, 1, 1, 2)
    decoded = torch.cat([cx.unsqueeze(-1), cy.unsqueeze(-1), wh, raw[..., 4:].sigmoid()], dim=-1)
    return decoded.flatten(1, 3)


def decode_outputs(
    raws: list[torch.Tensor], anchors: list[torch.Tensor], strides: list[float], scales: list[float]
) -> torch.Tensor:
    """Decode every head and concatenate: ``(B, N, 5 + C)`` with ``N = sum(A * H * W)``."""
    return torch.cat([decode_head(r, a, s, k) for r, a, s, k in zip(raws, anchors, strides, scales)], dim=1)


class DecodedModel(nn.Module):
    """A model plus its decode: ``images (B, 3, H, W) -> (B, N, 5 + C)``.

    This is what the predictor, the evaluator and the ONNX export run.
    """

    def __init__(self, model: nn.Module, config: ModelConfig):
        super().__init__()
        self.model = model
        self.config = config
        for i, head in enumerate(config.heads):
            self.register_buffer(f"anchors{i}", torch.tensor(head.anchors, dtype=torch.float32), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        heads = self.config.heads
        anchors = [getattr(self, f"anchors{i}") for i in range(len(heads))]
        return decode_outputs(
            self.model(images), anchors, [float(h.stride) for h in heads], [h.scale_x_y for h in heads]
        )

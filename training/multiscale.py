"""Multi-scale training: each batch at another size, boxes rescaled with it. Pure function."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def random_rescale(images: torch.Tensor, targets: torch.Tensor, iteration: int, seed: int):
    """The batch at a size in [0.5, 1.5] x its own, multiple of 32, chosen by (seed, iteration)
    so a resumed run picks the same sizes.

    Args:
        images: ``(B, 3, H, W)``.
        targets: ``(M, 6)`` rows ``[image index, class, x1, y1, x2, y2]`` in input pixels.

    Returns:
        The resized images and the targets in the new input pixels (a copy).
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + iteration)
    h, w = images.shape[-2:]
    factor = 0.5 + torch.rand((), generator=generator).item()
    size = (max(32, round(h * factor / 32) * 32), max(32, round(w * factor / 32) * 32))
    targets = targets.clone()
    targets[:, [2, 4]] *= size[1] / w
    targets[:, [3, 5]] *= size[0] / h
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False), targets

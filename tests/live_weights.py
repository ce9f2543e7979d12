"""Random weights that keep a model "alive" on real images, for export/quantization tests.

Random Darknet weights (``darknet_files``) shrink the activations layer after layer, so the
heads of a deep random model see almost constant features: most cells then predict exactly
the same score, and NMS results depend on how ties are broken. Here every convolution gets
He-initialised weights and every BatchNorm the statistics of real images (a data-dependent
init), so features vary across the image as in a trained network; the prediction convs give
a few confident boxes per image. BatchNorm shifts every pre-activation to mean 1, std 0.5:
most units stay on LeakyReLU's linear side, so (as in a trained network, and unlike a
random one at mean 0) float rounding and 8-bit quantization noise are not amplified from
layer to layer.

Letterbox padding and image borders still give odd detections with such weights: tests
that compare detections use square crops of real images (no padding).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from yolo4.core.preprocess import preprocess_batch


@torch.no_grad()
def make_live(model: nn.Module, config, images: list[np.ndarray], size: tuple[int, int], seed: int = 0) -> nn.Module:
    """Re-initialise ``model`` (a ``Yolo4``) in place from ``seed`` and the BGR ``images``; returns it in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    preds = {id(head.pred) for head in model.heads}
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and id(module) not in preds:
            fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1] // module.groups
            module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
        elif isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration pass
            module.weight.fill_(0.5)
            module.bias.copy_(1.0 + torch.randn(module.bias.shape, generator=generator) * 0.1)
    model.train()
    x, _ = preprocess_batch(images, size, config.preprocess)
    model(torch.from_numpy(x))  # BatchNorm statistics of these images
    for head in model.heads:
        pred = head.pred
        anchors, outputs = head.num_anchors, head.num_outputs
        scale = torch.full((anchors, outputs, 1, 1, 1), 2.0)
        scale[:, 2:4] = 0.3  # tw, th: moderate box sizes
        weight = torch.randn(pred.weight.shape, generator=generator) / pred.in_channels**0.5
        weight = weight - weight.mean(dim=(1, 2, 3), keepdim=True)
        pred.weight.copy_((weight.view(anchors, outputs, *weight.shape[1:]) * scale).view_as(weight))
        pred.bias.zero_()
    model.eval()
    for head, raw in zip(model.heads, model(torch.from_numpy(x))):  # (B, A, H, W, 5 + C)
        # Objectness logit rescaled so that the median cell sits at -6 (sigmoid 0.0025) and
        # 1 cell in 500 above +1 (0.73): a few confident boxes per image, as a trained model.
        q50, q998 = torch.quantile(raw[..., 4].flatten(), torch.tensor([0.5, 0.998]))
        a = 7.0 / float(q998 - q50)
        weight = head.pred.weight.view(head.num_anchors, head.num_outputs, -1)
        bias = head.pred.bias.view(head.num_anchors, head.num_outputs)
        weight[:, 4] *= a
        bias[:, 4] = 1.0 - a * q998
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1
    return model.eval()


def square_crop(image: np.ndarray) -> np.ndarray:
    """The centred square of an image: letterboxed to a square input it needs no padding."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return np.ascontiguousarray(image[top : top + side, left : left + side])


def live_model(name: str, images: list[np.ndarray], size: int, class_names=None, seed: int = 0):
    """(model, config) of a preset with ``make_live`` weights; ``config.input_size`` = ``size``."""
    from yolo4.core.presets import preset
    from yolo4.detector.model import build_model

    config = preset(name, class_names=class_names).replace(input_size=(size, size))
    return make_live(build_model(config), config, images, (size, size), seed), config


def match_detections(a, b, box_tol: float, score_tol: float) -> int:
    """How many detections of ``a`` have a partner in ``b`` (one-to-one) with the same class,
    every box coordinate within ``box_tol`` and score within ``score_tol``. ``a`` and ``b`` are
    ``(boxes (K, 4), scores (K,), class_ids (K,))``; ties in score may be ordered differently."""
    free = np.ones(len(b[1]), bool)
    matched = 0
    for box, score, cls in zip(*a):
        ok = free & (np.asarray(b[2]) == cls) & (np.abs(np.asarray(b[1]) - score) <= score_tol)
        ok &= (np.abs(np.asarray(b[0]) - box) <= box_tol).all(axis=1) if len(b[0]) else ok
        if ok.any():
            free[np.flatnonzero(ok)[0]] = False
            matched += 1
    return matched

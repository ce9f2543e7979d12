"""Decoded predictions -> final detections: score threshold and class-aware NMS."""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms, box_convert, nms


def postprocess(
    predictions: torch.Tensor,
    conf_threshold: float = 0.25,
    iou_threshold: float = 0.45,
    max_detections: int = 300,
    class_agnostic: bool = False,
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Filter and suppress decoded predictions, per image.

    Args:
        predictions: ``(B, N, 5 + C)`` from ``DecodedModel``: cx, cy, w, h (input pixels),
            objectness, class probabilities.
        conf_threshold: keep boxes whose ``objectness * class probability`` reaches this.
        iou_threshold: NMS IoU; boxes of different classes never suppress each other unless
            ``class_agnostic``.
        max_detections: at most this many per image, highest score first.

    Returns:
        One ``(boxes (K, 4) xyxy input pixels, scores (K,), class_ids (K,) int64)`` per image.
    """
    results = []
    for pred in predictions:  # (N, 5 + C)
        class_scores = pred[:, 5:] * pred[:, 4:5]  # (N, C)
        scores, class_ids = class_scores.max(dim=1)
        keep = scores >= conf_threshold
        boxes = box_convert(pred[keep, :4], "cxcywh", "xyxy")
        scores, class_ids = scores[keep], class_ids[keep]
        if class_agnostic:
            kept = nms(boxes, scores, iou_threshold)
        else:
            kept = batched_nms(boxes, scores, class_ids, iou_threshold)
        kept = kept[:max_detections]  # nms returns indices by decreasing score
        results.append((boxes[kept], scores[kept], class_ids[kept]))
    return results

"""Decoded predictions -> final detections with torchvision's NMS; the same rules as the numpy
``yolo4.core.nms.select_detections`` that the edge runtime runs (tests compare the two)."""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms, box_convert
from yolo4.core.config import Thresholds
from yolo4.core.nms import MAX_CANDIDATES


def postprocess(predictions: torch.Tensor, thresholds: Thresholds) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Filter and suppress decoded predictions, per image.

    Args:
        predictions: ``(B, N, 5 + C)`` from ``DecodedModel``: cx, cy, w, h (input pixels),
            objectness, class probabilities.
        thresholds: keep ``objectness * class probability >= conf`` (the best class, or with
            ``multi_label`` every class), class-aware NMS at ``iou``, at most ``max_det``.

    Returns:
        One ``(boxes (K, 4) xyxy input pixels, scores (K,), class_ids (K,) int64)`` per image.
    """
    results = []
    for pred in predictions:  # (N, 5 + C)
        class_scores = pred[:, 5:] * pred[:, 4:5]  # (N, C)
        if thresholds.multi_label:
            index, class_ids = (class_scores >= thresholds.conf).nonzero(as_tuple=True)
            scores = class_scores[index, class_ids]
        else:
            scores, class_ids = class_scores.max(dim=1)
            index = (scores >= thresholds.conf).nonzero(as_tuple=True)[0]
            scores, class_ids = scores[index], class_ids[index]
        if len(scores) > MAX_CANDIDATES:
            top = torch.argsort(scores, descending=True, stable=True)[:MAX_CANDIDATES]
            index, scores, class_ids = index[top], scores[top], class_ids[top]
        boxes = box_convert(pred[index, :4], "cxcywh", "xyxy")
        kept = batched_nms(boxes, scores, class_ids, thresholds.iou)[: thresholds.max_det]  # by decreasing score
        results.append((boxes[kept], scores[kept], class_ids[kept]))
    return results

"""Score threshold and class-aware NMS in numpy: ``yolo4.detector.postprocess`` without torch.

The edge runtime applies this to files exported without in-graph NMS. Semantics follow
``torchvision.ops.nms`` / ``batched_nms`` (a box is suppressed when its IoU with a kept box
of the same class is above ``iou_threshold``; results by decreasing score), in float32.
"""

from __future__ import annotations

import numpy as np

from yolo4.core.config import Thresholds

MAX_CANDIDATES = 30_000  # boxes that enter NMS at most


def box_iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``(4,)`` xyxy box with ``(N, 4)`` xyxy boxes -> ``(N,)``."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):  # two empty boxes: 0 / 0 -> no overlap
        return np.nan_to_num(inter / (area + areas - inter), nan=0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS.

    Args:
        boxes: ``(N, 4)`` xyxy.
        scores: ``(N,)``.
        iou_threshold: suppress boxes overlapping a higher-scoring kept box by more than this.

    Returns:
        ``(K,)`` int64 indices of the kept boxes, by decreasing score.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float32), kind="stable")
    keep = []
    while order.size:
        best, order = order[0], order[1:]
        keep.append(best)
        if order.size:
            order = order[box_iou_one_to_many(boxes[best], boxes[order]) <= np.float32(iou_threshold)]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(
    boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float, max_keep: int | None = None
) -> np.ndarray:
    """Class-aware NMS: boxes of different classes never suppress each other.

    One greedy pass over every box by decreasing score, each suppressing only its own class:
    a box's fate depends only on higher-scoring boxes of its class, so this keeps exactly what
    NMS per class keeps, and can stop after ``max_keep`` boxes (COCO scoring wants 100 of the
    thousands above 0.001).

    Returns:
        ``(K,)`` int64 indices into ``boxes``, by decreasing score, ``K <= max_keep``.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32)
    class_ids = np.asarray(class_ids)
    order = np.argsort(-scores, kind="stable")
    boxes, class_ids = boxes[order], class_ids[order]
    alive = np.ones(len(order), bool)
    threshold = np.float32(iou_threshold)
    keep: list[int] = []
    limit = len(order) if max_keep is None else max_keep
    for i in range(len(order)):
        if not alive[i]:
            continue
        keep.append(i)
        if len(keep) == limit:
            break
        rest = np.flatnonzero(alive[i + 1 :] & (class_ids[i + 1 :] == class_ids[i])) + i + 1
        if rest.size:
            alive[rest[box_iou_one_to_many(boxes[i], boxes[rest]) > threshold]] = False
    return order[np.asarray(keep, dtype=np.int64)]


def candidates(class_scores: np.ndarray, thresholds: Thresholds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (box index, score, class) pairs that reach ``thresholds.conf``: the best class of each
    box, or with ``multi_label`` every class above the threshold; at most ``MAX_CANDIDATES``,
    the highest scoring (YOLOv5's ``max_nms``), so a threshold of 0.001 stays tractable.

    Args:
        class_scores: ``(N, C)`` objectness x class probability.
    """
    conf = np.float32(thresholds.conf)
    if thresholds.multi_label:
        index, class_ids = np.nonzero(class_scores >= conf)
        scores = class_scores[index, class_ids]
    else:
        class_ids = class_scores.argmax(axis=1)
        scores = class_scores[np.arange(len(class_ids)), class_ids]
        index = np.flatnonzero(scores >= conf)
        scores, class_ids = scores[index], class_ids[index]
    if len(scores) > MAX_CANDIDATES:
        top = np.argsort(-scores, kind="stable")[:MAX_CANDIDATES]
        index, scores, class_ids = index[top], scores[top], class_ids[top]
    return index, scores.astype(np.float32), class_ids.astype(np.int64)


def select_detections(predictions: np.ndarray, thresholds: Thresholds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's decoded predictions -> final detections (as ``yolo4.detector.postprocess``).

    Args:
        predictions: ``(N, 5 + C)``: cx, cy, w, h (input pixels), objectness, class probabilities.
        thresholds: score threshold, NMS IoU, detection cap, one or every class per box.

    Returns:
        ``boxes (K, 4)`` float32 xyxy input pixels, ``scores (K,)`` float32, ``class_ids (K,)``
        int64, by decreasing score, ``K <= thresholds.max_det``.
    """
    predictions = np.asarray(predictions, dtype=np.float32)
    index, scores, class_ids = candidates(predictions[:, 5:] * predictions[:, 4:5], thresholds)
    cx, cy, w, h = predictions[index, :4].T
    boxes = np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=1).astype(np.float32)
    kept = batched_nms(boxes, scores, class_ids, thresholds.iou, thresholds.max_det)
    return boxes[kept], scores[kept], class_ids[kept]

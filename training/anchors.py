"""k-means anchors with the IoU distance (YOLOv2's recipe), on letterboxed box sizes."""

from __future__ import annotations

import numpy as np


def shape_iou(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """``(N, 2)`` boxes vs ``(K, 2)`` anchors aligned at a common centre -> ``(N, K)`` IoU."""
    inter = np.minimum(wh[:, None, 0], anchors[None, :, 0]) * np.minimum(wh[:, None, 1], anchors[None, :, 1])
    return inter / (wh[:, None].prod(-1) + anchors[None].prod(-1) - inter)


def kmeans_anchors(wh: np.ndarray, k: int, seed: int = 0, iterations: int = 300) -> np.ndarray:
    """Cluster ``(N, 2)`` box sizes into ``k`` anchors minimising ``1 - IoU``; sorted by area."""
    if len(wh) < k:
        raise ValueError(f"{len(wh)} boxes are too few for {k} anchors")
    rng = np.random.default_rng(seed)
    # k-means++ seeding on the IoU distance keeps small clusters from being swallowed.
    anchors = wh[[rng.integers(len(wh))]]
    while len(anchors) < k:
        distance = (1 - shape_iou(wh, anchors).max(axis=1)) ** 2
        anchors = np.vstack([anchors, wh[rng.choice(len(wh), p=distance / distance.sum())]])
    for _ in range(iterations):
        nearest = shape_iou(wh, anchors).argmax(axis=1)
        updated = np.array([np.median(wh[nearest == j], axis=0) if np.any(nearest == j) else anchors[j] for j in range(k)])
        if np.allclose(updated, anchors):
            break
        anchors = updated
    return anchors[np.argsort(anchors.prod(axis=1))]


def mean_best_iou(wh: np.ndarray, anchors: np.ndarray) -> float:
    return float(shape_iou(wh, anchors).max(axis=1).mean())

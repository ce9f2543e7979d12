"""Run a batch of images that may carry different thresholds through one ``EdgeDetector``.

Adaptive batching merges requests that asked for different ``conf`` / ``iou`` / ``max_det``.
NMS at one IoU cannot be derived from NMS at another, so each distinct setting gets its own
``detect_batch`` call: with the usual traffic (default thresholds) the whole batch is one
call, and a request never sees another request's thresholds. The detector's ONNX Runtime
session is shared by all settings; only the post-processing parameters differ.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np

from detector.detections import Detections

from .runtime import EdgeDetector


def with_thresholds(detector: EdgeDetector, conf: float, iou: float, max_det: int) -> EdgeDetector:
    """A view of ``detector`` with other post-processing settings (same session, no reload)."""
    view = copy.copy(detector)
    view.conf_threshold, view.iou_threshold, view.max_detections = float(conf), float(iou), int(max_det)
    return view


def detect_grouped(
    detector: EdgeDetector, images: Sequence[np.ndarray], thresholds: Sequence[tuple[float, float, int]]
) -> list[Detections]:
    """``images[i]`` post-processed with ``thresholds[i]`` = (conf, iou, max_det); results in order.

    Images that share thresholds go through one ``detect_batch`` call.
    """
    if len(images) != len(thresholds):
        raise ValueError(f"{len(images)} images but {len(thresholds)} threshold settings")
    groups: dict[tuple[float, float, int], list[int]] = {}
    for i, setting in enumerate(thresholds):
        groups.setdefault(setting, []).append(i)
    results: list[Detections | None] = [None] * len(images)
    for (conf, iou, max_det), indices in groups.items():
        view = with_thresholds(detector, conf, iou, max_det)
        for i, dets in zip(indices, view.detect_batch([images[i] for i in indices])):
            results[i] = dets
    return results  # type: ignore[return-value]  # every index belongs to one group

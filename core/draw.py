"""Draw detections on an image (numpy + OpenCV, no torch): used by detect, the service and edge."""

from __future__ import annotations

import colorsys

import cv2
import numpy as np


def class_color(class_id: int) -> tuple[int, int, int]:
    """A stable, well-separated BGR colour per class (golden-ratio hue steps)."""
    hue = (class_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_detections(image: np.ndarray, boxes, scores, class_ids, class_names) -> np.ndarray:
    """Return a copy of the BGR ``image`` with each box, label and score drawn (``scores``
    None: ground truth, labels only)."""
    canvas = image.copy()
    h, w = canvas.shape[:2]
    thickness = max(1, round(min(h, w) / 300))
    font_scale = max(0.4, min(h, w) / 1000)
    scores = [None] * len(class_ids) if scores is None else np.asarray(scores)
    for box, score, cls in zip(np.asarray(boxes), scores, np.asarray(class_ids)):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        color = class_color(int(cls))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        name = class_names[int(cls)] if int(cls) < len(class_names) else str(int(cls))
        label = name if score is None else f"{name} {score:.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        top = y1 - th - base - 2 if y1 - th - base - 2 >= 0 else y1
        cv2.rectangle(canvas, (x1, top), (x1 + tw + 2, top + th + base + 2), color, -1)
        cv2.putText(canvas, label, (x1 + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas

"""CutMix and MixUp for detection: what albumentations does not provide. Pure numpy.

Boxes are ``(N, 4)`` float32 xyxy pixels, labels ``(N,)`` int64; inputs are not modified.
"""

from __future__ import annotations

import numpy as np


def box_area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)


def mixup(image_a, boxes_a, labels_a, image_b, boxes_b, labels_b, ratio: float):
    """Blend two same-size images (``ratio`` of ``a``); every box of both stays a target."""
    image = (image_a.astype(np.float32) * ratio + image_b.astype(np.float32) * (1 - ratio)).round()
    return image.astype(np.uint8), np.concatenate([boxes_a, boxes_b]), np.concatenate([labels_a, labels_b])


def cutmix(image_a, boxes_a, labels_a, image_b, boxes_b, labels_b, rect, min_visibility=0.25, min_size=2.0):
    """Paste ``rect`` (x1, y1, x2, y2 ints) of ``image_b`` onto ``image_a``.

    Boxes of ``a`` keep their full extent (the object is partly occluded) unless less than
    ``min_visibility`` of their area remains visible; boxes of ``b`` are clipped to the patch
    and kept when at least ``min_visibility`` of their area and ``min_size`` px per side remain.
    """
    x1, y1, x2, y2 = rect
    image = image_a.copy()
    image[y1:y2, x1:x2] = image_b[y1:y2, x1:x2]
    patch = np.array([[x1, y1, x2, y2]], np.float32)

    covered = box_area(_intersect(boxes_a, patch))
    visible_a = 1 - covered / np.maximum(box_area(boxes_a), 1e-6)
    keep_a = visible_a >= min_visibility

    clipped = _intersect(boxes_b, patch)
    visible_b = box_area(clipped) / np.maximum(box_area(boxes_b), 1e-6)
    wh = clipped[:, 2:] - clipped[:, :2]
    keep_b = (visible_b >= min_visibility) & (wh.min(axis=1, initial=np.inf) >= min_size) if len(wh) else np.zeros(0, bool)
    boxes = np.concatenate([boxes_a[keep_a], clipped[keep_b]]).astype(np.float32)
    return image, boxes, np.concatenate([labels_a[keep_a], labels_b[keep_b]])


def random_cutmix_rect(height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A patch covering a Beta(1, 1)-distributed fraction of the image (CutMix's sampling)."""
    cut = np.sqrt(1.0 - rng.beta(1.0, 1.0))
    w, h = int(width * cut), int(height * cut)
    cx, cy = rng.integers(width), rng.integers(height)
    return (int(np.clip(cx - w // 2, 0, width)), int(np.clip(cy - h // 2, 0, height)),
            int(np.clip(cx + w // 2, 0, width)), int(np.clip(cy + h // 2, 0, height)))  # fmt: skip


def _intersect(boxes: np.ndarray, rect: np.ndarray) -> np.ndarray:
    """Each box clipped to ``rect`` (empty boxes have zero area)."""
    out = boxes.astype(np.float32).copy()
    out[:, [0, 2]] = out[:, [0, 2]].clip(rect[0, 0], rect[0, 2])
    out[:, [1, 3]] = out[:, [1, 3]].clip(rect[0, 1], rect[0, 3])
    return out

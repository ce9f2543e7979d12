"""The result type of every inference path (PyTorch predictor, edge runtime, HTTP service). No torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Detections:
    """Detections of one image; boxes are xyxy in original-image pixels."""

    boxes: np.ndarray  # (K, 4) float32
    scores: np.ndarray  # (K,) float32
    class_ids: np.ndarray  # (K,) int64
    class_names: list[str]
    image_size: tuple[int, int]  # (height, width)

    def __len__(self) -> int:
        return len(self.scores)

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_size": {"height": self.image_size[0], "width": self.image_size[1]},
            "detections": [
                {
                    "box": [round(float(v), 2) for v in box],
                    "score": round(float(score), 5),
                    "class_id": int(cls),
                    "label": name,
                }
                for box, score, cls, name in zip(self.boxes, self.scores, self.class_ids, self.class_names)
            ],
        }

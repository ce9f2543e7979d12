"""``Detections``, the result type of every inference path (PyTorch predictor, edge runtime,
HTTP service), its JSON, and the per-image result files of ``yolo4 detect``. Torch-free."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from yolo4.core.draw import draw_detections


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

    def draw(self, image: np.ndarray, all_class_names) -> np.ndarray:
        """A copy of the BGR ``image`` with the boxes, labels and scores drawn."""
        return draw_detections(image, self.boxes, self.scores, self.class_ids, all_class_names)


class ResultWriter:
    """Writes ``DIR/NAME.json`` and ``DIR/NAME.jpg`` (drawn) per image; two inputs with the same
    name get ``NAME`` and ``NAME_2``."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.used: set[str] = set()

    def stem(self, path: Path) -> str:
        stem, n = path.stem, 1
        while stem in self.used:
            n += 1
            stem = f"{path.stem}_{n}"
        self.used.add(stem)
        return stem

    def write_image(self, path: Path, image: np.ndarray, dets: Detections, class_names) -> None:
        stem = self.stem(path)
        (self.folder / f"{stem}.json").write_text(json.dumps({"image": str(path), **dets.to_dict()}, indent=2))
        cv2.imwrite(str(self.folder / f"{stem}.jpg"), dets.draw(image, class_names))

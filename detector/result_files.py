"""Per-image result files, shared by ``yolo4 detect`` and ``python -m serving.edge`` (no torch):
``DIR/NAME.json`` with the detections and ``DIR/NAME.jpg`` with them drawn."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from .detections import Detections
from .draw import draw_detections


class ResultWriter:
    """Writes results into ``folder``; two inputs with the same name get ``NAME`` and ``NAME_2``."""

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
        drawn = draw_detections(image, dets.boxes, dets.scores, dets.class_ids, class_names)
        cv2.imwrite(str(self.folder / f"{stem}.jpg"), drawn)

"""Small generated detection datasets (coloured rectangles) in VOC, COCO and YOLO layouts."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("red", "green")
COLORS = {0: (0, 0, 255), 1: (0, 255, 0)}  # BGR


def make_images(folder: Path, count: int = 6, size=(96, 128), seed: int = 0):
    """Images with 1-3 filled rectangles each; returns [(path, boxes xyxy, labels)]."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    h, w = size
    out = []
    for i in range(count):
        image = np.full((h, w, 3), 40, np.uint8)
        boxes, labels = [], []
        for _ in range(rng.integers(1, 4)):
            bw, bh = rng.integers(16, 40), rng.integers(16, 40)
            x1, y1 = rng.integers(0, w - bw), rng.integers(0, h - bh)
            label = int(rng.integers(2))
            cv2.rectangle(image, (int(x1), int(y1)), (int(x1 + bw - 1), int(y1 + bh - 1)), COLORS[label], -1)
            boxes.append([x1, y1, x1 + bw, y1 + bh])
            labels.append(label)
        path = folder / f"img{i}.jpg"
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 98])
        out.append((path, np.array(boxes, np.float32), np.array(labels, np.int64)))
    return out


def write_voc(root: Path, count: int = 6, seed: int = 0) -> Path:
    items = make_images(root / "JPEGImages", count, seed=seed)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for path, boxes, labels in items:
        objects = "".join(
            f"<object><name>{CLASSES[c]}</name><bndbox><xmin>{b[0]:.0f}</xmin><ymin>{b[1]:.0f}</ymin>"
            f"<xmax>{b[2]:.0f}</xmax><ymax>{b[3]:.0f}</ymax></bndbox></object>"
            for b, c in zip(boxes, labels)
        )
        (root / "Annotations" / f"{path.stem}.xml").write_text(
            f"<annotation><filename>{path.name}</filename><size><width>128</width><height>96</height></size>{objects}</annotation>"
        )
    (root / "ImageSets" / "Main" / "train.txt").write_text("\n".join(p.stem for p, _, _ in items))
    yaml = root / "data.yaml"
    yaml.write_text(f"format: voc\nroot: {root}\nnames: [red, green]\nsplits:\n  train: {{list: ImageSets/Main/train.txt}}\n  val: {{list: ImageSets/Main/train.txt}}\n")
    return yaml


def write_coco(root: Path, count: int = 6, seed: int = 0) -> Path:
    items = make_images(root / "images", count, seed=seed)
    images, annotations = [], []
    for i, (path, boxes, labels) in enumerate(items):
        images.append({"id": 100 + i, "file_name": path.name, "height": 96, "width": 128})
        for b, c in zip(boxes, labels):
            annotations.append({"id": len(annotations) + 1, "image_id": 100 + i, "category_id": [3, 7][c],
                                "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                                "area": float((b[2] - b[0]) * (b[3] - b[1])), "iscrowd": 0})  # fmt: skip
    categories = [{"id": 3, "name": "red"}, {"id": 7, "name": "green"}]
    (root / "ann.json").write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    yaml = root / "data.yaml"
    yaml.write_text(f"format: coco\nroot: {root}\nsplits:\n  train: {{images: images, annotations: ann.json}}\n  val: {{images: images, annotations: ann.json}}\n")
    return yaml


def write_yolo(root: Path, count: int = 6, seed: int = 0) -> Path:
    items = make_images(root / "images" / "train", count, seed=seed)
    (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
    for path, boxes, labels in items:
        lines = [f"{c} {(b[0] + b[2]) / 256:.6f} {(b[1] + b[3]) / 192:.6f} {(b[2] - b[0]) / 128:.6f} {(b[3] - b[1]) / 96:.6f}"
                 for b, c in zip(boxes, labels)]  # fmt: skip
        (root / "labels" / "train" / f"{path.stem}.txt").write_text("\n".join(lines) + "\n")
    yaml = root / "data.yaml"
    yaml.write_text(f"format: yolo\nroot: {root}\nnames: [red, green]\nsplits:\n  train: images/train\n  val: images/train\n")
    return yaml

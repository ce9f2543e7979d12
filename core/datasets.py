"""COCO JSON, Pascal VOC XML and YOLO txt readers into one in-memory sample format, with
validation that reports every problem with its file (and object index or line)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from yolo4.core.data_config import DataConfig, load_data_config
from yolo4.core.image_io import IMAGE_SUFFIXES, displayed_size


class DatasetError(ValueError):
    pass


@dataclass(frozen=True)
class Sample:
    image_path: Path
    boxes: np.ndarray  # (N, 4) float32, xyxy in image pixels
    labels: np.ndarray  # (N,) int64, contiguous class index
    image_id: int  # COCO image id, else the position in the split
    size: tuple[int, int]  # (height, width)
    # Objects neither trained on nor scored (VOC difficult objects): (K, 4) xyxy, (K,) classes
    ignored: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    ignored_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


@dataclass(frozen=True)
class Problem:
    where: str  # "file", "file:line" or "file object 3"
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class DetectionSet:
    samples: list[Sample]
    class_names: tuple[str, ...]
    category_ids: tuple[int, ...]  # dataset category id of each contiguous class (COCO: 1..90)
    problems: list[Problem] = field(default_factory=list)
    annotation_file: Path | None = None  # the COCO JSON this came from, for pycocotools

    def __len__(self) -> int:
        return len(self.samples)

    def summary(self) -> str:
        boxes = sum(len(s.labels) for s in self.samples)
        text = f"{len(self.samples)} images, {boxes} boxes, {len(self.class_names)} classes"
        return text + (f", {len(self.problems)} problems skipped" if self.problems else "")


class _Collector:
    """Collects problems; in strict mode the first one raises."""

    def __init__(self, strict: bool):
        self.strict = strict
        self.problems: list[Problem] = []

    def add(self, where: str, message: str) -> None:
        problem = Problem(where, message)
        if self.strict:
            raise DatasetError(f"{problem} (run without --strict to skip such entries)")
        self.problems.append(problem)


def _image_size(path: Path, report: _Collector) -> tuple[int, int] | None:
    """(height, width) as the image is displayed (EXIF orientation applied, as ``cv2.imread``
    decodes it) from its header; None (reported) if missing or unreadable."""
    if not path.is_file():
        report.add(str(path), "image file is missing")
        return None
    try:
        with Image.open(path) as im:
            im.verify()  # catches truncated headers and non-images without decoding pixels
        with Image.open(path) as im:  # verify() leaves the image unusable: read the header again
            size = displayed_size(im)
    except Exception as e:
        report.add(str(path), f"unreadable image ({type(e).__name__}: {e})")
        return None
    return size


def _clean_boxes(where: str, boxes, labels, size, report: _Collector, tolerance: float = 1.0):
    """Drop (and report) boxes with no area or outside the image; clip those that overhang by
    less than ``tolerance`` pixels (annotation tools round to the pixel grid)."""
    h, w = size
    keep_boxes, keep_labels = [], []
    for i, (box, label) in enumerate(zip(boxes, labels)):
        x1, y1, x2, y2 = box
        if x2 <= x1 or y2 <= y1:
            report.add(f"{where} object {i}", f"box {list(map(float, box))} has zero or negative size")
        elif x1 < -tolerance or y1 < -tolerance or x2 > w + tolerance or y2 > h + tolerance:
            report.add(f"{where} object {i}", f"box {list(map(float, box))} lies outside the {w}x{h} image")
        else:
            keep_boxes.append([max(0, x1), max(0, y1), min(w, x2), min(h, y2)])
            keep_labels.append(label)
    return np.array(keep_boxes, np.float32).reshape(-1, 4), np.array(keep_labels, np.int64)


def read_voc(config: DataConfig, split: str, report: _Collector) -> list[Sample]:
    spec = config.split(split)
    annotations = spec.annotations or config.root / "Annotations"
    images = spec.images or config.root / "JPEGImages"
    if spec.list is None or not spec.list.is_file():
        raise DatasetError(f"{config.path}: split {split!r}: image list {spec.list} not found")
    ids = [line.strip() for line in spec.list.read_text().splitlines() if line.strip()]
    class_index = {name: i for i, name in enumerate(config.class_names)}
    samples = []
    for image_id, stem in enumerate(ids):
        xml_path = annotations / f"{stem}.xml"
        try:
            root = ET.parse(xml_path).getroot()
        except FileNotFoundError:
            report.add(str(xml_path), "annotation file is missing")
            continue
        except ET.ParseError as e:
            line, column = e.position
            report.add(f"{xml_path}:{line}", f"malformed XML at column {column} ({e})")
            continue
        filename = root.findtext("filename") or f"{stem}.jpg"
        image_path = images / Path(filename).name
        size = _image_size(image_path, report)
        if size is None:
            continue
        boxes, labels, difficult, difficult_labels = [], [], [], []
        for i, obj in enumerate(root.iter("object")):
            name = (obj.findtext("name") or "").strip()
            box = obj.find("bndbox")
            if name not in class_index:
                report.add(f"{xml_path} object {i}", f"unknown class {name!r} (known: {', '.join(config.class_names)})")
                continue
            try:
                coords = [float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
            except (AttributeError, TypeError, ValueError):
                report.add(f"{xml_path} object {i}", "bndbox needs numeric xmin, ymin, xmax, ymax")
                continue
            # VOC coordinates are 1-based inclusive pixels; BCCD and most tools write them as
            # 0-based edges, so they are used as given.
            is_difficult = config.difficult == "ignore" and (obj.findtext("difficult") or "0").strip() == "1"
            (difficult if is_difficult else boxes).append(coords)
            (difficult_labels if is_difficult else labels).append(class_index[name])
        boxes, labels = _clean_boxes(str(xml_path), boxes, labels, size, report)
        ignored = np.array(difficult, np.float32).reshape(-1, 4)
        samples.append(Sample(image_path, boxes, labels, image_id, size, ignored, np.array(difficult_labels, np.int64)))
    return samples


def read_coco(config: DataConfig, split: str, report: _Collector) -> tuple[list[Sample], tuple, tuple, Path]:
    spec = config.split(split)
    path = spec.annotations
    if path is None or not path.is_file():
        raise DatasetError(f"{config.path}: split {split!r}: annotation file {path} not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict) or not all(k in data for k in ("images", "annotations", "categories")):
        raise DatasetError(f"{path}: not a COCO detection file (needs images, annotations, categories)")
    categories = sorted(data["categories"], key=lambda c: c["id"])
    category_ids = tuple(int(c["id"]) for c in categories)
    names = tuple(str(c["name"]) for c in categories)
    if config.class_names and config.class_names != names:
        raise DatasetError(f"{config.path}: names differ from the categories of {path}")
    contiguous = {cid: i for i, cid in enumerate(category_ids)}
    by_image: dict[int, list] = {}
    for i, ann in enumerate(data["annotations"]):
        by_image.setdefault(ann.get("image_id"), []).append((i, ann))
    images_dir = spec.images or path.parent
    samples = []
    for image in data["images"]:
        image_path = images_dir / image["file_name"]
        size = _image_size(image_path, report)
        if size is None:
            continue
        boxes, labels = [], []
        for i, ann in by_image.get(image["id"], []):
            if ann.get("iscrowd", 0):
                continue  # crowd regions are not training targets (COCOeval ignores them too)
            if ann.get("category_id") not in contiguous:
                report.add(f"{path} annotation {i} (id {ann.get('id')})", f"unknown category_id {ann.get('category_id')}")
                continue
            x, y, w, h = ann["bbox"]
            boxes.append([x, y, x + w, y + h])
            labels.append(contiguous[ann["category_id"]])
        boxes, labels = _clean_boxes(f"{path} image {image['id']}", boxes, labels, size, report)
        samples.append(Sample(image_path, boxes, labels, int(image["id"]), size))
    return samples, names, category_ids, path


def read_yolo(config: DataConfig, split: str, report: _Collector) -> list[Sample]:
    spec = config.split(split)
    if spec.list is not None:
        image_paths = [Path(p.strip()) for p in spec.list.read_text().splitlines() if p.strip()]
        image_paths = [p if p.is_absolute() else config.root / p for p in image_paths]
    elif spec.images is not None and spec.images.is_dir():
        image_paths = sorted(p for p in spec.images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        raise DatasetError(f"{config.path}: split {split!r}: image folder {spec.images} not found")
    samples = []
    for image_id, image_path in enumerate(image_paths):
        size = _image_size(image_path, report)
        if size is None:
            continue
        label_path = _yolo_label_path(image_path)
        h, w = size
        boxes, labels = [], []
        lines = label_path.read_text().splitlines() if label_path.is_file() else []  # no file: no objects
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            fields = line.split()
            try:
                cls, cx, cy, bw, bh = int(fields[0]), *map(float, fields[1:5])
                if len(fields) != 5:
                    raise ValueError
            except (ValueError, IndexError):
                report.add(f"{label_path}:{number}", f"expected 'class cx cy w h', got {line.strip()!r}")
                continue
            if not 0 <= cls < len(config.class_names):
                report.add(f"{label_path}:{number}", f"class {cls} outside 0..{len(config.class_names) - 1}")
                continue
            boxes.append([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])
            labels.append(cls)
        boxes, labels = _clean_boxes(str(label_path), boxes, labels, size, report)
        samples.append(Sample(image_path, boxes, labels, image_id, size))
    return samples


def _yolo_label_path(image_path: Path) -> Path:
    """``.../images/x.jpg`` -> ``.../labels/x.txt`` (the YOLO convention), else beside the image."""
    parts = list(image_path.parts)
    if "images" in parts:
        i = len(parts) - 1 - parts[::-1].index("images")
        parts[i] = "labels"
        return Path(*parts).with_suffix(".txt")
    return image_path.with_suffix(".txt")


def load_split(config: DataConfig | str | Path, split: str, strict: bool = False) -> DetectionSet:
    """Read and validate one split. Problems are skipped and listed in ``.problems`` (each
    with its file and object index or line), or raise ``DatasetError`` when ``strict``."""
    if not isinstance(config, DataConfig):
        config = load_data_config(config)
    report = _Collector(strict)
    annotation_file = None
    if config.format == "coco":
        samples, names, category_ids, annotation_file = read_coco(config, split, report)
    else:
        samples = read_voc(config, split, report) if config.format == "voc" else read_yolo(config, split, report)
        names, category_ids = config.class_names, tuple(range(1, len(config.class_names) + 1))
    if not samples:
        raise DatasetError(f"{config.path}: split {split!r} has no usable images ({len(report.problems)} problems)")
    return DetectionSet(samples, names, category_ids, report.problems, annotation_file)

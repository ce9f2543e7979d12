"""Detections -> COCO results -> the 12 COCO box metrics and per-class AP, via pycocotools.

Nothing here runs a model: it converts detections (xyxy pixels, contiguous class indices)
into COCO results (xywh, dataset category ids), builds the ground truth (the official JSON,
or an in-memory COCO object for VOC / YOLO sets) and scores with ``COCOeval``, so the
numbers are the ones papers report.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from yolo4.core.datasets import DetectionSet

# The order of ``COCOeval.stats``.
METRIC_NAMES = (
    "mAP50-95", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large",
    "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large",
)  # fmt: skip


class EvalInputError(ValueError):
    """A ground-truth file, results file, image or class mapping that cannot be evaluated."""


@dataclass(frozen=True)
class GroundTruth:
    coco: COCO
    image_ids: tuple[int, ...]  # the images that are scored (a result for another image is an error)
    category_ids: tuple[int, ...]  # dataset category id of each contiguous class index
    class_names: tuple[str, ...]
    source: str  # the JSON file, or a description of the in-memory set, for error messages


@dataclass(frozen=True)
class ClassAP:
    name: str
    category_id: int
    num_gt: int  # non-crowd ground-truth boxes in the scored images
    ap: float  # AP@[.50:.95], -1 when the class has no ground truth (pycocotools' convention)
    ap50: float


@dataclass(frozen=True)
class CocoScores:
    metrics: dict[str, float]  # METRIC_NAMES -> value; -1 where the split has no GT in that range
    per_class: tuple[ClassAP, ...]
    precision: np.ndarray  # COCOeval.eval["precision"]: (T iou, R recall, K class, A area, M maxDets)
    iou_thresholds: np.ndarray  # (T,)
    recall_thresholds: np.ndarray  # (R,)
    summary_text: str  # pycocotools' own 12-line summary

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": dict(self.metrics),
            "per_class": [vars(row).copy() for row in self.per_class],
        }


def xyxy_to_coco_xywh(boxes: np.ndarray) -> np.ndarray:
    """``(N, 4)`` x1, y1, x2, y2 -> ``(N, 4)`` COCO x, y (top-left), width, height."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def detections_to_coco(
    image_id: int,
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    category_ids: tuple[int, ...],
) -> list[dict[str, Any]]:
    """One image's detections -> COCO result entries.

    Args:
        image_id: the dataset's image id.
        boxes: ``(K, 4)`` xyxy in original-image pixels.
        scores: ``(K,)``.
        class_ids: ``(K,)`` contiguous class indices of the model.
        category_ids: dataset category id of each contiguous index (COCO: 80 ids in 1..90).

    Returns:
        ``K`` dicts ``{image_id, category_id, bbox: [x, y, w, h], score}``; coordinates rounded
        to 1/1000 pixel and scores to 1e-5, so a written file re-scores to the same numbers.
    """
    class_ids = np.asarray(class_ids, dtype=np.int64).reshape(-1)
    unknown = class_ids[(class_ids < 0) | (class_ids >= len(category_ids))]
    if unknown.size:
        raise EvalInputError(
            f"class index {int(unknown[0])} has no category id in the dataset ({len(category_ids)} categories)"
        )
    xywh = xyxy_to_coco_xywh(boxes)
    return [
        {
            "image_id": int(image_id),
            "category_id": int(category_ids[c]),
            "bbox": [round(float(v), 3) for v in box],
            "score": round(float(s), 5),
        }
        for box, s, c in zip(xywh, np.asarray(scores).reshape(-1), class_ids)
    ]


def _quiet_coco(dataset: dict[str, Any]) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "creating index..."
        coco.createIndex()
    return coco


def read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise EvalInputError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f"{path}:{e.lineno}" if isinstance(e, json.JSONDecodeError) else str(path)
        raise EvalInputError(f"{where}: {what} is not valid JSON ({e})") from None


def ground_truth_from_json(path: str | Path, image_ids: list[int] | None = None) -> GroundTruth:
    """The official COCO annotation file as ground truth (crowd regions and segment areas
    included, as COCOeval expects). ``image_ids`` limits scoring to those images."""
    data = read_json(path, "COCO annotation file")
    keys = ("images", "annotations", "categories")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in keys):
        raise EvalInputError(f"{path}: not a COCO detection file (needs lists 'images', 'annotations', 'categories')")
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not {"image_id", "category_id", "bbox"} <= set(ann) or len(ann["bbox"]) != 4:
            raise EvalInputError(f"{path}: annotation {i} is not a box annotation (needs image_id, category_id, bbox)")
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(ann["bbox"][2]) * float(ann["bbox"][3]))
    categories = sorted(data["categories"], key=lambda c: c["id"])
    known = {int(im["id"]) for im in data["images"]}
    if image_ids is None:
        image_ids = sorted(known)
    stray = [i for i in image_ids if i not in known]
    if stray:
        raise EvalInputError(f"{path}: image id {stray[0]} is not in the annotation file")
    return GroundTruth(
        coco=_quiet_coco(data),
        image_ids=tuple(int(i) for i in image_ids),
        category_ids=tuple(int(c["id"]) for c in categories),
        class_names=tuple(str(c["name"]) for c in categories),
        source=str(path),
    )


def ground_truth_from_set(dataset: DetectionSet, source: str = "dataset") -> GroundTruth:
    """Ground truth for exactly the images of ``dataset``: its COCO JSON when it came from
    one, else an in-memory COCO object (box areas, no crowd regions) for VOC / YOLO sets."""
    image_ids = [s.image_id for s in dataset.samples]
    if dataset.annotation_file is not None:
        return ground_truth_from_json(dataset.annotation_file, image_ids)
    images, annotations = [], []
    for s in dataset.samples:
        images.append({"id": s.image_id, "file_name": s.image_path.name, "height": s.size[0], "width": s.size[1]})
        for box, label in zip(xyxy_to_coco_xywh(s.boxes), s.labels):
            annotations.append({
                "id": len(annotations) + 1, "image_id": s.image_id, "category_id": dataset.category_ids[label],
                "bbox": [float(v) for v in box], "area": float(box[2] * box[3]), "iscrowd": 0,
            })  # fmt: skip
        for box, label in zip(xyxy_to_coco_xywh(s.ignored), s.ignored_labels):  # VOC difficult: COCOeval ignores it
            annotations.append({
                "id": len(annotations) + 1, "image_id": s.image_id, "category_id": dataset.category_ids[label],
                "bbox": [float(v) for v in box], "area": float(box[2] * box[3]), "iscrowd": 1,
            })  # fmt: skip
    categories = [{"id": c, "name": n} for c, n in zip(dataset.category_ids, dataset.class_names)]
    coco = _quiet_coco({"images": images, "annotations": annotations, "categories": categories})
    return GroundTruth(coco, tuple(image_ids), tuple(dataset.category_ids), tuple(dataset.class_names), source)


def check_results(results: Any, gt: GroundTruth, where: str = "results") -> list[dict[str, Any]]:
    """Validate COCO box results against the ground truth; return them unchanged."""
    if not isinstance(results, list):
        raise EvalInputError(f"{where}: not a COCO results file (a list of {{image_id, category_id, bbox, score}})")
    categories, images = set(gt.category_ids), set(gt.image_ids)
    for i, r in enumerate(results):
        if not isinstance(r, dict) or not {"image_id", "category_id", "bbox", "score"} <= set(r):
            raise EvalInputError(f"{where}: entry {i} is not a box result (needs image_id, category_id, bbox, score)")
        if not isinstance(r["bbox"], list) or len(r["bbox"]) != 4:
            raise EvalInputError(f"{where}: entry {i}: bbox must be [x, y, width, height], got {r['bbox']!r}")
        if r["category_id"] not in categories:
            raise EvalInputError(
                f"{where}: entry {i}: category_id {r['category_id']} is not a category of {gt.source} "
                f"(its ids: {_id_ranges(sorted(categories))})"
            )
        if r["image_id"] not in images:
            raise EvalInputError(f"{where}: entry {i}: image_id {r['image_id']} is not an image of {gt.source}")
    return results


def _id_ranges(ids: list[int]) -> str:
    """[1, 2, 3, 5] -> '1-3, 5'."""
    runs: list[list[int]] = []
    for i in ids:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in runs)


def evaluate_results(gt: GroundTruth, results: list[dict[str, Any]]) -> CocoScores:
    """Score COCO box results with pycocotools' ``COCOeval`` at its default settings
    (IoU .50:.05:.95, areas all/small/medium/large, max 1/10/100 detections per image).

    ``results`` is validated first (unknown category or image ids raise ``EvalInputError``)
    and is not modified.
    """
    check_results(results, gt)
    with contextlib.redirect_stdout(io.StringIO()):  # progress chatter
        if results:
            detections = gt.coco.loadRes(json.loads(json.dumps(results)))  # loadRes adds keys in place
        else:  # loadRes cannot take an empty list; no detections scores 0 wherever there is GT
            detections = _quiet_coco({**gt.coco.dataset, "annotations": []})
        evaluator = COCOeval(gt.coco, detections, "bbox")
        evaluator.params.imgIds = list(gt.image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        evaluator.summarize()
    precision = evaluator.eval["precision"]  # (T, R, K, A, M), -1 where a class has no GT
    return CocoScores(
        metrics={name: float(v) for name, v in zip(METRIC_NAMES, evaluator.stats)},
        per_class=_per_class(gt, evaluator.params.catIds, precision),
        precision=precision,
        iou_thresholds=np.asarray(evaluator.params.iouThrs),
        recall_thresholds=np.asarray(evaluator.params.recThrs),
        summary_text=summary.getvalue().rstrip(),
    )


def quick_metrics(gt: GroundTruth, results: list[dict[str, Any]]) -> dict[str, float]:
    """The 12 metrics of ``evaluate_results``, from faster-coco-eval's C++ ``COCOeval`` when it is
    installed (the ``train`` extra), else from pycocotools. Its numbers equal pycocotools' (to
    1e-16 on BCCD and coco-mini val) in a tenth of the time, which matters for the validation
    after every few epochs; ``yolo4 eval`` keeps pycocotools, the reference."""
    try:
        from faster_coco_eval import COCO as FastCOCO
        from faster_coco_eval import COCOeval_faster
    except ImportError:
        return evaluate_results(gt, results).metrics
    check_results(results, gt)
    if not results:
        return evaluate_results(gt, results).metrics
    with contextlib.redirect_stdout(io.StringIO()):
        truth = FastCOCO(gt.coco.dataset)
        evaluator = COCOeval_faster(truth, truth.loadRes(json.loads(json.dumps(results))), "bbox")
        evaluator.params.imgIds = list(gt.image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(v) for name, v in zip(METRIC_NAMES, evaluator.stats)}


def _per_class(gt: GroundTruth, cat_ids: list[int], precision: np.ndarray) -> tuple[ClassAP, ...]:
    scored = set(gt.image_ids)
    counts = dict.fromkeys(cat_ids, 0)
    for ann in gt.coco.dataset["annotations"]:
        if ann["image_id"] in scored and not ann.get("iscrowd", 0) and ann["category_id"] in counts:
            counts[ann["category_id"]] += 1
    names = {c["id"]: c["name"] for c in gt.coco.dataset["categories"]}
    rows = []
    for k, cat in enumerate(cat_ids):
        p = precision[:, :, k, 0, -1]  # all areas, 100 detections: (T, R)
        ap = float(p[p > -1].mean()) if (p > -1).any() else -1.0
        p50 = p[0]
        ap50 = float(p50[p50 > -1].mean()) if (p50 > -1).any() else -1.0
        rows.append(ClassAP(str(names[cat]), int(cat), counts[cat], ap, ap50))
    return tuple(rows)


def format_report(scores: CocoScores) -> str:
    """pycocotools' 12-line summary followed by a per-class AP table."""
    lines = [scores.summary_text, "", f"{'class':<20} {'id':>4} {'gt':>6} {'AP50-95':>8} {'AP50':>8}"]
    for row in scores.per_class:
        if row.num_gt == 0:
            lines.append(f"{row.name:<20} {row.category_id:>4} {0:>6} {'-':>8} {'-':>8}")
        else:
            lines.append(f"{row.name:<20} {row.category_id:>4} {row.num_gt:>6} {row.ap:>8.3f} {row.ap50:>8.3f}")
    return "\n".join(lines)

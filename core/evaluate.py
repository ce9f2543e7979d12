"""Run any ``Predict`` over every image of a split and score it with the COCO metrics. Torch-free.

PyTorch models (``yolo4.detector.predictor.Predictor``, the trainer's validation), the ONNX
edge runtime (``yolo4 eval --onnx``, the INT8 gate of ``yolo4 quantize``) and re-scored result
files all go through ``run_inference`` and ``yolo4.core.coco.evaluate_results``, with the
settings of ``yolo4.core.config.COCO_EVAL`` unless told otherwise: score threshold 0.001,
class-aware NMS at IoU 0.65, at most 100 detections per image.

Several processes split the images by whole batches (``shard_batches``); the caller gives its
rank, the world size and a ``gather`` (e.g. ``torch.distributed.all_gather_object``), so this
module needs no process-group library.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm
from yolo4.core.coco import CocoScores, EvalInputError, GroundTruth, detections_to_coco, evaluate_results
from yolo4.core.datasets import DetectionSet
from yolo4.core.image_io import IMAGE_SUFFIXES
from yolo4.core.inference import Predict, read_batches

# Darknet's coco.names (and ours) spell four COCO categories the Pascal VOC way, and two more
# without their space (which the comparison ignores anyway).
NAME_ALIASES = {"motorbike": "motorcycle", "aeroplane": "airplane", "sofa": "couch", "tvmonitor": "tv"}


@dataclass(frozen=True)
class InferenceRun:
    results: list[dict[str, Any]]  # COCO results of every image, in dataset order
    images: int
    seconds: float  # wall time of the slowest rank (reading + inference + conversion)
    world_size: int

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")


def shard_batches(num_images: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """Image indices of the batches that ``rank`` runs.

    The split is cut into batches first and ranks take contiguous runs of whole batches, so
    every image is inferred in exactly the batch it would be in single-process: sharded
    results are the single-process results, and rank order is dataset order.
    """
    batches = [list(range(s, min(s + batch_size, num_images))) for s in range(0, num_images, batch_size)]
    lo, hi = rank * len(batches) // world_size, (rank + 1) * len(batches) // world_size
    return batches[lo:hi]


def check_images(dataset: DetectionSet) -> None:
    """Refuse a split whose images could not all be read: scoring it would count the
    missing images' objects as misses, silently."""
    missing = [p for p in dataset.problems if Path(p.where).suffix.lower() in IMAGE_SUFFIXES]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise EvalInputError(f"{missing[0]}{more}")


def _canonical(name: str) -> str:
    key = re.sub(r"[\s_\-]+", "", name.lower())
    return NAME_ALIASES.get(key, key)


@dataclass(frozen=True)
class ClassMapping:
    category_ids: tuple[int, ...]  # dataset category id of each model class
    by_name: bool  # the model lists the dataset's classes in another order
    notes: tuple[str, ...]  # spelling differences taken as the same class


def class_mapping(class_names: tuple[str, ...], gt: GroundTruth) -> ClassMapping:
    """Which dataset category each model class is scored as.

    Names are compared case-, space- and underscore-blind, with Darknet's spellings of six COCO
    classes (``motorbike`` for ``motorcycle``, ...). The same classes in the same order map by
    position; the same set in another order maps by name; different sets are an error that
    lists both.
    """
    model = [_canonical(n) for n in class_names]
    data = [_canonical(n) for n in gt.class_names]
    notes = tuple(
        f"model class {m!r} scored as category {d!r}"
        for m, d in zip(class_names, gt.class_names)
        if m != d and _canonical(m) == _canonical(d)
    )
    if model == data:
        return ClassMapping(tuple(gt.category_ids), False, notes)
    if sorted(model) == sorted(data) and len(set(model)) == len(model):
        by_name = dict(zip(data, gt.category_ids))
        notes = tuple(f"model class {n!r} scored as category {by_name[c]} {gt.class_names[data.index(c)]!r}"
                      for n, c in zip(class_names, model) if n != gt.class_names[data.index(c)])  # fmt: skip
        return ClassMapping(tuple(by_name[c] for c in model), True, notes)
    only_model = [n for n, c in zip(class_names, model) if c not in data]
    only_data = [n for n, c in zip(gt.class_names, data) if c not in model]
    raise EvalInputError(
        f"the model's {len(class_names)} classes are not the {len(gt.class_names)} categories of {gt.source}"
        + (f"; only in the model: {', '.join(only_model)}" if only_model else "")
        + (f"; only in the dataset: {', '.join(only_data)}" if only_data else "")
        + f"\n  model:   {', '.join(class_names)}\n  dataset: {', '.join(gt.class_names)}"
    )


def run_inference(
    predict: Predict,
    dataset: DetectionSet,
    category_ids: tuple[int, ...],
    batch_size: int = 8,
    rank: int = 0,
    world_size: int = 1,
    gather: Callable[[Any], list[Any]] | None = None,
    progress: bool = True,
) -> InferenceRun:
    """Detections of every image of ``dataset`` as COCO results (model class ``i`` scored as
    ``category_ids[i]``). With ``world_size > 1`` this rank runs its slice and ``gather(obj)``
    (every rank's ``obj``, in rank order) gives every rank all results, in dataset order."""
    if world_size > 1 and gather is None:
        raise ValueError("several processes need a gather function")
    batches = [[dataset.samples[i] for i in b] for b in shard_batches(len(dataset), batch_size, rank, world_size)]
    results: list[dict[str, Any]] = []
    start = time.perf_counter()
    bar = tqdm(total=sum(map(len, batches)), desc=f"eval{f' rank 0/{world_size}' if world_size > 1 else ''}",
               unit="img", disable=not progress or rank != 0)  # fmt: skip
    for batch, images in zip(batches, read_batches([[s.image_path for s in b] for b in batches])):
        unreadable = [s.image_path for s, image in zip(batch, images) if image is None]
        if unreadable:  # scoring without it would count its objects as misses
            raise EvalInputError(f"{unreadable[0]}: cannot read image")
        for sample, dets in zip(batch, predict(images)):
            results += detections_to_coco(sample.image_id, dets.boxes, dets.scores, dets.class_ids, category_ids)
        bar.update(len(batch))
    bar.close()
    seconds = time.perf_counter() - start
    if world_size == 1:
        return InferenceRun(results, len(dataset), seconds, 1)
    parts = gather((results, seconds))
    return InferenceRun([r for part, _ in parts for r in part], len(dataset), max(s for _, s in parts), world_size)


def evaluate(predict: Predict, class_names: tuple[str, ...], dataset: DetectionSet, batch_size: int = 8,
             progress: bool = False) -> CocoScores:  # fmt: skip
    """COCO metrics and per-class AP of a model on one process (the model's thresholds apply:
    give it ``COCO_EVAL``)."""
    from yolo4.core.coco import ground_truth_from_set

    check_images(dataset)
    gt = ground_truth_from_set(dataset)
    mapping = class_mapping(tuple(class_names), gt)
    run = run_inference(predict, dataset, mapping.category_ids, batch_size, progress=progress)
    return evaluate_results(gt, run.results)

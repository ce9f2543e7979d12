"""Run a detector over every image of a split and score it with the COCO metrics.

For the trainer's per-epoch validation::

    evaluate_model(model, config, dataset, batch_size=8, device=None, input_size=None,
                   shard=False, progress=False) -> dict[str, float]

runs ``model`` (a ``Yolo4``; a DDP wrapper is unwrapped) on every image of ``dataset``
(a ``DetectionSet`` from ``training.datasets.load_split``) with the standard evaluation
settings and returns the 12 COCO metrics keyed by ``coco_eval.METRIC_NAMES``
(``"mAP50-95"``, ``"mAP50"``, ..., ``"AR_large"``). The model's train/eval mode is restored
afterwards. With ``shard=True`` inside an initialised process group every rank must call
it: each runs a slice and all ranks receive the same metrics.

Standard settings (as the COCO numbers of YOLOv4 and its peers are reported): score
threshold 0.001 (objectness x class probability), class-aware NMS at IoU 0.65 (boxes of
different classes never suppress each other), at most 100 detections per image.

A detector is anything with the ``PredictBatch`` signature, so PyTorch models and the
ONNX edge runtime are evaluated by the same code.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from detector.config import ModelConfig
from detector.predictor import Predictor

from .coco_eval import EvalInputError, GroundTruth, detections_to_coco, evaluate_results, ground_truth_from_set
from .datasets import IMAGE_SUFFIXES, DetectionSet, Sample

# boxes (K, 4) xyxy original-image pixels, scores (K,), contiguous class ids (K,)
Detections = tuple[np.ndarray, np.ndarray, np.ndarray]
PredictBatch = Callable[[list[np.ndarray]], list[Detections]]  # BGR uint8 images -> one Detections each


@dataclass(frozen=True)
class EvalSettings:
    conf_threshold: float = 0.001
    iou_threshold: float = 0.65  # class-aware NMS
    max_detections: int = 100
    batch_size: int = 8

    def describe(self) -> dict[str, Any]:
        return {
            "conf_threshold": self.conf_threshold,
            "nms": "class-aware (boxes of different classes never suppress each other)",
            "nms_iou_threshold": self.iou_threshold,
            "max_detections_per_image": self.max_detections,
            "batch_size": self.batch_size,
        }


@dataclass(frozen=True)
class InferenceRun:
    results: list[dict[str, Any]]  # COCO results of every image, in dataset order
    images: int
    seconds: float  # wall time of the slowest rank (reading + inference + conversion)
    world_size: int

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")


def torch_predictor(
    model: torch.nn.Module,
    config: ModelConfig,
    settings: EvalSettings,
    device: str | torch.device | None = None,
    input_size: tuple[int, int] | None = None,
) -> PredictBatch:
    """A PyTorch model as a ``PredictBatch``: the model's pre-processing contract (letterbox
    or stretch), decode, class-aware NMS, boxes mapped back to original pixels."""
    predictor = Predictor(
        model, config, device, conf_threshold=settings.conf_threshold, iou_threshold=settings.iou_threshold,
        max_detections=settings.max_detections, input_size=input_size,
    )  # fmt: skip

    def predict(images: list[np.ndarray]) -> list[Detections]:
        return [(d.boxes, d.scores, d.class_ids) for d in predictor.predict_batch(images)]

    return predict


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


def read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise EvalInputError(f"{path}: cannot read image (missing file or not an image)")
    return image


def _read_ahead(batches: list[list[Sample]], workers: int = 2) -> Iterator[list[np.ndarray]]:
    # JPEG decoding releases the GIL: the next batch is read while the model runs this one.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = None
        for batch in batches:
            submitted = [pool.submit(read_image, s.image_path) for s in batch]
            if pending is not None:
                yield [f.result() for f in pending]
            pending = submitted
        if pending is not None:
            yield [f.result() for f in pending]


def run_inference(
    predict: PredictBatch,
    dataset: DetectionSet,
    category_ids: tuple[int, ...],
    batch_size: int = 8,
    shard: bool = False,
    progress: bool = True,
) -> InferenceRun:
    """Detections of every image of ``dataset`` as COCO results (category ids from
    ``category_ids``). With ``shard`` and an initialised process group each rank runs its
    slice and every rank gets all results back, in dataset order."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if shard and dist.is_initialized() else (0, 1)
    batches = [[dataset.samples[i] for i in b] for b in shard_batches(len(dataset), batch_size, rank, world)]
    results: list[dict[str, Any]] = []
    start = time.perf_counter()
    bar = tqdm(total=sum(map(len, batches)), desc=f"eval{f' rank 0/{world}' if world > 1 else ''}", unit="img",
               disable=not progress or rank != 0)  # fmt: skip
    for batch, images in zip(batches, _read_ahead(batches)):
        for sample, (boxes, scores, class_ids) in zip(batch, predict(images)):
            results += detections_to_coco(sample.image_id, boxes, scores, class_ids, category_ids)
        bar.update(len(batch))
    bar.close()
    seconds = time.perf_counter() - start
    if world == 1:
        return InferenceRun(results, len(dataset), seconds, 1)
    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, (results, seconds))
    return InferenceRun([r for part, _ in parts for r in part], len(dataset), max(s for _, s in parts), world)


def check_class_mapping(class_names: tuple[str, ...], gt: GroundTruth) -> list[str]:
    """The model's class ``i`` is scored as the dataset's category ``gt.category_ids[i]``.

    Raises when the counts differ (a class would have no category id, or the reverse);
    returns notes for names that differ (Darknet's ``coco.names`` spells six COCO classes
    differently, e.g. ``motorbike`` for ``motorcycle``), which are mapped by position.
    """
    n_model, n_data = len(class_names), len(gt.category_ids)
    if n_model > n_data:
        raise EvalInputError(
            f"the model's class {n_data} ({class_names[n_data]!r}) has no category id in {gt.source}: "
            f"the model has {n_model} classes, the dataset {n_data} categories"
        )
    if n_model < n_data:
        raise EvalInputError(
            f"category id {gt.category_ids[n_model]} ({gt.class_names[n_model]!r}) of {gt.source} is unknown to "
            f"the model: the model has {n_model} classes, the dataset {n_data} categories"
        )
    return [
        f"model class {i} {m!r} scored as category {cid} {d!r}"
        for i, (m, d, cid) in enumerate(zip(class_names, gt.class_names, gt.category_ids))
        if m != d
    ]


def evaluate_model(
    model: torch.nn.Module,
    config: ModelConfig,
    dataset: DetectionSet,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    input_size: tuple[int, int] | None = None,
    shard: bool = False,
    progress: bool = False,
) -> dict[str, float]:
    """COCO metrics of ``model`` on ``dataset`` (see the module docstring).

    Args:
        model: the raw-map model (``Yolo4``), e.g. the EMA model; a DDP wrapper is unwrapped.
        config: its ``ModelConfig`` (classes, pre-processing contract, input size).
        dataset: the split; class ``i`` is scored as ``dataset.category_ids[i]``.
        batch_size: images per forward pass.
        device: default: where the model's parameters are.
        input_size: (height, width), multiples of 32; default ``config.input_size``.
        shard: split the images over the ranks of the initialised process group.
        progress: show a progress bar (rank 0).

    Returns:
        ``{"mAP50-95": float, "mAP50": ..., "AR_large": ...}``, -1 for an area range without
        ground truth (pycocotools' convention).
    """
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module  # DDP's forward would sync buffers across ranks on uneven batch counts
    device = device or next(model.parameters()).device
    check_images(dataset)
    gt = ground_truth_from_set(dataset)
    check_class_mapping(config.class_names, gt)
    was_training = model.training
    try:
        predict = torch_predictor(model, config, EvalSettings(batch_size=batch_size), device, input_size)
        run = run_inference(predict, dataset, gt.category_ids, batch_size, shard, progress)
    finally:
        model.train(was_training)
    sharded = shard and dist.is_initialized() and dist.get_world_size() > 1
    if not sharded:
        return evaluate_results(gt, run.results).metrics
    # Rank 0 scores; the others receive its numbers (COCOeval is single-threaded and slow).
    box: list[Any] = [evaluate_results(gt, run.results).metrics if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]

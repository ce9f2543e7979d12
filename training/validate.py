"""Validation of a model being trained: the core evaluation loop with a PyTorch predictor.

    evaluate_model(model, config, dataset, batch_size=8, shard=False) -> {"mAP50-95": ..., ...}

With ``shard=True`` in an initialised process group every rank must call it: each runs a slice
of the images (``yolo4.core.evaluate.shard_batches``), rank 0 scores, all ranks receive the
metrics. The model's train/eval mode is restored afterwards.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from yolo4.core.coco import ground_truth_from_set, quick_metrics
from yolo4.core.config import COCO_EVAL, ModelConfig
from yolo4.core.datasets import DetectionSet
from yolo4.core.evaluate import check_images, class_mapping, run_inference
from yolo4.detector.predictor import Predictor


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (the ``gather`` of ``run_inference``)."""
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, obj)
    return parts


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
    """The 12 COCO metrics (``yolo4.core.coco.METRIC_NAMES``) of ``model`` (a ``Yolo4``; a DDP
    wrapper is unwrapped) on ``dataset`` at the COCO settings; -1 for an area range without
    ground truth (pycocotools' convention)."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module  # DDP's forward would sync buffers across ranks on uneven batch counts
    device = device or next(model.parameters()).device
    check_images(dataset)
    gt = ground_truth_from_set(dataset)
    mapping = class_mapping(config.class_names, gt)
    sharded = shard and dist.is_initialized() and dist.get_world_size() > 1
    rank, world = (dist.get_rank(), dist.get_world_size()) if sharded else (0, 1)
    was_training = model.training
    try:
        predictor = Predictor(model, config, device, COCO_EVAL, input_size)
        run = run_inference(predictor.detect_batch, dataset, mapping.category_ids, batch_size, rank, world,
                            all_gather if sharded else None, progress)  # fmt: skip
    finally:
        model.train(was_training)
    if not sharded:
        return quick_metrics(gt, run.results)
    # Rank 0 scores; the others receive its numbers.
    box: list[Any] = [quick_metrics(gt, run.results) if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]

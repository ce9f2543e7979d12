"""``yolo4 eval``: a model (PyTorch or ONNX) or a results file on a dataset split -> COCO metrics.

Writes into ``--out``: ``results.json`` (COCO results), ``summary.json`` (metrics, per-class
AP, settings, model, timings) and ``pr_curves/*.png``. Under ``torchrun --nproc_per_node N``
each rank runs a slice of the images (gloo process group) and rank 0 scores and writes; every
image is inferred in the batch it has in a single-process run, so the results are identical
to it at the same number of threads per process. ``--onnx`` and ``--results`` need no torch.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from yolo4.commands.predictors import make_predictor, thresholds_from
from yolo4.core.coco import (
    CocoScores,
    GroundTruth,
    check_results,
    evaluate_results,
    format_report,
    ground_truth_from_json,
    ground_truth_from_set,
    read_json,
)  # fmt: skip
from yolo4.core.data_config import load_data_config
from yolo4.core.datasets import load_split
from yolo4.core.evaluate import check_images, class_mapping, run_inference


def ground_truth_for_split(data: str, split: str) -> GroundTruth:
    """The split's ground truth without reading images when the set is COCO JSON (so a results
    file re-scores without the pictures); VOC / YOLO sets are read with ``load_split``."""
    config = load_data_config(data)
    if config.format == "coco":
        return ground_truth_from_json(config.split(split).annotations)
    return ground_truth_from_set(load_split(config, split), f"{config.path} split {split!r}")


def _write_outputs(out: Path, scores: CocoScores, summary: dict[str, Any], plots: bool) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({**summary, **scores.to_dict()}, indent=2))
    if not plots:
        return []
    from yolo4.core.pr_curves import plot_pr_curves

    return plot_pr_curves(scores, out / "pr_curves")


def _rescore(args: argparse.Namespace, summary: dict[str, Any], out: Path) -> int:
    gt = ground_truth_for_split(args.data, args.split)
    results = check_results(read_json(args.results, "results file"), gt, str(args.results))
    summary |= {"results": str(args.results), "ground_truth": gt.source, "detections": len(results)}
    scoring = time.perf_counter()
    scores = evaluate_results(gt, results)
    summary["timing"] = {"scoring_s": round(time.perf_counter() - scoring, 3)}
    plots = _write_outputs(out, scores, summary, not args.no_plots)
    print(format_report(scores))
    print(f"re-scored {len(results)} detections of {args.results} -> {out}/summary.json"
          + (f", {len(plots)} PR plots" if plots else ""))  # fmt: skip
    return 0


class _Shards:
    """torchrun's process group for a PyTorch model (gloo: only Python objects are exchanged)."""

    def __init__(self) -> None:
        self.rank, self.world, self.gather, self.joined = 0, 1, None, False
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            import torch.distributed as dist

            from yolo4.training.validate import all_gather

            if not dist.is_initialized():
                dist.init_process_group("gloo")
                self.joined = True
            self.rank, self.world, self.gather = dist.get_rank(), dist.get_world_size(), all_gather

    def close(self) -> None:
        if self.joined:
            import torch.distributed as dist

            dist.destroy_process_group()


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    thresholds = thresholds_from(args)
    out = Path(args.out)
    summary: dict[str, Any] = {"data": str(args.data), "split": args.split, "settings": {
        "conf_threshold": thresholds.conf, "nms_iou_threshold": thresholds.iou,
        "nms": "class-aware (boxes of different classes never suppress each other)",
        "max_detections_per_image": thresholds.max_det, "multi_label": thresholds.multi_label, "batch_size": args.batch,
    }}  # fmt: skip
    if args.results:  # re-score an existing file: no model, no images
        if args.weights or args.onnx or args.model:
            raise ValueError("--results re-scores a file: give no model with it")
        return _rescore(args, summary, out)

    dataset = load_split(args.data, args.split)
    check_images(dataset)
    gt = ground_truth_from_set(dataset, f"{args.data} split {args.split!r}")
    shards = _Shards() if args.weights else None
    try:
        if shards and shards.world > 1 and args.device is None:
            args.device = "cpu"  # torchrun's ranks share this machine's CPU (or set --device cuda:N)
        predictor, description = make_predictor(args, thresholds, quiet=bool(shards and shards.rank))
        mapping = class_mapping(tuple(predictor.config.class_names), gt)
        rank, world = (shards.rank, shards.world) if shards else (0, 1)
        run_ = run_inference(predictor.detect_batch, dataset, mapping.category_ids, args.batch, rank, world,
                             shards.gather if shards else None, progress=rank == 0)  # fmt: skip
        if rank != 0:
            return 0
        scoring = time.perf_counter()
        scores = evaluate_results(gt, run_.results)
        scoring_s = time.perf_counter() - scoring
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(run_.results))
        config = predictor.config
        summary |= {
            "ground_truth": gt.source, "images": run_.images, "detections": len(run_.results),
            "model": {"source": description, "name": config.name, "classes": config.num_classes,
                      "input_size": list(predictor.input_size), "resize": config.preprocess.resize},
            "class_mapping": "by name" if mapping.by_name else "by position", "class_name_notes": list(mapping.notes),
            "processes": run_.world_size,
            "timing": {
                "inference_s": round(run_.seconds, 3), "images_per_s": round(run_.images_per_second, 2),
                "scoring_s": round(scoring_s, 3), "total_s": round(time.perf_counter() - started, 3),
            },
        }  # fmt: skip
        plots = _write_outputs(out, scores, summary, not args.no_plots)
        if mapping.by_name:
            print("note: the model lists the dataset's classes in another order: scored by name")
        print(format_report(scores))
        print(
            f"{run_.images} images in {run_.seconds:.1f} s ({run_.images_per_second:.2f} images/s, "
            f"{run_.world_size} process{'es' if run_.world_size > 1 else ''}), {len(run_.results)} detections; "
            f"wrote {out}/results.json, {out}/summary.json"
            + (f", {len(plots)} PR plots in {out}/pr_curves" if plots else "")
        )
        return 0
    finally:
        if shards:
            shards.close()

"""The body of ``yolo4 eval``: load a model (or a results file) and a split, score, write.

Writes into ``--out``: ``results.json`` (COCO results), ``summary.json`` (metrics,
per-class AP, settings, model, timings) and ``pr_curves/*.png``. Under
``torchrun --nproc_per_node N`` each rank runs a slice of the images (gloo process group)
and rank 0 scores and writes. Each image is inferred in the same batch as in a single-process
run, so the results are identical to it at the same number of threads per process (torchrun
sets one; CPU kernels sum in a thread-count-dependent order).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .coco_eval import (
    CocoScores, GroundTruth, check_results, evaluate_results, format_report, ground_truth_from_json,
    ground_truth_from_set, read_json,
)  # fmt: skip
from .data_config import load_data_config
from .datasets import load_split
from .evaluate import EvalSettings, PredictBatch, check_class_mapping, check_images, run_inference, torch_predictor


def ground_truth_for_split(data: str, split: str) -> GroundTruth:
    """The split's ground truth without reading images when the set is COCO JSON (so a results
    file re-scores without the pictures); VOC / YOLO sets are read with ``load_split``."""
    config = load_data_config(data)
    if config.format == "coco":
        return ground_truth_from_json(config.split(split).annotations)
    return ground_truth_from_set(load_split(config, split), f"{config.path} split {split!r}")


def _init_distributed() -> bool:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    dist.init_process_group("gloo")  # CPU collectives; only Python objects are exchanged
    return True


def _load_predictor(args: argparse.Namespace, settings: EvalSettings) -> tuple[PredictBatch, tuple[str, ...], dict]:
    """The model as a ``PredictBatch``, its class names, and a description for the summary."""
    size = (args.img, args.img) if args.img else None
    if args.onnx:
        from serving.runtime import EdgeDetector  # torch-free runtime: what deployments run

        detector = EdgeDetector(
            args.onnx, conf_threshold=settings.conf_threshold, iou_threshold=settings.iou_threshold,
            max_detections=settings.max_detections, input_size=size,  # a fixed-size file refuses another size
        )  # fmt: skip

        def predict(images):
            return [(d.boxes, d.scores, d.class_ids) for d in detector.detect_batch(images)]

        config, source = detector.config.replace(input_size=detector.input_size), f"{args.onnx} ({detector.precision})"
    else:
        from detector.loading import load_model

        loaded = load_model(args.weights, args.cfg, args.names)
        config, source = loaded.config, loaded.source
        device = args.device
        if device is None and dist.is_initialized() and os.environ.get("LOCAL_RANK"):
            device = f"cuda:{os.environ['LOCAL_RANK']}" if torch.cuda.is_available() else "cpu"
        predict = torch_predictor(loaded.model, config, settings, device, size)
        config = config.replace(input_size=size) if size else config
    model = {
        "source": source, "name": config.name, "classes": config.num_classes,
        "input_size": list(config.input_size), "resize": config.preprocess.resize,
    }  # fmt: skip
    return predict, tuple(config.class_names), model


def _write_outputs(out: Path, scores: CocoScores, summary: dict[str, Any], plots: bool) -> list[Path]:
    from .pr_curves import plot_pr_curves

    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({**summary, **scores.to_dict()}, indent=2))
    return plot_pr_curves(scores, out / "pr_curves") if plots else []


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    settings = EvalSettings(args.conf, args.iou, args.max_det, args.batch)
    out = Path(args.out)
    summary: dict[str, Any] = {"data": str(args.data), "split": args.split, "settings": settings.describe()}
    if args.results:  # re-score an existing file: no model, no images
        gt = ground_truth_for_split(args.data, args.split)
        results = check_results(read_json(args.results, "results file"), gt, str(args.results))
        summary |= {"results": str(args.results), "ground_truth": gt.source, "detections": len(results)}
        scoring = time.perf_counter()
        scores = evaluate_results(gt, results)
        summary["timing"] = {"scoring_s": round(time.perf_counter() - scoring, 3)}
        plots = _write_outputs(out, scores, summary, not args.no_plots)
        print(format_report(scores))
        plotted = f", {len(plots)} PR plots" if plots else ""
        print(f"re-scored {len(results)} detections of {args.results} -> {out}/summary.json{plotted}")
        return 0

    joined = _init_distributed()
    try:
        dataset = load_split(args.data, args.split)
        check_images(dataset)
        gt = ground_truth_from_set(dataset, f"{args.data} split {args.split!r}")
        predict, class_names, model = _load_predictor(args, settings)
        notes = check_class_mapping(class_names, gt)
        rank = dist.get_rank() if dist.is_initialized() else 0
        run_ = run_inference(predict, dataset, gt.category_ids, settings.batch_size, shard=True, progress=rank == 0)
        if rank != 0:
            return 0
        scoring = time.perf_counter()
        scores = evaluate_results(gt, run_.results)
        scoring_s = time.perf_counter() - scoring
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(run_.results))
        summary |= {
            "ground_truth": gt.source, "model": model, "images": run_.images, "detections": len(run_.results),
            "class_name_notes": notes, "processes": run_.world_size, "threads_per_process": torch.get_num_threads(),
            "timing": {
                "inference_s": round(run_.seconds, 3), "images_per_s": round(run_.images_per_second, 2),
                "scoring_s": round(scoring_s, 3), "total_s": round(time.perf_counter() - started, 3),
            },
        }  # fmt: skip
        plots = _write_outputs(out, scores, summary, not args.no_plots)
        for note in notes:
            print(f"note: {note}")
        print(format_report(scores))
        print(
            f"{run_.images} images in {run_.seconds:.1f} s ({run_.images_per_second:.2f} images/s, "
            f"{run_.world_size} process{'es' if run_.world_size > 1 else ''}), {len(run_.results)} detections; "
            f"wrote {out}/results.json, {out}/summary.json"
            + (f", {len(plots)} PR plots in {out}/pr_curves" if plots else "")
        )
        return 0
    finally:
        if joined:
            dist.destroy_process_group()

"""Bodies of ``yolo4 export`` and ``yolo4 quantize`` (the parser lives in ``training/cli.py``).

``quantize`` is torch-free: it reads the FP32 file's metadata, calibrates on the dataset's
images, and scores both files with the edge runtime on the val split, so the numbers are
those of the deployed model.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

# The evaluation settings of `yolo4 eval` (training/evaluate.py): COCO standard.
EVAL_CONF, EVAL_IOU, EVAL_MAX_DET = 0.001, 0.65, 100


def run_export(args: argparse.Namespace) -> int:
    from detector.export import export_onnx
    from detector.loading import load_model

    loaded = load_model(args.weights, args.cfg, args.names)
    metrics = loaded.extra.get("metrics") or {}
    start = time.perf_counter()
    path = export_onnx(
        loaded.model, loaded.config, args.out, img_size=args.img, dynamic=args.dynamic, nms=args.nms,
        opset=args.opset, metrics=metrics, source=loaded.source, conf_threshold=args.conf,
        iou_threshold=args.iou, max_detections=args.max_det,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    from serving.runtime import EdgeDetector

    runtime = EdgeDetector(path)  # proves the file loads and carries readable metadata
    runtime.detect(np.full((64, 64, 3), 114, np.uint8))
    h, w = runtime.input_size
    output = "detections (B, K, 6) + num_detections (B,), in-graph NMS" if args.nms else "predictions (B, N, 5 + C)"
    c = loaded.config
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, opset {args.opset}, {seconds:.0f} s): {c.name}, "
        f"{c.num_classes} classes, input {'dynamic, default ' if args.dynamic else ''}{w}x{h}, {output}"
    )
    return 0


def run_quantize(args: argparse.Namespace) -> int:
    from detector.quantize import calibration_inputs, convert_fp16, quantize_int8
    from serving.runtime import EdgeDetector
    from training.datasets import load_split

    fp32 = EdgeDetector(args.onnx)
    if fp32.precision != "fp32":
        raise ValueError(f"{args.onnx}: is {fp32.precision}; quantize the FP32 export")
    out = Path(args.out)
    if args.fp16:
        convert_fp16(args.onnx, out)
        EdgeDetector(out).detect(np.full((64, 64, 3), 114, np.uint8))
        print(f"wrote {out}: float16 ({_size_line(Path(args.onnx), out)}); for GPUs, CPUs run it through casts")
        return 0

    calib_split = args.calib_split or ("train" if _has_split(args.data, "train") else "val")
    calib_set = load_split(args.data, calib_split)
    samples = list(calib_set.samples)
    random.Random(0).shuffle(samples)  # a spread of images, the same ones every run
    paths = [s.image_path for s in samples[: args.calib_images]]
    batches = tqdm(calibration_inputs(paths, fp32.config), total=len(paths), desc="calibrate", unit="img")
    region = quantize_int8(args.onnx, out, batches, method=args.method)
    print(f"wrote {out}: INT8 QDQ, {len(region.tail)} decode nodes and {len(region.head_convs)} head convs kept "
          f"in float, calibrated on {len(paths)} {calib_split} images")  # fmt: skip

    val = load_split(args.data, "val")
    if args.eval_images:
        val.samples = val.samples[: args.eval_images]
    models = {"FP32": Path(args.onnx), "INT8": out}
    scores = {name: evaluate_onnx(path, val, args.threads) for name, path in models.items()}
    latency = compare_latency(models, val.samples[0].image_path, args.threads, args.runs)
    print(_report(models, scores, latency, len(val), args.runs))
    drop = 100 * (scores["FP32"]["mAP50"] - scores["INT8"]["mAP50"])
    if args.max_map_drop is not None and drop > args.max_map_drop:
        print(f"yolo4 quantize: INT8 loses {drop:.2f} points of mAP50 (limit {args.max_map_drop})", file=sys.stderr)
        return 1
    return 0


def _has_split(data: str, split: str) -> bool:
    from training.data_config import load_data_config

    return split in load_data_config(data).splits


def evaluate_onnx(path: Path, dataset, threads: int | None, batch_size: int = 8) -> dict[str, float]:
    """COCO metrics of an ONNX file on ``dataset`` with the edge runtime (COCO settings)."""
    return score_onnx(path, dataset, threads, batch_size).metrics


def score_onnx(path: Path, dataset, threads: int | None, batch_size: int = 8):
    """``CocoScores`` (metrics and per-class AP) of an ONNX file on ``dataset``."""
    import cv2

    from serving.runtime import EdgeDetector
    from training.coco_eval import detections_to_coco, evaluate_results, ground_truth_from_set

    runtime = EdgeDetector(path, num_threads=threads, conf_threshold=EVAL_CONF, iou_threshold=EVAL_IOU,
                           max_detections=EVAL_MAX_DET)  # fmt: skip
    if runtime.config.num_classes != len(dataset.class_names):
        raise ValueError(
            f"{path}: the model has {runtime.config.num_classes} classes, the dataset {len(dataset.class_names)}"
        )
    gt = ground_truth_from_set(dataset)
    results = []
    samples = dataset.samples
    for start in tqdm(range(0, len(samples), batch_size), desc=f"eval {runtime.precision}", unit="batch"):
        chunk = samples[start : start + batch_size]
        images = [cv2.imread(str(s.image_path), cv2.IMREAD_COLOR) for s in chunk]
        unreadable = [s.image_path for s, image in zip(chunk, images) if image is None]
        if unreadable:  # scoring without it would count its objects as misses
            raise ValueError(f"{unreadable[0]}: cannot read image")
        for sample, dets in zip(chunk, runtime.detect_batch(images)):
            results += detections_to_coco(sample.image_id, dets.boxes, dets.scores, dets.class_ids, gt.category_ids)
    return evaluate_results(gt, results)


def compare_latency(models: dict[str, Path], image_path: Path, threads: int | None, runs: int) -> dict[str, float]:
    """Median model latency (ms, batch 1) of each file, runs interleaved so that load from other
    processes on a shared machine hits every model alike."""
    from detector.preprocess import as_bgr_image, preprocess_batch
    from serving.runtime import EdgeDetector

    runtimes = {name: EdgeDetector(path, num_threads=threads) for name, path in models.items()}
    first = next(iter(runtimes.values()))
    x, _ = preprocess_batch([as_bgr_image(image_path)], first.input_size, first.contract)
    feeds = {"images": x}  # float32 for FP32 and INT8 files alike (QDQ quantizes inside)
    times: dict[str, list[float]] = {name: [] for name in runtimes}
    for i in range(runs + 3):
        for name, runtime in runtimes.items():
            start = time.perf_counter()
            runtime.session.run(None, feeds)
            if i >= 3:  # warm-up runs are not timed
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(t) for name, t in times.items()}


def _size_line(a: Path, b: Path) -> str:
    sa, sb = a.stat().st_size, b.stat().st_size
    return f"{sa / 1e6:.1f} MB -> {sb / 1e6:.1f} MB, {sb / sa:.2f}x"


def _report(models: dict[str, Path], scores, latency, images: int, runs: int) -> str:
    f, q = scores["FP32"], scores["INT8"]
    sizes = {name: path.stat().st_size / 1e6 for name, path in models.items()}
    rows = [f"{'':<22}{'FP32':>10}{'INT8':>10}"]
    for key in ("mAP50", "mAP50-95"):
        rows.append(f"{key:<22}{f[key]:>10.4f}{q[key]:>10.4f}   drop {100 * (f[key] - q[key]):+.2f} points")
    rows.append(f"{'latency ms (median)':<22}{latency['FP32']:>10.1f}{latency['INT8']:>10.1f}   "
                f"INT8 {latency['FP32'] / latency['INT8']:.2f}x faster")  # fmt: skip
    rows.append(f"{'file MB':<22}{sizes['FP32']:>10.2f}{sizes['INT8']:>10.2f}   "
                f"INT8 {sizes['INT8'] / sizes['FP32']:.2f}x the size")  # fmt: skip
    note = (f"val: {images} images, COCO mAP (conf {EVAL_CONF}, NMS IoU {EVAL_IOU}); "
            f"latency: batch 1, model only, {runs} runs")  # fmt: skip
    return "\n".join(rows + [note])

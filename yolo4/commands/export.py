"""``yolo4 export``: a PyTorch model -> one self-contained ONNX file, checked by loading it."""

from __future__ import annotations

import argparse
import time

import numpy as np


def run(args: argparse.Namespace) -> int:
    from yolo4.detector.export import export_onnx
    from yolo4.detector.loading import load_model

    if not args.weights:
        raise ValueError("yolo4 export needs --weights (our .pt, or a Darknet .weights with --cfg)")
    loaded = load_model(args.weights, args.cfg, args.names)
    start = time.perf_counter()
    path = export_onnx(
        loaded.model, loaded.config, args.out, img_size=args.img, dynamic=args.dynamic, nms=args.nms,
        opset=args.opset, metrics=loaded.extra.get("metrics") or {}, source=loaded.source, conf_threshold=args.conf,
        iou_threshold=args.iou, max_detections=args.max_det,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    from yolo4.serving.runtime import EdgeDetector

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

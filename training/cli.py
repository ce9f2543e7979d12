"""The ``yolo4`` command. Each subcommand imports what it needs only when it runs."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path


def _add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--weights", required=required, help="our .pt checkpoint, or a Darknet .weights with --cfg")
    p.add_argument("--cfg", help="Darknet .cfg for a .weights file")
    p.add_argument("--names", help="class names, one per line (default: from the model, or COCO for 80 classes)")


def cmd_detect(args: argparse.Namespace) -> int:
    import cv2
    from tqdm import tqdm

    from detector.preprocess import expand_image_paths
    from detector.result_files import ResultWriter

    paths = expand_image_paths(args.images)
    if not paths:
        raise SystemExit("no images found in " + " ".join(args.images))
    size = (args.img, args.img) if args.img else None
    if args.weights and args.onnx:
        raise ValueError("give --weights or --onnx, not both")
    if args.cfg and not args.weights:
        raise ValueError("--cfg needs the Darknet --weights")
    if args.weights:
        from detector.predictor import Predictor

        predictor = Predictor.from_files(
            args.weights, args.cfg, args.names, device=args.device, conf_threshold=args.conf,
            iou_threshold=args.iou, max_detections=args.max_det, input_size=size,
        )  # fmt: skip
    else:
        predictor = _onnx_predictor(args.onnx, args.conf, args.iou, args.max_det, size)
    out = ResultWriter(args.out)
    total = skipped = 0
    for start in tqdm(range(0, len(paths), args.batch), desc="detect", unit="batch", disable=len(paths) <= args.batch):
        chunk = paths[start : start + args.batch]
        images = [cv2.imread(str(p)) for p in chunk]
        readable = [i for i, image in enumerate(images) if image is not None]
        results = dict(zip(readable, predictor([images[i] for i in readable]))) if readable else {}
        for i, path in enumerate(chunk):
            if i not in results:  # reported and skipped; the other images still run
                print(f"warning: {path}: cannot read image, skipped", file=sys.stderr)
                skipped += 1
                continue
            dets = results[i]
            total += len(dets)
            out.write_image(path, images[i], dets, predictor.config.class_names)
    c = predictor.config
    print(
        f"{total} detections in {len(paths) - skipped} images -> {out.folder}/ "
        f"(model {c.name}, input {predictor.input_size[1]}x{predictor.input_size[0]}"
        + (f", {skipped} unreadable images skipped)" if skipped else ")")
    )
    return 1 if skipped == len(paths) else 0


class _OnnxPredictor:
    """The edge runtime behind ``yolo4 detect``'s predictor interface."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime
        self.config = runtime.config
        self.input_size = runtime.input_size

    def __call__(self, images):
        return self.runtime.detect_batch(images)


def _onnx_predictor(path: str | None, conf: float, iou: float, max_det: int, size) -> _OnnxPredictor:
    """An exported model, or with no path the bundled one (saying so)."""
    from serving.bundled import bundled_model_path, bundled_note
    from serving.runtime import EdgeDetector

    if path is None:
        path = bundled_model_path()
        if path is None:
            raise ValueError("no model given and this installation has no bundled model: pass --weights or --onnx")
        print(bundled_note(), file=sys.stderr)
    runtime = EdgeDetector(path, conf_threshold=conf, iou_threshold=iou, max_detections=max_det, input_size=size)
    return _OnnxPredictor(runtime)


def cmd_convert(args: argparse.Namespace) -> int:
    from detector.checkpoint import save_checkpoint
    from detector.loading import load_model

    out = Path(args.out)
    if out.suffix == ".weights":  # ours (or a converted Darknet model) -> Darknet
        from detector.darknet_weights import WeightsHeader, save_darknet_weights

        loaded = load_model(args.weights, args.cfg, args.names)
        header = loaded.extra.get("darknet_header") or WeightsHeader(**loaded.extra.get("darknet_header_fields", {}))
        save_darknet_weights(loaded.model, out, header)
        cfg_text = loaded.extra.get("darknet_cfg")
        note = ""
        if cfg_text and not args.cfg:
            out.with_suffix(".cfg").write_text(cfg_text)
            note = f" and {out.with_suffix('.cfg')}"
        print(f"wrote {out}{note} ({out.stat().st_size:,} bytes)")
        return 0
    if not args.cfg:
        raise SystemExit("converting to a .pt checkpoint needs --cfg X.cfg --weights X.weights")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_model(args.weights, args.cfg, args.names)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    header = loaded.extra["darknet_header"]
    save_checkpoint(
        out, loaded.model, loaded.config,
        darknet_cfg=Path(args.cfg).read_text(),
        darknet_header_fields={"major": header.major, "minor": header.minor, "revision": header.revision, "seen": header.seen},
        darknet_train=_plain(loaded.extra["darknet_train"]),
    )  # fmt: skip
    print(f"wrote {out}: {loaded.config.name} ({loaded.config.arch}), {loaded.config.num_classes} classes, input {loaded.config.input_size[1]}x{loaded.config.input_size[0]}")
    return 0


def _plain(obj):
    import dataclasses

    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(obj).items()}


def cmd_info(args: argparse.Namespace) -> int:
    if not args.weights:
        from serving.bundled import bundled_model_path, describe_card, model_card

        card = model_card()
        if card is None:
            raise ValueError("no model given and this installation has no bundled model: pass --weights")
        print(describe_card(card))
        print(f"\nfile        {bundled_model_path()}")
        return 0
    from detector.loading import load_model
    from detector.model import count_parameters

    loaded = load_model(args.weights, args.cfg, args.names)
    c = loaded.config
    print(f"model       {c.name} ({c.arch}, width {c.width}, depth {c.depth})")
    print(f"parameters  {count_parameters(loaded.model):,}")
    print(f"activation  backbone {c.backbone_act}, neck {c.neck_act}")
    print(f"input       {c.input_size[1]}x{c.input_size[0]}, {c.preprocess.resize}, pad {c.preprocess.pad_value}, {c.preprocess.color}, x{c.preprocess.scale:.6g}")
    for h in c.heads:
        print(f"head        stride {h.stride}, scale_x_y {h.scale_x_y}, anchors {[tuple(a) for a in h.anchors]}")
    print(f"classes     {c.num_classes}: {', '.join(c.class_names[:10])}{' ...' if c.num_classes > 10 else ''}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from training.eval_command import run

    if args.cfg and not args.weights:
        raise SystemExit("--cfg needs the Darknet --weights")
    return run(args)


def cmd_export(args: argparse.Namespace) -> int:
    from training.export_cli import run_export

    return run_export(args)


def cmd_quantize(args: argparse.Namespace) -> int:
    from training.export_cli import run_quantize

    return run_quantize(args)


def cmd_serve(args: argparse.Namespace) -> int:
    from serving.launch import run

    run(args.onnx, args.host, args.port, args.threads, args.workers)  # replaces this process
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yolo4", description="YOLOv4 detector: detect, eval, convert, info")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("detect", help="detect objects in images; writes JSON + annotated images")
    p.add_argument("images", nargs="+", help="image files or folders")
    _add_model_args(p, required=False)
    p.add_argument("--onnx", help="an exported .onnx model (edge runtime); with neither this nor --weights: the bundled model")
    p.add_argument("--conf", type=float, default=0.25, help="score threshold (objectness x class)")
    p.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=300)
    p.add_argument("--img", type=int, help="input size (multiple of 32; default: the model's)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when present)")
    p.add_argument("--out", default="runs/detect")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("convert", help="Darknet cfg+weights -> our .pt, or .pt -> Darknet .weights")
    _add_model_args(p)
    p.add_argument("--out", required=True, help="model.pt (import) or model.weights (export)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("eval", help="COCO metrics of a model (or a results file) on a dataset split")
    p.add_argument("--data", required=True, help="dataset YAML, or a shipped name (coco-mini, bccd)")
    p.add_argument("--split", default="val")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", help="our .pt checkpoint, or a Darknet .weights with --cfg")
    source.add_argument("--onnx", help="an exported FP32 or INT8 .onnx model (run with the edge runtime)")
    source.add_argument("--results", help="re-score an existing COCO results JSON (no model)")
    p.add_argument("--cfg", help="Darknet .cfg for a .weights file")
    p.add_argument("--names", help="class names, one per line (default: from the model)")
    p.add_argument("--conf", type=float, default=0.001, help="score threshold (COCO standard: 0.001)")
    p.add_argument("--iou", type=float, default=0.65, help="class-aware NMS IoU threshold (standard: 0.65)")
    p.add_argument("--max-det", type=int, default=100, help="detections per image (COCO scores at most 100)")
    p.add_argument("--img", type=int, help="input size, multiple of 32 (default: the model's; ONNX: dynamic only)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when present)")
    p.add_argument("--no-plots", action="store_true", help="skip the per-class precision-recall PNGs")
    p.add_argument("--out", default="runs/eval", help="folder for results.json, summary.json, pr_curves/")
    p.set_defaults(func=cmd_eval)

    from training.train_command import add_train_arguments, cmd_anchors, cmd_show_aug, cmd_train

    p = sub.add_parser("train", help="train on a dataset YAML (Mosaic, CutMix, DropBlock, CIoU, EMA)")
    add_train_arguments(p)
    p.add_argument("--resume", help="continue a run from its weights/last.pt")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("show-aug", help="render a grid of augmented training samples with their boxes")
    add_train_arguments(p)
    p.add_argument("--n", type=int, default=16, help="number of samples")
    p.set_defaults(func=cmd_show_aug, out="aug.png")

    p = sub.add_parser("anchors", help="k-means anchors (IoU distance) for a dataset")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--n", type=int, default=9)
    p.add_argument("--img", type=int, default=416)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_anchors)

    p = sub.add_parser("export", help="model -> one self-contained ONNX file (decode in-graph, metadata inside)")
    _add_model_args(p)
    p.add_argument("--img", type=int, help="input size (multiple of 32; default: the model's)")
    p.add_argument("--dynamic", action="store_true", help="free batch size and image size")
    p.add_argument("--nms", action="store_true", help="in-graph NMS: outputs detections (B, K, 6) + num_detections")
    p.add_argument("--conf", type=float, default=0.25, help="--nms: default score threshold (overridable per run)")
    p.add_argument("--iou", type=float, default=0.45, help="--nms: default NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=300, help="--nms: default detections per image")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (18 or newer)")
    p.add_argument("--out", required=True, help="model.onnx")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("quantize", help="FP32 ONNX -> static INT8 (or --fp16); reports mAP, latency, size")
    p.add_argument("--onnx", required=True, help="the FP32 file from yolo4 export")
    p.add_argument("--data", required=True, help="dataset YAML: calibration images and the val split for mAP")
    p.add_argument("--calib-images", type=int, default=100)
    p.add_argument("--calib-split", help="split of the calibration images (default: train, else val)")
    p.add_argument("--method", default="minmax", choices=["minmax", "entropy", "percentile"], help="calibration")
    p.add_argument("--eval-images", type=int, help="score on the first N val images only (default: all)")
    p.add_argument("--max-map-drop", type=float, help="exit 1 when INT8 loses more mAP50 points than this")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads (default: one per core)")
    p.add_argument("--runs", type=int, default=20, help="timed runs per model for the latency")
    p.add_argument("--fp16", action="store_true", help="write a float16 model (for GPUs) instead of INT8")
    p.add_argument("--out", required=True, help="model-int8.onnx")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("serve", help="HTTP detection service (BentoML) over an exported ONNX model")
    p.add_argument("--onnx", help="FP32 or INT8 .onnx from yolo4 export / quantize (default: $YOLO4_MODEL, else the bundled model)")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: every interface)")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads per model worker (default: cores / workers)")
    p.add_argument("--workers", type=int, help="model worker processes (default 1)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("info", help="describe a model file (no --weights: the bundled model's card)")
    _add_model_args(p, required=False)
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:  # our errors carry the file/layer: no traceback
        print(f"yolo4 {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

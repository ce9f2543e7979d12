"""The ``yolo4`` command: one parser, and each subcommand's body imported only when it runs.

``detect`` and ``eval`` on ONNX files, ``quantize``, ``serve``, ``info`` and ``weights`` never
import torch (tests/test_boundaries.py runs them with torch blocked); a subcommand whose
libraries are not installed says which extra to install.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from yolo4.core.config import COCO_EVAL, DETECT, parse_image_size

# A missing top-level module -> the extra that brings it.
EXTRAS = {
    "torch": "train", "torchvision": "train", "albumentations": "train", "matplotlib": "eval",
    "pycocotools": "eval", "onnxruntime": "edge", "onnx": "export", "onnxscript": "export", "sympy": "export",
    "bentoml": "serve", "fastapi": "serve", "python_multipart": "serve", "multipart": "serve", "yaml": "eval",
    "PIL": "eval",
}  # fmt: skip


def image_size(text: str) -> tuple[int, int]:
    """``--img``: ``512`` or ``WIDTHxHEIGHT`` -> ``(height, width)``, or argparse's usage error."""
    try:
        return parse_image_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _model_args(p: argparse.ArgumentParser, onnx: bool = True) -> None:
    p.add_argument("--weights", help="our .pt checkpoint, or a Darknet .weights with --cfg (PyTorch)")
    p.add_argument("--cfg", help="the Darknet .cfg of a .weights file")
    p.add_argument("--names", help="class names, one per line (default: from the model; COCO's for 80 classes)")
    if onnx:
        p.add_argument("--onnx", help="an exported .onnx file (ONNX Runtime, no torch)")
        p.add_argument("--model", help="a shipped model by name (yolo4 info lists them); the default when "
                                       "no model is given")  # fmt: skip


def _threshold_args(p: argparse.ArgumentParser, defaults) -> None:
    p.add_argument("--conf", type=float, default=defaults.conf, help=f"score threshold, objectness x class (default {defaults.conf})")
    p.add_argument("--iou", type=float, default=defaults.iou, help=f"class-aware NMS IoU threshold (default {defaults.iou})")
    p.add_argument("--max-det", type=int, default=defaults.max_det, help=f"detections per image at most (default {defaults.max_det})")
    p.add_argument("--multi-label", action="store_true", help="a box for every class above --conf, not only the best one")


def _runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--img", type=image_size, help="input size: 512, or WIDTHxHEIGHT (512x384); multiples of 32 "
                                                  "(default: the model's; ONNX: --dynamic files)")  # fmt: skip
    p.add_argument("--batch", type=int, default=8, help="images per run")
    p.add_argument("--device", help="PyTorch: cpu, cuda, cuda:1 (default: cuda when present)")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads (default: chosen by measurement on this machine)")
    p.add_argument("--precision", choices=["auto", "fp32", "int8"], default="auto",
                   help="a shipped model's file (default: the fastest that keeps FP32's accuracy here)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yolo4", description="YOLOv4 object detection: detect, train, evaluate, export, quantize, serve")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, target: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(target=target)
        return p

    p = command("detect", "yolo4.commands.detect:run", "detect objects in images, folders and videos; writes JSON + annotated images")
    p.add_argument("inputs", nargs="+", help="image files, folders of images, video files")
    _model_args(p)
    _threshold_args(p, DETECT)
    _runtime_args(p)
    p.add_argument("--out", default="runs/detect", help="folder for NAME.json + NAME.jpg (default runs/detect)")

    p = command("eval", "yolo4.commands.eval:run", "COCO metrics of a model (or of a results file) on a dataset split")
    p.add_argument("--data", required=True, help="dataset YAML, or a shipped name (coco-mini, bccd)")
    p.add_argument("--split", default="val")
    _model_args(p)
    p.add_argument("--results", help="re-score a COCO results JSON (no model, no images)")
    _threshold_args(p, COCO_EVAL)
    _runtime_args(p)
    p.add_argument("--no-plots", action="store_true", help="skip the per-class precision-recall PNGs")
    p.add_argument("--out", default="runs/eval", help="folder for results.json, summary.json, pr_curves/")

    from yolo4.commands.train_args import add_train_arguments

    p = command("train", "yolo4.commands.train:run", "train on a dataset YAML (Mosaic, CutMix, DropBlock, CIoU, EMA)")
    add_train_arguments(p)
    p.add_argument("--resume", help="continue a run from its weights/last.pt")

    p = command("show-aug", "yolo4.commands.train:show_aug", "render a grid of augmented training samples with their boxes")
    add_train_arguments(p)
    p.add_argument("--n", type=int, default=16, help="number of samples")
    p.set_defaults(out="runs/aug.png")

    p = command("anchors", "yolo4.commands.train:anchors", "k-means anchors (IoU distance) for a dataset")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--n", type=int, default=9)
    p.add_argument("--img", type=int, default=416)
    p.add_argument("--seed", type=int, default=0)

    p = command("export", "yolo4.commands.export:run", "model -> one self-contained ONNX file (decode in-graph, metadata inside)")
    _model_args(p, onnx=False)
    p.add_argument("--img", type=image_size, help="input size: 512, or WIDTHxHEIGHT (512x384); multiples of 32 "
                                                  "(default: the model's)")  # fmt: skip
    p.add_argument("--dynamic", action="store_true", help="free batch size and image size")
    p.add_argument("--nms", action="store_true", help="in-graph NMS: outputs detections (B, K, 6) + num_detections")
    p.add_argument("--conf", type=float, default=DETECT.conf, help="--nms: default score threshold (overridable per run)")
    p.add_argument("--iou", type=float, default=DETECT.iou, help="--nms: default NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=DETECT.max_det, help="--nms: default detections per image")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (18 or newer)")
    p.add_argument("--out", required=True, help="model.onnx")

    p = command("quantize", "yolo4.commands.quantize:run", "FP32 ONNX -> static INT8 (or --fp16), gated on mAP measured here")
    p.add_argument("--onnx", required=True, help="the FP32 file from yolo4 export")
    p.add_argument("--data", required=True, help="dataset YAML: calibration images, and the split the gate scores")
    p.add_argument("--calib-images", type=int, default=100)
    p.add_argument("--calib-split", help="split of the calibration images (default: train, else val)")
    p.add_argument("--eval-split", default="val", help="split the gate scores FP32 and INT8 on (default val)")
    p.add_argument("--method", default="minmax", choices=["minmax", "entropy", "percentile"], help="calibration")
    p.add_argument("--scheme", default="u8s8-7bit", choices=["u8s8-7bit", "u8s8", "u8u8", "s8s8"],
                   help="activation/weight types (default u8s8-7bit: the same answers on every x86 CPU)")  # fmt: skip
    p.add_argument("--eval-images", type=int, help="score on the first N images only (default: all)")
    p.add_argument("--max-map-drop", type=float, default=1.0, help="refuse the INT8 file past this many mAP50 points lost (default 1)")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads for scoring and timing (default: one per core)")
    p.add_argument("--runs", type=int, default=20, help="timed runs per model for the latency")
    p.add_argument("--fp16", action="store_true", help="write a float16 model (for GPUs) instead of INT8")
    p.add_argument("--out", required=True, help="model-int8.onnx")

    p = command("convert", "yolo4.commands.models:convert", "Darknet cfg+weights -> our .pt, or .pt -> Darknet .weights")
    _model_args(p, onnx=False)
    p.add_argument("--out", required=True, help="model.pt (import) or model.weights (export)")

    p = command("info", "yolo4.commands.models:info", "describe a model file, or list the shipped models")
    _model_args(p)

    p = command("weights", "yolo4.commands.weights:run", "fetch and verify official Darknet weights (the only download)")
    p.add_argument("name", choices=["yolov4-tiny"], help="which weights")
    p.add_argument("--dir", help="cache folder (default: $YOLO4_CACHE, else ~/.cache/yolo4)")

    p = command("serve", "yolo4.commands.serve:run", "HTTP detection service (BentoML) over an ONNX model")
    p.add_argument("--onnx", help="FP32 or INT8 .onnx from yolo4 export / quantize (default: $YOLO4_MODEL, else a shipped model)")
    p.add_argument("--model", help="a shipped model by name (default: the default shipped model)")
    p.add_argument("--precision", choices=["auto", "fp32", "int8"], default="auto", help="a shipped model's file")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: every interface)")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads per model worker (default: chosen by measurement)")
    p.add_argument("--workers", type=int, help="model worker processes (default 1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module_name, function = args.target.split(":")
    try:
        body = getattr(importlib.import_module(module_name), function)
        return body(args)
    except ModuleNotFoundError as e:
        top = (e.name or "").split(".")[0]
        if top not in EXTRAS:
            raise
        hint = " (on this project's machines: pip install torch==2.14.1 torchvision==0.29.1 first)" if EXTRAS[top] == "train" else ""
        print(f"yolo4 {args.command}: needs {top}, which is not installed: pip install 'yolo4[{EXTRAS[top]}]'{hint}",
              file=sys.stderr)  # fmt: skip
        return 2
    except (ValueError, FileNotFoundError) as e:  # our errors carry the file, line or layer: no traceback
        print(f"yolo4 {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

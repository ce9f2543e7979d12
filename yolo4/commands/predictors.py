"""The model a command runs, from its options: PyTorch (``--weights``, ``--cfg``) or ONNX
Runtime (``--onnx FILE``, ``--model NAME``, or the default shipped model), behind one
``detect_batch`` interface. The ONNX path imports no torch."""

from __future__ import annotations

import argparse
import sys

from yolo4.core.config import Thresholds


def thresholds_from(args: argparse.Namespace) -> Thresholds:
    return Thresholds(args.conf, args.iou, args.max_det, getattr(args, "multi_label", False))


def check_model_options(args: argparse.Namespace) -> None:
    given = [flag for flag, value in (("--weights", args.weights), ("--onnx", getattr(args, "onnx", None)),
                                      ("--model", getattr(args, "model", None))) if value]  # fmt: skip
    if len(given) > 1:
        raise ValueError(f"give one model: {' or '.join(given)}, not both")
    if args.cfg and not args.weights:
        raise ValueError("--cfg needs the Darknet --weights (a .cfg alone has no trained weights)")
    if getattr(args, "onnx", None) and str(args.onnx).endswith((".pt", ".weights")):
        raise ValueError(f"--onnx {args.onnx}: that is a PyTorch / Darknet file; pass it with --weights")


def make_predictor(args: argparse.Namespace, thresholds: Thresholds, quiet: bool = False):
    """A ``Predictor`` or an ``EdgeDetector`` (both: ``config``, ``input_size``, ``detect_batch``)
    and a description of the model for reports."""
    check_model_options(args)
    size = args.img  # (height, width) or None
    if args.weights:
        from yolo4.detector.predictor import Predictor

        predictor = Predictor.from_files(args.weights, args.cfg, args.names, device=args.device,
                                         thresholds=thresholds, input_size=size)  # fmt: skip
        return predictor, f"{args.weights}" + (f" + {args.cfg}" if args.cfg else "") + " (PyTorch)"
    from yolo4.serving.choice import open_model

    detector, note = open_model(args.onnx, args.model, getattr(args, "precision", "auto"), args.threads,
                                thresholds=thresholds, input_size=size)  # fmt: skip
    if note and not quiet:
        print(note, file=sys.stderr)
    return detector, f"{detector.model_path} ({detector.precision}, ONNX Runtime)"

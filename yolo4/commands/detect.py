"""``yolo4 detect``: any model over images, folders and videos -> ``runs/detect/NAME.json`` +
annotated ``NAME.jpg`` (``NAME.mp4`` for videos). The edge entry point runs this too."""

from __future__ import annotations

import argparse

from yolo4.commands.predictors import make_predictor, thresholds_from
from yolo4.core.detections import ResultWriter
from yolo4.core.image_io import expand_inputs
from yolo4.core.inference import detect_files


def run(args: argparse.Namespace) -> int:
    images, videos = expand_inputs(args.inputs)
    if not images and not videos:
        raise ValueError("no images or videos found in " + " ".join(args.inputs))
    predictor, description = make_predictor(args, thresholds_from(args))
    out = ResultWriter(args.out)
    report = detect_files(predictor.detect_batch, images, videos, out, predictor.config.class_names, args.batch)
    h, w = predictor.input_size
    videos_text = f" and {report.frames} frames of {report.videos} videos" if report.videos else ""
    skipped = f", {report.unreadable} unreadable images skipped" if report.unreadable else ""
    print(f"{report.detections} detections in {report.images} images{videos_text} -> {out.folder}/ "
          f"({predictor.config.name}, {description}, input {w}x{h}{skipped})")  # fmt: skip
    # Unreadable inputs are an error (exit 1) when nothing else was read, whatever the runtime.
    return 1 if report.unreadable and not report.images and not report.videos else 0

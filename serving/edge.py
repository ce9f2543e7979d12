"""Detect with an exported ONNX file on images, folders or videos. No torch.

    python -m serving.edge model.onnx IMAGES_OR_DIR_OR_VIDEO... --out DIR [--conf 0.25] [--threads 2]
    python -m serving.edge IMAGES_OR_DIR_OR_VIDEO...      (the bundled model: serving.bundled)

Per image: ``DIR/NAME.json`` (the JSON of ``yolo4 detect``) and an annotated ``DIR/NAME.jpg``.
Per video: ``DIR/NAME.json`` (one entry per frame) and an annotated ``DIR/NAME.mp4``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from tqdm import tqdm

from detector.draw import draw_detections
from detector.result_files import ResultWriter

from .bundled import bundled_model_path, bundled_note
from .runtime import EdgeDetector

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[Path]]:
    """(images, videos): files as given (by suffix), folders expanded (sorted, non-recursive)."""
    images, videos = [], []
    for item in map(Path, inputs):
        files = sorted(item.iterdir()) if item.is_dir() else [item]
        if not item.exists():
            raise FileNotFoundError(f"{item}: no such file or folder")
        for f in files:
            suffix = f.suffix.lower()
            if suffix in VIDEO_SUFFIXES:
                videos.append(f)
            elif suffix in IMAGE_SUFFIXES or not item.is_dir():  # a named file is tried as an image
                images.append(f)
    return images, videos


def run_images(detector: EdgeDetector, paths: list[Path], out: ResultWriter, batch: int) -> tuple[int, int]:
    """Returns (detections, unreadable images)."""
    total = skipped = 0
    with tqdm(total=len(paths), desc="images", unit="img", disable=not paths) as bar:
        for start in range(0, len(paths), batch):
            chunk = paths[start : start + batch]
            images = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in chunk]
            readable = [i for i, im in enumerate(images) if im is not None]
            results = dict(zip(readable, detector.detect_batch([images[i] for i in readable])))
            for i, path in enumerate(chunk):
                if i not in results:
                    tqdm.write(f"warning: {path}: cannot read image, skipped", file=sys.stderr)
                    skipped += 1
                    continue
                total += len(results[i])
                out.write_image(path, images[i], results[i], detector.config.class_names)
            bar.update(len(chunk))
    return total, skipped


def run_video(detector: EdgeDetector, path: Path, out: ResultWriter, batch: int) -> int:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"{path}: cannot open video")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    stem = out.stem(path)
    writer, frames, total = None, [], 0
    try:
        with tqdm(total=count, desc=path.name, unit="frame") as bar:
            for chunk in _frame_batches(capture, batch):
                for frame, dets in zip(chunk, detector.detect_batch(chunk)):
                    if writer is None:
                        h, w = frame.shape[:2]
                        writer = cv2.VideoWriter(str(out.folder / f"{stem}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                    writer.write(_draw(frame, dets, detector))
                    frames.append({"frame": len(frames), **dets.to_dict()})
                    total += len(dets)
                bar.update(len(chunk))
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if not frames:
        raise ValueError(f"{path}: no frames could be read")
    (out.folder / f"{stem}.json").write_text(json.dumps({"video": str(path), "fps": fps, "frames": frames}))
    return total


def _frame_batches(capture: cv2.VideoCapture, batch: int) -> Iterator[list[np.ndarray]]:
    chunk = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        chunk.append(frame)
        if len(chunk) == batch:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _draw(image: np.ndarray, dets, detector: EdgeDetector) -> np.ndarray:
    return draw_detections(image, dets.boxes, dets.scores, dets.class_ids, detector.config.class_names)


def split_model_argument(arguments: list[str]) -> tuple[Path, list[str]]:
    """(model, inputs): the first argument when it is an .onnx file, else the bundled model."""
    if arguments[0].lower().endswith(".onnx"):
        if len(arguments) == 1:
            raise ValueError("no images or videos given after the model")
        return Path(arguments[0]), arguments[1:]
    model = bundled_model_path()
    if model is None:
        raise ValueError("no model given and this installation has no bundled model: pass model.onnx first")
    print(bundled_note(), file=sys.stderr)
    return model, arguments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.edge", description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", metavar="[model.onnx] inputs",
                        help="an ONNX file from `yolo4 export` / `yolo4 quantize` (default: the bundled "
                             "model), then images, folders of images, or videos")  # fmt: skip
    parser.add_argument("--out", default="runs/edge")
    parser.add_argument("--conf", type=float, default=0.25, help="score threshold (objectness x class)")
    parser.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold")
    parser.add_argument("--max-det", type=int, default=300)
    parser.add_argument("--img", type=int, help="input size for --dynamic files (multiple of 32)")
    parser.add_argument("--threads", type=int, help="ONNX Runtime threads (default: one per core)")
    parser.add_argument("--batch", type=int, default=4, help="images or frames per run")
    args = parser.parse_args(argv)
    try:
        args.model, args.inputs = split_model_argument(args.inputs)
        detector = EdgeDetector(
            args.model, num_threads=args.threads, conf_threshold=args.conf, iou_threshold=args.iou,
            max_detections=args.max_det, input_size=(args.img, args.img) if args.img else None,
        )  # fmt: skip
        images, videos = expand_inputs(args.inputs)
        if not images and not videos:
            raise ValueError("no images or videos found in " + " ".join(args.inputs))
        out = ResultWriter(args.out)
        total, skipped = run_images(detector, images, out, args.batch)
        for video in videos:
            total += run_video(detector, video, out, args.batch)
    except (ValueError, FileNotFoundError) as e:
        print(f"serving.edge: error: {e}", file=sys.stderr)
        return 2
    h, w = detector.input_size
    print(f"{total} detections in {len(images) - skipped} images and {len(videos)} videos -> {args.out}/ "
          f"({detector.config.name}, {detector.precision}, input {w}x{h})")  # fmt: skip
    return 1 if images and skipped == len(images) and not videos else 0


if __name__ == "__main__":
    sys.exit(main())

"""The one inference loop: any ``Predict`` over images, folders and videos, with the next batch
read while the model runs this one. ``yolo4 detect`` (PyTorch or ONNX) and the edge entry point
run ``detect_files``; evaluation runs ``read_batches`` (``yolo4.core.evaluate``). Torch-free.
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
from tqdm import tqdm
from yolo4.core.detections import Detections, ResultWriter

# BGR uint8 images (any sizes) -> one Detections each, boxes in original pixels: the
# ``detect_batch`` of the PyTorch Predictor and of the ONNX EdgeDetector.
Predict = Callable[[list[np.ndarray]], list[Detections]]


def _read(path: Path) -> np.ndarray | None:
    return cv2.imread(str(path), cv2.IMREAD_COLOR)  # EXIF orientation applied (yolo4.core.image_io)


def read_batches(paths: Sequence[Sequence[Path]], workers: int = 2) -> Iterator[list[np.ndarray | None]]:
    """The images of each batch of paths (None where unreadable), read one batch ahead:
    JPEG decoding releases the GIL, so it overlaps the model's run on the batch before."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = None
        for batch in paths:
            submitted = [pool.submit(_read, p) for p in batch]
            if pending is not None:
                yield [f.result() for f in pending]
            pending = submitted
        if pending is not None:
            yield [f.result() for f in pending]


@dataclass
class DetectReport:
    detections: int = 0
    images: int = 0  # images with results
    unreadable: int = 0
    videos: int = 0
    frames: int = 0


def detect_files(
    predict: Predict, images: list[Path], videos: list[Path], out: ResultWriter, class_names, batch_size: int = 8
) -> DetectReport:
    """Run ``predict`` over ``images`` and ``videos``; write ``out``'s JSON + drawn images (and an
    annotated ``.mp4`` + per-frame JSON per video). Unreadable images are reported and skipped."""
    report = DetectReport()
    chunks = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
    with tqdm(total=len(images), desc="detect", unit="img", disable=len(images) <= batch_size) as bar:
        for chunk, loaded in zip(chunks, read_batches(chunks)):
            readable = [i for i, image in enumerate(loaded) if image is not None]
            results = dict(zip(readable, predict([loaded[i] for i in readable]))) if readable else {}
            for i, path in enumerate(chunk):
                if i not in results:
                    tqdm.write(f"warning: {path}: cannot read image, skipped", file=sys.stderr)
                    report.unreadable += 1
                    continue
                report.detections += len(results[i])
                report.images += 1
                out.write_image(path, loaded[i], results[i], class_names)
            bar.update(len(chunk))
    for video in videos:
        frames, found = detect_video(predict, video, out, class_names, batch_size)
        report.videos += 1
        report.frames += frames
        report.detections += found
    return report


def detect_video(predict: Predict, path: Path, out: ResultWriter, class_names, batch_size: int) -> tuple[int, int]:
    """``DIR/NAME.mp4`` with the boxes drawn and ``DIR/NAME.json`` (one entry per frame);
    returns (frames, detections)."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"{path}: cannot open video")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    stem = out.stem(path)
    writer, frames, total = None, [], 0
    try:
        with tqdm(total=count, desc=path.name, unit="frame") as bar:
            for chunk in _frame_batches(capture, batch_size):
                for frame, dets in zip(chunk, predict(chunk)):
                    if writer is None:
                        h, w = frame.shape[:2]
                        fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                        writer = cv2.VideoWriter(str(out.folder / f"{stem}.mp4"), fourcc, fps, (w, h))
                    writer.write(dets.draw(frame, class_names))
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
    return len(frames), total


def _frame_batches(capture: cv2.VideoCapture, batch_size: int) -> Iterator[list[np.ndarray]]:
    chunk = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        chunk.append(frame)
        if len(chunk) == batch_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk

"""``EdgeDetector``: an exported yolo4 ONNX file + ONNX Runtime + numpy. No torch.

    detector = EdgeDetector("model-int8.onnx", num_threads=2)
    dets = detector.detect(cv2.imread("photo.jpg"))        # boxes in original-image pixels
    print(dets.to_dict())                                  # same JSON as detector.predictor

Everything the runtime needs (classes, input size, pre-processing contract, output layout,
precision) comes from the file's metadata (``detector.onnx_metadata``); images are
pre-processed by the same torch-free ``detector.preprocess`` functions as in training and
export calibration. Files with in-graph NMS get the thresholds as inputs; the others go
through ``serving.nms``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from detector.config import ModelConfig, PreprocessConfig
from detector.detections import Detections
from detector.onnx_metadata import (
    CONF_INPUT,
    DETECTIONS,
    INPUT_NAME,
    IOU_INPUT,
    MAX_DET_INPUT,
    NUM_DETECTIONS,
    PREDICTIONS,
    ModelMetadata,
    parse_metadata,
)  # fmt: skip
from detector.preprocess import as_bgr_image, boxes_to_original, check_contract, preprocess_batch

from .bundled import bundled_model_path, bundled_note
from .nms import select_detections


class EdgeModelError(ValueError):
    """A file that is not a usable yolo4 ONNX model."""


# The edge runtime returns the same type as the PyTorch predictor (torch-free module).
EdgeDetections = Detections


class EdgeDetector:
    """Runs an exported yolo4 ONNX file (FP32, INT8 or FP16; with or without in-graph NMS).

    Args:
        model_path: the ``.onnx`` file written by ``yolo4 export`` / ``yolo4 quantize``;
            None: the bundled BCCD model (``serving.bundled``; logged, and ``bundled`` is True).
        providers: ONNX Runtime execution providers (default: CPU).
        num_threads: intra-op threads (default: ONNX Runtime's choice, one per physical core).
        conf_threshold, iou_threshold, max_detections: post-processing, in-graph or numpy.
        input_size: (height, width) for files exported with ``--dynamic`` (multiples of 32);
            default: the export size.
        preprocess: must equal the model's contract if given (``ContractMismatch`` otherwise).
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        providers: list[str] | None = None,
        num_threads: int | None = None,
        conf_threshold: float = 0.25,
        iou_threshold: float = 0.45,
        max_detections: int = 300,
        input_size: tuple[int, int] | None = None,
        preprocess: PreprocessConfig | None = None,
    ):
        self.bundled = model_path is None
        if model_path is None:
            model_path = bundled_model_path()
            if model_path is None:
                raise EdgeModelError("no model given and this installation has no bundled model")
            logging.getLogger(__name__).info(bundled_note())
        self.model_path = Path(model_path)
        self.session = _open_session(self.model_path, providers, num_threads)
        self._metadata = _read_metadata(self.session, self.model_path)
        config = self._metadata.config
        self.contract = check_contract(config.preprocess, preprocess)
        self.conf_threshold = float(conf_threshold)
        self.iou_threshold = float(iou_threshold)
        self.max_detections = int(max_detections)
        graph_input = self.session.get_inputs()[0]
        self._input_type = np.float16 if graph_input.type == "tensor(float16)" else np.float32
        _, _, height, width = graph_input.shape
        self._fixed_batch = graph_input.shape[0] if isinstance(graph_input.shape[0], int) else None
        fixed_size = (height, width) if isinstance(height, int) and isinstance(width, int) else None
        self.input_size = tuple(input_size or fixed_size or config.input_size)
        if fixed_size and self.input_size != fixed_size:
            raise ValueError(
                f"{model_path}: exported for {fixed_size[1]}x{fixed_size[0]} only; re-export with --dynamic"
            )
        if any(s % 32 or s <= 0 for s in self.input_size):
            raise ValueError(f"input size {self.input_size} must be positive multiples of 32")

    @property
    def config(self) -> ModelConfig:
        return self._metadata.config

    @property
    def metadata(self) -> dict[str, Any]:
        """The file's metadata, JSON entries decoded."""
        m = self._metadata
        return {**m.props, "config": m.config.to_dict(), "output": m.layout, "metrics": m.metrics, "dynamic": m.dynamic}

    @property
    def has_nms(self) -> bool:
        return self._metadata.has_nms

    @property
    def precision(self) -> str:
        return self._metadata.precision

    def detect(self, image_bgr: np.ndarray) -> EdgeDetections:
        """One BGR uint8 image (or a path / PIL image) -> its detections."""
        return self.detect_batch([image_bgr])[0]

    def detect_batch(self, images: list[np.ndarray]) -> list[EdgeDetections]:
        """BGR uint8 images (any sizes) -> one ``EdgeDetections`` each, in one run when the
        file has a free batch size."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            raise TypeError("detect_batch takes a list of images; use detect() for one image")
        bgr = [as_bgr_image(im) for im in images]
        if not bgr:
            return []
        step = self._fixed_batch or len(bgr)
        return [d for start in range(0, len(bgr), step) for d in self._run(bgr[start : start + step])]

    def _run(self, images: list[np.ndarray]) -> list[EdgeDetections]:
        batch, transforms = preprocess_batch(images, self.input_size, self.contract)
        feeds: dict[str, np.ndarray] = {INPUT_NAME: batch.astype(self._input_type, copy=False)}
        if self.has_nms:
            feeds[CONF_INPUT] = np.array([self.conf_threshold], np.float32)
            feeds[IOU_INPUT] = np.array([self.iou_threshold], np.float32)
            feeds[MAX_DET_INPUT] = np.array([self.max_detections], np.int64)
            rows, counts = self.session.run([DETECTIONS, NUM_DETECTIONS], feeds)  # (B, K, 6), (B,)
            results = [_split_rows(r[:n]) for r, n in zip(rows.astype(np.float32), counts)]
        else:
            (predictions,) = self.session.run([PREDICTIONS], feeds)  # (B, N, 5 + C)
            results = [
                select_detections(p, self.conf_threshold, self.iou_threshold, self.max_detections)
                for p in predictions.astype(np.float32)
            ]
        names = self.config.class_names
        return [
            EdgeDetections(
                boxes=boxes_to_original(boxes, t),
                scores=scores.astype(np.float32),
                class_ids=class_ids,
                class_names=[names[i] for i in class_ids],
                image_size=t.original_size,
            )
            for (boxes, scores, class_ids), t in zip(results, transforms)
        ]


def _split_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(K, 6)`` x1, y1, x2, y2, score, class -> boxes, scores, int64 class ids."""
    return rows[:, :4], rows[:, 4], rows[:, 5].round().astype(np.int64)


def _open_session(path: Path, providers: list[str] | None, num_threads: int | None) -> ort.InferenceSession:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # one conv at a time, each multi-threaded
    options.inter_op_num_threads = 1
    if num_threads:
        options.intra_op_num_threads = int(num_threads)
    # Errors only: NMS files keep their thresholds as overridable initializers, which ONNX
    # Runtime reports as a warning on every load.
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
    except Exception as e:  # InvalidProtobuf, InvalidGraph, NotImplemented...: all "cannot load"
        first = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        raise EdgeModelError(f"{path}: not a loadable ONNX model ({first})") from None


def _read_metadata(session: ort.InferenceSession, path: Path) -> ModelMetadata:
    try:
        metadata = parse_metadata(session.get_modelmeta().custom_metadata_map, str(path))
    except ValueError as e:
        raise EdgeModelError(str(e)) from None
    inputs = [i.name for i in session.get_inputs()]
    outputs = {o.name for o in session.get_outputs()}
    expected = {DETECTIONS, NUM_DETECTIONS} if metadata.has_nms else {PREDICTIONS}
    if inputs[:1] != [INPUT_NAME] or not expected <= outputs or len(session.get_inputs()[0].shape) != 4:
        raise EdgeModelError(
            f"{path}: graph inputs {inputs} / outputs {sorted(outputs)} do not match its metadata "
            f"(expects input {INPUT_NAME!r} (B, 3, H, W) and outputs {sorted(expected)})"
        )
    return metadata

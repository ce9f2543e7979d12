"""``EdgeDetector``: an exported yolo4 ONNX file + ONNX Runtime + numpy. No torch.

    detector = EdgeDetector("model-int8.onnx", num_threads=2)
    dets = detector.detect(cv2.imread("photo.jpg"))        # boxes in original-image pixels
    print(dets.to_dict())                                  # same JSON as the PyTorch Predictor

Everything the runtime needs (classes, input size, pre-processing contract, output layout,
precision) comes from the file's metadata (``yolo4.core.onnx_metadata``); images are
pre-processed by the same torch-free ``yolo4.core.preprocess`` functions as in training and
calibration. A run is three steps, which the HTTP service spreads over its two processes:
``prepare`` (resize per the contract), ``infer`` (one network run for a whole batch) and
``finish`` (each image's own thresholds: numpy NMS, or the in-graph NMS rows, mapped back to
original pixels).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnxruntime as ort
from yolo4.core.config import DETECT, ModelConfig, PreprocessConfig, Thresholds
from yolo4.core.detections import Detections
from yolo4.core.nms import select_detections
from yolo4.core.onnx_metadata import (
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
from yolo4.core.preprocess import (
    ResizeTransform,
    as_bgr_image,
    boxes_to_original,
    check_contract,
    resize_image,
    to_input_tensor,
)

log = logging.getLogger(__name__)


class EdgeModelError(ValueError):
    """A file that is not a usable yolo4 ONNX model."""


class EdgeDetector:
    """Runs an exported yolo4 ONNX file (FP32, INT8 or FP16; with or without in-graph NMS).

    Args:
        model_path: the ``.onnx`` file written by ``yolo4 export`` / ``yolo4 quantize``;
            None: the default shipped model, its FP32 or INT8 file and the thread count chosen
            by measurement here (``yolo4.serving.choice``; logged, ``bundled`` and ``choice`` set).
        providers: ONNX Runtime execution providers (default: CPU).
        num_threads: intra-op threads (default: ONNX Runtime's choice, one per physical core).
        conf_threshold, iou_threshold, max_detections: post-processing (``thresholds`` wins).
        input_size: (height, width) for files exported with ``--dynamic`` (multiples of 32);
            default: the export size.
        preprocess: must equal the model's contract if given (``ContractMismatch`` otherwise).
        thresholds: all post-processing settings at once (``yolo4.core.config.Thresholds``).
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        providers: list[str] | None = None,
        num_threads: int | None = None,
        conf_threshold: float | None = None,
        iou_threshold: float | None = None,
        max_detections: int | None = None,
        input_size: tuple[int, int] | None = None,
        preprocess: PreprocessConfig | None = None,
        thresholds: Thresholds | None = None,
    ):
        self.bundled = model_path is None
        self.choice = None  # how yolo4.serving.choice picked the file and thread count, if it did
        if model_path is None:
            from yolo4.serving.bundled import default_model_name, model_files
            from yolo4.serving.choice import choose

            name = default_model_name()
            if name is None:
                raise EdgeModelError("no model given and this installation ships none: pass the .onnx file")
            files = model_files(name)
            self.choice = choose(name, files, "auto", num_threads)
            model_path, num_threads = files[self.choice.precision], self.choice.threads
            log.info("no model given: the shipped %s, %s on %d thread(s) (%s)", name, self.choice.precision,
                     num_threads, self.choice.reason)  # fmt: skip
        self.model_path = Path(model_path)
        self.num_threads = num_threads
        self.session = open_session(self.model_path, providers, num_threads)
        self._metadata = read_metadata(self.session, self.model_path)
        config = self._metadata.config
        self.contract = check_contract(config.preprocess, preprocess)
        self.thresholds = thresholds or DETECT.replace(conf=conf_threshold, iou=iou_threshold, max_det=max_detections)
        if self.thresholds.multi_label and self.has_nms:
            raise ValueError(f"{model_path}: in-graph NMS keeps one class per box; use a file exported without --nms")
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

    @property
    def batch_size(self) -> int | None:
        """The batch the file was exported for, or None when it is free (``--dynamic``)."""
        return self._fixed_batch

    # --- the three steps --------------------------------------------------------------------

    def prepare(self, image) -> tuple[np.ndarray, ResizeTransform]:
        """A BGR uint8 image (or a path / PIL image) -> the resized ``(h, w, 3)`` uint8 network
        input per the contract, and the mapping back to its pixels."""
        return resize_image(as_bgr_image(image), self.input_size, self.contract)

    def infer(self, resized: Sequence[np.ndarray], thresholds: Thresholds | None = None) -> list[np.ndarray]:
        """One network run over prepared images -> per image the decoded ``(N, 5 + C)`` rows,
        or the in-graph NMS ``(K, 6)`` rows (computed at ``thresholds``, one setting per run)."""
        thresholds = thresholds or self.thresholds
        step = self._fixed_batch or len(resized)
        out: list[np.ndarray] = []
        for start in range(0, len(resized), step):
            batch = to_input_tensor(list(resized[start : start + step]), self.contract)
            feeds: dict[str, np.ndarray] = {INPUT_NAME: batch.astype(self._input_type, copy=False)}
            if self.has_nms:
                feeds[CONF_INPUT] = np.array([thresholds.conf], np.float32)
                feeds[IOU_INPUT] = np.array([thresholds.iou], np.float32)
                feeds[MAX_DET_INPUT] = np.array([thresholds.max_det], np.int64)
                rows, counts = self.session.run([DETECTIONS, NUM_DETECTIONS], feeds)  # (B, K, 6), (B,)
                out += [r[:n].astype(np.float32) for r, n in zip(rows, counts)]
            else:
                (predictions,) = self.session.run([PREDICTIONS], feeds)  # (B, N, 5 + C)
                out += list(predictions.astype(np.float32, copy=False))
        return out

    def finish(self, raw: np.ndarray, transform: ResizeTransform, thresholds: Thresholds | None = None) -> Detections:
        """One image's ``infer`` output -> its detections in original pixels."""
        if self.has_nms:  # the graph already applied the thresholds it was run with
            boxes, scores, class_ids = raw[:, :4], raw[:, 4], raw[:, 5].round().astype(np.int64)
        else:
            boxes, scores, class_ids = select_detections(raw, thresholds or self.thresholds)
        names = self.config.class_names
        return Detections(
            boxes=boxes_to_original(boxes, transform),
            scores=scores.astype(np.float32),
            class_ids=class_ids,
            class_names=[names[i] for i in class_ids],
            image_size=transform.original_size,
        )

    # --- the usual entry points -------------------------------------------------------------

    def detect(self, image) -> Detections:
        """One BGR uint8 image (or a path / PIL image) -> its detections."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: list) -> list[Detections]:
        """BGR uint8 images (any sizes) -> one ``Detections`` each, in one run when the file
        has a free batch size."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            raise TypeError("detect_batch takes a list of images; use detect() for one image")
        if not len(images):
            return []
        prepared = [self.prepare(image) for image in images]
        raws = self.infer([resized for resized, _ in prepared])
        return [self.finish(raw, transform) for raw, (_, transform) in zip(raws, prepared)]


def open_session(path: Path, providers: list[str] | None, num_threads: int | None) -> ort.InferenceSession:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # one conv at a time, each multi-threaded
    options.inter_op_num_threads = 1
    if num_threads:
        options.intra_op_num_threads = int(num_threads)
    # Worker threads sleep instead of spin-waiting between operators: spinning made two threads
    # 1.7x slower than one when another process held a core (yolo4.serving.choice).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # Errors only: NMS files keep their thresholds as overridable initializers, which ONNX
    # Runtime reports as a warning on every load.
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
    except Exception as e:  # InvalidProtobuf, InvalidGraph, NotImplemented...: all "cannot load"
        first = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        raise EdgeModelError(f"{path}: not a loadable ONNX model ({first})") from None


def read_metadata(session: ort.InferenceSession, path: Path) -> ModelMetadata:
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

"""Typed bodies of the service (pydantic): the responses shown in its OpenAPI page, and the
prepared image that the HTTP service sends the model service.

The detection JSON is the one of ``yolo4 detect`` and ``Detections.to_dict()``: boxes
``[x1, y1, x2, y2]`` in original-image pixels, score, class id, label.
"""

from __future__ import annotations

from typing import Annotated, Any

import bentoml
import numpy as np
from pydantic import BaseModel, Field
from yolo4.core.config import DETECT, Thresholds
from yolo4.core.detections import Detections
from yolo4.core.preprocess import ResizeTransform
from yolo4.serving.uploads import InputError

# Per-request post-processing fields and their ranges (400 outside them).
THRESHOLD_FIELDS = {"conf": (float, 0.0, 1.0), "iou": (float, 0.0, 1.0), "max_det": (int, 1, 1000)}


def thresholds_from_form(values: dict[str, str]) -> Thresholds:
    parsed: dict[str, Any] = {}
    for name, (kind, low, high) in THRESHOLD_FIELDS.items():
        if name not in values:
            continue
        try:
            number = kind(values[name])
        except ValueError:
            raise InputError(400, f"{name}={values[name]!r}: expected {'a number' if kind is float else 'an integer'}") from None
        if not low <= number <= high:
            raise InputError(400, f"{name}={values[name]}: must lie in [{low}, {high}]")
        parsed[name] = number
    return DETECT.replace(**parsed)


class Detection(BaseModel):
    box: tuple[float, float, float, float] = Field(description="x1, y1, x2, y2 in original-image pixels")
    score: float
    class_id: int
    label: str


class ImageSize(BaseModel):
    height: int
    width: int


class ImageDetections(BaseModel):
    image_size: ImageSize
    detections: list[Detection]

    @classmethod
    def from_detections(cls, dets: Detections) -> ImageDetections:
        return cls.model_validate(dets.to_dict())


class Timing(BaseModel):
    decode_ms: float = Field(description="reading, decoding and resizing the upload(s)")
    inference_ms: float = Field(description="the model call, batching wait included")
    total_ms: float


class DetectResponse(ImageDetections):
    timing: Timing


class BatchResponse(BaseModel):
    results: list[ImageDetections] = Field(description="one entry per uploaded image, in upload order")
    timing: Timing


class ErrorResponse(BaseModel):
    error: str


class ModelInfo(BaseModel):
    variant: str = Field(description="model name, e.g. yolov4-tiny")
    arch: str
    precision: str = Field(description="fp32, int8 or fp16")
    quantization: str | None = Field(default=None, description="the INT8 scheme, e.g. u8s8-7bit")
    classes: list[str]
    input_size: ImageSize
    in_graph_nms: bool
    dynamic_batch: bool = Field(description="several images per runtime call (adaptive batching helps)")
    model_file: str
    model_sha256: str = Field(description="first 16 hex digits: which file is being served")
    metrics: dict = Field(description="training metrics stored in the file")
    version: str = Field(description="yolo4 package version")
    onnxruntime: str
    runtime_threads: int | None = Field(description="ONNX Runtime intra-op threads (None: its default)")
    choice: dict | None = Field(default=None, description="how the file and thread count were chosen on this machine")
    cpu: str
    bundled: bool = Field(description="a model that ships with the package")
    model_card: dict | None = Field(default=None, description="the shipped model's card: data, licence, metrics")
    config: dict = Field(description="the model's ModelConfig: classes, input size, pre-processing contract")


class PreparedImage(bentoml.IODescriptor):
    """One upload, decoded and resized per the model's contract, with its request's thresholds:
    an item of the model service's adaptive batch (a 416x416 input is 0.5 MB, whatever the upload)."""

    pixels: Annotated[np.ndarray, bentoml.validators.DType("uint8")]  # (h, w, 3) BGR, the network input size
    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    height: int  # of the original image
    width: int
    conf: float = DETECT.conf
    iou: float = DETECT.iou
    max_det: int = DETECT.max_det

    @classmethod
    def of(cls, pixels: np.ndarray, t: ResizeTransform, thresholds: Thresholds) -> PreparedImage:
        return cls(pixels=pixels, scale_x=t.scale_x, scale_y=t.scale_y, pad_x=t.pad_x, pad_y=t.pad_y,
                   height=t.original_size[0], width=t.original_size[1], conf=thresholds.conf,
                   iou=thresholds.iou, max_det=thresholds.max_det)  # fmt: skip

    def transform(self) -> ResizeTransform:
        return ResizeTransform(self.scale_x, self.scale_y, self.pad_x, self.pad_y, (self.height, self.width))

    def thresholds(self) -> Thresholds:
        return Thresholds(self.conf, self.iou, self.max_det)

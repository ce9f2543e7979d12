"""Typed request/response bodies of the service (pydantic), shown in its OpenAPI page.

The detection JSON is the one of ``yolo4 detect`` and ``Detections.to_dict()``: boxes
``[x1, y1, x2, y2]`` in original-image pixels, score, class id, label.
"""

from __future__ import annotations

from typing import Annotated

import bentoml
import numpy as np
from annotated_types import Ge, Le
from pydantic import BaseModel, Field

from detector.detections import Detections

# Per-request post-processing, validated at the HTTP edge (400 outside these ranges).
Conf = Annotated[float, Ge(0.0), Le(1.0), Field(description="score threshold (objectness x class)")]
Iou = Annotated[float, Ge(0.0), Le(1.0), Field(description="class-aware NMS IoU threshold")]
MaxDet = Annotated[int, Ge(1), Le(1000), Field(description="detections per image at most")]
DEFAULT_CONF, DEFAULT_IOU, DEFAULT_MAX_DET = 0.25, 0.45, 300


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
    def from_edge(cls, dets: Detections) -> ImageDetections:
        return cls.model_validate(dets.to_dict())


class Timing(BaseModel):
    decode_ms: float = Field(description="reading and decoding the upload(s)")
    inference_ms: float = Field(description="the model call, batching wait included")
    total_ms: float


class DetectResponse(ImageDetections):
    timing: Timing


class BatchResponse(BaseModel):
    results: list[ImageDetections] = Field(description="one entry per uploaded image, in upload order")
    timing: Timing


class ModelInfo(BaseModel):
    variant: str = Field(description="model name, e.g. yolov4-nano")
    arch: str
    precision: str = Field(description="fp32, int8 or fp16")
    classes: list[str]
    input_size: ImageSize
    in_graph_nms: bool
    dynamic_batch: bool = Field(description="several images per runtime call (adaptive batching helps)")
    model_file: str
    model_sha256: str = Field(description="first 16 hex digits: which file is being served")
    metrics: dict = Field(description="training metrics stored in the file")
    version: str = Field(description="yolo4 package version")
    onnxruntime: str
    runtime_threads: int
    bundled: bool = Field(description="the model that ships with the package (no model was configured)")
    model_card: dict | None = Field(default=None, description="the bundled model's card: data, recipe, metrics, latency")


class ImageJob(bentoml.IODescriptor):
    """One decoded image and its thresholds: an item of the model service's batch."""

    image: Annotated[np.ndarray, bentoml.validators.DType("uint8")]  # (H, W, 3) BGR
    conf: float = DEFAULT_CONF
    iou: float = DEFAULT_IOU
    max_det: int = DEFAULT_MAX_DET

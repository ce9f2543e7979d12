"""What a yolo4 ONNX file says about itself, as ``metadata_props`` (string -> string).

Written by ``detector.export``, updated by ``detector.quantize``, read by the torch-free edge
runtime (through ONNX Runtime's ``custom_metadata_map``, so neither torch nor the ``onnx``
package is needed to read it). Keys::

    format          "yolo4-onnx"              format_version  "1"
    variant         config.name               precision       "fp32" | "int8" | "fp16"
    config          ModelConfig.to_dict() as JSON: class names, input size, heads
                    (strides, anchors, scale_x_y), the pre-processing contract
    output          the output layout as JSON (see ``decoded_layout`` / ``nms_layout``)
    dynamic         "true" when batch and image size are free
    metrics         training metrics of the checkpoint as JSON ("{}" when unknown)
    source          the file the model was exported from

This module is torch-free and onnx-free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from yolo4.core.config import ModelConfig

FORMAT, FORMAT_VERSION = "yolo4-onnx", 1
PRECISIONS = ("fp32", "int8", "fp16")
DECODED, NMS = "decoded", "nms"

INPUT_NAME = "images"
PREDICTIONS = "predictions"
DETECTIONS, NUM_DETECTIONS = "detections", "num_detections"
# Optional inputs of an NMS graph (initializers that a caller may override per run).
CONF_INPUT, IOU_INPUT, MAX_DET_INPUT = "conf_threshold", "iou_threshold", "max_detections"


class MetadataError(ValueError):
    """An ONNX file without (valid) yolo4 metadata."""


def decoded_layout(num_classes: int) -> dict[str, Any]:
    """Output of a graph without NMS: every candidate box, decoded."""
    return {
        "kind": DECODED,
        "outputs": {PREDICTIONS: ["batch", "candidates", 5 + num_classes]},
        "columns": ["cx", "cy", "w", "h", "objectness", *(f"p{i}" for i in range(num_classes))],
        "box_format": "cxcywh",
        "coordinates": "input pixels (letterboxed/stretched network input)",
        "score": "objectness * class probability; apply class-aware NMS",
    }


def nms_layout(conf_threshold: float, iou_threshold: float, max_detections: int) -> dict[str, Any]:
    """Output of a graph with in-graph ``NonMaxSuppression``: final detections per image."""
    return {
        "kind": NMS,
        "outputs": {DETECTIONS: ["batch", "max_detections", 6], NUM_DETECTIONS: ["batch"]},
        "columns": ["x1", "y1", "x2", "y2", "score", "class_id"],
        "box_format": "xyxy",
        "coordinates": "input pixels (letterboxed/stretched network input)",
        "score": "objectness * class probability of the best class; class-aware NMS",
        "order": "by decreasing score; rows at and past num_detections[b] are zeros",
        "optional_inputs": {CONF_INPUT: conf_threshold, IOU_INPUT: iou_threshold, MAX_DET_INPUT: max_detections},
    }


def build_metadata(
    config: ModelConfig,
    layout: dict[str, Any],
    dynamic: bool,
    precision: str = "fp32",
    metrics: Mapping[str, Any] | None = None,
    source: str = "",
) -> dict[str, str]:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "variant": config.name,
        "precision": precision,
        "config": json.dumps(config.to_dict()),
        "output": json.dumps(layout),
        "dynamic": "true" if dynamic else "false",
        "metrics": json.dumps(dict(metrics or {}), default=float),
        "source": str(source),
    }


@dataclass(frozen=True)
class ModelMetadata:
    config: ModelConfig
    layout: dict[str, Any]
    precision: str
    dynamic: bool
    metrics: dict[str, Any]
    props: dict[str, str] = field(repr=False)  # everything as stored

    @property
    def has_nms(self) -> bool:
        return self.layout["kind"] == NMS


def parse_metadata(props: Mapping[str, str], where: str = "model") -> ModelMetadata:
    """``metadata_props`` of an exported file -> typed metadata; a clear error otherwise."""
    if props.get("format") != FORMAT or "config" not in props:
        raise MetadataError(
            f"{where}: not a yolo4 ONNX file (no yolo4 metadata: found keys {sorted(props) or 'none'}); "
            "export models with `yolo4 export`"
        )
    if int(props.get("format_version", "0")) > FORMAT_VERSION:
        raise MetadataError(
            f"{where}: metadata version {props['format_version']} is newer than this code ({FORMAT_VERSION})"
        )
    try:
        config = ModelConfig.from_dict(json.loads(props["config"]))
        layout = json.loads(props["output"])
        metrics = json.loads(props.get("metrics") or "{}")
    except (KeyError, TypeError, ValueError) as e:
        raise MetadataError(f"{where}: invalid yolo4 metadata ({type(e).__name__}: {e})") from None
    if layout.get("kind") not in (DECODED, NMS):
        raise MetadataError(f"{where}: unknown output layout {layout.get('kind')!r}")
    precision = props.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise MetadataError(f"{where}: unknown precision {precision!r}")
    return ModelMetadata(config, layout, precision, props.get("dynamic") == "true", metrics, dict(props))

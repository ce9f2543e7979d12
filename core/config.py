"""What a model file says about its model, and how inference post-processes it. Torch-free.

``ModelConfig`` describes a network completely (architecture, scale, classes, heads, the
pre-processing contract) and nothing else: it travels inside every checkpoint and ONNX file,
so a model file is self-describing. Training settings (the loss, the recipe) live in
``yolo4.training``; inference thresholds are ``Thresholds``, chosen by whoever runs the model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACTIVATIONS = ("mish", "leaky", "silu", "relu")
ARCHS = ("csp", "tiny")  # csp: CSPDarknet53 + SPP + PANet (yolov4.cfg); tiny: yolov4-tiny.cfg
RESIZE_MODES = ("letterbox", "stretch")


@dataclass(frozen=True)
class HeadConfig:
    """One YOLO output scale."""

    stride: int
    anchors: tuple[tuple[float, float], ...]  # (w, h) in input pixels
    scale_x_y: float = 1.0  # Darknet grid sensitivity: xy = sigmoid * s - (s - 1) / 2


@dataclass(frozen=True)
class PreprocessConfig:
    """How an image becomes the network input. Every consumer reads it from the model file.

    Images are resized to ``input_size`` (``letterbox`` keeps the aspect ratio and pads with
    ``pad_value``; ``stretch`` is Darknet's plain resize), converted to ``color`` order,
    then ``(pixel * scale - mean) / std`` per channel, laid out NCHW float32.
    """

    resize: str = "letterbox"
    pad_value: int = 114
    color: str = "RGB"
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    interpolation: str = "linear"  # cv2.INTER_LINEAR, as Darknet and OpenCV's blobFromImage


@dataclass(frozen=True)
class Thresholds:
    """Post-processing of decoded predictions, the same in every runtime.

    ``multi_label=False`` keeps one class per box (the best one); ``True`` keeps a box for
    every class whose score reaches ``conf`` (YOLOv5's val.py, Darknet's COCO writer).
    """

    conf: float = 0.25  # objectness x class probability
    iou: float = 0.45  # class-aware NMS: boxes of different classes never suppress each other
    max_det: int = 300
    multi_label: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.conf <= 1.0 or not 0.0 <= self.iou <= 1.0:
            raise ValueError(f"conf and iou must lie in [0, 1], got conf={self.conf}, iou={self.iou}")
        if self.max_det < 1:
            raise ValueError(f"max_det must be at least 1, got {self.max_det}")

    def replace(self, **changes: Any) -> "Thresholds":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


DETECT = Thresholds()  # yolo4 detect, the edge runtime, the HTTP service
COCO_EVAL = Thresholds(conf=0.001, iou=0.65, max_det=100)  # how COCO figures of YOLOv4 and peers are computed


@dataclass(frozen=True)
class ModelConfig:
    name: str
    arch: str = "csp"
    class_names: tuple[str, ...] = ()
    width: float = 1.0  # channel multiplier over yolov4.cfg
    depth: float = 1.0  # residual-block multiplier over yolov4.cfg
    backbone_act: str = "mish"
    neck_act: str = "leaky"
    input_size: tuple[int, int] = (416, 416)  # (height, width)
    heads: tuple[HeadConfig, ...] = ()  # ordered by increasing stride
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)

    def __post_init__(self) -> None:
        problems = []
        if self.arch not in ARCHS:
            problems.append(f"arch must be one of {ARCHS}, got {self.arch!r}")
        for key in ("backbone_act", "neck_act"):
            if getattr(self, key) not in ACTIVATIONS:
                problems.append(f"{key} must be one of {ACTIVATIONS}, got {getattr(self, key)!r}")
        if not self.class_names:
            problems.append("class_names must not be empty")
        if not self.heads:
            problems.append("at least one head is required")
        if len({len(h.anchors) for h in self.heads}) > 1:
            problems.append("every head must have the same number of anchors")
        if any(s % 32 for s in self.input_size):
            problems.append(f"input_size {self.input_size} must be multiples of 32")
        if self.preprocess.resize not in RESIZE_MODES:
            problems.append(f"preprocess.resize must be one of {RESIZE_MODES}")
        if self.preprocess.color not in ("RGB", "BGR"):
            problems.append("preprocess.color must be RGB or BGR")
        if self.width <= 0 or self.depth <= 0:
            problems.append("width and depth must be positive")
        if problems:
            raise ValueError(f"invalid ModelConfig {self.name!r}: " + "; ".join(problems))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_anchors(self) -> int:
        return len(self.heads[0].anchors)

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(h.stride for h in self.heads)

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def with_classes(self, class_names: tuple[str, ...] | list[str]) -> "ModelConfig":
        return self.replace(class_names=tuple(class_names))

    def with_activation(self, act: str) -> "ModelConfig":
        """The scaled variants use one activation everywhere; this sets it."""
        return self.replace(backbone_act=act, neck_act=act)

    def to_dict(self) -> dict[str, Any]:
        """Plain builtins only, so checkpoints load with ``weights_only=True`` and ONNX metadata is JSON."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "ModelConfig":
        raw = dict(raw)
        raw.pop("loss", None)  # files written before 0.2 carried the training loss settings here
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {sorted(unknown)}")
        heads = tuple(
            HeadConfig(
                stride=int(h["stride"]),
                anchors=tuple((float(w), float(hh)) for w, hh in h["anchors"]),
                scale_x_y=float(h.get("scale_x_y", 1.0)),
            )
            for h in raw.pop("heads", ())
        )
        pre = dict(raw.pop("preprocess", {}))
        for key in ("mean", "std"):
            if key in pre:
                pre[key] = tuple(float(v) for v in pre[key])
        for key in ("class_names", "input_size"):
            if key in raw:
                raw[key] = tuple(raw[key])
        return cls(**raw, heads=heads, preprocess=PreprocessConfig(**pre))


def parse_image_size(value: Any) -> tuple[int, int]:
    """``(height, width)`` of an input size written as ``512`` (square), ``"512x384"`` (width x
    height, as image sizes are written), or a ``(height, width)`` pair; multiples of 32."""
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            width, _, height = text.partition("x")
            size = (int(height or width), int(width))
        except ValueError:
            raise ValueError(f"image size {value!r}: expected N (square) or WIDTHxHEIGHT, e.g. 512 or 512x384") from None
    elif isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"image size {value!r}: expected (height, width)")
        size = (int(value[0]), int(value[1]))
    else:
        size = (int(value), int(value))
    if min(size) <= 0 or any(s % 32 for s in size):
        raise ValueError(f"image size {value!r}: each side must be a positive multiple of 32 (e.g. 512 or 512x384)")
    return size


def read_class_names(path: str | Path) -> tuple[str, ...]:
    """One class name per line (Darknet ``.names``); blank lines and ``#`` comments are ignored."""
    lines = (line.strip() for line in Path(path).read_text().splitlines())
    names = tuple(line for line in lines if line and not line.startswith("#"))
    if not names:
        raise ValueError(f"{path}: no class names found")
    return names

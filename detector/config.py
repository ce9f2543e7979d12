"""Typed model configuration and the presets of the YOLOv4 family.

A ``ModelConfig`` fully describes a model: architecture, scale, classes, anchors, the
Darknet ``[yolo]`` loss keys and the pre-processing contract. It is stored inside every
checkpoint and ONNX file, so a model file is self-describing. This module is torch-free.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACTIVATIONS = ("mish", "leaky", "silu", "relu")
ARCHS = ("csp", "tiny")  # csp: CSPDarknet53 + SPP + PANet (yolov4.cfg); tiny: yolov4-tiny.cfg
RESIZE_MODES = ("letterbox", "stretch")
IOU_LOSSES = ("ciou", "diou", "giou", "mse")


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
class LossConfig:
    """Darknet ``[yolo]`` training keys that our trainer understands (yolov4.cfg values)."""

    iou_loss: str = "ciou"
    iou_normalizer: float = 0.07
    cls_normalizer: float = 1.0
    obj_normalizer: float = 1.0
    iou_thresh: float = 0.213  # extra positives: every anchor whose IoU with the GT exceeds this
    ignore_thresh: float = 0.7  # predictions overlapping a GT above this are not background
    label_smoothing: float = 0.0
    nms_kind: str = "greedynms"
    beta_nms: float = 0.6
    # Scaled-YOLOv4 (WongKinYiu/ScaledYOLOv4) options, off for Darknet models:
    # "sum": Darknet sums each term over predictions; "mean": each head's terms are means
    # (box over positives, objectness over all predictions, weighted by head_balance).
    reduction: str = "sum"
    head_balance: tuple[float, ...] = (4.0, 1.0, 0.4)  # objectness weight per head, by stride
    # Objectness target of a positive: (1 - s) + s * IoU(prediction, box), so scores rank by
    # localisation quality (Darknet's objectness_smooth, Scaled-YOLOv4's gr).
    objectness_smooth: float = 0.0
    # Also make the two nearest neighbouring cells of a box centre positives (needs
    # scale_x_y = 2 so their predictions can reach the centre).
    neighbor_cells: bool = False


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
    loss: LossConfig = field(default_factory=LossConfig)

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
        if self.loss.iou_loss not in IOU_LOSSES:
            problems.append(f"loss.iou_loss must be one of {IOU_LOSSES}, got {self.loss.iou_loss!r}")
        if self.loss.reduction not in ("sum", "mean"):
            problems.append(f"loss.reduction must be sum or mean, got {self.loss.reduction!r}")
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
        loss = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.pop("loss", {}).items()}
        loss = LossConfig(**loss)
        for key in ("class_names", "input_size"):
            if key in raw:
                raw[key] = tuple(raw[key])
        return cls(**raw, heads=heads, preprocess=PreprocessConfig(**pre), loss=loss)


# --- presets ---------------------------------------------------------------------------

COCO_NAMES_FILE = Path(__file__).resolve().parent.parent / "data" / "coco80.names"


def coco_class_names() -> tuple[str, ...]:
    return read_class_names(COCO_NAMES_FILE)


def read_class_names(path: str | Path) -> tuple[str, ...]:
    """One class name per line (Darknet ``.names``); blank lines and ``#`` comments are ignored."""
    lines = (line.strip() for line in Path(path).read_text().splitlines())
    names = tuple(line for line in lines if line and not line.startswith("#"))
    if not names:
        raise ValueError(f"{path}: no class names found")
    return names


def _heads(strides, anchors, masks, scales) -> tuple[HeadConfig, ...]:
    return tuple(
        HeadConfig(stride=s, anchors=tuple(anchors[i] for i in m), scale_x_y=x)
        for s, m, x in zip(strides, masks, scales)
    )


YOLOV4_ANCHORS = ((12, 16), (19, 36), (40, 28), (36, 75), (76, 55), (72, 146), (142, 110), (192, 243), (459, 401))
TINY_ANCHORS = ((10, 14), (23, 27), (37, 58), (81, 82), (135, 169), (344, 319))


def yolov4(class_names=None, input_size=(608, 608)) -> ModelConfig:
    """Exactly ``yolov4.cfg``: CSPDarknet53 (Mish) + SPP + PANet (LeakyReLU), 3 heads."""
    return ModelConfig(
        name="yolov4",
        arch="csp",
        class_names=tuple(class_names or coco_class_names()),
        input_size=tuple(input_size),
        heads=_heads((8, 16, 32), YOLOV4_ANCHORS, ((0, 1, 2), (3, 4, 5), (6, 7, 8)), (1.2, 1.1, 1.05)),
        preprocess=PreprocessConfig(resize="stretch"),  # yolov4.cfg trains without letter_box
    )


def yolov4_tiny(class_names=None, input_size=(416, 416)) -> ModelConfig:
    """Exactly ``yolov4-tiny.cfg``: two heads (stride 16 uses anchors 1,2,3; stride 32 uses 3,4,5)."""
    return ModelConfig(
        name="yolov4-tiny",
        arch="tiny",
        class_names=tuple(class_names or coco_class_names()),
        backbone_act="leaky",
        neck_act="leaky",
        input_size=tuple(input_size),
        heads=_heads((16, 32), TINY_ANCHORS, ((1, 2, 3), (3, 4, 5)), (1.05, 1.05)),
        preprocess=PreprocessConfig(resize="stretch"),
        loss=LossConfig(iou_thresh=1.0),  # yolov4-tiny.cfg has no iou_thresh: one anchor per GT
    )


def _scaled(name: str, width: float, depth: float, class_names, input_size, act: str) -> ModelConfig:
    """yolov4.cfg's layout at a smaller width and depth, trained the Scaled-YOLOv4 way.

    Not a Darknet model, so it takes what trains a small model fastest from scratch (measured on
    BCCD, 30 epochs, val: mAP50 0.631 -> 0.786, mAP50-95 0.303 -> 0.435 over Darknet's loss): Scaled-YOLOv4's loss (per-head
    means, IoU objectness targets, neighbour-cell positives, whose predictions reach the box
    centre through scale_x_y = 2) with YOLOv5's gains, scaled to the input and class count.
    """
    # Anchors of yolov4.cfg rescaled from 608 to the input size (training replaces them with
    # k-means anchors of the dataset).
    k = input_size[0] / 608
    anchors = tuple((round(w * k, 1), round(h * k, 1)) for w, h in YOLOV4_ANCHORS)
    names = tuple(class_names or coco_class_names())
    loss = LossConfig(
        reduction="mean", objectness_smooth=1.0, neighbor_cells=True, ignore_thresh=1.0,
        iou_normalizer=0.05, obj_normalizer=(input_size[0] / 640) ** 2, cls_normalizer=0.5 * len(names) / 80,
    )  # fmt: skip
    return ModelConfig(
        name=name,
        arch="csp",
        class_names=names,
        width=width,
        depth=depth,
        backbone_act=act,
        neck_act=act,
        input_size=tuple(input_size),
        heads=_heads((8, 16, 32), anchors, ((0, 1, 2), (3, 4, 5), (6, 7, 8)), (2.0, 2.0, 2.0)),
        preprocess=PreprocessConfig(resize="letterbox", pad_value=114),
        loss=loss,
    )


def yolov4_nano(class_names=None, input_size=(416, 416), act: str = "leaky") -> ModelConfig:
    """yolov4.cfg at width 0.1875, depth 0.33 (1.9 M parameters for 80 classes)."""
    return _scaled("yolov4-nano", 0.1875, 0.33, class_names, input_size, act)


def yolov4_small(class_names=None, input_size=(416, 416), act: str = "leaky") -> ModelConfig:
    """yolov4.cfg at width 0.375, depth 0.33 (7.5 M parameters for 80 classes)."""
    return _scaled("yolov4-small", 0.375, 0.33, class_names, input_size, act)


PRESETS = {
    "yolov4": yolov4,
    "yolov4-tiny": yolov4_tiny,
    "yolov4-small": yolov4_small,
    "yolov4-nano": yolov4_nano,
}


def preset(name: str, class_names=None, **kwargs: Any) -> ModelConfig:
    try:
        factory = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(PRESETS)}") from None
    return factory(class_names=class_names, **kwargs)

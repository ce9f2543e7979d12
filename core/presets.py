"""The YOLOv4 family as ``ModelConfig`` presets: a variant is a few numbers. Torch-free.

``yolov4`` and ``yolov4-tiny`` are exactly the official Darknet cfgs (weight-for-weight);
``yolov4-small`` and ``yolov4-nano`` are yolov4.cfg's layout at CPU sizes (YOLOX-style width
and depth multipliers), with no Darknet counterpart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yolo4.core.config import HeadConfig, ModelConfig, PreprocessConfig, read_class_names

COCO_NAMES_FILE = Path(__file__).resolve().parent.parent / "data" / "coco80.names"

YOLOV4_ANCHORS = ((12, 16), (19, 36), (40, 28), (36, 75), (76, 55), (72, 146), (142, 110), (192, 243), (459, 401))
TINY_ANCHORS = ((10, 14), (23, 27), (37, 58), (81, 82), (135, 169), (344, 319))
SCALED_MODELS = ("yolov4-small", "yolov4-nano")  # trained the Scaled-YOLOv4 way (yolo4.training.loss_config)


def coco_class_names() -> tuple[str, ...]:
    return read_class_names(COCO_NAMES_FILE)


def _heads(strides, anchors, masks, scales) -> tuple[HeadConfig, ...]:
    return tuple(
        HeadConfig(stride=s, anchors=tuple(anchors[i] for i in m), scale_x_y=x)
        for s, m, x in zip(strides, masks, scales)
    )


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
    )


def _scaled(name: str, width: float, depth: float, class_names, input_size, act: str) -> ModelConfig:
    """yolov4.cfg's layout at a smaller width and depth.

    Not a Darknet model, so it takes what trains a small model fastest from scratch: grid
    sensitivity ``scale_x_y = 2``, which lets the neighbour-cell positives of Scaled-YOLOv4's
    loss reach the box centre (``yolo4.training.loss_config``), and a letterbox input.
    """
    # Anchors of yolov4.cfg rescaled from 608 to the input size (training replaces them with
    # k-means anchors of the dataset).
    k = input_size[0] / 608
    anchors = tuple((round(w * k, 1), round(h * k, 1)) for w, h in YOLOV4_ANCHORS)
    return ModelConfig(
        name=name,
        arch="csp",
        class_names=tuple(class_names or coco_class_names()),
        width=width,
        depth=depth,
        backbone_act=act,
        neck_act=act,
        input_size=tuple(input_size),
        heads=_heads((8, 16, 32), anchors, ((0, 1, 2), (3, 4, 5), (6, 7, 8)), (2.0, 2.0, 2.0)),
        preprocess=PreprocessConfig(resize="letterbox", pad_value=114),
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

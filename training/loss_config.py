"""``LossConfig``: how a model is trained, kept out of the model's own config.

Two forms, chosen per model (``loss_for``) and overridable key by key (``--set loss.<key>=v``):

* ``darknet``: Darknet's ``[yolo]`` rules (terms summed over predictions, ``iou_normalizer``,
  ``iou_thresh`` extra positives, ``ignore_thresh``), with the values of the model's own cfg:
  what a model converted from Darknet was trained with;
* ``scaled``: Scaled-YOLOv4's (WongKinYiu/ScaledYOLOv4) with YOLOv5's gains: per-head means,
  IoU-valued objectness targets, neighbour-cell positives; what trains a fresh model fastest
  (BCCD, 30 epochs, val mAP50 0.631 -> 0.786 over Darknet's form for yolov4-nano).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from yolo4.core.config import ModelConfig
from yolo4.core.presets import SCALED_MODELS

IOU_LOSSES = ("ciou", "diou", "giou")
BALANCE_STRIDES = (8, 16, 32)  # the heads LossConfig.head_balance's three defaults weigh
FORMS = ("darknet", "scaled")

# [yolo] keys mapped onto LossConfig (Darknet name -> our field).
DARKNET_KEYS = {
    "iou_loss": "iou_loss",
    "iou_normalizer": "iou_normalizer",
    "cls_normalizer": "cls_normalizer",
    "obj_normalizer": "obj_normalizer",
    "iou_thresh": "iou_thresh",
    "ignore_thresh": "ignore_thresh",
    "label_smooth_eps": "label_smoothing",
}


@dataclass(frozen=True)
class LossConfig:
    """The loss terms and the assignment rules (defaults: yolov4.cfg's values)."""

    iou_loss: str = "ciou"
    iou_normalizer: float = 0.07
    cls_normalizer: float = 1.0
    obj_normalizer: float = 1.0
    iou_thresh: float = 0.213  # extra positives: every anchor whose shape IoU with the box exceeds this
    ignore_thresh: float = 0.7  # predictions overlapping a box above this are not background
    label_smoothing: float = 0.0
    # "sum": Darknet sums each term over predictions; "mean": each head's terms are means
    # (box over positives, objectness over all predictions, weighted by head_balance).
    reduction: str = "sum"
    # Objectness weight of each head: one per head, or YOLOv5's (4.0, 1.0, 0.4) for strides 8, 16
    # and 32, taken by stride (yolov4-tiny's heads at 16 and 32 weigh 1.0 and 0.4).
    head_balance: tuple[float, ...] = (4.0, 1.0, 0.4)
    # Objectness target of a positive: (1 - s) + s * IoU(prediction, box), so scores rank by
    # localisation quality (Darknet's objectness_smooth, Scaled-YOLOv4's gr).
    objectness_smooth: float = 0.0
    # Also make the two nearest neighbouring cells of a box centre positives (needs
    # scale_x_y = 2 so their predictions can reach the centre).
    neighbor_cells: bool = False

    def __post_init__(self) -> None:
        if self.iou_loss not in IOU_LOSSES:
            raise ValueError(f"loss.iou_loss must be one of {IOU_LOSSES}, got {self.iou_loss!r}")
        if self.reduction not in ("sum", "mean"):
            raise ValueError(f"loss.reduction must be sum or mean, got {self.reduction!r}")

    def head_weights(self, strides: list[int]) -> tuple[float, ...]:
        """The objectness weight of each head, given the heads' strides."""
        if len(self.head_balance) == len(strides):
            return tuple(self.head_balance)
        by_stride = dict(zip(BALANCE_STRIDES, self.head_balance))
        if len(self.head_balance) == len(BALANCE_STRIDES) and all(s in by_stride for s in strides):
            return tuple(by_stride[s] for s in strides)
        return (1.0,) * len(strides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "LossConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


# Darknet's own defaults where a cfg leaves a key out (darknet/src/parser.c parse_yolo); its
# "mse" box loss is not trained here: CIoU replaces it (YOLOv4's choice).
DARKNET_DEFAULTS = LossConfig(iou_normalizer=0.75, iou_thresh=1.0, ignore_thresh=0.5)
YOLOV4_TINY = LossConfig(iou_thresh=1.0)  # yolov4-tiny.cfg: no iou_thresh, one anchor per box


def darknet_loss(yolo_keys: Mapping[str, str]) -> tuple[LossConfig, list[str]]:
    """A cfg's ``[yolo]`` training keys -> its loss, and the keys our trainer does not use."""
    values: dict[str, Any] = {}
    for key, ours in DARKNET_KEYS.items():
        if key in yolo_keys:
            raw = yolo_keys[key]
            values[ours] = raw if ours == "iou_loss" else float(raw)
    if values.get("iou_loss") == "mse":
        values["iou_loss"] = "ciou"
    ignored = sorted(set(yolo_keys) - set(DARKNET_KEYS))
    return dataclasses.replace(DARKNET_DEFAULTS, **values), ignored


def scaled_loss(config: ModelConfig) -> LossConfig:
    """Scaled-YOLOv4's form with YOLOv5's gains, scaled to the input size and class count.

    Neighbour-cell positives only on heads whose decode reaches the next cell's centre
    (``scale_x_y >= 2``, Scaled-YOLOv4's); Darknet's 1.05-1.2 (yolov4-tiny, yolov4) keeps an
    offset within about its own cell, so a neighbour's positive could only be pulled off the box."""
    return LossConfig(
        reduction="mean", objectness_smooth=1.0, neighbor_cells=all(h.scale_x_y >= 2 for h in config.heads),
        ignore_thresh=1.0,
        # YOLOv5's (size / 640)^2 for a square input, by area for a rectangular one: the mean over
        # fewer cells weighs each positive more, so the gain falls with the cell count.
        iou_normalizer=0.05, obj_normalizer=config.input_size[0] * config.input_size[1] / 640**2,
        cls_normalizer=0.5 * config.num_classes / 80,
    )  # fmt: skip


def loss_for(config: ModelConfig, form: str = "auto", yolo_keys: Mapping[str, str] | None = None) -> LossConfig:
    """The loss a model trains with.

    Args:
        config: the model (its input size and classes scale the ``scaled`` gains).
        form: ``darknet``, ``scaled``, or ``auto``: scaled for the presets without a Darknet
            counterpart, Darknet's (with the cfg's ``yolo_keys``) for the others.
        yolo_keys: the ``[yolo]`` training keys of the cfg the model came from, if any.
    """
    if form not in (*FORMS, "auto"):
        raise ValueError(f"loss form must be one of {FORMS} or auto, got {form!r}")
    if form == "auto":
        form = "scaled" if config.name in SCALED_MODELS and yolo_keys is None else "darknet"
    if form == "scaled":
        return scaled_loss(config)
    if yolo_keys is not None:
        return darknet_loss(yolo_keys)[0]
    return YOLOV4_TINY if config.arch == "tiny" else LossConfig()

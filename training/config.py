"""``TrainConfig``: every setting of a training run, typed, with ``key=value`` overrides.

Overrides (``--set`` on the command line, or a ``--hyp`` YAML mapping) are checked against
the field types: ``epochs=50``, ``augment.cutmix=0.5``, ``loss.iou_loss=diou`` (the model's
Darknet ``[yolo]`` loss keys), ``augment.scale=0.5,1.5``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yolo4.core.config import parse_image_size
from yolo4.training.augment import AugmentConfig
from yolo4.training.loss_config import LossConfig


@dataclass(frozen=True)
class TrainConfig:
    data: str | None = None  # a dataset YAML (data/bccd.yaml) or a shipped name (bccd): required
    train_split: str = "train"
    val_split: str = "val"
    model: str = "yolov4-nano"  # a preset name, or a Darknet .cfg (then --weights is its .weights)
    weights: str | None = None  # initialise from our checkpoint or Darknet weights
    activation: str | None = None  # override the preset's activation (mish, leaky, silu, relu)
    # auto: k-means on the training boxes whenever the prediction convolutions start fresh (a
    # fresh model, or new classes); keep: the model's (COCO's for a preset)
    anchors: str = "auto"
    # Fine-tuning: the backbone (and with freeze_neck the neck) stays frozen, BatchNorm
    # statistics included, for the first freeze_epochs epochs.
    freeze_epochs: float = 0.0
    freeze_neck: bool = False
    # The backbone's first N parts (1: the stem, 2: the stem and the first stage, ...) stay fixed
    # for the whole run, BatchNorm statistics included (Detectron2's FREEZE_AT, Darknet's
    # stopbackward): edges and colours carry over from COCO, and the backward pass skips the
    # highest-resolution layers, the most expensive ones.
    freeze_stages: int = 0
    freeze_bn: bool = False  # every BatchNorm keeps its statistics (eval mode) throughout; affine still trained
    # Grid sensitivity of every head (0: the model's own, 1.05 for yolov4-tiny). 2 lets a head
    # reach into the neighbouring cells, so the scaled loss also trains the two cells nearest a
    # box centre (Scaled-YOLOv4): three times the positives, for dense small objects.
    scale_x_y: float = 0.0
    # A side (square) or "WIDTHxHEIGHT": a rectangular input for data of one aspect ratio
    # (BCCD's 640x480 at 512x384 costs 0.75x the pixels of 512x512 and resizes x and y alike).
    img_size: int | str = 416
    epochs: int = 100
    batch_size: int = 8  # total over all processes; 8 ran 1.15x the images/s of 16 on 2 CPU cores (bench/train.py)
    workers: int | None = None  # data-loader processes; None: 0 on a CPU, up to 8 beside a GPU
    cache_images: str = "auto"  # keep decoded training images in memory: auto (up to 2 GiB), on, off
    # AdamW trains our fresh models fastest on a CPU budget: Darknet's loss is summed over
    # predictions, and AdamW is indifferent to that scale. Models from a Darknet cfg train with
    # the cfg's SGD recipe instead (training.trainer.apply_darknet_recipe).
    optimizer: str = "adamw"  # or sgd (nesterov momentum)
    lr: float = 0.002
    momentum: float = 0.949  # SGD momentum / AdamW beta1 (yolov4.cfg's momentum)
    weight_decay: float = 0.05  # not applied to BatchNorm weights and biases
    warmup_epochs: float = 2.0  # Darknet's burn_in, in epochs (warmup_iters wins when > 0)
    warmup_iters: int = 0
    schedule: str = "cosine"  # or step
    final_lr_ratio: float = 0.05
    steps: tuple[float, ...] = (0.8, 0.9)  # step schedule: fractions of training
    step_scale: float = 0.1
    ema: bool = True
    ema_decay: float = 0.9999
    ema_tau: float = 2000.0  # steps over which the EMA's decay ramps up to ema_decay
    # Max gradient norm, 0 = off. Darknet's summed loss has norms around 1e4 at the start, so
    # YOLOv5's clip of 10 would all but stop SGD; set one well above the norms you see.
    grad_clip: float = 0.0
    amp: bool = True  # mixed precision, used only on CUDA
    # NHWC tensors: oneDNN's convolutions on CPU run 1.4-1.6x faster this way (bench/train.py).
    channels_last: bool = True
    # torch.compile the backbone, neck and heads (Inductor fuses BatchNorm + activation, forward
    # and backward: a nano step 1.6x faster on CPU, bench/train.py), after a compile of 10-60 s;
    # auto: on when the run has at least COMPILE_MIN_ITERS steps.
    compile: str = "auto"  # auto | on | off
    multiscale: bool = False  # each batch at a random size in [0.5, 1.5] x img_size (both sides)
    dropblock: float = 0.1  # final DropBlock drop probability, ramped up from 0
    close_mosaic: float = 0.2  # last fraction of epochs without Mosaic/CutMix/MixUp (YOLOv8: 10 of 30-100)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss_form: str = "auto"  # darknet | scaled | auto (yolo4.training.loss_config.loss_for)
    loss: dict[str, Any] = field(default_factory=dict)  # overrides of the LossConfig fields
    seed: int = 0
    device: str | None = None
    out: str = "runs/train/exp"
    save_every: int = 0  # also write last.pt every N iterations (mid-epoch resume points)
    val_every: int = 1
    sync_bn: bool = False  # CUDA + several processes only
    strict_data: bool = False  # fail on the first dataset problem instead of skipping
    max_iters: int = 0  # stop (resumably) after this many iterations; the schedule still spans all epochs
    # The settings the user gave (command line, --hyp, apply_overrides), so that a deliberate
    # default is honoured too (over a Darknet cfg's recipe, or on resume); None: not tracked,
    # anything that differs from the default counts as given.
    given: frozenset[str] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.anchors not in ("auto", "keep"):
            raise ValueError(f"anchors must be auto or keep, got {self.anchors!r}")
        if self.freeze_stages < 0:
            raise ValueError(f"freeze_stages must be 0 or more, got {self.freeze_stages}")
        if self.compile not in ("auto", "on", "off"):
            raise ValueError(f"compile must be auto, on or off, got {self.compile!r}")
        parse_image_size(self.img_size)  # fails naming the size
        if self.loss_form not in ("auto", "darknet", "scaled"):
            raise ValueError(f"loss_form must be auto, darknet or scaled, got {self.loss_form!r}")

    @property
    def input_size(self) -> tuple[int, int]:
        """``(height, width)`` of the training input."""
        return parse_image_size(self.img_size)

    def was_given(self, key: str) -> bool:
        """Did the user set ``key`` (a field name, or ``augment.<name>`` / ``loss.<name>``)?"""
        if self.given is not None:
            return key in self.given
        group, _, name = key.partition(".")
        if group == "loss" and name:
            return name in self.loss
        if name:
            return getattr(getattr(self, group), name) != getattr(getattr(TrainConfig(), group), name)
        return getattr(self, key) != getattr(TrainConfig(), key)

    def to_dict(self) -> dict[str, Any]:
        """Plain builtins (a checkpoint entry); what the user gave is not part of the run."""
        raw = dataclasses.asdict(self)
        raw.pop("given")
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "TrainConfig":
        raw = dict(raw)
        raw.pop("given", None)
        augment = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.pop("augment", {}).items()})
        raw = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
        return cls(**raw, augment=augment)


# Fine-tuning (trained weights, new classes), chosen on BCCD val with yolov4-tiny from COCO (README,
# "Fine-tuning"): Scaled-YOLOv4's loss form whatever the model (Darknet's summed loss reached 0.40
# mAP50 where it reached 0.61 after 5 epochs), a gentler start than from scratch, grid
# sensitivity 2 with neighbour-cell positives, Mosaic cells at the inference scale, and a narrower
# scale jitter (data of one camera: objects vary less in size than COCO's), and an EMA short enough
# for a run of about 1,000 steps: the from-scratch 0.9999 ramped over 2,000 steps has a decay of
# only 0.4 after 1,000, so it hardly averages; 0.99 over 100 averages the last ~100 steps (two
# seeds: 0.899 / 0.600 mean against 0.896 / 0.591, and the seeds 0.02 instead of 1 point of mAP50 apart).
# Settings the user gives win.
FINE_TUNE_LOSS = "scaled"
FINE_TUNE: dict[str, Any] = {"lr": 0.001, "warmup_epochs": 1.0, "scale_x_y": 2.0, "augment.mosaic_fit": "inference",
                             "augment.scale": (0.7, 1.3), "ema_decay": 0.99, "ema_tau": 100.0}

# Settings a resumed run may change; anything else would make it a different run.
RESUMABLE_CHANGES = {"epochs", "workers", "device", "val_every", "save_every", "out", "max_iters", "compile"}
COMPILE_MIN_ITERS = 300


def apply_overrides(config: TrainConfig, overrides: dict[str, Any] | list[str]) -> TrainConfig:
    """Apply ``{"a.b": value}`` or ``["a.b=value"]`` overrides, converting and checking types."""
    if isinstance(overrides, list):
        pairs = {}
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"override {item!r} must look like key=value")
            key, value = item.split("=", 1)
            pairs[key.strip()] = value.strip()
        overrides = pairs
    given = set(config.given or ())
    for key, value in overrides.items():
        group, _, name = key.partition(".")
        given.update({group, key})  # the group too: a resume compares whole groups
        if group == "loss" and name:
            value = _convert(key, value, _field_type(LossConfig, name, "loss"))
            config = dataclasses.replace(config, loss={**config.loss, name: value})
        elif group == "augment" and name:
            value = _convert(key, value, _field_type(AugmentConfig, name, "augment"))
            config = dataclasses.replace(config, augment=dataclasses.replace(config.augment, **{name: value}))
        elif key in ("augment", "loss"):
            raise ValueError(f"set {key} settings one by one, e.g. {key}.<name>=value")
        else:
            if key == "given":
                raise ValueError("given is recorded, not set")
            config = dataclasses.replace(config, **{key: _convert(key, value, _field_type(TrainConfig, key, "training"))})
    return dataclasses.replace(config, given=frozenset(given))


def _field_type(cls, name: str, what: str):
    hints = typing.get_type_hints(cls)
    if name not in hints:
        raise ValueError(f"unknown {what} setting {name!r} (choose from {', '.join(hints)})")
    return hints[name]


def load_hyp(path: str | Path) -> dict[str, Any]:
    """A hyper-parameter YAML: a flat or nested mapping of TrainConfig keys."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of training settings")
    flat = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def _convert(key: str, value: Any, hint: Any) -> Any:
    """Convert a string (or YAML value) to the field's declared type, or fail naming the key."""
    if key == "img_size":
        height, width = parse_image_size(value)
        return height if height == width else f"{width}x{height}"  # a square stays an int, as it always was
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    optional = type(None) in args
    if optional:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if origin is tuple:
            items = value if isinstance(value, (list, tuple)) else str(value).split(",")
            return tuple(float(v) for v in items)
        if hint in (int, float, str):
            if hint is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return hint(float(value)) if hint is int else hint(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key}={value!r}: expected {getattr(hint, '__name__', hint)}") from None
    raise ValueError(f"{key} cannot be set from the command line")

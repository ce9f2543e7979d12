"""Read Darknet ``.cfg`` files into a ``ModelConfig`` (and the ``[net]`` training recipe).

We do not interpret arbitrary cfg graphs: a cfg is recognised as one of our architectures
(yolov4.cfg's CSP family, at any width/depth, or yolov4-tiny.cfg), and every convolution
is checked against the model we would build, so a mismatch is an error that names the
cfg line, never a silently different network.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .config import HeadConfig, LossConfig, ModelConfig, PreprocessConfig, coco_class_names

# [yolo] keys mapped onto LossConfig (Darknet name -> our field).
LOSS_KEYS = {
    "iou_loss": "iou_loss",
    "iou_normalizer": "iou_normalizer",
    "cls_normalizer": "cls_normalizer",
    "obj_normalizer": "obj_normalizer",
    "iou_thresh": "iou_thresh",
    "ignore_thresh": "ignore_thresh",
    "label_smooth_eps": "label_smoothing",
    "nms_kind": "nms_kind",
    "beta_nms": "beta_nms",
}
# [yolo] keys that define the model itself.
MODEL_KEYS = {"mask", "anchors", "classes", "num", "scale_x_y"}
# Darknet's own defaults where yolov4.cfg leaves a key out (parser.c parse_yolo).
DARKNET_LOSS_DEFAULTS = LossConfig(
    iou_loss="mse", iou_normalizer=0.75, cls_normalizer=1.0, obj_normalizer=1.0,
    iou_thresh=1.0, ignore_thresh=0.5, nms_kind="default", beta_nms=0.6,
)  # fmt: skip


class DarknetCfgError(ValueError):
    pass


class DarknetCfgWarning(UserWarning):
    pass


@dataclass
class Section:
    kind: str  # "net", "convolutional", "route", ...
    line: int  # 1-based line of the "[kind]" header
    index: int  # Darknet's layer number (the [net] section is -1)
    options: dict[str, str] = field(default_factory=dict)

    def get(self, key: str, default=None):
        return self.options.get(key, default)


@dataclass(frozen=True)
class DarknetTrainParams:
    """The ``[net]`` training recipe, kept so a converted model trains with the cfg's values."""

    batch: int = 64
    learning_rate: float = 0.001
    momentum: float = 0.9
    decay: float = 0.0005
    burn_in: int = 1000
    max_batches: int = 500500
    policy: str = "steps"
    steps: tuple[int, ...] = ()
    scales: tuple[float, ...] = ()
    mosaic: bool = False
    hue: float = 0.0
    saturation: float = 1.0
    exposure: float = 1.0


def parse_cfg(path: str | Path) -> list[Section]:
    """Sections of a cfg file in order, with their line numbers. Comments (#, ;) are dropped."""
    path = Path(path)
    sections: list[Section] = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise DarknetCfgError(f"{path}:{number}: malformed section header {raw.strip()!r}")
            sections.append(Section(line[1:-1].strip().lower(), number, len(sections) - 1))
        elif "=" in line and sections:
            key, value = line.split("=", 1)
            sections[-1].options[key.strip()] = value.strip()
        else:
            raise DarknetCfgError(f"{path}:{number}: expected 'key=value' inside a section, got {raw.strip()!r}")
    if not sections or sections[0].kind not in ("net", "network"):
        raise DarknetCfgError(f"{path}: a Darknet cfg starts with a [net] section")
    return sections


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.replace(" ", "").split(",") if v]


def read_train_params(net: Section) -> DarknetTrainParams:
    d = DarknetTrainParams()
    o = net.options
    return DarknetTrainParams(
        batch=int(o.get("batch", d.batch)),
        learning_rate=float(o.get("learning_rate", d.learning_rate)),
        momentum=float(o.get("momentum", d.momentum)),
        decay=float(o.get("decay", d.decay)),
        burn_in=int(o.get("burn_in", d.burn_in)),
        max_batches=int(o.get("max_batches", d.max_batches)),
        policy=o.get("policy", d.policy),
        steps=tuple(int(v) for v in _floats(o.get("steps", ""))),
        scales=tuple(_floats(o.get("scales", ""))),
        mosaic=o.get("mosaic", "0") == "1",
        hue=float(o.get("hue", d.hue)),
        saturation=float(o.get("saturation", d.saturation)),
        exposure=float(o.get("exposure", d.exposure)),
    )


def _loss_config(path: Path, yolos: list[Section]) -> LossConfig:
    values = {}
    for dk, ours in LOSS_KEYS.items():
        seen = {y.options[dk] for y in yolos if dk in y.options}
        if len(seen) > 1:
            warnings.warn(f"{path}: [yolo] heads disagree on {dk} ({sorted(seen)}); using the first", DarknetCfgWarning)
        if seen:
            raw = next(y.options[dk] for y in yolos if dk in y.options)
            default = getattr(DARKNET_LOSS_DEFAULTS, ours)
            values[ours] = raw if isinstance(default, str) else float(raw)
    ignored: dict[str, list[int]] = {}
    for y in yolos:
        for key in y.options:
            if key not in LOSS_KEYS and key not in MODEL_KEYS:
                ignored.setdefault(key, []).append(y.line)
    for key, lines in ignored.items():
        if key == "new_coords" and any(y.get(key, "0") != "0" for y in yolos):
            raise DarknetCfgError(f"{path}:{lines[0]}: new_coords=1 (Scaled-YOLOv4 decode) is not supported")
        warnings.warn(
            f"{path}: [yolo] key {key!r} (lines {', '.join(map(str, lines))}) is not used by our trainer; ignored",
            DarknetCfgWarning,
            stacklevel=3,
        )
    return dataclasses.replace(DARKNET_LOSS_DEFAULTS, **values)


def _recognise(path: Path, sections: list[Section]) -> dict:
    """Architecture, width, depth and activations of a cfg (checked conv by conv later)."""
    convs = [s for s in sections if s.kind == "convolutional"]
    if not convs:
        raise DarknetCfgError(f"{path}: no [convolutional] layers")
    if any(s.kind == "route" and "groups" in s.options for s in sections):
        return {"arch": "tiny", "width": 1.0, "depth": 1.0,
                "backbone_act": convs[0].get("activation"), "neck_act": convs[-2].get("activation")}  # fmt: skip
    if not any(s.kind == "shortcut" for s in sections):
        raise DarknetCfgError(f"{path}: not a YOLOv4 (CSPDarknet53) or YOLOv4-tiny cfg")
    # Residual units per stage: shortcuts between the stride-2 convolutions of the backbone.
    counts, current = [], 0
    for s in sections[1:]:
        if s.kind == "convolutional" and s.get("stride", "1") == "2":
            counts.append(current)
            current = 0
        elif s.kind == "shortcut":
            current += 1
        if s.kind == "maxpool":
            break
    counts = (counts + [current])[1:6]
    # The stride-2 conv of stage 5 has 1024 * width filters: the least rounded channel count.
    down = [s for s in convs if s.get("stride", "1") == "2"]
    if len(counts) < 5 or len(down) < 5:
        raise DarknetCfgError(f"{path}: expected the five stride-2 stages of CSPDarknet53")
    return {
        "arch": "csp",
        "width": int(down[4].get("filters")) / 1024,
        "depth": _depth_multiplier(path, counts),
        "backbone_act": convs[0].get("activation"),
        "neck_act": convs[-2].get("activation"),
    }


def _depth_multiplier(path: Path, counts: list[int]) -> float:
    """A depth multiplier that reproduces the residual units counted per stage."""
    from .backbone import CSPDARKNET53_STAGES
    from .blocks import scale_depth

    full = [n for _, n in CSPDARKNET53_STAGES]
    low, high = 0.0, float("inf")
    for c, n in zip(counts, full):
        low = max(low, (c - 0.5) / n if c > 1 else 0.0)
        high = min(high, (c + 0.5) / n)
    for depth in (1.0, 0.33, 0.5, 0.67, 1.33, (low + high) / 2):
        if [scale_depth(n, depth) for n in full] == counts:
            return depth
    raise DarknetCfgError(f"{path}: residual units per stage {counts} are not CSPDarknet53 {full} scaled by a depth multiple")


def read_cfg(path: str | Path, class_names=None) -> tuple[ModelConfig, DarknetTrainParams]:
    """Build a ``ModelConfig`` from a Darknet cfg, checked layer by layer against our model."""
    path = Path(path)
    sections = parse_cfg(path)
    net, yolos = sections[0], [s for s in sections if s.kind == "yolo"]
    if not yolos:
        raise DarknetCfgError(f"{path}: no [yolo] layers")
    classes = {int(y.get("classes", 80)) for y in yolos}
    if len(classes) != 1:
        raise DarknetCfgError(f"{path}: [yolo] layers disagree on classes: {sorted(classes)}")
    num_classes = classes.pop()
    if class_names is None:
        class_names = coco_class_names() if num_classes == 80 else tuple(f"class{i}" for i in range(num_classes))
    if len(class_names) != num_classes:
        raise DarknetCfgError(f"{path}: cfg has {num_classes} classes but {len(class_names)} class names were given")

    arch = _recognise(path, sections)
    from .neck import DARKNET_HEAD_ORDER  # the order [yolo] sections appear, as head indices

    head_order = DARKNET_HEAD_ORDER[arch["arch"]]
    if len(yolos) != len(head_order):
        raise DarknetCfgError(f"{path}: {arch['arch']} models have {len(head_order)} [yolo] layers, cfg has {len(yolos)}")
    heads: list[HeadConfig | None] = [None] * len(yolos)
    strides = (8, 16, 32) if arch["arch"] == "csp" else (16, 32)
    for yolo, index in zip(yolos, head_order):
        anchors = _floats(yolo.get("anchors", ""))
        pairs = list(zip(anchors[0::2], anchors[1::2]))
        mask = [int(v) for v in _floats(yolo.get("mask", ""))] or list(range(len(pairs)))
        if any(m >= len(pairs) for m in mask):
            raise DarknetCfgError(f"{path}:{yolo.line}: mask {mask} indexes past the {len(pairs)} anchors")
        heads[index] = HeadConfig(
            stride=strides[index],
            anchors=tuple(pairs[m] for m in mask),
            scale_x_y=float(yolo.get("scale_x_y", 1.0)),
        )
    letterbox = net.get("letter_box", "0") == "1"
    config = ModelConfig(
        name=path.stem,
        arch=arch["arch"],
        class_names=tuple(class_names),
        width=arch["width"],
        depth=arch["depth"],
        backbone_act=_activation(path, arch["backbone_act"]),
        neck_act=_activation(path, arch["neck_act"]),
        input_size=(int(net.get("height", 416)), int(net.get("width", 416))),
        heads=tuple(heads),
        # Darknet letterboxes with grey 0.5 and otherwise stretches; it feeds RGB / 255.
        preprocess=PreprocessConfig(resize="letterbox" if letterbox else "stretch", pad_value=127),
        loss=_loss_config(path, yolos),
    )
    return config, read_train_params(net)


def _activation(path: Path, name: str | None) -> str:
    mapping = {"mish": "mish", "leaky": "leaky", "swish": "silu", "silu": "silu", "relu": "relu"}
    if name not in mapping:
        raise DarknetCfgError(f"{path}: activation {name!r} is not supported (use mish, leaky, swish or relu)")
    return mapping[name]


def check_against_model(path: str | Path, model) -> list[Section]:
    """Raise if the cfg's convolutions differ from ``model.darknet_convs()``; return them."""
    from .blocks import ConvBNAct

    path = Path(path)
    sections = parse_cfg(path)
    convs = [s for s in sections if s.kind == "convolutional"]
    ours = model.darknet_convs()
    if len(convs) != len(ours):
        raise DarknetCfgError(f"{path}: {len(convs)} convolutional layers, our {model.config.name} has {len(ours)}")
    for section, module in zip(convs, ours):
        conv = module.conv if isinstance(module, ConvBNAct) else module
        act = module.act_name if isinstance(module, ConvBNAct) else "linear"
        expected = (conv.out_channels, conv.kernel_size[0], conv.stride[0], isinstance(module, ConvBNAct), act)
        got = (
            int(section.get("filters", 1)),
            int(section.get("size", 1)),
            int(section.get("stride", 1)),
            section.get("batch_normalize", "0") == "1",
            {"swish": "silu"}.get(section.get("activation", "logistic"), section.get("activation", "logistic")),
        )
        if got != expected:
            names = ("filters", "size", "stride", "batch_normalize", "activation")
            diff = ", ".join(f"{n}={g} (expected {e})" for n, g, e in zip(names, got, expected) if g != e)
            raise DarknetCfgError(
                f"{path}:{section.line}: layer {section.index} [convolutional] does not match "
                f"the {model.config.arch} architecture: {diff}"
            )
    return convs

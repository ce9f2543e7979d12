"""Read Darknet ``.cfg`` files into a ``ModelConfig`` (and the ``[net]`` training recipe).

We do not interpret arbitrary cfg graphs: a cfg is recognised as one of our architectures
(yolov4.cfg's CSP family, at any width/depth, or yolov4-tiny.cfg), and every convolution
is checked against the model we would build, so a mismatch is an error that names the
cfg line, never a silently different network.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from yolo4.core.config import HeadConfig, ModelConfig, PreprocessConfig
from yolo4.core.presets import coco_class_names

# [yolo] keys that define the model itself; the others are training keys (yolo4.training.loss_config).
MODEL_KEYS = {"mask", "anchors", "classes", "num", "scale_x_y"}


class DarknetCfgError(ValueError):
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
    # The [yolo] training keys (iou_normalizer, ignore_thresh, ...), the first head's value each;
    # the trainer maps them onto its loss (yolo4.training.loss_config.darknet_loss).
    yolo: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # heads that disagree on a training key


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


def _yolo_training_keys(path: Path, yolos: list[Section]) -> tuple[dict[str, str], tuple[str, ...]]:
    keys: dict[str, str] = {}
    notes = []
    for y in yolos:
        for key, value in y.options.items():
            if key in MODEL_KEYS:
                continue
            if key == "new_coords" and value != "0":
                raise DarknetCfgError(f"{path}:{y.line}: new_coords=1 (Scaled-YOLOv4 decode) is not supported")
            keys.setdefault(key, value)
    for key in keys:
        seen = sorted({y.options[key] for y in yolos if key in y.options})
        if len(seen) > 1:
            notes.append(f"{path}: [yolo] heads disagree on {key} ({', '.join(seen)}); training uses {keys[key]}")
    return keys, tuple(notes)


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
    from yolo4.detector.backbone import CSPDARKNET53_STAGES
    from yolo4.detector.blocks import scale_depth

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
    from yolo4.detector.neck import DARKNET_HEAD_ORDER  # the order [yolo] sections appear, as head indices

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
    )
    yolo, notes = _yolo_training_keys(path, yolos)
    return config, dataclasses.replace(read_train_params(net), yolo=yolo, notes=notes)


def _activation(path: Path, name: str | None) -> str:
    mapping = {"mish": "mish", "leaky": "leaky", "swish": "silu", "silu": "silu", "relu": "relu"}
    if name not in mapping:
        raise DarknetCfgError(f"{path}: activation {name!r} is not supported (use mish, leaky, swish or relu)")
    return mapping[name]


def check_against_model(path: str | Path, model) -> list[Section]:
    """Raise if the cfg's convolutions differ from ``model.darknet_convs()``; return them."""
    from yolo4.detector.blocks import ConvBNAct

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


def write_cfg(original: str, config: ModelConfig) -> str:
    """The cfg text for ``config``: ``original`` itself when the model still is what it
    describes, else ``original`` with its ``[yolo]`` classes, anchors, masks and ``scale_x_y``
    and the ``filters`` of each head's prediction convolution rewritten (a fine-tuned model:
    other classes or anchors), so Darknet and OpenCV read the written ``.weights``."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "original.cfg"
        path.write_text(original)
        described, _ = read_cfg(path, config.class_names if len(config.class_names) == _cfg_classes(path) else None)
    if described.heads == config.heads and described.num_classes == config.num_classes:
        return original
    from yolo4.detector.neck import DARKNET_HEAD_ORDER

    lines = original.splitlines()
    headers = [i for i, line in enumerate(lines) if line.strip().startswith("[")]
    anchors = [a for head in config.heads for a in head.anchors]
    anchor_text = ",  ".join(f"{w:g},{h:g}" for w, h in anchors)
    per_head = config.num_anchors
    yolo_headers = [i for i in headers if lines[i].strip().lower() == "[yolo]"]
    # Last section first: lines inserted into a section move only the ones after it.
    for yolo_start, head_index in reversed(list(zip(yolo_headers, DARKNET_HEAD_ORDER[config.arch]))):
        head = config.heads[head_index]
        end = next((i for i in headers if i > yolo_start), len(lines))
        values = {"mask": ",".join(str(head_index * per_head + k) for k in range(per_head)), "anchors": anchor_text,
                  "classes": str(config.num_classes), "num": str(len(anchors)), "scale_x_y": f"{head.scale_x_y:g}"}  # fmt: skip
        _set_keys(lines, yolo_start, end, values)
        conv_start = max(i for i in headers if i < yolo_start)
        _set_keys(lines, conv_start, yolo_start, {"filters": str(per_head * (5 + config.num_classes))})
    return "\n".join(lines) + "\n"


def _cfg_classes(path: Path) -> int:
    return int(next(s for s in parse_cfg(path) if s.kind == "yolo").get("classes", 80))


def _set_keys(lines: list[str], start: int, end: int, values: dict[str, str]) -> None:
    """Set ``key=value`` in the section ``lines[start:end]`` (in place; missing keys appended)."""
    missing = dict(values)
    for i in range(start + 1, end):
        key = lines[i].split("#", 1)[0].split("=", 1)[0].strip()
        if key in missing and "=" in lines[i]:
            lines[i] = f"{key}={missing.pop(key)}"
    last = max((i for i in range(start, end) if lines[i].strip()), default=start)
    for offset, (key, value) in enumerate(missing.items(), start=1):
        lines.insert(last + offset, f"{key}={value}")

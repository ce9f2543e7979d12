"""One place that turns model files (our checkpoints or Darknet cfg + weights) into a model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from yolo4.core.config import ModelConfig, read_class_names
from yolo4.detector.checkpoint import load_checkpoint
from yolo4.detector.model import Yolo4, build_model


@dataclass
class LoadedModel:
    model: Yolo4
    config: ModelConfig
    source: str
    extra: dict[str, Any] = field(default_factory=dict)  # darknet header/train params, metrics...


def load_darknet(cfg: str | Path, weights: str | Path | None, names: str | Path | None = None) -> LoadedModel:
    """A model from a Darknet cfg (checked layer by layer) and optional ``.weights``."""
    from yolo4.detector.darknet_cfg import check_against_model, read_cfg
    from yolo4.detector.darknet_weights import load_darknet_weights

    class_names = read_class_names(names) if names else None
    config, train_params = read_cfg(cfg, class_names)
    model = build_model(config)
    convs = check_against_model(cfg, model)
    extra: dict[str, Any] = {"darknet_train": train_params}
    if weights is not None:
        labels = [f"layer {s.index} ({Path(cfg).name}:{s.line})" for s in convs]
        extra["darknet_header"] = load_darknet_weights(model, weights, labels)
    return LoadedModel(model, config, f"{cfg} + {weights}", extra)


# The presets that are exactly an official Darknet cfg: their .weights load without the cfg.
DARKNET_PRESETS = ("yolov4", "yolov4-tiny")


def load_darknet_preset(name: str, weights: str | Path, names: str | Path | None = None) -> LoadedModel:
    """Official Darknet ``.weights`` (80 COCO classes) into the preset that is exactly its cfg."""
    from yolo4.core.presets import preset
    from yolo4.detector.darknet_weights import load_darknet_weights

    if name not in DARKNET_PRESETS:
        raise ValueError(f"{weights}: Darknet weights load into {', '.join(DARKNET_PRESETS)} (or give their --cfg), not {name}")
    config = preset(name, class_names=read_class_names(names) if names else None)
    model = build_model(config)
    header = load_darknet_weights(model, weights)
    return LoadedModel(model, config, f"{name} + {weights}", {"darknet_header": header})


def load_model(weights: str | Path, cfg: str | Path | None = None, names: str | Path | None = None) -> LoadedModel:
    """``weights`` is our ``.pt`` checkpoint, or a Darknet ``.weights`` file when ``cfg`` is given.

    The EMA weights are used when the checkpoint has them (they are what was evaluated).
    """
    if cfg is not None:
        return load_darknet(cfg, weights, names)
    if str(weights).endswith(".weights"):
        raise ValueError(f"{weights}: a Darknet .weights file needs its --cfg")
    state = load_checkpoint(weights)
    config = state["config"]
    if names:
        class_names = read_class_names(names)
        if len(class_names) != config.num_classes:
            raise ValueError(f"{names}: {len(class_names)} names for a model with {config.num_classes} classes")
        config = config.with_classes(class_names)
    model = build_model(config)
    weights_state = state.get("ema") or state["model"]
    missing, unexpected = model.load_state_dict(weights_state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{weights}: checkpoint does not fit its own config ({len(missing)} missing, "
            f"{len(unexpected)} unexpected keys, e.g. {(missing or unexpected)[:3]})"
        )
    extra = {k: v for k, v in state.items() if k not in ("model", "ema", "optimizer", "config")}
    return LoadedModel(model, config, str(weights), extra)


def select_device(name: str | None = None) -> torch.device:
    """``cuda`` when present unless told otherwise."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")

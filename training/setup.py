"""The set-up steps of a training run, each a function: the process group, the model to start
from (resumed, transferred from weights, or fresh), the Darknet recipe, the optimizer, the
resume policy. ``yolo4.training.trainer.fit`` calls them in this order."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from yolo4.core.config import ModelConfig
from yolo4.core.datasets import DetectionSet
from yolo4.core.presets import preset
from yolo4.detector.loading import load_darknet, load_darknet_preset, load_model, select_device
from yolo4.detector.model import Yolo4, build_model
from yolo4.training.config import COMPILE_MIN_ITERS, FINE_TUNE, FINE_TUNE_LOSS, RESUMABLE_CHANGES, TrainConfig
from yolo4.training.loss_config import LossConfig, darknet_loss, loss_for, scaled_loss
from yolo4.training.transfer import transfer


@dataclass
class Process:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_process(device: str | None) -> Process:
    """Join the process group when started by ``torchrun`` (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Process(device=select_device(device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device != "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local_rank)
    return Process(dist.get_rank(), dist.get_world_size(), torch.device(f"cuda:{local_rank}" if cuda else "cpu"))


@dataclass
class ModelStart:
    """What a run trains: the model, its config, its loss, and where it came from."""

    model: Yolo4
    config: ModelConfig
    loss: LossConfig
    recipe: dict[str, Any] | None = None  # a Darknet cfg's [net] recipe
    notes: list[str] = field(default_factory=list)  # for the console: transfer, ignored cfg keys
    fine_tune: bool = False  # trained weights, new classes: the fine-tuning recipe applies


def initial_model(config: TrainConfig, train_set: DetectionSet, state: dict | None = None) -> ModelStart:
    """The model to train: resumed from ``state``, initialised from ``config.weights`` (keeping
    every tensor whose shape still fits when the classes change), or a fresh preset."""
    if state is not None:
        model_config = state["config"]
        model = build_model(model_config)
        model.load_state_dict(state["model"])
        return ModelStart(model, model_config, LossConfig.from_dict(state["loss"]))
    size = config.input_size
    if config.weights or config.model.endswith(".cfg"):
        return _from_files(config, train_set, size)
    model_config = preset(config.model, class_names=train_set.class_names, input_size=size)
    if config.activation:
        model_config = model_config.with_activation(config.activation)
    if config.anchors == "auto":
        model_config = with_dataset_anchors(model_config, train_set)
    model_config = with_grid_sensitivity(model_config, config.scale_x_y)
    return ModelStart(build_model(model_config), model_config, _loss(config, model_config, None))


def _from_files(config: TrainConfig, train_set: DetectionSet, size: tuple[int, int]) -> ModelStart:
    if config.activation:
        raise ValueError("activation cannot be changed when starting from weights")
    class_names = train_set.class_names
    cfg = config.model if config.model.endswith(".cfg") else None
    if cfg and not config.weights:
        loaded = load_darknet(cfg, None)  # a Darknet architecture trained from scratch
    elif not cfg and str(config.weights).endswith(".weights"):
        loaded = load_darknet_preset(config.model, config.weights)  # official weights into their preset
    else:
        loaded = load_model(config.weights, cfg)
    recipe = loaded.extra.get("darknet_train")
    recipe = vars(recipe) if recipe is not None and not isinstance(recipe, dict) else recipe
    yolo_keys = (recipe or {}).get("yolo")
    notes = list((recipe or {}).get("notes", ()))
    if yolo_keys is not None:
        ignored = darknet_loss(yolo_keys)[1]
        if ignored:
            notes.append(f"{cfg or config.weights}: [yolo] keys not used by the trainer: {', '.join(ignored)}")
    saved_loss = loaded.extra.get("loss")  # a checkpoint of ours remembers its loss
    fine_tune = loaded.config.class_names != class_names
    if fine_tune:  # the recipe's grid sensitivity shapes the model built here
        config = apply_fine_tune_recipe(config)
    model_config = with_grid_sensitivity(loaded.config.replace(input_size=size), config.scale_x_y)
    if loaded.config.class_names == class_names and model_config.heads == loaded.config.heads:
        model = loaded.model
    elif loaded.config.class_names == class_names:  # same classes, new grid sensitivity
        model = build_model(model_config)
        transfer(loaded.model, model)
    else:  # transfer learning: all but the class rows of the prediction convolutions (training.transfer)
        model_config = model_config.with_classes(class_names)
        if config.anchors == "auto":  # anchors fitted to the data; the box rows follow them exactly
            model_config = with_dataset_anchors(model_config, train_set)
        model = build_model(model_config)
        kept, total = transfer(loaded.model, model)
        notes.append(
            f"{len(loaded.config.class_names)} -> {len(class_names)} classes: kept {kept} of {total} tensors of "
            f"{loaded.source} whole, and the box and objectness rows of the prediction convolutions"
            f"{' (moved to the anchors fitted to the data)' if config.anchors == 'auto' else ''}; their class rows start fresh"
        )
    if saved_loss is not None and config.loss_form == "auto":
        # Our checkpoint's own loss; Scaled-YOLOv4's gains follow the (new) input size and classes.
        saved = LossConfig.from_dict(saved_loss)
        loss = replace(scaled_loss(model_config) if saved.reduction == "mean" else saved, **config.loss)
    elif fine_tune and config.loss_form == "auto":
        loss = replace(loss_for(model_config, FINE_TUNE_LOSS), **config.loss)
    else:
        loss = _loss(config, model_config, yolo_keys)
    return ModelStart(model, model_config, loss, None if fine_tune else recipe, notes, fine_tune)


def _loss(config: TrainConfig, model_config: ModelConfig, yolo_keys) -> LossConfig:
    return replace(loss_for(model_config, config.loss_form, yolo_keys), **config.loss)


def with_grid_sensitivity(model_config: ModelConfig, scale_x_y: float) -> ModelConfig:
    """Every head with grid sensitivity ``scale_x_y`` (0: unchanged)."""
    if not scale_x_y:
        return model_config
    if scale_x_y < 1:
        raise ValueError(f"scale_x_y must be at least 1 (or 0 for the model's own), got {scale_x_y}")
    return model_config.replace(heads=tuple(replace(head, scale_x_y=scale_x_y) for head in model_config.heads))


def with_dataset_anchors(model_config: ModelConfig, train_set: DetectionSet) -> ModelConfig:
    """The preset with k-means anchors of the training boxes as the model sees them (resized per
    its contract: a stretched 640x480 image has its boxes' heights grown more than their widths),
    smallest on the finest head (what Darknet's calc_anchors is for; a fresh model has no reason
    to keep COCO's)."""
    from yolo4.training.anchors import kmeans_anchors

    wh = np.concatenate([(s.boxes[:, 2:] - s.boxes[:, :2]) * input_scale(model_config, s.size) for s in train_set.samples])
    per_head = model_config.num_anchors
    anchors = kmeans_anchors(wh.astype(np.float64), per_head * len(model_config.heads)).round(1)
    heads = tuple(
        replace(head, anchors=tuple(map(tuple, anchors[i * per_head : (i + 1) * per_head].tolist())))
        for i, head in enumerate(model_config.heads)
    )
    return model_config.replace(heads=heads)


def input_scale(model_config: ModelConfig, image_size: tuple[int, int]) -> np.ndarray:
    """``(2,)`` x and y factors from an image of ``image_size`` (height, width) to the input."""
    (h, w), (in_h, in_w) = image_size, model_config.input_size
    if model_config.preprocess.resize == "stretch":
        return np.array([in_w / w, in_h / h])
    return np.full(2, min(in_h / h, in_w / w))


def apply_darknet_recipe(config: TrainConfig, recipe: dict) -> TrainConfig:
    """A model from a Darknet cfg trains with the cfg's lr, momentum, decay and burn_in (and
    Darknet's SGD), except for the settings the user gave."""
    mapping = {"lr": "learning_rate", "momentum": "momentum", "weight_decay": "decay", "warmup_iters": "burn_in"}
    changes = {ours: recipe[theirs] for ours, theirs in mapping.items() if theirs in recipe and not config.was_given(ours)}
    if not config.was_given("optimizer"):
        changes["optimizer"] = "sgd"  # Darknet's optimizer, which its lr and decay are meant for
    return replace(config, **changes)


def apply_fine_tune_recipe(config: TrainConfig) -> TrainConfig:
    """``FINE_TUNE`` (chosen on BCCD val, see the README), except for the settings the user gave."""
    for key, value in FINE_TUNE.items():
        if config.was_given(key):
            continue
        group, _, name = key.partition(".")
        if name:
            config = replace(config, **{group: replace(getattr(config, group), **{name: value})})
        else:
            config = replace(config, **{key: value})
    return config


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Weight decay on convolution weights only, not on BatchNorm weights or biases."""
    decay, no_decay = [], []
    for param in model.parameters():
        (decay if param.ndim > 1 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, betas=(config.momentum, 0.999))
    raise ValueError(f"unknown optimizer {config.optimizer!r} (sgd or adamw)")


def check_resume(saved: TrainConfig, requested: TrainConfig) -> TrainConfig:
    """The saved run's settings, with those the user gave again taken from ``requested``;
    giving a different value for a setting that would make it another run is refused."""
    # How this invocation runs (not what it trains) always comes from the command line.
    changes = {key: getattr(requested, key) for key in ("max_iters", "workers", "device")}
    refused = []
    for key, value in requested.to_dict().items():
        if key in changes or not requested.was_given(key) or value == saved.to_dict()[key]:
            continue
        if key in RESUMABLE_CHANGES:
            changes[key] = getattr(requested, key)
        else:
            refused.append(key)
    if refused:
        details = ", ".join(f"{k}: {saved.to_dict()[k]!r} -> {requested.to_dict()[k]!r}" for k in refused)
        raise ValueError(f"cannot resume with changed settings ({details}); only {sorted(RESUMABLE_CHANGES)} may change")
    return replace(saved, **changes)


def frozen_parts(model: Yolo4, config: TrainConfig) -> list[torch.nn.Module]:
    """The parts that ``freeze_epochs`` keeps fixed."""
    return [model.backbone, model.neck] if config.freeze_neck else [model.backbone]


def fixed_stages(model: Yolo4, config: TrainConfig) -> list[torch.nn.Module]:
    """The leading backbone parts that ``freeze_stages`` keeps fixed for the whole run."""
    parts = model.backbone.parts()
    if config.freeze_stages > len(parts):
        raise ValueError(f"freeze_stages={config.freeze_stages}, but the backbone of this model has only "
                         f"{len(parts)} parts (stem and stages); 0 freezes none")  # fmt: skip
    return parts[: config.freeze_stages]


def set_frozen(model: Yolo4, config: TrainConfig, frozen: bool) -> None:
    """Freeze (or thaw) the parts: no gradients (so no backward pass through them, which is most
    of a step's time) and BatchNorm in eval mode (its statistics stay COCO's). Call after
    ``model.train()``: it puts the frozen parts back in eval mode. The ``freeze_stages`` parts
    stay frozen either way."""
    for part in frozen_parts(model, config):
        part.requires_grad_(not frozen)
        if frozen:
            part.eval()
    for part in fixed_stages(model, config):
        part.requires_grad_(False)
        part.eval()
    if config.freeze_bn:
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eval()


def compile_parts(model: Yolo4, config: TrainConfig, total_iters: int) -> bool:
    """torch.compile the backbone, neck and heads in place, when it pays (``config.compile``).

    Only the parts: DropBlock between backbone and neck changes its probability every step,
    which a compiled graph would have to guard on. The state dict keeps its keys."""
    wanted = config.compile == "on" or (config.compile == "auto" and total_iters >= COMPILE_MIN_ITERS)
    if not wanted:
        return False
    for part in (model.backbone, model.neck, *model.heads):
        part.compile()
    return True


def rng_state() -> dict[str, Any]:
    """Every generator a training step draws from (DropBlock masks come from CUDA's on a GPU)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

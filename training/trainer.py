"""``fit(config)``: the training loop, top to bottom.

One process on a CPU or GPU, or several under ``torchrun`` (DistributedDataParallel; NCCL
on GPUs, gloo on CPUs). Rank 0 logs, evaluates and saves. A checkpoint holds everything a
resumed run needs to continue exactly where it stopped.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from detector.checkpoint import load_checkpoint, save_checkpoint
from detector.config import ModelConfig, preset
from detector.loading import load_model
from detector.model import Yolo4, build_model

from .config import RESUMABLE_CHANGES, TrainConfig
from .data_config import load_data_config
from .datasets import DetectionSet, load_split
from .ema import ModelEMA
from .evaluate import evaluate_model
from .loader import TrainDataset, epoch_batches, make_loader
from .loss import yolo_loss
from .rundir import RunDir
from .schedule import dropblock_probability, learning_rate


class NonFiniteLoss(RuntimeError):
    pass


@dataclass
class Progress:
    """Where the run stands; saved in every checkpoint."""

    epoch: int = 0  # current epoch
    batch: int = 0  # batches done in the current epoch
    iteration: int = 0  # optimizer steps done in total
    best_map: float = -1.0


@dataclass
class Process:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


@dataclass
class TrainResult:
    run_dir: Path  # weights/best.pt, weights/last.pt, metrics.csv, curves.png, config.yaml
    model: Yolo4  # this process's trained weights
    ema: Yolo4  # the averaged weights (what is evaluated and saved as best), or ``model``


def fit(config: TrainConfig, resume: str | Path | None = None) -> TrainResult:
    """Train (or resume from a ``last.pt``) and return where the results are."""
    proc = setup_process(config.device)
    state = None
    if resume:
        state = load_checkpoint(resume)
        config = check_resume(TrainConfig.from_dict(state["train_config"]), config)
    torch.manual_seed(config.seed)

    data = load_data_config(config.data)
    train_set = load_split(data, config.train_split, strict=config.strict_data)
    val_set = load_split(data, config.val_split, strict=config.strict_data)
    if proc.main:
        for problem in train_set.problems + val_set.problems:
            print(f"data: skipped {problem}", file=sys.stderr)
        print(f"train: {train_set.summary()}\nval: {val_set.summary()}")

    model, model_config, recipe = initial_model(config, train_set, state)
    if recipe and state is None:
        config = apply_darknet_recipe(config, recipe)
        if proc.main:
            print(f"Darknet [net] recipe: {config.optimizer} lr {config.lr}, momentum {config.momentum}, decay {config.weight_decay}, "
                  f"burn_in {config.warmup_iters} iterations (override with --set)")  # fmt: skip
    model.to(proc.device)
    if config.sync_bn and proc.world > 1 and proc.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = build_optimizer(model, config)
    use_amp = config.amp and proc.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    ema = ModelEMA(model, config.ema_decay) if config.ema else None
    progress = Progress()
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.module.load_state_dict(state["ema"])
            ema.updates = state["ema_updates"]
        progress = Progress(**state["progress"])
        torch.set_rng_state(state["rng"]["torch"])
    net = DistributedDataParallel(model) if proc.world > 1 else model

    per_rank_batch = max(1, config.batch_size // proc.world)
    dataset = TrainDataset(train_set.samples, model_config.input_size, model_config.preprocess, config.augment, config.seed)
    batches_per_epoch = len(epoch_batches(len(dataset), per_rank_batch, 0, config.seed, proc.rank, proc.world))
    total_iters = config.epochs * batches_per_epoch
    stop_at = min(total_iters, config.max_iters or total_iters)
    warmup = config.warmup_iters or round(config.warmup_epochs * batches_per_epoch)
    close_mosaic_epoch = config.epochs - round(config.close_mosaic * config.epochs)
    run = RunDir(config.out, enabled=proc.main, resumed=state is not None)
    run.write_config(config, model_config)

    def save(name: str, metrics: dict | None = None) -> None:
        if proc.main:
            save_checkpoint(
                run.weights / name, model, model_config,
                ema=ema.module.state_dict() if ema else None, ema_updates=ema.updates if ema else 0,
                optimizer=optimizer.state_dict(), scaler=scaler.state_dict(), progress=vars(progress).copy(),
                train_config=config.to_dict(), rng={"torch": torch.get_rng_state()},
                metrics=metrics or {}, class_names=list(model_config.class_names),
            )  # fmt: skip

    try:
        for epoch in range(progress.epoch, config.epochs):
            # The last epochs train on images closer to the test distribution (YOLOX's recipe).
            dataset.set_augment(config.augment if epoch < close_mosaic_epoch else config.augment.without_mixing())
            dataset.epoch = epoch
            batches = epoch_batches(len(dataset), per_rank_batch, epoch, config.seed, proc.rank, proc.world, skip=progress.batch)
            started = time.time()
            losses = train_one_epoch(
                net, model, make_loader(dataset, batches, config.workers), optimizer, scaler, ema, config,
                model_config, progress, total_iters, stop_at, warmup, proc, save,
            )  # fmt: skip
            if progress.batch < batches_per_epoch:  # stopped early (max_iters): resumable mid-epoch
                save("last.pt")
                break
            progress.epoch, progress.batch = epoch + 1, 0
            metrics = {"epoch": epoch + 1, **losses, "lr": optimizer.param_groups[0]["lr"], "seconds": time.time() - started}
            if proc.main and config.val_every and ((epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs):
                scored = evaluate_model(ema.module if ema else model, model_config, val_set, batch_size=per_rank_batch)
                metrics.update({k: scored[k] for k in ("mAP50-95", "mAP50")})
            if proc.main:
                run.log(metrics)
                if metrics.get("mAP50-95", -1.0) > progress.best_map:
                    progress.best_map = metrics["mAP50-95"]
                    save("best.pt", metrics)
                save("last.pt", metrics)
            if proc.world > 1:
                dist.barrier()
    except KeyboardInterrupt:
        save("last.pt")
        if proc.main:
            print(f"\ninterrupted: resume with  yolo4 train --resume {run.weights / 'last.pt'}", file=sys.stderr)
        raise
    finally:
        if proc.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return TrainResult(run.path, model, ema.module if ema else model)


def train_one_epoch(net, model: Yolo4, loader, optimizer, scaler, ema, config: TrainConfig, model_config: ModelConfig,
                    progress: Progress, total_iters: int, stop_at: int, warmup: int, proc: Process,
                    save) -> dict[str, float]:  # fmt: skip
    """One pass over ``loader`` (or up to iteration ``stop_at``); returns the mean loss terms."""
    net.train()
    sums, steps = {"box": 0.0, "obj": 0.0, "cls": 0.0, "total": 0.0}, 0
    bar = tqdm(loader, desc=f"epoch {progress.epoch + 1}/{config.epochs}", disable=not proc.main, leave=True,
               initial=progress.batch, total=progress.batch + len(loader), dynamic_ncols=True)  # fmt: skip
    for images, targets in bar:
        if progress.iteration >= stop_at:
            break
        lr = learning_rate(progress.iteration, total_iters, config.lr, warmup, config.schedule,
                           config.final_lr_ratio, config.steps, config.step_scale)  # fmt: skip
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.set_dropblock(dropblock_probability(progress.iteration, total_iters, config.dropblock))
        images, targets = images.to(proc.device, non_blocking=True), targets.to(proc.device)
        if config.multiscale:
            images, targets = random_rescale(images, targets, progress.iteration, config.seed)

        with torch.autocast(proc.device.type, dtype=torch.float16, enabled=scaler.is_enabled()):
            raws = net(images)
        terms = yolo_loss([r.float() for r in raws], targets, model_config, replace(model_config.loss, **config.loss))
        if not math.isfinite(terms["total"].item()):
            raise NonFiniteLoss(f"loss is {terms['total'].item()} at iteration {progress.iteration}: "
                                f"{ {k: float(v) for k, v in terms.items()} }; lower lr or check the data")  # fmt: skip

        optimizer.zero_grad(set_to_none=True)
        scaler.scale(terms["total"]).backward()
        if config.grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if ema is not None:
            ema.update(model)

        progress.iteration += 1
        progress.batch += 1
        steps += 1
        for key in sums:
            sums[key] += terms[key].item()
        bar.set_postfix({k: f"{v / steps:.3f}" for k, v in sums.items()} | {"lr": f"{lr:.2e}"})
        if config.save_every and progress.iteration % config.save_every == 0:
            save("last.pt")
    return {f"loss_{k}": v / max(1, steps) for k, v in sums.items()}


def random_rescale(images: torch.Tensor, targets: torch.Tensor, iteration: int, seed: int):
    """Multi-scale training: the batch at a size in [0.5, 1.5] x its own, multiple of 32,
    chosen by (seed, iteration) so a resumed run picks the same sizes."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + iteration)
    h, w = images.shape[-2:]
    factor = 0.5 + torch.rand((), generator=generator).item()
    size = (max(32, round(h * factor / 32) * 32), max(32, round(w * factor / 32) * 32))
    targets = targets.clone()
    targets[:, [2, 4]] *= size[1] / w
    targets[:, [3, 5]] *= size[0] / h
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False), targets


def setup_process(device: str | None) -> Process:
    """Join the process group when started by ``torchrun`` (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        from detector.loading import select_device

        return Process(device=select_device(device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device != "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local_rank)
    return Process(dist.get_rank(), dist.get_world_size(), torch.device(f"cuda:{local_rank}" if cuda else "cpu"))


def initial_model(config: TrainConfig, train_set: DetectionSet, state) -> tuple[Yolo4, ModelConfig, dict | None]:
    """The model to train (resumed, initialised from weights, or a fresh preset) and the
    Darknet ``[net]`` recipe it came with, if any."""
    names = train_set.class_names
    size = (config.img_size, config.img_size)
    if state is not None:
        model_config = state["config"]
        model = build_model(model_config)
        model.load_state_dict(state["model"])
        return model, model_config, None
    if config.weights or config.model.endswith(".cfg"):
        cfg = config.model if config.model.endswith(".cfg") else None
        if cfg and not config.weights:
            from detector.loading import load_darknet

            loaded = load_darknet(cfg, None)  # a Darknet architecture trained from scratch
        else:
            loaded = load_model(config.weights, cfg)
        recipe = loaded.extra.get("darknet_train")
        recipe = vars(recipe) if recipe is not None and not isinstance(recipe, dict) else recipe
        model_config = loaded.config.replace(input_size=size)
        if config.activation:
            raise ValueError("activation cannot be changed when starting from weights")
        if loaded.config.class_names != names:
            # New classes: keep everything but the prediction convolutions (transfer learning).
            model_config = model_config.with_classes(names)
            model = build_model(model_config)
            own = model.state_dict()
            kept = {k: v for k, v in loaded.model.state_dict().items() if own[k].shape == v.shape}
            model.load_state_dict(kept, strict=False)
            return model, model_config, recipe
        return loaded.model, model_config, recipe
    model_config = preset(config.model, class_names=names, input_size=size)
    if config.activation:
        model_config = model_config.with_activation(config.activation)
    if config.anchors == "auto":
        model_config = with_dataset_anchors(model_config, train_set)
    elif config.anchors != "preset":
        raise ValueError(f"anchors must be auto or preset, got {config.anchors!r}")
    return build_model(model_config), model_config, None


def with_dataset_anchors(model_config: ModelConfig, train_set: DetectionSet) -> ModelConfig:
    """The preset with k-means anchors of the training boxes at the input size, smallest on the
    finest head (what Darknet's calc_anchors is for; a fresh model has no reason to keep COCO's)."""
    from .anchors import kmeans_anchors

    size = max(model_config.input_size)
    wh = np.concatenate([(s.boxes[:, 2:] - s.boxes[:, :2]) * (size / max(s.size)) for s in train_set.samples])
    per_head = model_config.num_anchors
    anchors = kmeans_anchors(wh.astype(np.float64), per_head * len(model_config.heads)).round(1)
    heads = tuple(
        replace(head, anchors=tuple(map(tuple, anchors[i * per_head : (i + 1) * per_head].tolist())))
        for i, head in enumerate(model_config.heads)
    )
    return model_config.replace(heads=heads)


def apply_darknet_recipe(config: TrainConfig, recipe: dict) -> TrainConfig:
    """A model from a Darknet cfg trains with the cfg's lr, momentum, decay and burn_in, except
    where the user set a value (anything that differs from our defaults)."""
    defaults = TrainConfig()
    mapping = {"lr": "learning_rate", "momentum": "momentum", "weight_decay": "decay", "warmup_iters": "burn_in"}
    changes = {ours: recipe[theirs] for ours, theirs in mapping.items()
               if theirs in recipe and getattr(config, ours) == getattr(defaults, ours)}  # fmt: skip
    if config.optimizer == defaults.optimizer:
        changes["optimizer"] = "sgd"  # Darknet's optimizer, which its lr and decay are meant for
    return replace(config, **changes)


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Weight decay on convolution weights only, not on BatchNorm weights or biases."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (decay if param.ndim > 1 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, betas=(config.momentum, 0.999))
    raise ValueError(f"unknown optimizer {config.optimizer!r} (sgd or adamw)")


def check_resume(saved: TrainConfig, requested: TrainConfig) -> TrainConfig:
    """The saved run's settings, with the few that may change taken from ``requested``."""
    defaults = TrainConfig()
    # How this invocation runs (not what it trains) always comes from the command line.
    changes = {key: getattr(requested, key) for key in ("max_iters", "workers", "device")}
    refused = []
    for key, value in requested.to_dict().items():
        if key in changes or value == defaults.to_dict()[key] or value == saved.to_dict()[key]:
            continue  # not asked for, or unchanged
        (changes.__setitem__(key, getattr(requested, key)) if key in RESUMABLE_CHANGES else refused.append(key))
    if refused:
        details = ", ".join(f"{k}: {saved.to_dict()[k]!r} -> {requested.to_dict()[k]!r}" for k in refused)
        raise ValueError(f"cannot resume with changed settings ({details}); only {sorted(RESUMABLE_CHANGES)} may change")
    return replace(saved, **changes)

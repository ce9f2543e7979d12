"""``fit(config)``: the training loop, top to bottom.

One process on a CPU or GPU, or several under ``torchrun`` (DistributedDataParallel; NCCL
on GPUs, gloo on CPUs). Rank 0 logs and saves; validation is sharded over every rank. A
checkpoint holds everything a resumed run needs to continue exactly where it stopped, and
checkpoints are only ever taken between two optimizer steps (Ctrl-C waits for the step).
"""

from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm
from yolo4.core.data_config import load_data_config
from yolo4.core.datasets import load_split
from yolo4.detector.checkpoint import load_checkpoint, save_checkpoint
from yolo4.detector.model import Yolo4
from yolo4.training.config import TrainConfig
from yolo4.training.ema import ModelEMA
from yolo4.training.loader import CACHE_BYTES, TrainDataset, auto_workers, decoded_bytes, epoch_batches, make_loader
from yolo4.training.loss import yolo_loss
from yolo4.training.multiscale import random_rescale
from yolo4.training.rundir import RunDir
from yolo4.training.schedule import dropblock_probability, learning_rate
from yolo4.training.setup import (
    Process,
    apply_darknet_recipe,
    apply_fine_tune_recipe,
    build_optimizer,
    compile_parts,
    check_resume,
    initial_model,
    restore_rng,
    rng_state,
    set_frozen,
    setup_process,
)  # fmt: skip
from yolo4.training.validate import evaluate_model

LOSS_TERMS = ("box", "obj", "cls", "total")


class NonFiniteLoss(RuntimeError):
    pass


@dataclass
class Progress:
    """Where the run stands; saved in every checkpoint."""

    epoch: int = 0  # current epoch
    batch: int = 0  # batches done in the current epoch
    iteration: int = 0  # optimizer steps done in total
    best_map: float = -1.0
    loss_sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(LOSS_TERMS, 0.0))  # this epoch so far


@dataclass
class TrainResult:
    run_dir: Path  # weights/best.pt, weights/last.pt, metrics.csv, curves.png, config.yaml
    model: Yolo4  # this process's trained weights
    ema: Yolo4  # the averaged weights (what is evaluated and saved as best), or ``model``
    steps: int  # optimizer steps this call ran (a resumed run: only the remaining ones)
    main: bool = True  # rank 0 (the one that reports)


def fit(config: TrainConfig, resume: str | Path | None = None) -> TrainResult:
    """Train (or resume from a ``last.pt``) and return where the results are."""
    proc = setup_process(config.device)
    state = load_checkpoint(resume) if resume else None
    if state is not None:
        config = check_resume(TrainConfig.from_dict(state["train_config"]), config)
    if not config.data:
        raise ValueError("yolo4 train needs --data: a dataset YAML (e.g. data/bccd.yaml) or a shipped name (bccd)")
    torch.manual_seed(config.seed)

    data = load_data_config(config.data)
    train_set = load_split(data, config.train_split, strict=config.strict_data)
    val_set = load_split(data, config.val_split, strict=config.strict_data)
    start = initial_model(config, train_set, state)
    model, model_config, loss_config = start.model, start.config, start.loss
    if start.recipe and state is None:
        config = apply_darknet_recipe(config, start.recipe)
    if start.fine_tune and state is None:
        config = apply_fine_tune_recipe(config)
    if proc.main:
        for problem in train_set.problems + val_set.problems:
            print(f"data: skipped {problem}", file=sys.stderr)
        for note in start.notes:
            print(f"note: {note}", file=sys.stderr)
        print(f"train: {train_set.summary()}\nval: {val_set.summary()}")
        if start.recipe and state is None:
            print(f"Darknet [net] recipe: {config.optimizer} lr {config.lr}, momentum {config.momentum}, decay "
                  f"{config.weight_decay}, burn_in {config.warmup_iters} iterations (override with --set)")  # fmt: skip
        if start.fine_tune and state is None:
            print(f"fine-tuning recipe: {config.optimizer} lr {config.lr}, warm-up {config.warmup_epochs} epochs, "
                  f"{'scaled' if loss_config.reduction == 'mean' else 'darknet'} loss form, grid sensitivity "
                  f"{model_config.heads[0].scale_x_y:g}, Mosaic cells {config.augment.mosaic_fit}, scale jitter "
                  f"{config.augment.scale[0]:g}-{config.augment.scale[1]:g}, EMA decay {config.ema_decay:g} "
                  f"(ramped up over {config.ema_tau:g} steps)"
                  + (f", backbone frozen for {config.freeze_epochs:g} epochs" if config.freeze_epochs else "")
                  + (f", first {config.freeze_stages} backbone parts fixed" if config.freeze_stages else "")
                  + " (override with --set)")  # fmt: skip
    model.to(proc.device, memory_format=torch.channels_last if config.channels_last else torch.contiguous_format)
    if config.sync_bn and proc.world > 1 and proc.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    set_frozen(model, config, False)  # before compiling and DDP, which both see what needs gradients
    optimizer = build_optimizer(model, config)
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp and proc.device.type == "cuda")
    ema = ModelEMA(model, config.ema_decay, tau=config.ema_tau) if config.ema else None
    progress = Progress()
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.module.load_state_dict(state["ema"])
            ema.updates = state["ema_updates"]
        progress = Progress(**state["progress"])
        restore_rng(state["rng"])
    net = DistributedDataParallel(model, find_unused_parameters=config.freeze_epochs > 0) if proc.world > 1 else model

    per_rank_batch = max(1, config.batch_size // proc.world)
    cache = config.cache_images == "on" or (config.cache_images == "auto" and decoded_bytes(train_set.samples) <= CACHE_BYTES)
    dataset = TrainDataset(train_set.samples, model_config.input_size, model_config.preprocess, config.augment,
                           config.seed, cache)  # fmt: skip
    workers = auto_workers(proc.device) if config.workers is None else config.workers
    batches_per_epoch = len(epoch_batches(len(dataset), per_rank_batch, 0, config.seed, proc.rank, proc.world))
    total_iters = config.epochs * batches_per_epoch
    stop_at = min(total_iters, config.max_iters or total_iters)
    warmup = config.warmup_iters or round(config.warmup_epochs * batches_per_epoch)
    close_mosaic_epoch = config.epochs - round(config.close_mosaic * config.epochs)
    if compile_parts(model, config, stop_at - progress.iteration) and proc.main:
        print("compiling the model (torch.compile) on its first steps: `--set compile=off` to skip")
    run = RunDir(config.out, enabled=proc.main, resumed=state is not None)
    run.write_config(config, model_config, loss_config)
    first_iteration = progress.iteration
    if proc.main and state is not None:
        print(f"resuming at iteration {progress.iteration} of {stop_at} (epoch {progress.epoch + 1}, batch {progress.batch})")

    def save(name: str, metrics: dict | None = None) -> None:
        if proc.main:
            save_checkpoint(
                run.weights / name, model, model_config, loss=loss_config.to_dict(),
                ema=ema.module.state_dict() if ema else None, ema_updates=ema.updates if ema else 0,
                optimizer=optimizer.state_dict(), scaler=scaler.state_dict(), progress=vars(progress).copy(),
                train_config=config.to_dict(), rng=rng_state(), metrics=metrics or {},
                class_names=list(model_config.class_names),
            )  # fmt: skip

    stop = StopRequest()
    try:
        with stop:
            for epoch in range(progress.epoch, config.epochs):
                # The last epochs train on images closer to the test distribution (YOLOX's recipe).
                dataset.set_augment(config.augment if epoch < close_mosaic_epoch else config.augment.without_mixing())
                dataset.epoch = epoch
                batches = epoch_batches(len(dataset), per_rank_batch, epoch, config.seed, proc.rank, proc.world,
                                        skip=progress.batch)  # fmt: skip
                started = time.time()
                train_one_epoch(
                    net, model, make_loader(dataset, batches, workers), optimizer, scaler, ema, config,
                    model_config, loss_config, progress, total_iters, stop_at, warmup, proc, save, stop,
                )  # fmt: skip
                if progress.batch < batches_per_epoch:  # stopped early (max_iters, Ctrl-C): resumable mid-epoch
                    save("last.pt")
                    if stop.requested:
                        raise KeyboardInterrupt
                    break
                losses = {f"loss_{k}": v / batches_per_epoch for k, v in progress.loss_sums.items()}
                progress.epoch, progress.batch, progress.loss_sums = epoch + 1, 0, dict.fromkeys(LOSS_TERMS, 0.0)
                metrics = {"epoch": epoch + 1, **losses, "lr": optimizer.param_groups[0]["lr"], "seconds": time.time() - started}
                if config.val_every and ((epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs):
                    validated = time.time()
                    scored = evaluate_model(ema.module if ema else model, model_config, val_set, per_rank_batch,
                                            shard=proc.world > 1)  # fmt: skip
                    metrics.update({k: scored[k] for k in ("mAP50-95", "mAP50")}, val_seconds=time.time() - validated)
                    if proc.main:
                        print(f"epoch {epoch + 1}: val mAP50 {scored['mAP50']:.3f}, mAP50-95 {scored['mAP50-95']:.3f} "
                              f"({metrics['val_seconds']:.1f} s)")  # fmt: skip
                if proc.main:
                    run.log(metrics, final=epoch + 1 == config.epochs)
                    if metrics.get("mAP50-95", -1.0) > progress.best_map:
                        progress.best_map = metrics["mAP50-95"]
                        save("best.pt", metrics)
                    save("last.pt", metrics)
                if stop.requested:
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        if proc.main:
            print(f"\ninterrupted after iteration {progress.iteration}: resume with  yolo4 train --resume "
                  f"{run.weights / 'last.pt'}", file=sys.stderr)  # fmt: skip
        raise
    finally:
        if proc.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return TrainResult(run.path, model, ema.module if ema else model, progress.iteration - first_iteration, proc.main)


def train_one_epoch(net, model: Yolo4, loader, optimizer, scaler, ema, config: TrainConfig, model_config,
                    loss_config, progress: Progress, total_iters: int, stop_at: int, warmup: int, proc: Process,
                    save, stop: StopRequest) -> None:  # fmt: skip
    """One pass over ``loader`` (or up to iteration ``stop_at``, or a stop request); the loss
    sums of the epoch accumulate in ``progress``."""
    net.train()
    set_frozen(model, config, progress.epoch < config.freeze_epochs)  # fine-tuning: what stays as it came
    bar = tqdm(desc=f"epoch {progress.epoch + 1}/{config.epochs}", disable=not proc.main, leave=True,
               initial=progress.batch, total=progress.batch + len(loader), dynamic_ncols=True)  # fmt: skip
    batches = iter(loader)
    # The stop request is read before the next batch is fetched: Ctrl-C also ends the loader's workers.
    while progress.iteration < stop_at and not stop.requested:
        try:
            images, targets = next(batches)
        except StopIteration:
            break
        lr = learning_rate(progress.iteration, total_iters, config.lr, warmup, config.schedule,
                           config.final_lr_ratio, config.steps, config.step_scale)  # fmt: skip
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.set_dropblock(dropblock_probability(progress.iteration, total_iters, config.dropblock))
        images, targets = images.to(proc.device, non_blocking=True), targets.to(proc.device)
        images = images.contiguous(memory_format=torch.channels_last if config.channels_last else torch.contiguous_format)
        if config.multiscale:
            images, targets = random_rescale(images, targets, progress.iteration, config.seed)

        with torch.autocast(proc.device.type, dtype=torch.float16, enabled=scaler.is_enabled()):
            raws = net(images)
        terms = yolo_loss([r.float() for r in raws], targets, model_config, loss_config)
        check_finite(terms, progress.iteration, proc)

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
        for key in LOSS_TERMS:
            progress.loss_sums[key] += terms[key].item()
        bar.update()
        bar.set_postfix({k: f"{v / progress.batch:.3f}" for k, v in progress.loss_sums.items()} | {"lr": f"{lr:.2e}"})
        if config.save_every and progress.iteration % config.save_every == 0:
            save("last.pt")
    bar.close()


def check_finite(terms: dict[str, torch.Tensor], iteration: int, proc: Process) -> None:
    """Stop every rank together on a non-finite loss (one rank alone would leave the others
    waiting in the gradient all-reduce)."""
    bad = torch.tensor(float(not math.isfinite(terms["total"].item())), device=terms["total"].device)
    if proc.world > 1:
        dist.all_reduce(bad)
    if bad.item():
        values = {k: float(v) for k, v in terms.items()}
        raise NonFiniteLoss(f"loss is not finite at iteration {iteration} (this rank: {values}); lower lr or check the data")


class StopRequest:
    """Ctrl-C (SIGINT) while training: finish the optimizer step under way, save, then stop.

    A checkpoint taken in the middle of a step would hold BatchNorm statistics that the
    interrupted forward pass had already updated, and the resumed run would differ from an
    uninterrupted one. A second Ctrl-C stops at once (the last saved point stays valid).
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> "StopRequest":
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: signals cannot be caught here
            self._previous = None
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step (Ctrl-C again to stop at once) ...", file=sys.stderr, flush=True)

"""Bodies of ``yolo4 train``, ``yolo4 show-aug`` and ``yolo4 anchors``."""

from __future__ import annotations

import argparse
import sys

import numpy as np


def train_config_from_args(args: argparse.Namespace):
    from .config import TrainConfig, apply_overrides, load_hyp

    config = TrainConfig()
    if args.hyp:
        config = apply_overrides(config, load_hyp(args.hyp))
    direct = {
        "data": args.data, "model": args.model, "weights": args.weights, "epochs": args.epochs,
        "batch_size": args.batch, "img_size": args.img, "device": args.device, "workers": args.workers,
        "out": args.out, "activation": args.act,
    }  # fmt: skip
    config = apply_overrides(config, {k: v for k, v in direct.items() if v is not None})
    if args.strict:
        config = apply_overrides(config, {"strict_data": True})
    return apply_overrides(config, args.set or [])


def cmd_train(args: argparse.Namespace) -> int:
    from .trainer import fit

    config = train_config_from_args(args)
    try:
        run = fit(config, resume=args.resume).run_dir
    except KeyboardInterrupt:
        return 130
    print(f"done: {run}/weights/ (best.pt, last.pt), metrics: {run}/metrics.csv, curves: {run}/curves.png")
    return 0


def cmd_show_aug(args: argparse.Namespace) -> int:
    import cv2

    from detector.config import preset
    from detector.draw import draw_detections

    from .datasets import load_split
    from .loader import TrainDataset

    config = train_config_from_args(args)
    train_set = load_split(config.data, config.train_split)
    model_config = preset(config.model, class_names=train_set.class_names, input_size=(config.img_size,) * 2)
    dataset = TrainDataset(train_set.samples, model_config.input_size, model_config.preprocess, config.augment, config.seed)
    tiles = []
    for i in range(args.n):
        image, boxes, labels = dataset[i % len(dataset)]
        tiles.append(draw_detections(image, boxes, None, labels, train_set.class_names))
    cols = int(np.ceil(np.sqrt(len(tiles))))
    blank = np.full_like(tiles[0], 255)
    rows = [np.hstack(tiles[r * cols : (r + 1) * cols] + [blank] * (cols - len(tiles[r * cols : (r + 1) * cols])))
            for r in range(int(np.ceil(len(tiles) / cols)))]  # fmt: skip
    cv2.imwrite(args.out, np.vstack(rows))
    print(f"wrote {args.out}: {len(tiles)} augmented samples of {config.data} (mosaic={config.augment.mosaic}, "
          f"cutmix={config.augment.cutmix}, mixup={config.augment.mixup})")  # fmt: skip
    return 0


def cmd_anchors(args: argparse.Namespace) -> int:
    from .anchors import kmeans_anchors, mean_best_iou
    from .datasets import load_split

    dataset = load_split(args.data, args.split)
    # Sizes after letterboxing to the training input (what the anchors are compared against).
    wh = np.concatenate([
        (s.boxes[:, 2:] - s.boxes[:, :2]) * (args.img / max(s.size)) for s in dataset.samples if len(s.boxes)
    ])  # fmt: skip
    anchors = kmeans_anchors(wh, args.n, seed=args.seed)
    text = ",  ".join(f"{w:.0f},{h:.0f}" for w, h in anchors)
    print(f"{len(wh)} boxes of {args.data} ({args.split}) at {args.img}: {args.n} anchors")
    print(f"anchors = {text}")
    print(f"mean best IoU {mean_best_iou(wh, anchors):.3f} (yolov4.cfg's anchors scaled to {args.img}: "
          f"{mean_best_iou(wh, _default_anchors(args.img)):.3f})", file=sys.stdout)  # fmt: skip
    return 0


def _default_anchors(img: int) -> np.ndarray:
    from detector.config import YOLOV4_ANCHORS

    return np.array(YOLOV4_ANCHORS, np.float64) * img / 608


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="dataset YAML (data/bccd.yaml) or a shipped name (bccd)")
    p.add_argument("--model", help="yolov4-nano (default), yolov4-small, yolov4-tiny, yolov4, or a Darknet .cfg")
    p.add_argument("--weights", help="initialise from our .pt or Darknet .weights (with a .cfg --model)")
    p.add_argument("--act", help="activation of the scaled variants: leaky, mish, silu, relu")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch", type=int, help="total batch size over all processes")
    p.add_argument("--img", type=int, help="training input size (multiple of 32)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when present)")
    p.add_argument("--workers", type=int, help="data-loader processes")
    p.add_argument("--hyp", help="hyper-parameter YAML (keys of TrainConfig, nested augment:/loss:)")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="e.g. lr=0.02 augment.cutmix=0.5 loss.iou_loss=diou")
    p.add_argument("--strict", action="store_true", help="fail on the first dataset problem instead of skipping")
    p.add_argument("--out", help="run folder (default runs/train/exp, never overwritten)")

"""Bodies of ``yolo4 train``, ``yolo4 show-aug`` and ``yolo4 anchors``."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def train_config_from_args(args: argparse.Namespace):
    """The ``TrainConfig`` of the command line; it records which settings the user gave."""
    from yolo4.training.config import TrainConfig, apply_overrides, load_hyp

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


def run(args: argparse.Namespace) -> int:
    from yolo4.training.trainer import fit

    config = train_config_from_args(args)
    try:
        result = fit(config, resume=args.resume)
    except KeyboardInterrupt:
        return 130
    if result.main:
        run_dir = result.run_dir
        print(f"done ({result.steps} steps): {run_dir}/weights/ (best.pt, last.pt), metrics: {run_dir}/metrics.csv, "
              f"curves: {run_dir}/curves.png")  # fmt: skip
    return 0


def show_aug(args: argparse.Namespace) -> int:
    import cv2

    from yolo4.core.datasets import load_split
    from yolo4.core.draw import draw_detections
    from yolo4.core.presets import preset
    from yolo4.training.loader import TrainDataset

    config = train_config_from_args(args)
    if not config.data:
        raise ValueError("yolo4 show-aug needs --data: a dataset YAML (e.g. data/bccd.yaml) or a shipped name (bccd)")
    train_set = load_split(config.data, config.train_split)
    model_config = preset(config.model, class_names=train_set.class_names, input_size=config.input_size)
    dataset = TrainDataset(train_set.samples, model_config.input_size, model_config.preprocess, config.augment, config.seed)
    tiles = []
    for i in range(args.n):
        image, boxes, labels = dataset[i % len(dataset)]
        tiles.append(draw_detections(image, boxes, None, labels, train_set.class_names))
    cols = int(np.ceil(np.sqrt(len(tiles))))
    blank = np.full_like(tiles[0], 255)
    rows = [np.hstack(tiles[r * cols : (r + 1) * cols] + [blank] * (cols - len(tiles[r * cols : (r + 1) * cols])))
            for r in range(int(np.ceil(len(tiles) / cols)))]  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), np.vstack(rows))
    print(f"wrote {out}: {len(tiles)} augmented samples of {config.data} (mosaic={config.augment.mosaic}, "
          f"cutmix={config.augment.cutmix}, mixup={config.augment.mixup})")  # fmt: skip
    return 0


def anchors(args: argparse.Namespace) -> int:
    from yolo4.core.datasets import load_split
    from yolo4.core.presets import YOLOV4_ANCHORS
    from yolo4.training.anchors import kmeans_anchors, mean_best_iou

    dataset = load_split(args.data, args.split)
    # Sizes after letterboxing to the training input (what the anchors are compared against).
    wh = np.concatenate([
        (s.boxes[:, 2:] - s.boxes[:, :2]) * (args.img / max(s.size)) for s in dataset.samples if len(s.boxes)
    ])  # fmt: skip
    found = kmeans_anchors(wh, args.n, seed=args.seed)
    default = np.array(YOLOV4_ANCHORS, np.float64) * args.img / 608
    print(f"{len(wh)} boxes of {args.data} ({args.split}) at {args.img}: {args.n} anchors")
    print(f"anchors = {',  '.join(f'{w:.0f},{h:.0f}' for w, h in found)}")
    print(f"mean best IoU {mean_best_iou(wh, found):.3f} (yolov4.cfg's anchors scaled to {args.img}: "
          f"{mean_best_iou(wh, default):.3f})")  # fmt: skip
    return 0

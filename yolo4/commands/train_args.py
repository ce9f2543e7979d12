"""The options of ``yolo4 train`` and ``yolo4 show-aug`` (argparse only: no torch to build the parser)."""

from __future__ import annotations

import argparse


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="dataset YAML (data/bccd.yaml) or a shipped name (bccd); required")
    p.add_argument("--model", help="yolov4-nano (default), yolov4-small, yolov4-tiny, yolov4, or a Darknet .cfg")
    p.add_argument("--weights", help="start from our .pt, or Darknet .weights (with a .cfg --model, or yolov4-tiny)")
    p.add_argument("--act", help="activation of the scaled variants: leaky, mish, silu, relu")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch", type=int, help="total batch size over all processes")
    p.add_argument("--img", help="training input size: 512, or WIDTHxHEIGHT for a rectangular input (512x384); multiples of 32")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when present)")
    p.add_argument("--workers", type=int, help="data-loader processes")
    p.add_argument("--hyp", help="hyper-parameter YAML (keys of TrainConfig, nested augment:/loss:)")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="e.g. lr=0.02 augment.cutmix=0.5 loss.iou_loss=diou")
    p.add_argument("--strict", action="store_true", help="fail on the first dataset problem instead of skipping")
    p.add_argument("--out", help="run folder (default runs/train/exp, never overwritten); show-aug: the PNG")

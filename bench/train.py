"""Training throughput of the nano model on BCCD at 416 on this machine, in one run:
images/second of the data loader alone (Mosaic on) and of full training steps.

    python bench/train.py [--img 416] [--batch 8] [--steps 10] [--workers 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from yolo4.core.datasets import load_split  # noqa: E402
from yolo4.core.presets import preset  # noqa: E402
from yolo4.detector.model import build_model  # noqa: E402
from yolo4.training.augment import AugmentConfig  # noqa: E402
from yolo4.training.config import TrainConfig  # noqa: E402
from yolo4.training.loader import TrainDataset, epoch_batches, make_loader  # noqa: E402
from yolo4.training.loss import yolo_loss  # noqa: E402
from yolo4.training.loss_config import loss_for  # noqa: E402
from yolo4.training.setup import build_optimizer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="bccd")
    parser.add_argument("--model", default="yolov4-nano")
    parser.add_argument("--img", type=int, default=416)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    train = load_split(args.data, "train")
    config = preset(args.model, class_names=train.class_names, input_size=(args.img, args.img))
    dataset = TrainDataset(train.samples, config.input_size, config.preprocess, AugmentConfig(mosaic=1.0), seed=0)
    batches = epoch_batches(len(dataset), args.batch, 0, 0, 0, 1)[: args.steps + 1]

    loader = make_loader(dataset, batches, args.workers)
    iterator = iter(loader)
    next(iterator)  # worker start-up is not throughput
    start = time.perf_counter()
    for _ in iterator:
        pass
    loader_ips = args.steps * args.batch / (time.perf_counter() - start)

    model = build_model(config).train()
    optimizer = build_optimizer(model, TrainConfig(lr=0.001))
    batch = [dataset[i] for i in batches[0]]
    from yolo4.training.loader import collate

    images, targets = collate(batch, config.preprocess)
    step_times = []
    for step in range(args.steps + 1):
        start = time.perf_counter()
        loss = yolo_loss(model(images), targets, config, loss_for(config))["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step:  # the first step pays for allocations
            step_times.append(time.perf_counter() - start)
    step_ips = args.batch / (sum(step_times) / len(step_times))
    print(f"{args.model} at {args.img}, batch {args.batch}, {torch.get_num_threads()} threads, {args.workers} loader workers")
    print(f"data loader (Mosaic on): {loader_ips:7.1f} images/s")
    print(f"training step (fwd+bwd+SGD): {step_ips:7.1f} images/s")
    print(f"loader / training ratio: {loader_ips / step_ips:.1f}x (>1: the model, not the data, is the bottleneck)")


if __name__ == "__main__":
    main()

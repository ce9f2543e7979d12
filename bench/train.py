"""Training throughput on this CPU, measured in one run: epochs of BCCD trainval (292 images) with
``yolo4 train``'s own loop, and with ``--peer-python`` ultralytics YOLOv8n trained the same way
(from scratch, each trainer's default batch, no validation) in its own virtual environment;
throughput per FLOP compares the two. Also a per-step profile of ours (``--profile``).

    python bench/train.py [--model yolov4-nano] [--epochs 3] [--peer-python /path/to/venv/bin/python] [--profile]

Images/s is the median over the epochs after the first (start-up, allocation); GFLOPs are
2 x multiply-adds of one image's forward pass at --img (YOLOv8n: --peer-img, square), counted the same way for both models
(``torch.utils.flop_counter``).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch

from yolo4.core.config import parse_image_size
from yolo4.core.cpu import describe_cpu
from yolo4.core.datasets import load_split

from ultralytics_peer import peer_env, write_yolo_format  # bench/, beside this script


def forward_gflops(model: torch.nn.Module, size: tuple[int, int]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    was = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, *size))
    model.train(was)
    return counter.get_total_flops() / 1e9


def ours(args: argparse.Namespace, tmp: Path) -> dict:
    from yolo4.training.config import TrainConfig, apply_overrides
    from yolo4.training.trainer import fit

    out = tmp / "ours"
    settings = [f"data={args.data}", "train_split=trainval", f"model={args.model}", f"img_size={args.img}",
                f"epochs={args.epochs}", "val_every=0", f"out={out}", *args.set]  # fmt: skip
    if args.batch:
        settings.append(f"batch_size={args.batch}")
    if args.workers is not None:
        settings.append(f"workers={args.workers}")
    if not any(s.startswith("compile=") for s in args.set):
        settings.append("compile=on")  # what a full-length run does (compile=auto); these few epochs are too short for auto
    config = apply_overrides(TrainConfig(), settings)
    result = fit(config)
    rows = list(csv.DictReader(open(result.run_dir / "metrics.csv")))
    seconds = [float(r["seconds"]) for r in rows][1:] or [float(rows[0]["seconds"])]
    images = len(load_split(args.data, "trainval")) // config.batch_size * config.batch_size  # the short last batch is dropped
    from yolo4.detector.loading import select_device
    from yolo4.training.loader import auto_workers

    workers = auto_workers(select_device(config.device)) if config.workers is None else config.workers
    return {"trainer": f"yolo4 {args.model}", "batch": config.batch_size, "workers": workers,
            "epoch_s": statistics.median(seconds), "images_per_epoch": images,
            "gflops": forward_gflops(result.model, parse_image_size(args.img))}  # fmt: skip


PEER_SCRIPT = textwrap.dedent("""
    import json, sys, time
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from ultralytics import YOLO
    data, epochs, size, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    model = YOLO("yolov8n.yaml")  # from scratch, as ours
    marks = []
    model.add_callback("on_train_epoch_start", lambda trainer: marks.append(("start", time.time())))
    model.add_callback("on_train_epoch_end", lambda trainer: marks.append(("end", time.time())))
    model.train(data=data, epochs=epochs, imgsz=size, device="cpu", val=False, plots=False, project=out,
                name="peer", exist_ok=True, verbose=False)
    starts = [t for k, t in marks if k == "start"]
    ends = [t for k, t in marks if k == "end"]
    net = model.model.float().eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.zeros(1, 3, size, size))
    args = model.trainer.args
    print("PEER " + json.dumps({"epoch_s": [e - s for s, e in zip(starts, ends)], "batch": args.batch,
                                "workers": args.workers, "gflops": counter.get_total_flops() / 1e9}))
""")


def peer(args: argparse.Namespace, tmp: Path) -> dict:
    """YOLOv8n on the same images, as YOLO txt labels (ultralytics' format)."""
    train = load_split(args.data, "trainval")
    data_yaml = write_yolo_format(train, tmp / "yolo-format")
    run = subprocess.run([args.peer_python, "-c", PEER_SCRIPT, str(data_yaml), str(args.epochs), str(args.peer_img),
                          str(tmp / "peer")], capture_output=True, text=True, env=peer_env(tmp))  # fmt: skip
    line = next((ln for ln in run.stdout.splitlines() if ln.startswith("PEER ")), None)
    if run.returncode != 0 or line is None:
        raise SystemExit(f"the peer run failed:\n{run.stderr[-3000:]}")
    figures = json.loads(line[5:])
    seconds = figures["epoch_s"][1:] or figures["epoch_s"]
    return {"trainer": "ultralytics YOLOv8n", "batch": figures["batch"], "workers": figures["workers"],
            "epoch_s": statistics.median(seconds), "images_per_epoch": len(train), "gflops": figures["gflops"]}  # fmt: skip


def profile(args: argparse.Namespace) -> None:
    """Where one training step's time goes, in this process (no loader workers)."""
    from yolo4.core.presets import preset
    from yolo4.detector.model import build_model
    from yolo4.training.config import TrainConfig
    from yolo4.training.ema import ModelEMA
    from yolo4.training.loader import TrainDataset, collate
    from yolo4.training.loss import yolo_loss
    from yolo4.training.loss_config import loss_for
    from yolo4.training.setup import build_optimizer, with_dataset_anchors

    train = load_split(args.data, "trainval")
    config = with_dataset_anchors(preset(args.model, class_names=train.class_names, input_size=parse_image_size(args.img)), train)
    batch = args.batch or TrainConfig().batch_size
    dataset = TrainDataset(train.samples, config.input_size, config.preprocess, TrainConfig().augment, seed=0)
    start = time.perf_counter()
    items = [dataset[i] for i in range(4 * batch)]
    data_ms = (time.perf_counter() - start) / len(items) * 1000 * batch
    for layout in (torch.contiguous_format, torch.channels_last):
        model = build_model(config).train().to(memory_format=layout)
        optimizer, ema, loss = build_optimizer(model, TrainConfig()), ModelEMA(model), loss_for(config)
        times: dict[str, list[float]] = {k: [] for k in ("forward", "assign + loss", "backward", "optimizer", "EMA")}
        for step in range(6):
            images, targets = collate(items[(step % 4) * batch : (step % 4 + 1) * batch], config.preprocess)
            marks = [time.perf_counter()]
            raws = model(images.contiguous(memory_format=layout))
            marks.append(time.perf_counter())
            terms = yolo_loss(raws, targets, config, loss)
            marks.append(time.perf_counter())
            optimizer.zero_grad()
            terms["total"].backward()
            marks.append(time.perf_counter())
            optimizer.step()
            marks.append(time.perf_counter())
            ema.update(model)
            marks.append(time.perf_counter())
            if step >= 2:
                for key, a, b in zip(times, marks, marks[1:]):
                    times[key].append((b - a) * 1000)
        medians = {k: statistics.median(v) for k, v in times.items()}
        step_ms = sum(medians.values())
        name = "channels_last" if layout is torch.channels_last else "NCHW"
        parts = ", ".join(f"{k} {v:.0f} ms ({v / step_ms:.0%})" for k, v in medians.items())
        print(f"step profile, {args.model} batch {batch}, {name}: {parts}; {step_ms:.0f} ms = {batch / step_ms * 1000:.1f} "
              f"images/s; Mosaic data {data_ms:.0f} ms per batch on one core")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="bccd")
    parser.add_argument("--model", default="yolov4-nano")
    parser.add_argument("--img", default="416", help="ours: 416, or WIDTHxHEIGHT for a rectangular input (512x384)")
    parser.add_argument("--peer-img", type=int, help="YOLOv8n's (square) size; default: the larger side of --img")
    parser.add_argument("--batch", type=int, help="default: yolo4 train's")
    parser.add_argument("--workers", type=int, help="default: yolo4 train's")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more training settings")
    parser.add_argument("--peer-python", help="a Python with ultralytics (8.4.190) installed: run YOLOv8n too")
    parser.add_argument("--profile", action="store_true", help="print where a training step's time goes")
    parser.add_argument("--json", help="also write the figures here (python -m yolo4.bundle bccd --peer-bench)")
    args = parser.parse_args()
    args.peer_img = args.peer_img or max(parse_image_size(args.img))
    peer_note = f" (YOLOv8n {args.peer_img} px)" if args.peer_python else ""
    print(f"CPU: {describe_cpu()}; BCCD trainval, {args.img} px{peer_note}, {args.epochs} epochs each, no validation")
    if args.profile:
        profile(args)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(ours(args, Path(tmp)))
        if args.peer_python:
            rows.append(peer(args, Path(tmp)))
    print(f"{'trainer':<24}{'batch':>6}{'workers':>8}{'s/epoch':>9}{'images/s':>10}{'GFLOPs/img':>11}{'GFLOP/s':>9}")
    for r in rows:
        r["images_per_s"] = r["images_per_epoch"] / r["epoch_s"]
        r["gflop_per_s"] = r["images_per_s"] * r["gflops"]
        print(f"{r['trainer']:<24}{r['batch']:>6}{r['workers']:>8}{r['epoch_s']:>9.1f}{r['images_per_s']:>10.2f}"
              f"{r['gflops']:>11.2f}{r['gflop_per_s']:>9.2f}")  # fmt: skip
    if len(rows) == 2:
        print(f"ours / peer: {rows[0]['gflop_per_s'] / rows[1]['gflop_per_s']:.2f}x per FLOP, "
              f"{rows[1]['epoch_s'] / rows[0]['epoch_s']:.2f}x per epoch")
    if args.json:
        figures = {"cpu": describe_cpu(), "img": args.img, "peer_img": args.peer_img, "epochs": args.epochs,
                   "set": list(args.set), "rows": rows}  # fmt: skip
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

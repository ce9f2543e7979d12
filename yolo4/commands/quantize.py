"""``yolo4 quantize``: an FP32 ONNX file -> INT8 (or FP16), gated on accuracy measured here.

The INT8 file is calibrated on the dataset's training images, then FP32 and INT8 are scored on
its val split and timed with the edge runtime on this machine; the report names the CPU. A file
that loses more than ``--max-map-drop`` mAP50 points (default 1) is deleted and the command
exits 1. No torch.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm


def run(args: argparse.Namespace) -> int:
    from yolo4.core.coco import ground_truth_from_set
    from yolo4.core.data_config import load_data_config
    from yolo4.core.datasets import load_split
    from yolo4.core.evaluate import class_mapping
    from yolo4.serving import gate
    from yolo4.serving.quantize import calibration_inputs, convert_fp16, quantize_int8
    from yolo4.serving.runtime import EdgeDetector

    source, out = Path(args.onnx), Path(args.out)
    fp32 = EdgeDetector(source)
    if fp32.precision != "fp32":
        raise ValueError(f"{source}: is {fp32.precision}; quantize the FP32 export")
    if out.resolve() == source.resolve():
        raise ValueError(f"--out {out} would overwrite the FP32 file")
    if args.fp16:
        convert_fp16(source, out)
        EdgeDetector(out).detect(np.full((64, 64, 3), 114, np.uint8))
        print(f"wrote {out}: float16 ({_size_line(source, out)}); for GPUs, CPUs run it through casts")
        return 0

    data = load_data_config(args.data)
    val = load_split(data, args.eval_split)
    class_mapping(tuple(fp32.config.class_names), ground_truth_from_set(val))  # before minutes of calibration
    calib_split = args.calib_split or ("train" if "train" in data.splits else args.eval_split)
    samples = list(load_split(data, calib_split).samples)
    random.Random(0).shuffle(samples)  # a spread of images, the same ones every run
    paths = [s.image_path for s in samples[: args.calib_images]]
    batches = tqdm(calibration_inputs(paths, fp32.config), total=len(paths), desc="calibrate", unit="img")
    region = quantize_int8(source, out, batches, method=args.method, scheme=args.scheme)
    print(f"wrote {out}: INT8 QDQ ({args.scheme}), {len(region.tail)} decode nodes and {len(region.head_convs)} head "
          f"convs kept in float, calibrated on {len(paths)} {calib_split} images")  # fmt: skip

    if args.eval_images:
        val.samples = val.samples[: args.eval_images]
    try:
        report = gate.measure(source, out, val, args.threads, args.runs)
    except BaseException:
        out.unlink(missing_ok=True)  # an unchecked file is not left behind
        raise
    sizes = {"fp32": source.stat().st_size / 1e6, "int8": out.stat().st_size / 1e6}
    print(gate.format_report(report, sizes))
    if not report.passes(args.max_map_drop):
        out.unlink()
        print(f"yolo4 quantize: INT8 loses {report.map50_drop:.2f} points of mAP50 on this CPU (limit "
              f"{args.max_map_drop}): {out} removed; keep the FP32 file, or try --scheme / --method", file=sys.stderr)  # fmt: skip
        return 1
    return 0


def _size_line(a: Path, b: Path) -> str:
    sa, sb = a.stat().st_size, b.stat().st_size
    return f"{sa / 1e6:.1f} MB -> {sb / 1e6:.1f} MB, {sb / sa:.2f}x"

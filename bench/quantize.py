"""FP32 vs INT8 (ONNX Runtime, CPU) latency by model and activation, measured in one run.

Which activation quantizes well depends on the CPU: ONNX Runtime has no INT8 kernel for Mish
or SiLU, so each of them runs in float between a DequantizeLinear and a QuantizeLinear, while
LeakyReLU has a quantized kernel. The ratio is the figure to read (this machine is shared).

    python bench/quantize.py [--size 416] [--runs 20] [--models yolov4-nano:leaky yolov4-nano:mish ...]

Weights are random (``tests/live_weights.py``: BatchNorm statistics of BCCD images, so the
activation ranges look like a trained model's); latency does not depend on their values.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from live_weights import make_live  # noqa: E402
from yolo4.core.cpu import describe_cpu, usable_cores  # noqa: E402
from yolo4.core.data_config import shared_root  # noqa: E402
from yolo4.core.presets import preset  # noqa: E402
from yolo4.detector.export import export_onnx  # noqa: E402
from yolo4.detector.model import build_model  # noqa: E402
from yolo4.serving.gate import compare_latency  # noqa: E402
from yolo4.serving.quantize import (  # noqa: E402
    DEFAULT_SCHEME,  # noqa: E402
    calibration_inputs,
    quantize_int8,
)

DEFAULT_MODELS = ["yolov4-nano:leaky", "yolov4-nano:relu", "yolov4-nano:mish", "yolov4-nano:silu", "yolov4-tiny:leaky"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--calib-images", type=int, default=32)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="name:activation")
    args = parser.parse_args()

    images = sorted((shared_root() / "datasets" / "bccd" / "JPEGImages").glob("*.jpg"))
    if len(images) < args.calib_images + 8:
        raise SystemExit(f"need BCCD images under {shared_root()}/datasets/bccd (set YOLO4_SHARED)")
    size = (args.size, args.size)
    cores = usable_cores()
    print(f"CPU: {describe_cpu()}; input {args.size}x{args.size}, batch 1, median of {args.runs} interleaved runs (ms), "
          f"INT8 scheme {DEFAULT_SCHEME}")  # fmt: skip
    counts = sorted({1, cores})
    print(f"{'model':<14}{'act':<7}" + "".join(f"{f'fp32@{t}':>9}{f'int8@{t}':>9}{'speedup':>9}" for t in counts)
          + f"{'int8 size':>11}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.models:
            name, act = spec.split(":")
            config = preset(name, class_names=("RBC", "WBC", "Platelets")).with_activation(act).replace(input_size=size)
            model = make_live(build_model(config), config, [cv2.imread(str(p)) for p in images[:8]], size)
            fp32, int8 = Path(tmp) / f"{spec}.onnx", Path(tmp) / f"{spec}-int8.onnx"
            export_onnx(model, config, fp32)
            quantize_int8(fp32, int8, calibration_inputs(images[8 : 8 + args.calib_images], config))
            cells = ""
            for threads in counts:
                ms = compare_latency({"FP32": fp32, "INT8": int8}, images[0], threads, args.runs)
                cells += f"{ms['FP32']:>9.1f}{ms['INT8']:>9.1f}{ms['FP32'] / ms['INT8']:>8.2f}x"
            print(f"{name:<14}{act:<7}{cells}{int8.stat().st_size / fp32.stat().st_size:>10.2f}x", flush=True)


if __name__ == "__main__":
    main()

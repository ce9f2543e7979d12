"""Per-image latency on this CPU, measured in one run (read the ratios: the machine is shared):
PyTorch eager, ONNX Runtime FP32 and INT8 for nano, tiny and yolov4, plus OpenCV DNN on the
same Darknet weights for yolov4 and yolov4-tiny.

    python bench/inference.py [--size 416] [--runs 10] [--models yolov4-nano yolov4-tiny yolov4]

Weights are random: Darknet-format files for the Darknet models (so OpenCV reads the very same
file), ``tests/live_weights.py`` BatchNorm statistics for the INT8 calibration ranges; latency
does not depend on the values.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from darknet_files import write_random_weights  # noqa: E402
from live_weights import make_live  # noqa: E402
from yolo4.core.data_config import shared_root  # noqa: E402
from yolo4.core.preprocess import preprocess_batch  # noqa: E402
from yolo4.core.presets import preset  # noqa: E402
from yolo4.detector.decode import DecodedModel  # noqa: E402
from yolo4.detector.export import export_onnx  # noqa: E402
from yolo4.detector.loading import load_darknet  # noqa: E402
from yolo4.detector.model import build_model  # noqa: E402
from yolo4.serving.quantize import calibration_inputs, quantize_int8  # noqa: E402


def median_ms(fn, runs: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def ort_runner(path: Path, threads: int, blob):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda: session.run(None, {name: blob})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--calib-images", type=int, default=16)
    parser.add_argument("--models", nargs="+", default=["yolov4-nano", "yolov4-tiny", "yolov4"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    shared = shared_root()
    bccd = sorted((shared / "datasets" / "bccd" / "JPEGImages").glob("*.jpg"))
    photo = cv2.imread(str(shared / "images" / "dog.jpg"))
    size = (args.size, args.size)

    print(f"input {args.size}x{args.size}, batch 1, {args.threads} threads, median of {args.runs} runs (ms)")
    header = f"{'model':<13}{'act':<7}{'torch':>8}{'ORT fp32':>10}{'ORT int8':>10}{'OpenCV':>8}{'fp32/int8':>11}{'torch/fp32':>12}{'OpenCV/fp32':>13}{'int8 size':>11}"
    print(header)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.models:
            darknet_cfg = shared / "darknet" / f"{name}.cfg"
            weights = tmp / f"{name}.weights"
            if name in ("yolov4", "yolov4-tiny"):  # the official architectures: OpenCV runs the same file
                write_random_weights(load_darknet(darknet_cfg, None).model, weights)
                loaded = load_darknet(darknet_cfg, weights)
                model, config = loaded.model, loaded.config.replace(input_size=size)
            else:
                config = preset(name, class_names=("RBC", "WBC", "Platelets"), input_size=size)
                model = make_live(build_model(config), config, [cv2.imread(str(p)) for p in bccd[:8]], size)
            blob, _ = preprocess_batch([photo], size, config.preprocess)
            decoded = DecodedModel(model, config).eval()
            with torch.inference_mode():
                eager = median_ms(lambda: decoded(torch.from_numpy(blob)), args.runs)

            fp32, int8 = tmp / f"{name}.onnx", tmp / f"{name}-int8.onnx"
            export_onnx(model, config, fp32, img_size=size)
            quantize_int8(fp32, int8, calibration_inputs(bccd[8 : 8 + args.calib_images], config))
            ms_fp32 = median_ms(ort_runner(fp32, args.threads, blob), args.runs)
            ms_int8 = median_ms(ort_runner(int8, args.threads, blob), args.runs)

            opencv = float("nan")
            if weights.exists():
                net = cv2.dnn.readNetFromDarknet(str(darknet_cfg), str(weights))
                outputs = net.getUnconnectedOutLayersNames()
                opencv_blob = cv2.dnn.blobFromImage(photo, 1 / 255.0, size, swapRB=True, crop=False)

                def run_opencv():
                    net.setInput(opencv_blob)
                    net.forward(outputs)

                opencv = median_ms(run_opencv, args.runs)
            ratio = int8.stat().st_size / fp32.stat().st_size
            print(f"{name:<13}{config.backbone_act:<7}{eager:>8.1f}{ms_fp32:>10.1f}{ms_int8:>10.1f}{opencv:>8.1f}"
                  f"{ms_fp32 / ms_int8:>10.2f}x{eager / ms_fp32:>11.2f}x{opencv / ms_fp32:>12.2f}x{ratio:>10.2f}x", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

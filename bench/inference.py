"""Per-image latency of our PyTorch model vs OpenCV's DNN module on the same random Darknet
weights, measured in one run (the ratio is the figure to read: this machine is shared).

    python bench/inference.py [--size 416] [--runs 10] [--models yolov4 yolov4-tiny]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from darknet_files import write_random_weights  # noqa: E402
from detector.darknet_cfg import DarknetCfgWarning  # noqa: E402
from detector.decode import DecodedModel  # noqa: E402
from detector.loading import load_darknet  # noqa: E402

SHARED = Path(os.environ.get("YOLO4_SHARED", ROOT.parent / "shared"))


def median_ms(fn, runs: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--models", nargs="+", default=["yolov4-tiny", "yolov4"])
    args = parser.parse_args()
    warnings.simplefilter("ignore", DarknetCfgWarning)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)

    image = cv2.imread(str(SHARED / "images" / "dog.jpg"))
    blob = cv2.dnn.blobFromImage(image, 1 / 255.0, (args.size, args.size), swapRB=True, crop=False)
    x = torch.from_numpy(blob)
    print(f"input {args.size}x{args.size}, batch 1, {args.threads} threads, median of {args.runs} runs")
    print(f"{'model':<14}{'pytorch ms':>12}{'opencv ms':>12}{'opencv/pytorch':>16}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            cfg = SHARED / "darknet" / f"{name}.cfg"
            weights = Path(tmp) / f"{name}.weights"
            write_random_weights(load_darknet(cfg, None).model, weights)
            loaded = load_darknet(cfg, weights)
            model = DecodedModel(loaded.model, loaded.config).eval()
            net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
            outputs = net.getUnconnectedOutLayersNames()

            def run_opencv():
                net.setInput(blob)
                net.forward(outputs)

            with torch.inference_mode():
                ours = median_ms(lambda: model(x), args.runs)
            theirs = median_ms(run_opencv, args.runs)
            print(f"{name:<14}{ours:>12.1f}{theirs:>12.1f}{theirs / ours:>15.2f}x")


if __name__ == "__main__":
    main()

"""Per-image latency on this CPU, measured in one run, with the CPU named: ONNX Runtime FP32 and
INT8 (and PyTorch eager, OpenCV DNN where they can run the same weights) at 1 thread, at every
core, and at every core while another process keeps one core busy; plus the runtime's automatic
choice (``yolo4.serving.choice``) and where it lands.

    python bench/inference.py [--models yolov4-tiny-coco yolov4-tiny-bccd yolov4] [--runs 20]
    python bench/inference.py --models runs/model.onnx     # an exported file (and its runs/model-int8.onnx)

The shipped models run their shipped files on their sample image; ``yolov4`` (no official
weights here) gets random Darknet-format weights, exported and quantized on the fly (latency
does not depend on the values). Read the ratios: absolute times move with the machine's load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests")]

from darknet_files import write_random_weights  # noqa: E402
from live_weights import make_live  # noqa: E402
from yolo4.core.cpu import describe_cpu, usable_cores  # noqa: E402
from yolo4.core.data_config import shared_root  # noqa: E402
from yolo4.core.preprocess import preprocess_batch  # noqa: E402
from yolo4.serving import bundled  # noqa: E402
from yolo4.serving.runtime import EdgeDetector  # noqa: E402


def median_ms(runners: dict, runs: int) -> dict[str, float]:
    """Interleaved runs, so that load from other processes hits every runner alike."""
    for fn in runners.values():
        fn(), fn()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(runs):
        for name, fn in runners.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(t) for name, t in times.items()}


def runners_for(files: dict[str, Path], torch_model, darknet, image, threads: int) -> dict:
    out = {}
    for precision, path in files.items():
        detector = EdgeDetector(path, num_threads=threads)
        resized = [detector.prepare(image)[0]]
        out[f"ORT {precision}"] = lambda d=detector, r=resized: d.infer(r)
    if torch_model is not None:
        model, config = torch_model
        blob, _ = preprocess_batch([image], config.input_size, config.preprocess)
        x = torch.from_numpy(blob)

        def eager(m=model, x=x, t=threads):
            torch.set_num_threads(t)
            with torch.inference_mode():
                m(x)

        out["PyTorch"] = eager
    if darknet is not None:
        cfg, weights, size = darknet
        net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
        names = net.getUnconnectedOutLayersNames()
        blob = cv2.dnn.blobFromImage(image, 1 / 255.0, (size, size), swapRB=True, crop=False)

        def opencv(net=net, blob=blob, t=threads):
            cv2.setNumThreads(t)
            net.setInput(blob)
            net.forward(names)

        out["OpenCV DNN"] = opencv
    return out


def prepare(name: str, tmp: Path, official: Path | None):
    """(files, torch model, darknet files, image) of a benchmark model."""
    from yolo4.detector.decode import DecodedModel
    from yolo4.detector.loading import load_darknet

    shared = shared_root()
    if name.endswith(".onnx"):  # an exported FP32 file, with its INT8 sibling if there is one
        fp32 = Path(name)
        int8 = fp32.with_name(fp32.stem + "-int8.onnx")
        files = {"fp32": fp32, **({"int8": int8} if int8.is_file() else {})}
        return files, None, None, cv2.imread(str(bundled.any_sample_image()))
    if name in bundled.shipped_models():
        files = bundled.model_files(name)
        image = cv2.imread(str(bundled.sample_image(name)))
        torch_model = darknet = None
        if name == "yolov4-tiny-coco" and official:
            loaded = load_darknet(shared / "darknet" / "yolov4-tiny.cfg", official)
            torch_model = (DecodedModel(loaded.model, loaded.config).eval(), loaded.config)
            darknet = (shared / "darknet" / "yolov4-tiny.cfg", official, 416)
        return files, torch_model, darknet, image
    from yolo4.detector.export import export_onnx
    from yolo4.serving.quantize import calibration_inputs, quantize_int8

    cfg = shared / "darknet" / f"{name}.cfg"
    weights = tmp / f"{name}.weights"
    write_random_weights(load_darknet(cfg, None).model, weights)
    loaded = load_darknet(cfg, weights)
    config = loaded.config.replace(input_size=(416, 416))
    bccd = sorted((shared / "datasets" / "bccd" / "JPEGImages").glob("*.jpg"))
    model = make_live(loaded.model, config, [cv2.imread(str(p)) for p in bccd[:8]], config.input_size)
    files = {"fp32": tmp / f"{name}.onnx", "int8": tmp / f"{name}-int8.onnx"}
    export_onnx(model, config, files["fp32"], dynamic=True)
    quantize_int8(files["fp32"], files["int8"], calibration_inputs(bccd[8:24], config))
    return files, (DecodedModel(model, config).eval(), config), None, cv2.imread(str(shared / "images" / "dog.jpg"))


def busy_core():
    """A process spinning on the last core this one may use (another tenant of the machine)."""
    core = sorted(os.sched_getaffinity(0))[-1]
    return subprocess.Popen(["taskset", "-c", str(core), sys.executable, "-c", "while True: pass"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["yolov4-tiny-coco", "yolov4-tiny-bccd", "yolov4"])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    cores = usable_cores()
    print(f"CPU: {describe_cpu()}; ONNX Runtime sessions without spin-waiting; batch 1, each model at its own input size, median of "
          f"{args.runs} interleaved runs (ms); 'busy': another process spinning on one core")
    header = f"{'model':<18}{'runtime':<13}{'1 thread':>10}{f'{cores} threads':>11}{'1, busy':>9}{f'{cores}, busy':>9}"
    print(header)
    from yolo4.serving.choice import choose

    from yolo4.commands.weights import cached_weights

    official = cached_weights("yolov4-tiny")  # PyTorch and OpenCV rows for the COCO model
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["YOLO4_CACHE"] = str(tmp / "cache")  # the automatic choice measured now, not read back
        for name in args.models:
            files, torch_model, darknet, image = prepare(name, tmp, official)
            label = Path(name).stem if name.endswith(".onnx") else name
            table: dict[str, dict[str, float]] = {}
            for busy in (False, True):
                spinner = busy_core() if busy else None
                try:
                    time.sleep(0.3)
                    for threads in sorted({1, cores}):
                        column = f"{threads}{' busy' if busy else ''}"
                        for runtime, ms in median_ms(runners_for(files, torch_model, darknet, image, threads), args.runs).items():
                            table.setdefault(runtime, {})[column] = ms
                finally:
                    if spinner:
                        spinner.kill()
            for runtime, row in table.items():
                cells = [row.get(k) for k in ("1", str(cores), "1 busy", f"{cores} busy")]
                print(f"{label:<18}{runtime:<13}" + "".join(f"{'–' if v is None else f'{v:.1f}':>{w}}"
                                                           for v, w in zip(cells, (10, 11, 9, 9))), flush=True)  # fmt: skip
            choice = choose(name if name in bundled.shipped_models() else None, files)
            picked = table[f"ORT {choice.precision}"]
            idle, busy = picked[str(choice.threads)], picked[f"{choice.threads} busy"]
            best_ms, best, best_threads = min(
                (v[str(t)], k, t) for k, v in table.items() if k.startswith("ORT") for t in sorted({1, cores})
            )
            print(f"{label:<18}auto: {choice.precision} on {choice.threads} thread(s): {idle:.1f} ms, {busy:.1f} ms with a "
                  f"core busy (best manual: {best} on {best_threads} thread(s), {best_ms:.1f} ms)"
                  + (f"; INT8 kept {choice.int8_agreement:.0%} of FP32's confident detections"
                     + (" (random weights: no real detections to keep)" if torch_model and name not in bundled.shipped_models() else "")
                     if choice.int8_agreement is not None else ""), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

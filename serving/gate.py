"""The INT8 gate: FP32 and INT8 files of one model scored and timed on *this* machine.

INT8's accuracy depends on the CPU's integer kernels (``yolo4.serving.quantize``), so the
figures that decide whether an INT8 file may ship or run are measured where it runs, never
read from a card written elsewhere. Torch-free.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from yolo4.core.coco import CocoScores
from yolo4.core.config import COCO_EVAL
from yolo4.core.cpu import describe_cpu
from yolo4.core.datasets import DetectionSet
from yolo4.core.evaluate import evaluate
from yolo4.core.image_io import read_image
from yolo4.serving.runtime import EdgeDetector

MAX_MAP50_DROP = 1.0  # points of mAP50 INT8 may lose against FP32


@dataclass(frozen=True)
class GateReport:
    scores: dict[str, CocoScores]  # "fp32", "int8"
    latency_ms: dict[str, float]  # median, batch 1, model only
    threads: int | None
    cpu: str
    images: int

    @property
    def map50_drop(self) -> float:
        """Points of mAP50 INT8 loses (negative: it gains)."""
        return 100 * (self.scores["fp32"].metrics["mAP50"] - self.scores["int8"].metrics["mAP50"])

    def passes(self, max_drop: float = MAX_MAP50_DROP) -> bool:
        return self.map50_drop <= max_drop

    @property
    def speedup(self) -> float:
        """FP32 latency / INT8 latency: above 1, INT8 is faster."""
        return self.latency_ms["fp32"] / self.latency_ms["int8"]


def score_file(path: Path, dataset: DetectionSet, threads: int | None = None, batch_size: int = 8) -> CocoScores:
    """COCO metrics of an ONNX file on ``dataset`` with the edge runtime at the COCO settings."""
    detector = EdgeDetector(path, num_threads=threads, thresholds=COCO_EVAL)
    return evaluate(detector.detect_batch, detector.config.class_names, dataset, batch_size)


def compare_latency(files: dict[str, Path], image_path: Path, threads: int | None, runs: int) -> dict[str, float]:
    """Median latency (ms, batch 1, model only) of each file, runs interleaved so that load from
    other processes hits every file alike."""
    detectors = {name: EdgeDetector(path, num_threads=threads) for name, path in files.items()}
    image = read_image(image_path)
    inputs = {name: [d.prepare(image)[0]] for name, d in detectors.items()}
    times: dict[str, list[float]] = {name: [] for name in detectors}
    for i in range(runs + 3):
        for name, detector in detectors.items():
            start = time.perf_counter()
            detector.infer(inputs[name])
            if i >= 3:  # warm-up runs are not timed
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(t) for name, t in times.items()}


def measure(fp32: Path, int8: Path, dataset: DetectionSet, threads: int | None = None, runs: int = 20) -> GateReport:
    files = {"fp32": Path(fp32), "int8": Path(int8)}
    scores = {name: score_file(path, dataset, threads) for name, path in files.items()}
    latency = compare_latency(files, dataset.samples[0].image_path, threads, runs)
    return GateReport(scores, latency, threads, describe_cpu(), len(dataset))


def format_report(report: GateReport, sizes: dict[str, float] | None = None) -> str:
    f, q = report.scores["fp32"].metrics, report.scores["int8"].metrics
    rows = [f"{'':<22}{'FP32':>10}{'INT8':>10}"]
    for key in ("mAP50", "mAP50-95"):
        rows.append(f"{key:<22}{f[key]:>10.4f}{q[key]:>10.4f}   INT8 {100 * (q[key] - f[key]):+.2f} points")
    speed = report.speedup
    verdict = f"INT8 {speed:.2f}x faster" if speed >= 1 else f"INT8 {1 / speed:.2f}x slower than FP32"
    rows.append(f"{'latency ms (median)':<22}{report.latency_ms['fp32']:>10.1f}{report.latency_ms['int8']:>10.1f}   {verdict}")
    if sizes:
        rows.append(f"{'file MB':<22}{sizes['fp32']:>10.2f}{sizes['int8']:>10.2f}   INT8 {sizes['int8'] / sizes['fp32']:.2f}x the size")
    threads = f"{report.threads} threads" if report.threads else "ONNX Runtime's default threads"
    rows.append(f"measured here: {report.images} images, COCO mAP (conf {COCO_EVAL.conf}, NMS IoU {COCO_EVAL.iou}); "
                f"latency batch 1, model only, {threads}; CPU {report.cpu}")  # fmt: skip
    return "\n".join(rows)

"""Which file of a shipped model runs, on how many threads: chosen by measurement on this machine.

A shipped model comes as FP32 and INT8 files. Which is faster, and whether INT8 keeps FP32's
answers, depend on the CPU (ONNX Runtime's integer kernels differ between AVX2, AVX-512 VNNI,
AMX and ARM), so when the user does not force them ``open_model`` measures, on the model's
sample image:

1. agreement: every confident FP32 detection (score >= 0.5) must have an INT8 detection of the
   same class at IoU >= 0.5 (at least 90 % of them), else INT8 is out;
2. speed: each remaining file at 1 thread and at every usable core, runs interleaved; the
   fastest wins, fewer threads on a tie within 10 %.

Sessions never spin-wait (``session.intra_op.allow_spinning = 0``, ``runtime.open_session``):
with spinning, two threads took 1.7x one thread's time on the nano when another process held
one of the two cores; without it they never fell behind one thread (README, "Edge runtime").
The choice is cached per machine (CPU model and ISA flags, core count, ONNX Runtime version
and the files' hashes) in ``$YOLO4_CACHE/runtime-choice.json``: measured here, never read from
another machine. A measurement taken while other processes kept more than a quarter of a core
busy (``core.cpu.OtherLoad``: a BentoML worker starting beside the model worker, a build) is
taken once more half a second later; if both were disturbed the less disturbed one is used for
this run but not cached. A start-up burst once made 2 threads look no faster
than 1 for the COCO tiny FP32 file (66.6 vs 65.3 ms; idle, 2 threads are about 1.8x faster), and
that cached 1-thread choice cost the service a third of its throughput under load. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import onnxruntime as ort
from yolo4.core.cpu import OtherLoad, cpu_info, describe_cpu, usable_cores
from yolo4.core.image_io import read_image
from yolo4.core.nms import box_iou_one_to_many
from yolo4.serving import bundled
from yolo4.serving.runtime import EdgeDetector

log = logging.getLogger(__name__)
AGREEMENT = 0.9
TIE = 1.10  # fewer threads unless more are this much faster
ROUNDS = 4
DISTURBED = 0.25  # cores used by other processes while measuring, above which a timing is not trusted
ATTEMPTS = 2


@dataclass(frozen=True)
class Choice:
    precision: str
    threads: int
    reason: str
    timings_ms: dict[str, float]  # "int8@2" -> median latency of the sample image
    int8_agreement: float | None  # fraction of FP32's confident detections INT8 kept
    cpu: str
    cached: bool = False
    other_load: float | None = None  # cores other processes kept busy while it was measured


def cache_dir() -> Path:
    return Path(os.environ.get("YOLO4_CACHE") or Path.home() / ".cache" / "yolo4")


def open_model(
    onnx: str | Path | None = None,
    name: str | None = None,
    precision: str = "auto",
    threads: int | None = None,
    **kwargs,
) -> tuple[EdgeDetector, str | None]:
    """The detector for a command or the service, and a note for the user (None for a file
    given by path). ``onnx`` wins; else the shipped model ``name`` (default: the default one),
    at ``precision`` (``auto``: measured) and ``threads`` (None: measured)."""
    if onnx:
        if threads is None:  # one file: only the thread count to choose
            choice = choose(None, {"file": Path(onnx)}, "file", None)
            detector = EdgeDetector(onnx, num_threads=choice.threads, **kwargs)
            detector.choice = choice
            return detector, None
        return EdgeDetector(onnx, num_threads=threads, **kwargs), None
    name = name or bundled.default_model_name()
    if name is None:
        raise ValueError("no model given and this installation ships none: pass --onnx FILE or --weights FILE")
    files = bundled.model_files(name)
    if precision not in ("auto", *files):
        raise ValueError(f"{name} ships {', '.join(files)}, not {precision}")
    choice = choose(name, files, precision, threads)
    detector = EdgeDetector(files[choice.precision], num_threads=choice.threads, **kwargs)
    detector.bundled, detector.choice = True, choice
    note = f"model: shipped {name}, {choice.precision} on {choice.threads} thread(s) ({choice.reason})"
    log.info(note)
    return detector, note


def choose(name: str | None, files: dict[str, Path], precision: str = "auto", threads: int | None = None) -> Choice:
    """Measure (or read this machine's cached measurement of) the fastest faithful setting of a
    shipped model ``name`` (``files``: precision -> file), or of one file (``name`` None)."""
    candidates = [precision] if precision != "auto" else list(files)
    counts = [threads] if threads else sorted({1, usable_cores()})
    if len(candidates) == 1 and len(counts) == 1:
        return Choice(candidates[0], counts[0], "as asked", {}, None, describe_cpu())
    key = _cache_key(files, candidates, counts)
    cached = _read_cache().get(key)
    if cached:
        return Choice(**{**cached, "cached": True})
    attempts = []
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(0.5)
        attempts.append(measure(name, {p: files[p] for p in candidates}, counts))
        if not _disturbed(attempts[-1]):
            _write_cache(key, attempts[-1])
            return attempts[-1]
    choice = min(attempts, key=lambda c: c.other_load)
    note = (f"; other processes kept {choice.other_load:.1f} cores busy during {ATTEMPTS} measurements: "
            "used for this run, not cached (measured again at the next start)")
    log.warning("runtime choice measured on a busy machine%s", note)
    return replace(choice, reason=choice.reason + note)


def _disturbed(choice: Choice) -> bool:
    return choice.other_load is not None and choice.other_load > DISTURBED


def measure(name: str | None, files: dict[str, Path], counts: list[int]) -> Choice:
    started = time.perf_counter()
    image = read_image(bundled.sample_image(name) if name else bundled.any_sample_image())
    detectors = {(p, t): EdgeDetector(path, num_threads=t) for p, path in files.items() for t in counts}
    agreement = None
    usable = list(files)
    if "fp32" in files and "int8" in files:
        one = min(counts)
        agreement = int8_agreement(detectors[("fp32", one)].detect(image), detectors[("int8", one)].detect(image))
        if agreement < AGREEMENT:
            usable.remove("int8")
    inputs = {}
    for (p, t), detector in detectors.items():
        resized, _ = detector.prepare(image)
        inputs[(p, t)] = [resized]
        detector.infer(inputs[(p, t)])  # warm-up: first runs allocate
    times: dict[tuple[str, int], list[float]] = {k: [] for k in detectors}
    with OtherLoad() as load:
        for _ in range(ROUNDS):  # interleaved, so load from other processes hits every candidate alike
            for k, detector in detectors.items():
                start = time.perf_counter()
                detector.infer(inputs[k])
                times[k].append((time.perf_counter() - start) * 1000)
    medians = {k: statistics.median(v) for k, v in times.items()}
    best = min((k for k in medians if k[0] in usable), key=lambda k: medians[k])
    fewer = [k for k in medians if k[0] == best[0] and k[1] < best[1] and medians[k] <= medians[best] * TIE]
    if fewer:
        best = min(fewer, key=lambda k: k[1])
    timings = {f"{p}@{t}": round(ms, 2) for (p, t), ms in medians.items()}
    parts = [f"{p}@{t} {ms:.1f} ms" for (p, t), ms in sorted(medians.items(), key=lambda kv: kv[1])]
    reason = f"fastest here: {', '.join(parts)}"
    if agreement is not None:
        reason += f"; INT8 kept {agreement:.0%} of FP32's confident detections" + ("" if "int8" in usable else ", so FP32")
    reason += f"; measured in {time.perf_counter() - started:.1f} s on {describe_cpu()}"
    return Choice(best[0], best[1], reason, timings, agreement, describe_cpu(), other_load=load.cores)


def int8_agreement(fp32, int8) -> float:
    """The fraction of FP32's confident detections (score >= 0.5) that INT8 finds too: same
    class, IoU >= 0.5. 1.0 when FP32 finds nothing confident."""
    confident = [(b, c) for b, s, c in zip(fp32.boxes, fp32.scores, fp32.class_ids) if s >= 0.5]
    if not confident:
        return 1.0
    kept = 0
    for box, cls in confident:
        same = int8.boxes[int8.class_ids == cls]
        kept += bool(len(same)) and box_iou_one_to_many(box, same).max() >= 0.5
    return kept / len(confident)


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _cache_key(files: dict[str, Path], candidates: list[str], counts: list[int]) -> str:
    info = cpu_info()
    # v2: entries measured before measurements were checked for other processes' load are re-measured
    parts = ["v2", info["model"], ",".join(info["isa"]), f"cores={info['cores']}", f"ort={ort.__version__}",
             f"threads={','.join(map(str, counts))}"] + [f"{p}={_file_hash(files[p])}" for p in sorted(candidates)]  # fmt: skip
    return "|".join(parts)


def _read_cache() -> dict:
    path = cache_dir() / "runtime-choice.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, choice: Choice) -> None:
    path = cache_dir() / "runtime-choice.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = {**_read_cache(), key: {k: v for k, v in asdict(choice).items() if k != "cached"}}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries, indent=1))
        os.replace(tmp, path)
    except OSError as e:  # a read-only home: measure again next time
        log.warning("cannot cache the runtime choice in %s (%s)", path, e)

"""Load test of the HTTP service against the raw runtime, measured in the same run.

    python bench/serve_load.py [--onnx model.onnx] [--clients 8] [--seconds 20]
    python bench/serve_load.py --url http://127.0.0.1:3000 --onnx model.onnx   # a running server

N client threads POST ``/detect`` back to back for T seconds (keep-alive connections, the
sample photos in turn, bodies encoded once so that the clients cost little CPU), then the same
model runs in this process through ``EdgeDetector.detect_batch`` on already-decoded images in
batches of N (the largest batch N clients can form), with the server's thread count. Without
``--url`` a server is started on a free loopback port and stopped at the end; without
``--onnx`` a yolov4-nano with live random weights is exported first (needs torch). Loopback
only, at most 64 clients and 600 seconds.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from yolo4.serving.runtime import EdgeDetector  # noqa: E402
from yolo4.serving.settings import ServeSettings  # noqa: E402

SHARED = Path(os.environ.get("YOLO4_SHARED", ROOT.parent / "shared"))
MAX_CLIENTS, MAX_SECONDS = 64, 600


def multipart_body(data: bytes, filename: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
        f"Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def client_loop(host: str, port: int, bodies: list[tuple[bytes, str]], start: int, deadline: float, out: dict) -> None:
    """POST /detect until ``deadline``; append latencies (s) and count errors into ``out``."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    i = start
    while time.perf_counter() < deadline:
        body, content_type = bodies[i % len(bodies)]
        i += 1
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/detect", body, {"Content-Type": content_type})
            response = conn.getresponse()
            payload = response.read()
            error = (
                None
                if response.status == 200 and b'"detections"' in payload
                else f"HTTP {response.status}: {payload[:200]!r}"
            )
        except (OSError, http.client.HTTPException) as e:
            error = f"{type(e).__name__}: {e}"
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=60)
        elapsed = time.perf_counter() - t0
        with out["lock"]:
            if error is None:
                out["latencies"].append(elapsed)
            else:
                out["errors"][error] = out["errors"].get(error, 0) + 1
    conn.close()


def run_load(host: str, port: int, bodies: list[tuple[bytes, str]], clients: int, seconds: float) -> dict:
    out = {"lock": threading.Lock(), "latencies": [], "errors": {}}
    deadline = time.perf_counter() + seconds
    threads = [
        threading.Thread(target=client_loop, args=(host, port, bodies, k, deadline, out), daemon=True)
        for k in range(clients)
    ]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 120)
    wall = time.perf_counter() - start
    lat = sorted(out["latencies"])

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3 if lat else float("nan")

    return {
        "requests": len(lat), "errors": sum(out["errors"].values()), "error_kinds": out["errors"], "rps": len(lat) / wall,
        "p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99),
    }  # fmt: skip


def raw_throughput(model: Path, images: list[np.ndarray], batch: int, threads: int, seconds: float) -> float:
    """Images/s of ``detect_batch`` on decoded images, batches of ``batch``, no HTTP."""
    detector = EdgeDetector(model, num_threads=threads)
    batches = [[images[(k + j) % len(images)] for j in range(batch)] for k in range(len(images))]
    detector.detect_batch(batches[0])  # warm-up
    done, k, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += len(detector.detect_batch(batches[k % len(batches)]))
        k += 1
    return done / (time.perf_counter() - start)


def batch_counters(host: str, port: int) -> tuple[float, float]:
    """(images run, runtime calls) so far by the model service's batchable ``detect``
    (BentoML's adaptive batch size histogram in /metrics)."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    label = r'\{[^}]*method_name="detect"[^}]*service_name="yolo4_model"[^}]*\}'
    images = re.search(r"adaptive_batch_size_sum" + label + r" (\S+)", text)
    calls = re.search(r"adaptive_batch_size_count" + label + r" (\S+)", text)
    return (float(images.group(1)), float(calls.group(1))) if images and calls else (0.0, 0.0)


def export_demo_model(folder: Path, images: list[np.ndarray], size: int) -> Path:
    from live_weights import live_model, square_crop
    from yolo4.detector.export import export_onnx

    model, config = live_model("yolov4-nano", [square_crop(im) for im in images], size, ("RBC", "WBC", "Platelets"))
    return export_onnx(model, config, folder / f"yolov4-nano-{size}.onnx", size, dynamic=True)


def start_server(model: Path, port: int, log: Path, threads: int | None) -> subprocess.Popen:
    env = {**os.environ, "YOLO4_MODEL": str(model), "BENTOML_DO_NOT_TRACK": "True"}
    env["BENTOML_HOME"] = str(log.parent / "bentoml")
    if threads:
        env["YOLO4_THREADS"] = str(threads)
    command = [sys.executable, "-m", "bentoml", "serve", "yolo4.serving.service:Yolo4Http",
               "--host", "127.0.0.1", "--port", str(port), "--working-dir", tempfile.mkdtemp()]  # fmt: skip
    with open(log, "wb") as f:
        return subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def wait_ready(host: str, port: int, proc: subprocess.Popen | None, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode}")
        try:
            conn = http.client.HTTPConnection(host, port, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"no answer from http://{host}:{port}/readyz after {timeout:.0f} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", help="model to serve (default: export a live-weights yolov4-nano)")
    parser.add_argument("--img", type=int, default=416, help="input size of the exported demo model (nano's own)")
    parser.add_argument("--url", help="a running server on this machine (default: start one)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=3, help="seconds of load before measuring")
    parser.add_argument("--threads", type=int, help="ONNX Runtime threads (default: the service's own choice)")
    args = parser.parse_args()
    if not 1 <= args.clients <= MAX_CLIENTS or not 0 < args.seconds <= MAX_SECONDS:
        raise SystemExit(f"--clients must be 1..{MAX_CLIENTS} and --seconds 0..{MAX_SECONDS}")

    paths = sorted((SHARED / "images").glob("*.jpg"))
    if not paths:
        raise SystemExit(f"no sample images in {SHARED / 'images'} (set YOLO4_SHARED)")
    encoded = [p.read_bytes() for p in paths]
    images = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR) for b in encoded]
    bodies = [multipart_body(b, p.name) for b, p in zip(encoded, paths)]
    threads = ServeSettings(threads=args.threads).runtime_threads()

    with tempfile.TemporaryDirectory(prefix="yolo4-serve-load-") as tmp:
        model = Path(args.onnx) if args.onnx else export_demo_model(Path(tmp), images, args.img)
        proc = None
        if args.url:
            parsed = urlparse(args.url)
            host, port = parsed.hostname or "", parsed.port or 80
            if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
                raise SystemExit(f"{args.url}: only a server on this machine (loopback) may be load-tested")
        else:
            host, port = "127.0.0.1", free_port()
            proc = start_server(model, port, Path(tmp) / "server.log", args.threads)
        try:
            wait_ready(host, port, proc)
            run_load(host, port, bodies, args.clients, args.warmup)  # adaptive batching learns its costs
            before = batch_counters(host, port)
            http_result = run_load(host, port, bodies, args.clients, args.seconds)
            after = batch_counters(host, port)
        finally:
            if proc is not None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=60)
                log = (Path(tmp) / "server.log").read_text(errors="replace").splitlines()
                problems = [line for line in log if "[ERROR]" in line or re.search(r"status=5\d\d", line)]
                print("\n".join(problems[:20]), file=sys.stderr)
        raw = raw_throughput(model, images, args.clients, threads, min(args.seconds, 10))
        raw_1 = raw_throughput(model, images, 1, threads, min(args.seconds, 5))

    images_run, calls = after[0] - before[0], after[1] - before[1]
    r = http_result
    print(json.dumps({"model": model.name, "images": [p.name for p in paths], "ort_threads": threads}))
    print(f"{args.clients} clients x {args.seconds:.0f} s on POST /detect, {r['requests']} requests; "
          f"mean runtime batch in the server {images_run / calls if calls else float('nan'):.2f}")  # fmt: skip
    print(f"{'':<28}{'img/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}")
    print(f"{'HTTP /detect':<28}{r['rps']:>8.1f}{r['p50']:>9.1f}{r['p95']:>9.1f}{r['p99']:>9.1f}{r['errors']:>8d}")
    print(f"{f'raw detect_batch, batch {args.clients}':<28}{raw:>8.1f}")
    print(f"{'raw detect_batch, batch 1':<28}{raw_1:>8.1f}")
    print(f"HTTP / raw (batch {args.clients}) = {r['rps'] / raw:.0%}")
    for error, count in r["error_kinds"].items():
        print(f"error x{count}: {error}")


if __name__ == "__main__":
    main()

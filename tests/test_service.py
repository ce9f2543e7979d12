"""The HTTP service end to end: one real ``bentoml serve`` per module on a free loopback port,
a small exported model (yolov4-nano at 256, live random weights), the stdlib HTTP client."""

from __future__ import annotations

import json
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest
from http_server import (
    MAX_IMAGES,
    MAX_UPLOAD_MB,
    ROOT,
    detect,
    free_port,
    multipart,
    post_images,
    request,
    serve_command,
    server_env,
    start_server,
    stop_server,
    yolo4_serve_command,
)  # fmt: skip
from live_weights import match_detections
from yolo4.core.config import DETECT, Thresholds
from yolo4.serving.runtime import EdgeDetector

BCCD = ("RBC", "WBC", "Platelets")
PHOTOS = ("dog", "eagle", "giraffe", "horses", "person")


def assert_same_detections(got: dict, want: dict) -> None:
    """Same image size and detections; boxes/scores as rounded in the JSON (ORT may differ in
    the last bit between batch sizes)."""
    assert got["image_size"] == want["image_size"]
    assert len(got["detections"]) == len(want["detections"])

    def arrays(dets):
        return (np.array([d["box"] for d in dets]).reshape(-1, 4), np.array([d["score"] for d in dets]),
                np.array([d["class_id"] for d in dets]))  # fmt: skip

    assert match_detections(arrays(got["detections"]), arrays(want["detections"]), 0.02, 2e-5) == len(want["detections"])
    assert [d["label"] for d in got["detections"]] == [BCCD[d["class_id"]] for d in got["detections"]]


def png_claiming(width: int, height: int) -> bytes:
    """A valid ~100-byte PNG whose header claims ``width`` x ``height`` (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def photo_bytes(images_dir) -> dict[str, bytes]:
    return {name: (images_dir / f"{name}.jpg").read_bytes() for name in PHOTOS}


@pytest.fixture(scope="module")
def model_file(nano_onnx) -> Path:
    return nano_onnx


@pytest.fixture(scope="module")
def edge(model_file) -> EdgeDetector:
    return EdgeDetector(model_file)


@pytest.fixture(scope="module")
def server(model_file, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server")
    srv = start_server(yolo4_serve_command(model_file, free_port()), tmp, server_env(tmp, None))
    yield srv
    stop_server(srv)  # test_clean_shutdown did not run (deselected) or failed


def test_one_network_run_serves_every_threshold_setting(edge, photo_bytes):
    """What the model service does with an adaptive batch: one ``infer`` for every image, then
    each image's own thresholds; equal to a separate runtime per setting."""
    images = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR) for b in photo_bytes.values()]
    settings = [Thresholds(0.25, 0.45, 300), Thresholds(0.5, 0.3, 5), Thresholds(0.25, 0.45, 300),
                Thresholds(0.1, 0.7, 50), Thresholds(0.5, 0.3, 5)]  # fmt: skip
    prepared = [edge.prepare(image) for image in images]
    raws = edge.infer([resized for resized, _ in prepared])
    for image, setting, raw, (_, transform) in zip(images, settings, raws, prepared):
        want = EdgeDetector(edge.model_path, thresholds=setting).detect(image)
        assert_same_detections(edge.finish(raw, transform, setting).to_dict(), want.to_dict())
    assert edge.thresholds == DETECT  # untouched


def test_detect_equals_the_edge_runtime(server, edge, model_file, photo_bytes, images_dir):
    for name in ("dog", "giraffe"):  # letterboxed with padding; square
        want = edge.detect(cv2.imread(str(images_dir / f"{name}.jpg"))).to_dict()
        got = detect(server, f"{name}.jpg", photo_bytes[name])
        assert len(want["detections"]) >= 3  # live weights: the comparison is not vacuous
        assert_same_detections(got, want)
        assert set(got["timing"]) == {"decode_ms", "inference_ms", "total_ms"}
    strict = EdgeDetector(model_file, conf_threshold=0.5, iou_threshold=0.3, max_detections=4)
    want = strict.detect(cv2.imread(str(images_dir / "dog.jpg"))).to_dict()
    got = detect(server, "dog.jpg", photo_bytes["dog"], conf=0.5, iou=0.3, max_det=4)
    assert len(got["detections"]) == 4
    assert_same_detections(got, want)


def test_detect_batch_equals_single_calls(server, photo_bytes):
    names = ["dog", "eagle", "giraffe", "person"]
    status, _, body = post_images(server, "/detect_batch", [(f"{n}.jpg", photo_bytes[n]) for n in names], field="images")
    assert status == 200, body[:500]
    results = json.loads(body)["results"]
    assert len(results) == len(names)
    for name, got in zip(names, results):
        assert_same_detections(got, detect(server, f"{name}.jpg", photo_bytes[name]))


def test_concurrent_requests_are_batched_with_their_own_thresholds(server, model_file, photo_bytes):
    settings = [{"conf": 0.25, "max_det": 300}, {"conf": 0.6, "max_det": 3}]
    jobs = [(name, settings[k % 2]) for k, name in enumerate(list(photo_bytes) * 3)]
    images = {n: cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR) for n, b in photo_bytes.items()}
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda job: detect(server, f"{job[0]}.jpg", photo_bytes[job[0]], **job[1]), jobs))
    for (name, s), got in zip(jobs, results):
        runtime = EdgeDetector(model_file, conf_threshold=s["conf"], max_detections=s["max_det"])
        assert_same_detections(got, runtime.detect(images[name]).to_dict())
    metrics = request(server, "GET", "/metrics")[2].decode()
    label = r'\{[^}]*method_name="detect"[^}]*service_name="yolo4_model"[^}]*\}'
    batches = float(re.search(r"adaptive_batch_size_count" + label + r" (\S+)", metrics).group(1))
    images_run = float(re.search(r"adaptive_batch_size_sum" + label + r" (\S+)", metrics).group(1))
    assert images_run > batches  # some runtime calls held several requests' images


def test_sustained_concurrent_load_has_no_errors(server, photo_bytes):
    # Past 100 calls BentoML's client renews its session to the model service, dropping the
    # calls in flight: the front service must send them again, not answer 500.
    def burst(k: int) -> list[int]:
        return [post_images(server, "/detect", [("person.jpg", photo_bytes["person"])])[0] for _ in range(16)]

    with ThreadPoolExecutor(8) as pool:
        statuses = [s for statuses in pool.map(burst, range(8)) for s in statuses]
    assert statuses == [200] * 128


def test_render_returns_the_annotated_jpeg(server, photo_bytes):
    original = cv2.imdecode(np.frombuffer(photo_bytes["dog"], np.uint8), cv2.IMREAD_COLOR)
    rendered = {}
    for conf in ("0.25", "1.0"):  # 1.0: no detection, nothing drawn
        status, content_type, body = post_images(server, "/render", [("dog.jpg", photo_bytes["dog"])], conf=conf)
        assert status == 200 and content_type == "image/jpeg", body[:300]
        rendered[conf] = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        assert rendered[conf] is not None and rendered[conf].shape == original.shape
    plain = np.abs(rendered["1.0"].astype(int) - original).mean()
    boxed = np.abs(rendered["0.25"].astype(int) - original).mean()
    assert plain < 3 and boxed > plain + 1  # a re-encoded copy vs. one with boxes drawn


def test_info_health_and_metrics(server, edge):
    status, content_type, body = request(server, "GET", "/info")
    assert status == 200 and content_type.startswith("application/json")
    info = json.loads(body)
    assert info["variant"] == "yolov4-nano" and info["classes"] == list(BCCD)
    assert info["input_size"] == {"height": 256, "width": 256}
    assert info["precision"] == "fp32" and info["dynamic_batch"] is True and info["model_file"] == "nano256.onnx"
    assert info["version"] and info["runtime_threads"] >= 1
    assert info["bundled"] is False and info["model_card"] is None  # a model given is not the bundled one
    assert request(server, "GET", "/healthz")[0] == 200
    assert request(server, "GET", "/readyz")[0] == 200
    status, _, body = request(server, "GET", "/metrics")
    assert status == 200 and b"bentoml_service_request_total" in body
    status, _, body = request(server, "GET", "/docs.json")  # BentoML's API page documents the upload routes
    paths = json.loads(body)["paths"]
    assert status == 200 and {"/detect", "/detect_batch", "/render", "/info"} <= set(paths)
    assert "image" in paths["/detect"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]


def oversize(photo: bytes) -> bytes:
    return photo + b"\0" * (MAX_UPLOAD_MB * 2**20)  # a JPEG with trailing bytes: only the size is wrong


BAD_INPUTS = {
    # case: (route, files [(field, filename, data or photo name, content type)], fields, status, message part)
    "not an image": ("/detect", [("image", "a.jpg", b"this is not an image", "image/jpeg")], {}, 400, "not an image"),
    "truncated JPEG": ("/detect", [("image", "a.jpg", "truncated", "image/jpeg")], {}, 400, "truncated"),
    "zero bytes": ("/detect", [("image", "a.jpg", b"", "image/jpeg")], {}, 400, "empty"),
    "PNG claiming 30000x30000": ("/detect", [("image", "a.png", png_claiming(30000, 30000), "image/png")], {}, 413, "limit"),
    "GIF": ("/detect", [("image", "a.gif", b"GIF89a" + b"\0" * 64, "image/gif")], {}, 415, "content type"),
    "GIF as octet-stream": ("/detect", [("image", "a", b"GIF89a" + b"\0" * 64, "application/octet-stream")], {}, 415,
                            "format GIF"),
    "text/plain part": ("/detect", [("image", "a.txt", "dog", "text/plain")], {}, 415, "content type"),
    "over-size upload": ("/detect", [("image", "a.jpg", "oversize", "image/jpeg")], {}, 413, "limit"),
    "conf above 1": ("/detect", [("image", "a.jpg", "dog", "image/jpeg")], {"conf": "1.5"}, 400, "conf"),
    "iou below 0": ("/detect", [("image", "a.jpg", "dog", "image/jpeg")], {"iou": "-0.1"}, 400, "iou"),
    "max_det 0": ("/detect", [("image", "a.jpg", "dog", "image/jpeg")], {"max_det": "0"}, 400, "max_det"),
    "conf not a number": ("/detect", [("image", "a.jpg", "dog", "image/jpeg")], {"conf": "high"}, 400, "conf"),
    "no image": ("/detect", [], {"conf": "0.5"}, 400, "image"),
    "upload in field 'file'": ("/detect", [("file", "a.jpg", "dog", "image/jpeg")], {}, 400, "curl -F image=@"),
    "URL instead of a file": ("/detect", [], {"image": "http://127.0.0.1:1/x.jpg"}, 400, "file upload"),
    "file in a value field": ("/detect", [("image", "a.jpg", "dog", "image/jpeg"), ("conf", "c.jpg", "dog", "image/jpeg")],
                              {}, 400, "conf"),
    "one bad image in a batch": ("/detect_batch", [("images", "a.jpg", "dog", "image/jpeg"),
                                                   ("images", "b.jpg", "truncated", "image/jpeg")], {}, 400, "images[1]"),
    "too many images": ("/detect_batch", [("images", f"{i}.jpg", "person", "image/jpeg") for i in range(MAX_IMAGES + 1)],
                        {}, 400, "at most"),
    "bad image to render": ("/render", [("image", "a.jpg", b"", "image/jpeg")], {}, 400, "empty"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_a_4xx_json_error_and_the_server_still_answers(server, photo_bytes, case):
    route, files, fields, status, message = BAD_INPUTS[case]
    named = {**photo_bytes, "truncated": photo_bytes["dog"][: len(photo_bytes["dog"]) // 2], "oversize": oversize(photo_bytes["dog"])}
    body, headers = multipart([(f, n, named[d] if isinstance(d, str) else d, t) for f, n, d, t in files], fields)
    got_status, content_type, got = request(server, "POST", route, body, headers)
    assert got_status == status, got[:500]
    assert content_type.startswith("application/json")
    payload = json.loads(got)
    assert isinstance(payload["error"], str) and payload["error"]
    assert message in json.dumps(payload), payload
    assert detect(server, "person.jpg", photo_bytes["person"])["detections"] is not None


def test_requests_that_are_not_forms_or_too_large_streams(server, photo_bytes):
    # A JSON body naming a file on the server: refused before anything reads it.
    status, _, body = request(server, "POST", "/detect", json.dumps({"image": "/etc/passwd"}), {"Content-Type": "application/json"})
    assert status == 415 and b"multipart/form-data" in body
    # Raw JPEG body instead of a form.
    status, _, body = request(server, "POST", "/detect", photo_bytes["dog"], {"Content-Type": "image/jpeg"})
    assert status == 415
    # A form cut short (its Content-Length matching): refused, not read as a shorter form.
    form, headers = multipart([("image", "a.jpg", photo_bytes["dog"], "image/jpeg")])
    status, _, body = request(server, "POST", "/detect", form[: len(form) // 2], headers)
    assert status == 400 and b"incomplete" in body
    # Chunked upload without Content-Length, over the limit: counted while streaming.
    form, headers = multipart([("image", "a.jpg", oversize(photo_bytes["dog"]), "image/jpeg")])
    chunks = (form[i : i + 65536] for i in range(0, len(form), 65536))
    status, _, body = request(server, "POST", "/detect", chunks, headers, chunked=True)
    assert status == 413 and b"limit" in body
    assert detect(server, "person.jpg", photo_bytes["person"])["detections"] is not None


def test_an_over_size_body_sent_without_waiting_gets_the_413(server, photo_bytes):
    """Python's urllib writes the whole body before reading the answer (no Expect: 100-continue):
    the server reads and drops the rest, so the client sees the 413, not a reset connection."""
    import urllib.error
    import urllib.request

    form, headers = multipart([("image", "a.jpg", photo_bytes["dog"] + b"\0" * (40 * MAX_UPLOAD_MB * 2**20), "image/jpeg")])
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(f"http://{server.host}:{server.port}/detect", form, headers), timeout=60)
    assert refused.value.code == 413 and b"limit" in refused.value.read()
    assert detect(server, "person.jpg", photo_bytes["person"])["detections"] is not None


def installation_without_model(tmp: Path) -> Path:
    """The yolo4 package laid out as an install, without ``serving/models/``: one that ships no model."""
    root = tmp / "no-model"
    ignore = shutil.ignore_patterns("models", "__pycache__")
    shutil.copytree(ROOT / "yolo4", root / "yolo4", ignore=ignore)
    for folder in ("core", "detector", "training", "serving", "data"):
        shutil.copytree(ROOT / folder, root / "yolo4" / folder, ignore=ignore)
    return root


def test_no_model_configured_fails_at_startup_naming_the_variable(tmp_path):
    root = installation_without_model(tmp_path)
    env = {**server_env(tmp_path, None), "PYTHONPATH": str(root)}
    run = subprocess.run(serve_command(free_port(), root), capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=120)  # fmt: skip
    assert run.returncode != 0 and "YOLO4_MODEL" in run.stdout + run.stderr
    # yolo4 serve stops before starting anything, and gets there without torch.
    code = ("import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"
            "from yolo4.cli import main\n"
            "sys.exit(main(['serve', '--port', '1']))\n")  # fmt: skip
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert run.returncode == 2 and "YOLO4_MODEL" in run.stderr, run.stderr[-2000:]


def test_bentoml_build_packs_the_service_and_the_shipped_models(tmp_path, built_wheel):
    import zipfile

    import yolo4

    context = tmp_path / "context"
    context.mkdir()
    shutil.copy(ROOT / "bentofile.yaml", context / "bentofile.yaml")
    assert f"dist/yolo4-{yolo4.__version__}-py3-none-any.whl" in (context / "bentofile.yaml").read_text()
    env = server_env(tmp_path, None)
    (context / "dist").mkdir()
    shutil.copy(built_wheel, context / "dist" / built_wheel.name)
    run = subprocess.run([sys.executable, "-m", "bentoml", "build", "--output", "tag"], capture_output=True, text=True,
                         cwd=context, env=env, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    name, version = re.search(r"__tag__:(\S+):(\S+)", run.stdout).groups()
    bento = tmp_path / "bentoml" / "bentos" / name / version
    assert "yolo4.serving.service:Yolo4Http" in (bento / "bento.yaml").read_text()
    (packed,) = (bento / "env" / "python" / "wheels").glob("yolo4-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(packed) as z:
        z.extractall(site)
    for shipped in (ROOT / "serving" / "models").iterdir():
        assert (site / "yolo4" / "serving" / "models" / shipped.name).read_bytes() == shipped.read_bytes()
    # The bento's own wheel serves the default model: no torch, nothing from the checkout.
    code = ("import sys; sys.modules['torch'] = None\n"
            "import yolo4.serving.service\n"
            "from yolo4.serving.settings import ServeSettings\n"
            "from yolo4.serving.choice import open_model\n"
            "detector, _ = open_model(*ServeSettings().model_source())\n"
            "print(detector.config.name, detector.model_path)\n"
            "for name, module in sorted(sys.modules.items()):\n"
            "    if name.split('.')[0] == 'yolo4' and getattr(module, '__file__', None):\n"
            "        print(module.__file__)\n")  # fmt: skip
    check = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                           env={**env, "PYTHONPATH": str(site), "YOLO4_CACHE": str(tmp_path / "cache")}, timeout=120)  # fmt: skip
    assert check.returncode == 0, check.stderr[-2000:]
    variant, model_path, *files = check.stdout.split()
    assert any(f.endswith("service.py") for f in files)
    outside = [f for f in [model_path, *files] if not Path(f).resolve().is_relative_to(site.resolve())]
    assert not outside, f"read from outside the bento's wheel: {outside}"


def test_clean_shutdown(server):
    """Last test of the module: SIGTERM stops every process of the server, which exits 0."""
    workers = psutil.Process(server.proc.pid).children(recursive=True)
    assert len(workers) >= 2  # the HTTP and the model services
    start = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0, server.log_tail()
    assert time.monotonic() - start < 30
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"workers left behind: {alive}"
    with pytest.raises(OSError):
        request(server, "GET", "/healthz")
    log = server.log.read_text(errors="replace")
    assert not re.search(r"status=5\d\d", log)  # no request of this module got a server error
    # BentoML logs the parameter validation errors (400) with their traceback; nothing else may.
    assert log.count("Traceback") == log.count("ValidationError: "), server.log_tail(80)

"""The model that ships with the package (serving/models/, serving/bundled.py): its card tells
the truth about its files, and every command that takes an optional model uses it, says so,
and finds the blood cells of the shipped sample image."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from http_server import ROOT, detect, free_port, request, server_env, start_server, stop_server, yolo4_serve_command

from serving.bundled import SAMPLE_IMAGE, bundled_model_path, model_card
from serving.runtime import EdgeDetector

# The sample's annotation (BCCD Annotations/BloodImage_00125.xml): one white cell, ten red
# cells, four platelets.
SAMPLE_WBC = [104, 149, 275, 302]
SAMPLE_COUNTS = {"RBC": 10, "WBC": 1, "Platelets": 4}
NO_TORCH = "import sys, runpy; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"

pytestmark = pytest.mark.skipif(model_card() is None, reason="this checkout has no bundled model")


def box_iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def check_sample_detections(result: dict) -> None:
    """The white cell found where it is annotated, and every class of the image detected."""
    dets = result["detections"]
    assert result["image_size"] == {"height": 480, "width": 640}
    labels = [d["label"] for d in dets]
    assert set(labels) == set(SAMPLE_COUNTS), labels
    wbc = [d for d in dets if d["label"] == "WBC"]
    assert len(wbc) == 1 and box_iou(wbc[0]["box"], SAMPLE_WBC) > 0.7, wbc
    rbc = labels.count("RBC")
    assert SAMPLE_COUNTS["RBC"] // 2 <= rbc <= SAMPLE_COUNTS["RBC"] * 2, labels


def run(module: str, args: list[str], cwd: Path, block_torch: bool = False) -> subprocess.CompletedProcess:
    """``python -m module args`` in ``cwd`` with no YOLO4_* variables (and torch unimportable)."""
    command = [sys.executable, "-m", module, *args]
    if block_torch:
        code = NO_TORCH + f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
        command = [sys.executable, "-c", code, *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=server_env(cwd, None), timeout=300)


def test_card_describes_the_shipped_files():
    card = model_card()
    names = [f["file"] for f in card["files"]]
    assert card["default_file"] in names and bundled_model_path().name == card["default_file"]
    by_precision = {f["precision"]: f for f in card["files"]}
    for entry in card["files"]:
        path = ROOT / "serving" / "models" / entry["file"]
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], f"{path} is not the file the card describes"
        assert len(data) < 8e6 and abs(len(data) / 1e6 - entry["megabytes"]) < 0.01
        runtime = EdgeDetector(path)
        assert runtime.precision == entry["precision"]
        assert list(runtime.config.class_names) == card["classes"] == list(SAMPLE_COUNTS)
    if "int8" in by_precision:  # kept only within one mAP50 point of FP32
        assert by_precision["fp32"]["map50"] - by_precision["int8"]["map50"] <= 0.01
    assert (ROOT / "data" / "samples" / "README.md").read_text().count("Copyright (c) 2017 shenggan") == 1


def test_edge_detector_without_a_path_is_the_bundled_model():
    import cv2

    runtime = EdgeDetector()
    assert runtime.bundled and runtime.model_path == bundled_model_path()
    check_sample_detections(runtime.detect(cv2.imread(str(SAMPLE_IMAGE))).to_dict())
    assert EdgeDetector(bundled_model_path()).bundled is False  # a path given is taken as given


def test_detect_edge_and_info_use_the_bundled_model(tmp_path):
    detect_run = run("training.cli", ["detect", str(SAMPLE_IMAGE), "--out", "detect"], tmp_path)
    assert detect_run.returncode == 0, detect_run.stderr[-2000:]
    assert "bundled" in detect_run.stderr and model_card()["name"] in detect_run.stderr
    stem = SAMPLE_IMAGE.stem
    via_detect = json.loads((tmp_path / "detect" / f"{stem}.json").read_text())
    check_sample_detections(via_detect)
    assert (tmp_path / "detect" / f"{stem}.jpg").stat().st_size > 10_000

    edge_run = run("serving.edge", [str(SAMPLE_IMAGE), "--out", "edge"], tmp_path, block_torch=True)
    assert edge_run.returncode == 0, edge_run.stderr[-2000:]
    assert "bundled" in edge_run.stderr
    via_edge = json.loads((tmp_path / "edge" / f"{stem}.json").read_text())
    assert [d["label"] for d in via_edge["detections"]] == [d["label"] for d in via_detect["detections"]]
    np.testing.assert_allclose([d["box"] for d in via_edge["detections"]], [d["box"] for d in via_detect["detections"]])

    info = run("training.cli", ["info"], tmp_path)
    assert info.returncode == 0, info.stderr[-2000:]
    card = model_card()
    assert card["name"] in info.stdout and "mAP50" in info.stdout and card["training"]["command"] in info.stdout


def test_service_with_no_model_argument_serves_the_bundled_model(tmp_path):
    srv = start_server(yolo4_serve_command(None, free_port()), tmp_path, server_env(tmp_path, None))
    try:
        check_sample_detections(detect(srv, SAMPLE_IMAGE.name, SAMPLE_IMAGE.read_bytes()))
        status, _, body = request(srv, "GET", "/info")
        info = json.loads(body)
        assert status == 200 and info["bundled"] is True
        assert info["model_card"] == model_card() and info["model_file"] == model_card()["default_file"]
        assert "bundled" in srv.log.read_text(errors="replace")
    finally:
        stop_server(srv)

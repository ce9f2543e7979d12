import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ helpers (darknet_files)

SHARED = Path(os.environ.get("YOLO4_SHARED", ROOT.parent / "shared"))
CI = bool(os.environ.get("CI"))  # .ci/run: what a test needs must be there, never skipped


def shared_path(*parts: str) -> Path:
    """A file under ../shared (override with YOLO4_SHARED). In CI it must exist; elsewhere
    tests that need it are skipped with the reason."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        if CI:
            raise FileNotFoundError(f"{path} is missing: CI must have ../shared beside the checkout")
        pytest.skip(f"{path} not available (set YOLO4_SHARED)")
    return path


@pytest.fixture(scope="session")
def darknet_dir() -> Path:
    return shared_path("darknet")


@pytest.fixture(scope="session")
def images_dir() -> Path:
    return shared_path("images")


# One small model with live weights, exported once per session: the export tests, the edge
# runtime, the service and quantization all start from these files (an export takes 8-20 s).
LIVE_CLASSES = ("RBC", "WBC", "Platelets")
LIVE_SIZE = 256


@pytest.fixture(scope="session")
def live_nano(images_dir):
    """(model, config): yolov4-nano at 256 with live weights calibrated on square crops of the
    sample photos and of BCCD images."""
    import cv2
    from live_weights import live_model, square_crop

    photos = [square_crop(cv2.imread(str(p))) for p in sorted(images_dir.glob("*.jpg"))]
    bccd = sorted(shared_path("datasets", "bccd", "JPEGImages").glob("*.jpg"))[:4]
    return live_model("yolov4-nano", photos + [square_crop(cv2.imread(str(p))) for p in bccd], LIVE_SIZE, LIVE_CLASSES)


LIVE_METRICS = {"mAP50": 0.61, "mAP50-95": 0.38, "epoch": 12}


@pytest.fixture(scope="session")
def nano_onnx(live_nano, tmp_path_factory):
    """The live nano as a dynamic FP32 file with decoded outputs (numpy NMS in the runtime),
    with training metrics and an extra metadata entry."""
    from yolo4.detector.export import export_onnx

    return export_onnx(*live_nano, tmp_path_factory.mktemp("nano") / "nano256.onnx", dynamic=True, metrics=LIVE_METRICS,
                       source="best.pt", extra_metadata={"dataset": "bccd"})  # fmt: skip


@pytest.fixture(scope="session")
def nano_onnx_nms(nano_onnx, tmp_path_factory):
    """The same model with in-graph NMS (stored conf 0.3), appended to the decoded export
    (``detector.onnx_nms.add_nms``: what ``export_onnx(nms=True)`` does, without a second export)."""
    from yolo4.detector.onnx_nms import add_nms

    return add_nms(nano_onnx, tmp_path_factory.mktemp("nano-nms") / "nano-nms.onnx", conf_threshold=0.3)


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory) -> Path:
    """The yolo4 wheel, built once from a copy of the checkout (a build leaves build/ behind)."""
    import shutil
    import subprocess
    import sys

    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", "runs", "build", "dist", "*.egg-info", "__pycache__"))
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp),
                          str(source)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    (wheel,) = tmp.glob("yolo4-*.whl")
    return wheel

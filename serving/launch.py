"""``yolo4 serve``: check the model, then hand over to ``bentoml serve`` (no torch needed).

The service reads its settings from the environment (``serving.settings``), so this sets
``YOLO4_MODEL`` and friends and replaces the current process with BentoML's server: Ctrl+C
and signals reach it directly.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .bundled import bundled_note, is_bundled
from .settings import MODEL_ENV, ServeSettings, resolve_model_path

SERVICE = "serving.service:Yolo4Http"


def serve_command(
    onnx: str | None, host: str, port: int, threads: int | None = None, workers: int | None = None
) -> list[str]:
    """Validate the model and settings; return the argv that starts the server and set its
    environment in ``os.environ``. Raises ``ModelNotConfigured`` / ``EdgeModelError`` /
    ``ValueError`` with a message for the user."""
    from .runtime import EdgeDetector

    if onnx:
        os.environ[MODEL_ENV] = str(Path(onnx).expanduser().resolve())
    if threads:
        os.environ["YOLO4_THREADS"] = str(threads)
    if workers:
        os.environ["YOLO4_MODEL_WORKERS"] = str(workers)
    settings = ServeSettings.from_env()  # a bad YOLO4_* value fails here, not in every worker
    path = resolve_model_path()
    if is_bundled(path):
        print(bundled_note(), flush=True)
    os.environ[MODEL_ENV] = str(path.resolve())  # workers may run in another directory
    detector = EdgeDetector(path, num_threads=1)  # not a yolo4 ONNX file: fail now, with the reason
    config = detector.config
    print(
        f"serving {path} ({config.name}, {detector.precision}, {config.num_classes} classes, input "
        f"{detector.input_size[1]}x{detector.input_size[0]}) on http://{host}:{port} with "
        f"{settings.model_workers} model worker(s) x {settings.runtime_threads()} ONNX Runtime threads",
        flush=True,
    )
    if not detector.metadata["dynamic"]:
        print("note: this file has a fixed batch size: batched requests run one image at a time "
              "(export with --dynamic)", flush=True)  # fmt: skip
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")  # no usage reports from a CLI run
    package_root = Path(__file__).resolve().parent.parent  # bentoml imports SERVICE from here
    return [
        sys.executable, "-m", "bentoml", "serve", SERVICE,
        "--host", host, "--port", str(port), "--working-dir", str(package_root),
    ]  # fmt: skip


def run(onnx: str | None, host: str, port: int, threads: int | None = None, workers: int | None = None) -> None:
    argv = serve_command(onnx, host, port, threads, workers)
    os.execv(argv[0], argv)

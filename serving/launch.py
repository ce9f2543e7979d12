"""``yolo4 serve``: check the model, the settings and the port, then hand over to ``bentoml serve``.

The service reads its settings from the environment (``yolo4.serving.settings``), so this sets
``YOLO4_MODEL`` and friends and replaces the current process with BentoML's server: Ctrl+C
and signals reach it directly. No torch.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import tempfile
from pathlib import Path

from yolo4.serving.choice import open_model
from yolo4.serving.settings import MODEL_ENV, ServeSettings

SERVICE = "yolo4.serving.service:Yolo4Http"


def check_port(host: str, port: int) -> None:
    """Fail now, in one line, when the address is taken (BentoML would print a traceback later)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ValueError(f"port {port} on {host} is already in use (another server?): choose one with --port") from None
            raise ValueError(f"cannot listen on {host}:{port}: {e.strerror}") from None


def serve_command(
    onnx: str | None, host: str, port: int, threads: int | None = None, workers: int | None = None,
    model: str | None = None, precision: str = "auto",
) -> list[str]:  # fmt: skip
    """Validate the model, settings and port; return the argv that starts the server and set its
    environment in ``os.environ``. Raises ``ValueError`` (and subclasses) with a message for the user."""
    if onnx and model:
        raise ValueError("give --onnx FILE or --model NAME, not both")
    if onnx:
        path = Path(onnx).expanduser()
        if not path.is_file():
            raise ValueError(f"--onnx {onnx}: no such model file")
        os.environ[MODEL_ENV] = str(path.resolve())  # workers may run in another directory
    elif model:
        os.environ[MODEL_ENV] = model
    if precision != "auto":
        os.environ["YOLO4_PRECISION"] = precision
    if threads:
        os.environ["YOLO4_THREADS"] = str(threads)
    if workers:
        os.environ["YOLO4_MODEL_WORKERS"] = str(workers)
    settings = ServeSettings.from_env()  # a bad YOLO4_* value fails here, not in every worker
    path, name = settings.model_source()
    check_port(host, port)
    # Not a yolo4 ONNX file: fail now, with the reason. A shipped model's choice is measured
    # (or read from this machine's cache) here, so the worker starts at once.
    detector, note = open_model(path, name, settings.precision, settings.runtime_threads())
    if note:
        print(note, flush=True)
    config = detector.config
    threads = detector.num_threads or "ONNX Runtime's default"
    print(
        f"serving {detector.model_path} ({config.name}, {detector.precision}, {config.num_classes} classes, input "
        f"{detector.input_size[1]}x{detector.input_size[0]}) on http://{host}:{port} with "
        f"{settings.model_workers} model worker(s) x {threads} ONNX Runtime threads",
        flush=True,
    )
    if not detector.metadata["dynamic"]:
        print("note: this file has a fixed batch size: batched requests run one image at a time "
              "(export with --dynamic)", flush=True)  # fmt: skip
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")  # no usage reports from a CLI run
    # BentoML imports SERVICE from the installed package; an empty working directory keeps a
    # checkout's folders off its path.
    working_dir = tempfile.mkdtemp(prefix="yolo4-serve-")
    return [
        sys.executable, "-m", "bentoml", "serve", SERVICE,
        "--host", host, "--port", str(port), "--working-dir", working_dir,
    ]  # fmt: skip


def run(onnx: str | None, host: str, port: int, threads: int | None = None, workers: int | None = None,
        model: str | None = None, precision: str = "auto") -> None:  # fmt: skip
    argv = serve_command(onnx, host, port, threads, workers, model, precision)
    os.execv(argv[0], argv)

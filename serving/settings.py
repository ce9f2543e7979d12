"""Service settings from environment variables, and the one place that picks the model file.

    YOLO4_MODEL=/path/model.onnx        the exported model (FP32 or INT8: point at either file);
                                        unset: the bundled BCCD model (serving/models/)
    YOLO4_MAX_UPLOAD_MB=20              request body limit (413 above it)
    YOLO4_MAX_PIXELS=25000000           decoded image limit, checked from the header (413 above it)
    YOLO4_MAX_IMAGES=32                 images per /detect_batch request
    YOLO4_THREADS=N                     ONNX Runtime threads per model worker (default: cores / workers)
    YOLO4_MODEL_WORKERS=1               model-service processes
    YOLO4_MAX_BATCH=8                   adaptive batching: images per runtime call at most
    YOLO4_MAX_LATENCY_MS=10000          adaptive batching: a request waiting longer gets a 503

Environment variables, not arguments: ``bentoml serve`` imports the service module in fresh
worker processes, which inherit the environment of ``yolo4 serve`` / the bento's ``envs``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .bundled import bundled_model_path

MODEL_ENV = "YOLO4_MODEL"


class ModelNotConfigured(ValueError):
    """No usable model file: the message says how to give one."""


def bundled_model() -> Path | None:
    """The model shipped inside the package (``serving.bundled``), used when ``YOLO4_MODEL``
    is not set; None in a checkout whose model files were removed."""
    return bundled_model_path()


def model_envs() -> list[dict[str, str]]:
    """The ``envs`` of the model service: without a bundled model the variable is required,
    and ``bentoml serve`` stops at once, naming it, when it is not set. With one it is optional
    (no entry: a path baked in here would be the build machine's, wrong inside a bento)."""
    return [{"name": MODEL_ENV}] if bundled_model() is None else []


def resolve_model_path(environ: Mapping[str, str] = os.environ) -> Path:
    """``$YOLO4_MODEL`` if set, else the bundled model; a clear error when there is neither."""
    value = environ.get(MODEL_ENV, "").strip()
    if value:
        path = Path(value).expanduser()
        if not path.is_file():
            raise ModelNotConfigured(f"{MODEL_ENV}={value}: no such model file")
        return path
    default = bundled_model()
    if default is not None:
        return default
    raise ModelNotConfigured(
        f"no model configured: set {MODEL_ENV}=/path/to/model.onnx (an FP32 or INT8 file from "
        f"`yolo4 export` / `yolo4 quantize`), or run `yolo4 serve --onnx model.onnx`"
    )


@dataclass(frozen=True)
class ServeSettings:
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 25_000_000
    max_images: int = 32
    threads: int | None = None
    model_workers: int = 1
    max_batch: int = 8
    max_latency_ms: int = 10_000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ServeSettings:
        default = cls()
        mb = _number(environ, "YOLO4_MAX_UPLOAD_MB", float, default.max_upload_bytes / 2**20)
        threads = environ.get("YOLO4_THREADS")
        max_batch = _number(environ, "YOLO4_MAX_BATCH", int, default.max_batch)
        if max_batch < 2:
            raise ValueError(f"YOLO4_MAX_BATCH={max_batch}: adaptive batching needs at least 2")
        return cls(
            max_upload_bytes=int(mb * 2**20),
            max_pixels=_number(environ, "YOLO4_MAX_PIXELS", int, default.max_pixels),
            max_images=_number(environ, "YOLO4_MAX_IMAGES", int, default.max_images),
            threads=_number(environ, "YOLO4_THREADS", int, 0) if threads else None,
            model_workers=_number(environ, "YOLO4_MODEL_WORKERS", int, default.model_workers),
            max_batch=max_batch,
            max_latency_ms=_number(environ, "YOLO4_MAX_LATENCY_MS", int, default.max_latency_ms),
        )

    def runtime_threads(self) -> int:
        """ONNX Runtime intra-op threads per model worker: the usable cores shared out between
        the workers, so that they do not oversubscribe the CPU."""
        return self.threads or max(1, usable_cores() // self.model_workers)


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _number(environ: Mapping[str, str], name: str, kind: type, default):
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
    if value <= 0:
        raise ValueError(f"{name}={raw!r} must be positive")
    return value

"""Service settings from environment variables, and the one place that picks the model to serve.

    YOLO4_MODEL=NAME or /path/model.onnx  a shipped model (yolo4 info lists them) or an exported
                                        file (FP32 or INT8); unset: the default shipped model
    YOLO4_PRECISION=auto                a shipped model's file: auto (measured here), fp32, int8
    YOLO4_THREADS=N                     ONNX Runtime threads per model worker (default: measured
                                        with one worker, cores / workers with more)
    YOLO4_MODEL_WORKERS=1               model-service processes
    YOLO4_MAX_UPLOAD_MB=20              request body limit (413 above it)
    YOLO4_MAX_PIXELS=25000000           decoded image limit, checked from the header (413 above it)
    YOLO4_MAX_IMAGES=32                 images per /detect_batch request
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

from yolo4.core.cpu import usable_cores
from yolo4.serving import bundled

MODEL_ENV = "YOLO4_MODEL"


class ModelNotConfigured(ValueError):
    """No usable model: the message says how to give one."""


@dataclass(frozen=True)
class ServeSettings:
    model: str | None = None  # a shipped model's name or a file; None: the default shipped model
    precision: str = "auto"
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
        max_batch = _number(environ, "YOLO4_MAX_BATCH", int, default.max_batch)
        if max_batch < 2:
            raise ValueError(f"YOLO4_MAX_BATCH={max_batch}: adaptive batching needs at least 2")
        precision = environ.get("YOLO4_PRECISION", "auto").strip() or "auto"
        if precision not in ("auto", "fp32", "int8"):
            raise ValueError(f"YOLO4_PRECISION={precision!r}: choose auto, fp32 or int8")
        return cls(
            model=environ.get(MODEL_ENV, "").strip() or None,
            precision=precision,
            max_upload_bytes=int(mb * 2**20),
            max_pixels=_number(environ, "YOLO4_MAX_PIXELS", int, default.max_pixels),
            max_images=_number(environ, "YOLO4_MAX_IMAGES", int, default.max_images),
            threads=_number(environ, "YOLO4_THREADS", int, 0) or None,
            model_workers=_number(environ, "YOLO4_MODEL_WORKERS", int, default.model_workers),
            max_batch=max_batch,
            max_latency_ms=_number(environ, "YOLO4_MAX_LATENCY_MS", int, default.max_latency_ms),
        )

    def runtime_threads(self) -> int | None:
        """ONNX Runtime threads per model worker: as set; with several workers the usable cores
        shared out between them; with one, None (measured at start, ``yolo4.serving.choice``)."""
        if self.threads or self.model_workers == 1:
            return self.threads
        return max(1, usable_cores() // self.model_workers)

    def model_source(self) -> tuple[str | None, str | None]:
        """(file, shipped model name): exactly one is set. Raises ``ModelNotConfigured``."""
        value = self.model
        if value and (value.lower().endswith(".onnx") or os.sep in value or Path(value).is_file()):
            path = Path(value).expanduser()
            if not path.is_file():
                raise ModelNotConfigured(f"{MODEL_ENV}={value}: no such model file")
            return str(path), None
        name = value or bundled.default_model_name()
        if name is None:
            raise ModelNotConfigured(
                f"no model configured and this installation ships none: set {MODEL_ENV}=/path/to/model.onnx "
                f"(an FP32 or INT8 file from `yolo4 export` / `yolo4 quantize`), or run `yolo4 serve --onnx model.onnx`"
            )
        bundled.card(name)  # an unknown name: ModelNotFound, naming the shipped ones
        return None, name


def model_envs() -> list[dict[str, str]]:
    """The ``envs`` of the model service: without a shipped model the variable is required, and
    ``bentoml serve`` stops at once, naming it, when it is not set."""
    return [{"name": MODEL_ENV}] if bundled.default_model_name() is None else []


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

"""The HTTP detection service (BentoML 1.4): ``bentoml serve serving.service:Yolo4Http``.

Two services, as BentoML's adaptive batching needs (a batchable API takes one argument, and a
call from another API of the same service is not batched):

* ``Yolo4Http`` faces the clients: it validates and decodes uploads (every failure is a 4xx
  JSON ``{"error": ...}``), then calls the model service once per request;
* ``Yolo4Model`` holds the ONNX model (``serving.runtime.EdgeDetector``); its batchable
  ``detect`` receives the images of many concurrent requests at once and runs them in one
  ``detect_batch`` call per distinct threshold setting (``serving.jobs``).

Endpoints: ``POST /detect`` (field ``image``, optional ``conf``, ``iou``, ``max_det``),
``POST /detect_batch`` (repeated field ``images``), ``POST /render`` (annotated JPEG),
``GET /info``; BentoML's ``/healthz``, ``/readyz`` and ``/metrics`` stay. The model file comes
from ``$YOLO4_MODEL`` (``serving.settings``), the only way a file path reaches the service:
requests carry image bytes, never paths.
"""

from __future__ import annotations

import hashlib
import time
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import bentoml
import cv2
import numpy as np
import onnxruntime
from bentoml.validators import ContentType
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from detector.draw import draw_detections

from .bundled import is_bundled, model_card
from .decode import InputError, decode_image
from .jobs import detect_grouped
from .limits import UploadGuard
from .runtime import EdgeDetector
from .schemas import (
    DEFAULT_CONF, DEFAULT_IOU, DEFAULT_MAX_DET, BatchResponse, Conf, DetectResponse, ImageDetections, ImageJob,
    ImageSize, Iou, MaxDet, ModelInfo, Timing,
)  # fmt: skip
from .settings import ServeSettings, model_envs, resolve_model_path

SETTINGS = ServeSettings.from_env()
UPLOAD_FIELDS = {"/detect": ("image",), "/detect_batch": ("images",), "/render": ("image",)}
JPEG_QUALITY = 90
MODEL_CALL_ATTEMPTS = 3


@bentoml.service(
    name="yolo4_model", workers=SETTINGS.model_workers, threads=1, traffic={"timeout": 120}, envs=model_envs()
)
class Yolo4Model:
    """The ONNX model behind adaptive batching; one batch at a time per worker (``threads=1``),
    each using ``SETTINGS.runtime_threads()`` ONNX Runtime threads."""

    def __init__(self) -> None:
        self.model_path = resolve_model_path()  # a missing file: the worker logs it and stops
        self.threads = SETTINGS.runtime_threads()
        self.detector = EdgeDetector(self.model_path, num_threads=self.threads)

    # The explicit ContentType spares BentoML a JSON-schema build of the output type on every
    # response (it derives the media type of a list output from its schema otherwise), which
    # cost a third of a yolov4-nano inference.
    @bentoml.api(batchable=True, max_batch_size=SETTINGS.max_batch, max_latency_ms=SETTINGS.max_latency_ms)
    def detect(self, jobs: list[ImageJob]) -> Annotated[list[ImageDetections], ContentType("application/json")]:
        images = [job.image for job in jobs]
        thresholds = [(job.conf, job.iou, job.max_det) for job in jobs]
        return [ImageDetections.from_edge(d) for d in detect_grouped(self.detector, images, thresholds)]

    @bentoml.api
    def info(self) -> ModelInfo:
        config = self.detector.config
        return ModelInfo(
            variant=config.name,
            arch=config.arch,
            precision=self.detector.precision,
            classes=list(config.class_names),
            input_size=ImageSize(height=self.detector.input_size[0], width=self.detector.input_size[1]),
            in_graph_nms=self.detector.has_nms,
            dynamic_batch=self.detector.metadata["dynamic"],
            model_file=self.model_path.name,
            model_sha256=hashlib.sha256(self.model_path.read_bytes()).hexdigest()[:16],
            metrics=self.detector.metadata["metrics"],
            version=_package_version(),
            onnxruntime=onnxruntime.__version__,
            runtime_threads=self.threads,
            bundled=is_bundled(self.model_path),
            model_card=model_card() if is_bundled(self.model_path) else None,
        )


async def info_endpoint(_: Request) -> Response:
    """``GET /info`` (BentoML APIs are POST-only, so this one is a mounted Starlette route)."""
    service: Yolo4Http = bentoml.get_current_service()
    return JSONResponse((await service.model_info()).model_dump())


@bentoml.service(name="yolo4", traffic={"timeout": 120})
@bentoml.asgi_app(Starlette(routes=[Route("/info", info_endpoint, methods=["GET"])]), path="/")
class Yolo4Http:
    """The public API. Error responses are ``{"error": message}`` with a 4xx status (from
    ``UploadGuard`` or the decoder) or BentoML's 400 ``{"error", "detail"}`` for a parameter
    out of range."""

    model = bentoml.depends(Yolo4Model)

    def __init__(self) -> None:
        self._info: ModelInfo | None = None

    async def model_info(self) -> ModelInfo:
        if self._info is None:
            self._info = ModelInfo.model_validate(await self._call_model("info"))
        return self._info

    @bentoml.api(route="/detect")
    async def detect(
        self, image: Path, conf: Conf = DEFAULT_CONF, iou: Iou = DEFAULT_IOU, max_det: MaxDet = DEFAULT_MAX_DET
    ) -> DetectResponse:
        """Detect objects in one uploaded image (multipart field ``image``)."""
        try:
            (result,), timing = await self._run([image], ["image"], conf, iou, max_det)
        except InputError as e:
            return _error(e)
        return DetectResponse(**result.model_dump(), timing=timing)

    @bentoml.api(route="/detect_batch")
    async def detect_batch(
        self, images: list[Path], conf: Conf = DEFAULT_CONF, iou: Iou = DEFAULT_IOU, max_det: MaxDet = DEFAULT_MAX_DET
    ) -> BatchResponse:
        """Detect objects in several images (repeated multipart field ``images``); results in order."""
        try:
            if len(images) > SETTINGS.max_images:
                raise InputError(
                    400, f"{len(images)} images: at most {SETTINGS.max_images} per request (YOLO4_MAX_IMAGES)"
                )
            results, timing = await self._run(images, [f"images[{i}]" for i in range(len(images))], conf, iou, max_det)
        except InputError as e:
            return _error(e)
        return BatchResponse(results=results, timing=timing)

    @bentoml.api(route="/render")
    async def render(
        self, image: Path, conf: Conf = DEFAULT_CONF, iou: Iou = DEFAULT_IOU, max_det: MaxDet = DEFAULT_MAX_DET
    ) -> Annotated[bytes, ContentType("image/jpeg")]:
        """The uploaded image as a JPEG with boxes, labels and scores drawn."""
        try:
            bgr = await run_in_threadpool(_decode, image, "image")
        except InputError as e:
            return _error(e)
        (result,) = await self._infer([bgr], conf, iou, max_det)
        classes = (await self.model_info()).classes
        return await run_in_threadpool(_render, bgr, result, classes)

    async def _run(
        self, paths: list[Path], names: list[str], conf: float, iou: float, max_det: int
    ) -> tuple[list[ImageDetections], Timing]:
        """Decode the uploads (``names`` for error messages), then one call to the model service."""
        start = time.perf_counter()
        if not paths:
            raise InputError(400, "no image uploaded")
        images = await run_in_threadpool(lambda: [_decode(p, n) for p, n in zip(paths, names)])
        decoded = time.perf_counter()
        results = await self._infer(images, conf, iou, max_det)
        done = time.perf_counter()
        timing = Timing(
            decode_ms=round((decoded - start) * 1e3, 2),
            inference_ms=round((done - decoded) * 1e3, 2),
            total_ms=round((done - start) * 1e3, 2),
        )
        return results, timing

    async def _infer(self, images: list[np.ndarray], conf: float, iou: float, max_det: int) -> list[ImageDetections]:
        jobs = [ImageJob(image=im, conf=conf, iou=iou, max_det=max_det) for im in images]
        return [ImageDetections.model_validate(r) for r in await self._call_model("detect", jobs)]

    async def _call_model(self, method: str, *args: Any) -> Any:
        """``self.model.to_async.<method>(*args)``, sent again when the connection drops.

        BentoML's client of the model service (aiohttp) renews its session every 100 calls by
        closing the old one, which fails the calls still in flight on it with "Server
        disconnected" (bentoml/BentoML#5540; 23 errors in 500 requests at 8 clients). Model
        calls have no side effect, so a second send is safe.
        """
        for attempt in range(MODEL_CALL_ATTEMPTS):
            try:
                return await getattr(self.model.to_async, method)(*args)
            except aiohttp.ClientConnectionError:
                if attempt == MODEL_CALL_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")


Yolo4Http.add_asgi_middleware(UploadGuard, max_bytes=SETTINGS.max_upload_bytes, upload_fields=UPLOAD_FIELDS)


def _decode(path: Path, name: str) -> np.ndarray:
    # ``path`` is BentoML's temporary copy of the uploaded part, never a client-given path.
    return decode_image(path.read_bytes(), SETTINGS.max_pixels, name)


def _render(image: np.ndarray, result: ImageDetections, classes: list[str]) -> bytes:
    dets = result.detections
    boxes, scores, class_ids = [d.box for d in dets], [d.score for d in dets], [d.class_id for d in dets]
    ok, jpeg = cv2.imencode(
        ".jpg", draw_detections(image, boxes, scores, class_ids, classes), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return jpeg.tobytes()


def _error(e: InputError) -> JSONResponse:
    return JSONResponse({"error": e.message}, status_code=e.status)


def _package_version() -> str:
    try:
        return metadata.version("yolo4")
    except metadata.PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown"

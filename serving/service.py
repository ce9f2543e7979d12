"""The HTTP detection service (BentoML 1.4): ``bentoml serve yolo4.serving.service:Yolo4Http``.

Two services, as BentoML's adaptive batching needs:

* ``Yolo4Http`` faces the clients. Its routes (a FastAPI app mounted on the service, so they
  appear on BentoML's API page) read each body once, up to the size limit, parse its form once
  and decode and resize every image to the network input (``yolo4.serving.uploads``); every
  failure is a 4xx JSON ``{"error": ...}``. It sends the model service the resized images only.
* ``Yolo4Model`` holds the ONNX model (``yolo4.serving.runtime.EdgeDetector``); its batchable
  ``detect`` receives the images of many concurrent requests at once, runs the network once for
  all of them and applies each request's own thresholds afterwards.

Endpoints: ``POST /detect`` (field ``image``, optional ``conf``, ``iou``, ``max_det``),
``POST /detect_batch`` (repeated field ``images``), ``POST /render`` (annotated JPEG),
``GET /info``; BentoML's ``/healthz``, ``/readyz``, ``/metrics`` and API page at ``/`` stay.
The model comes from ``$YOLO4_MODEL`` (``yolo4.serving.settings``), the only way a file path
reaches the service: requests carry image bytes, never paths.
"""

from __future__ import annotations

import hashlib
import time
from importlib import metadata
from typing import Annotated, Any

import aiohttp
import bentoml
import cv2
import numpy as np
import onnxruntime
from bentoml.validators import ContentType
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from yolo4.core.config import ModelConfig, Thresholds
from yolo4.core.cpu import describe_cpu
from yolo4.core.draw import draw_detections
from yolo4.core.preprocess import resize_image
from yolo4.serving import bundled
from yolo4.serving.choice import open_model
from yolo4.serving.schemas import (
    THRESHOLD_FIELDS,
    BatchResponse,
    DetectResponse,
    ErrorResponse,
    ImageDetections,
    ImageSize,
    ModelInfo,
    PreparedImage,
    Timing,
    thresholds_from_form,
)  # fmt: skip
from yolo4.serving.settings import ServeSettings, model_envs
from yolo4.serving.uploads import Form, InputError, decode_image, parse_form, read_body

SETTINGS = ServeSettings.from_env()
JPEG_QUALITY = 90
MODEL_CALL_ATTEMPTS = 3


@bentoml.service(
    name="yolo4_model", workers=SETTINGS.model_workers, threads=1, traffic={"timeout": 120}, envs=model_envs()
)
class Yolo4Model:
    """The ONNX model behind adaptive batching; one batch at a time per worker (``threads=1``)."""

    def __init__(self) -> None:
        path, name = SETTINGS.model_source()  # a missing file: the worker logs it and stops
        self.detector, _ = open_model(path, name, SETTINGS.precision, SETTINGS.runtime_threads())

    # The explicit ContentType spares BentoML a JSON-schema build of the output type on every
    # response (it derives the media type of a list output from its schema otherwise).
    @bentoml.api(batchable=True, max_batch_size=SETTINGS.max_batch, max_latency_ms=SETTINGS.max_latency_ms)
    def detect(self, jobs: list[PreparedImage]) -> Annotated[list[ImageDetections], ContentType("application/json")]:
        detector = self.detector
        thresholds = [job.thresholds() for job in jobs]
        raws: list[Any] = [None] * len(jobs)
        # One network run for the whole batch; an in-graph NMS file takes its thresholds as
        # inputs, so there each distinct setting is one run.
        groups: dict[Thresholds | None, list[int]] = {None: list(range(len(jobs)))}
        if detector.has_nms:
            groups = {t: [i for i, s in enumerate(thresholds) if s == t] for t in thresholds}
        for setting, indices in groups.items():
            for i, raw in zip(indices, detector.infer([jobs[i].pixels for i in indices], setting)):
                raws[i] = raw
        return [
            ImageDetections.from_detections(detector.finish(raw, job.transform(), t))
            for raw, job, t in zip(raws, jobs, thresholds)
        ]

    @bentoml.api
    def info(self) -> ModelInfo:
        d = self.detector
        name = bundled.shipped_name(d.model_path)
        return ModelInfo(
            variant=d.config.name, arch=d.config.arch, precision=d.precision,
            quantization=d.metadata.get("quantization"), classes=list(d.config.class_names),
            input_size=ImageSize(height=d.input_size[0], width=d.input_size[1]), in_graph_nms=d.has_nms,
            dynamic_batch=d.metadata["dynamic"], model_file=d.model_path.name,
            model_sha256=hashlib.sha256(d.model_path.read_bytes()).hexdigest()[:16], metrics=d.metadata["metrics"],
            version=_package_version(), onnxruntime=onnxruntime.__version__, runtime_threads=d.num_threads,
            choice=None if d.choice is None else {"precision": d.choice.precision, "threads": d.choice.threads,
                                                  "reason": d.choice.reason, "timings_ms": d.choice.timings_ms},
            cpu=describe_cpu(), bundled=name is not None, model_card=bundled.card(name) if name else None,
            config=d.config.to_dict(),
        )  # fmt: skip


ERRORS = {status: {"model": ErrorResponse, "description": text} for status, text in (
    (400, "not an image, empty, truncated or corrupt; a parameter out of range; a malformed form"),
    (413, "body over YOLO4_MAX_UPLOAD_MB, or image over YOLO4_MAX_PIXELS"),
    (415, "not a multipart form, or not JPEG / PNG / BMP / WebP"),
)}  # fmt: skip


def _form_schema(field: str, many: bool) -> dict:
    image = {"type": "string", "format": "binary"}
    properties = {field: {"type": "array", "items": image} if many else image}
    for name, (kind, low, high) in THRESHOLD_FIELDS.items():
        properties[name] = {"type": "number" if kind is float else "integer", "minimum": low, "maximum": high}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": [field], "properties": properties}}}}}  # fmt: skip


api = FastAPI(title="yolo4", docs_url=None, redoc_url=None, openapi_url=None)


@api.post("/detect", response_model=DetectResponse, responses=ERRORS, openapi_extra=_form_schema("image", False))
async def detect(request: Request) -> Response:
    """Detect objects in one uploaded image (multipart field ``image``)."""
    return await _service().handle(request, "image", many=False)


@api.post("/detect_batch", response_model=BatchResponse, responses=ERRORS, openapi_extra=_form_schema("images", True))
async def detect_batch(request: Request) -> Response:
    """Detect objects in several images (repeated multipart field ``images``); results in order."""
    return await _service().handle(request, "images", many=True)


@api.post("/render", responses={200: {"content": {"image/jpeg": {}}}, **ERRORS}, openapi_extra=_form_schema("image", False))
async def render(request: Request) -> Response:
    """The uploaded image as a JPEG with boxes, labels and scores drawn."""
    return await _service().handle(request, "image", many=False, render=True)


@api.get("/info", response_model=ModelInfo)
async def info() -> Response:
    """The model being served: variant, classes, input size, precision, how it was chosen, versions."""
    return JSONResponse((await _service().model_info()).model_dump())


def _service() -> "Yolo4Http":
    return bentoml.get_current_service()


@bentoml.service(name="yolo4", traffic={"timeout": 120})
@bentoml.asgi_app(api, path="/")
class Yolo4Http:
    """The public API. Errors are ``{"error": message}`` with a 4xx status."""

    model = bentoml.depends(Yolo4Model)

    def __init__(self) -> None:
        self._info: ModelInfo | None = None
        self._config: ModelConfig | None = None

    async def model_info(self) -> ModelInfo:
        if self._info is None:
            self._info = ModelInfo.model_validate(await self._call_model("info"))
            self._config = ModelConfig.from_dict(self._info.config)
        return self._info

    async def handle(self, request: Request, field: str, many: bool, render: bool = False) -> Response:
        start = time.perf_counter()
        try:
            form = await self._read_form(request, field)
            uploads = form.files[field]
            if not uploads:
                raise InputError(400, f"no image uploaded: send the image in field {field!r} (curl -F {field}=@photo.jpg)")
            if not many and len(uploads) > 1:
                raise InputError(400, f"{len(uploads)} files in field {field!r}: /detect takes one (use /detect_batch)")
            if len(uploads) > SETTINGS.max_images:
                raise InputError(400, f"{len(uploads)} images: at most {SETTINGS.max_images} per request (YOLO4_MAX_IMAGES)")
            thresholds = thresholds_from_form(form.values)
            await self.model_info()
            names = [field] if not many else [f"{field}[{i}]" for i in range(len(uploads))]
            decoded = await run_in_threadpool(self._prepare, [bytes(u.data) for u in uploads], names, thresholds)
        except InputError as e:
            return JSONResponse({"error": e.message}, status_code=e.status)
        prepared = time.perf_counter()
        results = [ImageDetections.model_validate(r) for r in await self._call_model("detect", [job for _, job in decoded])]
        done = time.perf_counter()
        if render:
            jpeg = await run_in_threadpool(_render, decoded[0][0], results[0], self._info.classes)
            return Response(jpeg, media_type="image/jpeg")
        timing = Timing(decode_ms=round((prepared - start) * 1e3, 2), inference_ms=round((done - prepared) * 1e3, 2),
                        total_ms=round((done - start) * 1e3, 2))  # fmt: skip
        body = BatchResponse(results=results, timing=timing) if many else DetectResponse(**results[0].model_dump(), timing=timing)
        return JSONResponse(body.model_dump())

    @staticmethod
    async def _read_form(request: Request, field: str) -> Form:
        length = request.headers.get("content-length", "")
        try:
            body = await read_body(request.stream(), SETTINGS.max_upload_bytes, int(length) if length.isdigit() else None)
        except ClientDisconnect:
            raise InputError(400, "client disconnected before sending the whole body") from None
        return parse_form(request.headers.get("content-type", ""), body, (field,), tuple(THRESHOLD_FIELDS))

    def _prepare(self, datas: list[bytes], names: list[str], thresholds: Thresholds) -> list[tuple[np.ndarray, PreparedImage]]:
        """Decoded originals (for /render) and the network inputs of the uploads."""
        config, size = self._config, (self._info.input_size.height, self._info.input_size.width)
        out = []
        for data, name in zip(datas, names):
            image = decode_image(data, SETTINGS.max_pixels, name)
            pixels, transform = resize_image(image, size, config.preprocess)
            out.append((image, PreparedImage.of(pixels, transform, thresholds)))
        return out

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


def _render(image: np.ndarray, result: ImageDetections, classes: list[str]) -> bytes:
    dets = result.detections
    boxes, scores, class_ids = [d.box for d in dets], [d.score for d in dets], [d.class_id for d in dets]
    drawn = draw_detections(image, boxes, scores, class_ids, classes)
    ok, jpeg = cv2.imencode(".jpg", drawn, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return jpeg.tobytes()


def _package_version() -> str:
    try:
        return metadata.version("yolo4")
    except metadata.PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown"

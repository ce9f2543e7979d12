"""ASGI middleware in front of the service: request size limit (413) and upload form checks.

BentoML has no request-size limit of its own, and its multipart handling answers some
malformed forms with a 500 (or fetches a text value given for a file field as a URL). This
middleware reads the body first, up to ``max_bytes`` (413 beyond: refused unread when the
``Content-Length`` is far over, counted while streaming otherwise), then, on the upload
routes, checks the form's shape before BentoML sees it:

* the request is ``multipart/form-data`` (415 otherwise);
* each file field holds file uploads (400 for a text value) of an image media type (415);
* no other field holds a file (400).

The buffered body is then replayed to the application unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .decode import InputError, check_content_type
from .form_parts import MalformedForm, multipart_boundary, scan_parts

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DRAIN_FACTOR = 4


class UploadGuard:
    """The middleware (see the module docstring); GET, HEAD and OPTIONS pass untouched.

    Args:
        app: the ASGI application (BentoML's service app).
        max_bytes: largest request body accepted.
        upload_fields: route path -> names of its file fields, e.g. ``{"/detect": ("image",)}``.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, upload_fields: Mapping[str, tuple[str, ...]]):
        self.app = app
        self.max_bytes = int(max_bytes)
        self.upload_fields = {path: tuple(fields) for path, fields in upload_fields.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            length = headers.get("content-length", "")
            body = await self._read_body(receive, int(length) if length.isdigit() else None)
            fields = self.upload_fields.get(scope["path"])
            if fields is not None:
                self._check_form(headers.get("content-type", ""), body, fields)
        except InputError as e:
            await _send_json(send, e.status, {"error": e.message})
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, receive: Receive, declared: int | None) -> bytes:
        """The whole body; 413 past ``max_bytes``. An over-size body is still read (and dropped)
        up to ``DRAIN_FACTOR`` times the limit, so that a client that sends it before reading
        the response (no ``Expect: 100-continue``) gets the 413 instead of a reset connection."""
        if declared is not None and declared > self.max_bytes * DRAIN_FACTOR:
            raise self._too_large(declared)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise InputError(400, "client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            more = message.get("more_body", False)
            if size <= self.max_bytes:
                chunks.append(chunk)
            elif not more or size > self.max_bytes * DRAIN_FACTOR:
                raise self._too_large(declared or size, at_least=declared is None and more)
            if not more:
                return b"".join(chunks)

    def _too_large(self, size: int, at_least: bool = False) -> InputError:
        return InputError(
            413,
            f"request body is {'over ' if at_least else ''}{size:,} bytes; the limit is {self.max_bytes:,} "
            f"bytes (YOLO4_MAX_UPLOAD_MB)",
        )

    @staticmethod
    def _check_form(content_type: str, body: bytes, fields: tuple[str, ...]) -> None:
        example = f"multipart/form-data with the image file in field {fields[0]!r} (curl -F {fields[0]}=@photo.jpg)"
        try:
            boundary = multipart_boundary(content_type)
            if boundary is None:
                media_type = content_type.split(";")[0].strip() or "none"
                raise InputError(415, f"unsupported request content type {media_type!r}: send {example}")
            parts = scan_parts(body, boundary)
        except MalformedForm as e:
            raise InputError(400, str(e)) from None
        for part in parts:
            if part.name in fields and part.filename is None:
                raise InputError(400, f"field {part.name!r} must be a file upload: send {example}")
            if part.name in fields:
                check_content_type(part.content_type, f"field {part.name!r} ({part.filename})")
            elif part.filename is not None:
                raise InputError(400, f"field {part.name!r} must be a plain value, not a file")


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields the buffered body once, then waits on the real one (disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode("utf-8")
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": body})

"""An upload request -> validated form fields and BGR images; every failure a 4xx ``InputError``.

Each body is read once, up to the size limit, and parsed once (python-multipart):

* over the limit: 413. The rest of the body is still read and dropped, up to ``DRAIN_BYTES``
  and ``DRAIN_SECONDS``, so a client that sends it all before reading the answer (no
  ``Expect: 100-continue``, e.g. Python's urllib) gets the 413 instead of a reset connection
  (nginx's ``lingering_close``); past those bounds the connection is dropped;
* not ``multipart/form-data``: 415; malformed or cut short: 400;
* a file where a value belongs, a value where a file belongs, an unknown field: 400, naming the
  field to use (``curl -F image=@photo.jpg``);
* each image: the format sniffed from its magic bytes and its size read from the header before
  any pixel is decoded (a 1 kB PNG claiming 30000x30000 is refused without allocating 2.7 GB),
  then decoded by OpenCV as ``cv2.imread`` does for the other paths (EXIF orientation applied).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import AsyncIterator

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

FORMATS = ("JPEG", "PNG", "BMP", "WEBP")
# Declared part types we accept; octet-stream (curl's default for unknown suffixes) or no type
# at all leave the decision to the magic bytes.
CONTENT_TYPES = frozenset({
    "image/jpeg", "image/jpg", "image/pjpeg", "image/png", "image/bmp", "image/x-bmp", "image/x-ms-bmp",
    "image/webp", "application/octet-stream", "",
})  # fmt: skip
_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"BM", "BMP"),
    (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
)  # fmt: skip
DRAIN_BYTES = 512 * 2**20  # an over-size body is read and dropped up to this much
DRAIN_SECONDS = 30.0


@dataclass
class InputError(Exception):
    """A client error: HTTP ``status`` and a message for the JSON body."""

    status: int
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class Upload:
    name: str  # the form field
    filename: str | None  # None: a plain value
    content_type: str | None
    data: bytearray = field(default_factory=bytearray)


@dataclass
class Form:
    files: dict[str, list[Upload]]  # file field -> its uploads, in order
    values: dict[str, str]  # value field -> text


async def read_body(chunks: AsyncIterator[bytes], max_bytes: int, declared: int | None) -> bytes:
    """The whole body from ``chunks``; 413 past ``max_bytes`` (after draining, see the module)."""
    if declared is not None and declared > max_bytes + DRAIN_BYTES:
        raise _too_large(declared, max_bytes)  # too much to drain: refused unread
    parts: list[bytes] = []
    size = 0
    started = time.monotonic()
    async for chunk in chunks:
        size += len(chunk)
        if size <= max_bytes:
            parts.append(chunk)
        elif size > max_bytes + DRAIN_BYTES or time.monotonic() - started > DRAIN_SECONDS:
            raise _too_large(declared or size, max_bytes, at_least=declared is None)
    if size > max_bytes:
        raise _too_large(size, max_bytes)
    return b"".join(parts)


def _too_large(size: int, max_bytes: int, at_least: bool = False) -> InputError:
    return InputError(413, f"request body is {'over ' if at_least else ''}{size:,} bytes; the limit is "
                           f"{max_bytes:,} bytes (YOLO4_MAX_UPLOAD_MB)")  # fmt: skip


def parse_form(content_type: str, body: bytes, file_fields: tuple[str, ...], value_fields: tuple[str, ...]) -> Form:
    """The fields of a multipart/form-data ``body``, checked against the route's fields."""
    example = f"multipart/form-data with the image file in field {file_fields[0]!r} (curl -F {file_fields[0]}=@photo.jpg)"
    media_type, options = parse_options_header(content_type)
    if media_type != b"multipart/form-data":
        raise InputError(415, f"unsupported request content type {media_type.decode('latin-1') or 'none'!r}: send {example}")
    if not options.get(b"boundary"):
        raise InputError(400, "multipart/form-data without a boundary parameter")
    parts = _parse_parts(body, options[b"boundary"])
    form = Form({name: [] for name in file_fields}, {})
    for part in parts:
        if part.name in file_fields:
            if part.filename is None:
                raise InputError(400, f"field {part.name!r} must be a file upload: send {example}")
            check_content_type(part.content_type, f"field {part.name!r} ({part.filename})")
            form.files[part.name].append(part)
        elif part.name in value_fields:
            if part.filename is not None:
                raise InputError(400, f"field {part.name!r} takes a plain value, not a file")
            form.values[part.name] = bytes(part.data).decode("utf-8", "replace").strip()
        elif part.filename is not None:
            raise InputError(400, f"field {part.name!r} is not an upload field: send {example}")
        else:
            known = ", ".join(file_fields + value_fields)
            raise InputError(400, f"unknown field {part.name!r}: this route takes {known}")
    return form


def _parse_parts(body: bytes, boundary: bytes) -> list[Upload]:
    parts: list[Upload] = []
    headers: dict[bytes, bytes] = {}
    name: list[bytes] = []
    value: list[bytes] = []

    def on_part_begin() -> None:
        headers.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        name.append(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        value.append(data[start:end])

    def on_header_end() -> None:
        headers[b"".join(name).lower()] = b"".join(value).strip(b" \t")
        name.clear()
        value.clear()

    def on_headers_finished() -> None:
        _, options = parse_options_header(headers.get(b"content-disposition"))
        if b"name" not in options:
            raise InputError(400, "a form part has no Content-Disposition name")
        filename, part_type = options.get(b"filename"), headers.get(b"content-type")
        parts.append(Upload(options[b"name"].decode("latin-1"), None if filename is None else filename.decode("latin-1"),
                            None if part_type is None else part_type.decode("latin-1")))  # fmt: skip

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].data += data[start:end]

    callbacks = {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
    }  # fmt: skip
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as e:
        raise InputError(400, f"malformed multipart/form-data body ({e})") from None
    if parser.state != MultipartState.END:  # cut short: it would read as a shorter form
        raise InputError(400, "incomplete multipart/form-data body (no closing boundary)")
    return parts


def check_content_type(content_type: str | None, what: str = "upload") -> None:
    """415 unless the declared media type of an uploaded part is one we decode."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type not in CONTENT_TYPES:
        raise InputError(415, f"{what}: unsupported content type {media_type!r}; send a JPEG, PNG, BMP or WebP image")


def sniff_format(data: bytes) -> str | None:
    """The image format named by the first bytes, or None."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"mif1", b"avif"):
        return "HEIF/AVIF"
    return None


def decode_image(data: bytes, max_pixels: int, what: str = "image") -> np.ndarray:
    """Encoded JPEG/PNG/BMP/WebP bytes -> ``(H, W, 3)`` BGR uint8, as displayed.

    Raises:
        InputError: 400 empty, not an image, corrupt or truncated; 413 more than
            ``max_pixels`` pixels; 415 an image format we do not decode.
    """
    if not data:
        raise InputError(400, f"{what}: empty upload (0 bytes)")
    kind = sniff_format(data)
    if kind is None:
        raise InputError(400, f"{what}: not an image (no JPEG, PNG, BMP or WebP signature)")
    if kind not in FORMATS:
        raise InputError(415, f"{what}: unsupported image format {kind}; send a JPEG, PNG, BMP or WebP image")
    width, height = _header_size(data, kind, max_pixels, what)
    if width * height > max_pixels:
        raise InputError(413, f"{what}: {width}x{height} is {width * height:,} pixels, over the limit of {max_pixels:,}")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(400, f"{what}: cannot decode this {kind} (truncated or corrupt)")
    return image


def _header_size(data: bytes, kind: str, max_pixels: int, what: str) -> tuple[int, int]:
    """(width, height) from the header alone; PIL decodes no pixel until ``load()``."""
    try:
        with Image.open(io.BytesIO(data), formats=[kind]) as header:
            return header.size
    except Image.DecompressionBombError:  # PIL's own ceiling (~179 MP), above ours
        raise InputError(413, f"{what}: dimensions over the limit of {max_pixels:,} pixels") from None
    except UnidentifiedImageError:
        raise InputError(400, f"{what}: not a valid {kind} (unreadable header)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InputError(400, f"{what}: not a valid {kind} ({e.__class__.__name__}: {e})"[:300]) from None

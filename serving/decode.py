"""Uploaded bytes -> a BGR image, with every failure mapped to a 4xx ``InputError``.

Order matters: the format is sniffed from the magic bytes and the dimensions read from the
header (PIL parses headers lazily) *before* any pixel is decoded, so a 1 kB PNG claiming
30000x30000 is refused without allocating 2.7 GB. Pixels are then decoded by OpenCV, exactly
as ``cv2.imread`` does for the edge runtime and ``yolo4 detect`` (EXIF orientation included),
so the service and a direct runtime call see the same array.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

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


@dataclass
class InputError(Exception):
    """A client error: HTTP ``status`` and a message for the JSON body."""

    status: int
    message: str

    def __str__(self) -> str:
        return self.message


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
    """Encoded JPEG/PNG/BMP/WebP bytes -> ``(H, W, 3)`` BGR uint8.

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
        raise InputError(
            413, f"{what}: {width}x{height} is {width * height:,} pixels, over the limit of {max_pixels:,}"
        )
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

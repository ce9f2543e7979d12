"""Reading images, one convention everywhere: pixels as they are displayed (EXIF orientation
applied), so a phone photo's boxes line up in datasets, evaluation, detection and the service.

``cv2.imread`` / ``cv2.imdecode`` apply the EXIF orientation; image headers (what PIL reports
without decoding) do not, so ``displayed_size`` turns them the same way. Torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"})
EXIF_ORIENTATION = 0x0112
TRANSPOSED = {5, 6, 7, 8}  # EXIF orientations that swap width and height


def read_image(path: str | Path) -> np.ndarray:
    """``(H, W, 3)`` BGR uint8, as displayed (EXIF orientation applied)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: cannot read image (missing file or not an image)")
    return image


def displayed_size(header) -> tuple[int, int]:
    """(height, width) of a PIL image *header* as the image is displayed: what ``read_image``
    returns for it. Reads no pixel."""
    width, height = header.size
    try:
        orientation = header.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # a malformed EXIF block: OpenCV ignores it too
        orientation = 1
    return (width, height) if orientation in TRANSPOSED else (height, width)


def expand_inputs(inputs: Iterable[str | Path]) -> tuple[list[Path], list[Path]]:
    """(images, videos): files as given (a named file that is not a video is tried as an
    image), folders expanded by suffix (sorted, non-recursive)."""
    images, videos = [], []
    for item in map(Path, inputs):
        if not item.exists():
            raise FileNotFoundError(f"{item}: no such file or folder")
        files = sorted(item.iterdir()) if item.is_dir() else [item]
        for f in files:
            suffix = f.suffix.lower()
            if suffix in VIDEO_SUFFIXES:
                videos.append(f)
            elif suffix in IMAGE_SUFFIXES or not item.is_dir():
                images.append(f)
    return images, videos

"""The pre-processing contract, implemented once with numpy + OpenCV (no torch).

Training, evaluation, quantization calibration, the predictor, the HTTP service and the edge
runtime all call these functions with the ``PreprocessConfig`` stored in the model file.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import cv2
import numpy as np
from yolo4.core.config import PreprocessConfig
from yolo4.core.image_io import read_image

INTERPOLATIONS = {"linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST, "area": cv2.INTER_AREA}


class ContractMismatch(ValueError):
    """A runtime asked for pre-processing that differs from what the model was trained with."""


@dataclass(frozen=True)
class ResizeTransform:
    """Maps input-pixel coordinates back to the original image: ``x = (x_in - pad_x) / scale_x``."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    original_size: tuple[int, int]  # (height, width)


def resize_image(
    image: np.ndarray, input_size: tuple[int, int], contract: PreprocessConfig
) -> tuple[np.ndarray, ResizeTransform]:
    """Resize an ``(H, W, 3)`` uint8 image to ``input_size`` (height, width) per the contract."""
    h, w = image.shape[:2]
    out_h, out_w = input_size
    interpolation = INTERPOLATIONS[contract.interpolation]
    if contract.resize == "stretch":
        resized = cv2.resize(image, (out_w, out_h), interpolation=interpolation)
        return resized, ResizeTransform(out_w / w, out_h / h, 0.0, 0.0, (h, w))
    ratio = min(out_h / h, out_w / w)
    new_w, new_h = max(1, round(w * ratio)), max(1, round(h * ratio))
    left, top = (out_w - new_w) // 2, (out_h - new_h) // 2
    canvas = np.full((out_h, out_w, image.shape[2]), contract.pad_value, dtype=image.dtype)
    if (new_w, new_h) != (w, h):
        image = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    canvas[top : top + new_h, left : left + new_w] = image
    return canvas, ResizeTransform(new_w / w, new_h / h, float(left), float(top), (h, w))


def to_input_tensor(images: list[np.ndarray], contract: PreprocessConfig, contiguous: bool = True) -> np.ndarray:
    """Resized BGR uint8 images -> ``(B, 3, H, W)`` float32, colour order and normalisation
    per the contract. ``contiguous=False`` returns the ``(B, 3, H, W)`` view of the ``(B, H, W, 3)``
    array instead of a copy: PyTorch's channels_last layout, which training wants anyway."""
    batch = np.stack(images)  # (B, H, W, 3) BGR
    if contract.color == "RGB":
        batch = batch[..., ::-1]
    x = batch.astype(np.float32) * np.float32(contract.scale)
    if any(contract.mean) or any(s != 1.0 for s in contract.std):
        x = (x - np.asarray(contract.mean, np.float32)) / np.asarray(contract.std, np.float32)
    x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x) if contiguous else x


def preprocess_batch(
    images: list[np.ndarray], input_size: tuple[int, int], contract: PreprocessConfig
) -> tuple[np.ndarray, list[ResizeTransform]]:
    resized, transforms = zip(*(resize_image(im, input_size, contract) for im in images))
    return to_input_tensor(list(resized), contract), list(transforms)


def boxes_to_original(boxes: np.ndarray, transform: ResizeTransform) -> np.ndarray:
    """``(N, 4)`` xyxy boxes in input pixels -> original-image pixels, clipped to the image."""
    out = np.asarray(boxes, dtype=np.float32).copy()
    out[:, [0, 2]] = (out[:, [0, 2]] - transform.pad_x) / transform.scale_x
    out[:, [1, 3]] = (out[:, [1, 3]] - transform.pad_y) / transform.scale_y
    h, w = transform.original_size
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    return out


def as_bgr_image(image) -> np.ndarray:
    """A path, an ``(H, W[, C])`` numpy array (BGR, as OpenCV reads) or a PIL image -> BGR uint8,
    as displayed (``yolo4.core.image_io``)."""
    if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
        return read_image(image)
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image: turned as displayed, like read_image
        from PIL import ImageOps

        return np.ascontiguousarray(np.asarray(ImageOps.exif_transpose(image).convert("RGB"))[..., ::-1])
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a path, numpy array or PIL image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    return image


def check_contract(model: PreprocessConfig, requested: PreprocessConfig | None) -> PreprocessConfig:
    """Return the model's contract; refuse a runtime setting that differs from it."""
    if requested is None or requested == model:
        return model
    diffs = [
        f"{f.name}: model {getattr(model, f.name)!r}, runtime {getattr(requested, f.name)!r}"
        for f in fields(PreprocessConfig)
        if getattr(model, f.name) != getattr(requested, f.name)
    ]
    raise ContractMismatch("pre-processing differs from the model's contract (" + "; ".join(diffs) + ")")

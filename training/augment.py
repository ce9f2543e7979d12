"""Training-time augmentation: albumentations for Mosaic, affine, colour and flip (boxes kept
correct by its bbox processor), our ``mixing`` module for CutMix and MixUp.

Every sample is produced from ``(seed, epoch, index)`` alone, so a run is reproducible and
a resumed run sees the same images as an uninterrupted one, whatever the worker count.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
from yolo4.core.config import PreprocessConfig
from yolo4.core.preprocess import resize_image
from yolo4.training.mixing import box_area, cutmix, mixup, random_cutmix_rect

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # albumentations' version-check chatter
    import albumentations as A

# (image BGR uint8, boxes (N, 4) xyxy float32, labels (N,) int64)
Example = tuple[np.ndarray, np.ndarray, np.ndarray]
MOSAIC_FITS = ("inference", "contain", "cover")


@dataclass(frozen=True)
class AugmentConfig:
    mosaic: float = 1.0  # probability of a 4-image mosaic
    cutmix: float = 0.0  # probability of pasting a patch of another sample
    mixup: float = 0.0  # probability of blending with another sample
    # How each Mosaic cell takes its image: inference (resized exactly as at inference, stretch
    # or letterbox: objects keep the size and shape the model will see), contain (the whole
    # image, aspect kept) or cover (filled, aspect kept: objects larger than at inference).
    mosaic_fit: str = "cover"
    scale: tuple[float, float] = (0.5, 1.5)
    keep_ratio: bool = True  # scale x and y by the same factor (False: each by its own, stretching objects)
    translate: float = 0.1  # fraction of the image
    degrees: float = 0.0
    hue: float = 0.015  # fraction of the hue circle
    saturation: float = 0.7  # factor range 1 +- this
    brightness: float = 0.4  # factor range 1 +- this
    flip: float = 0.5  # horizontal flip probability
    flip_vertical: float = 0.0  # vertical flip probability: for images with no up (microscopy, aerial)
    min_visibility: float = 0.2  # boxes cut down to less than this fraction are dropped
    min_size: float = 2.0  # boxes thinner than this (pixels) are dropped

    def __post_init__(self) -> None:
        if self.mosaic_fit not in MOSAIC_FITS:
            raise ValueError(f"augment.mosaic_fit must be one of {', '.join(MOSAIC_FITS)}, got {self.mosaic_fit!r}")

    def without_mixing(self) -> "AugmentConfig":
        """The recipe for the last epochs: no Mosaic/CutMix/MixUp, closer to test images."""
        from dataclasses import replace

        return replace(self, mosaic=0.0, cutmix=0.0, mixup=0.0)


class Augmenter:
    """``augmenter(index, rng) -> Example`` for a dataset given by ``load(index) -> Example``."""

    def __init__(self, load: Callable[[int], Example], size: int, input_size, contract: PreprocessConfig, config: AugmentConfig):
        self.load, self.size, self.config = load, size, config
        self.input_size = tuple(input_size)
        self.contract = contract
        h, w = self.input_size
        fill = contract.pad_value
        bbox_params = A.BboxParams(
            format="pascal_voc", label_fields=["labels"], min_visibility=config.min_visibility,
            min_width=config.min_size, min_height=config.min_size, clip=True,
        )  # fmt: skip
        common = [
            A.Affine(
                scale=config.scale, translate_percent=(-config.translate, config.translate),
                rotate=(-config.degrees, config.degrees), fill=fill, border_mode=cv2.BORDER_CONSTANT,
                keep_ratio=config.keep_ratio, p=1.0,
            ),
            A.ColorJitter(brightness=config.brightness, contrast=0.0, saturation=config.saturation,
                          hue=config.hue, p=1.0),
            A.HorizontalFlip(p=config.flip),
            A.VerticalFlip(p=config.flip_vertical),
        ]  # fmt: skip
        self.fit = "cover" if config.mosaic_fit == "inference" else config.mosaic_fit
        mosaic = A.Mosaic(grid_yx=(2, 2), target_size=(h, w), cell_shape=(h, w),
                          # an image already resized for inference fills its cell as it is
                          fit_mode=self.fit, fill=fill, p=1.0)  # fmt: skip
        # Mosaic crops each image to its cell and filters only those crops, so a cell cut to a
        # sliver at a seam would stay a whole object (min_visibility never sees it): every box
        # carries its id, and visibility is judged here against its full area in its cell.
        self.mosaic = A.Compose([mosaic], bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels", "box_ids"],
                                                                   clip=True))  # fmt: skip
        self.plain = A.Compose(common, bbox_params=bbox_params)

    def letterboxed(self, index: int) -> Example:
        """The sample resized exactly as at inference (the model's contract)."""
        image, boxes, labels = self.load(index)
        image, t = resize_image(image, self.input_size, self.contract)
        boxes = boxes * np.array([t.scale_x, t.scale_y, t.scale_x, t.scale_y], np.float32)
        boxes = boxes + np.array([t.pad_x, t.pad_y, t.pad_x, t.pad_y], np.float32)
        return image, boxes, labels

    def augmented(self, index: int, rng: np.random.Generator) -> Example:
        """Mosaic (with probability) or letterbox, then affine, colour and flip."""
        if rng.random() < self.config.mosaic:
            load = self.letterboxed if self.config.mosaic_fit == "inference" else self.load
            image, boxes, labels = self.mosaicked([load(index)] + [load(int(i)) for i in rng.integers(self.size, size=3)], rng)
        else:
            image, boxes, labels = self.letterboxed(index)
        self.plain.set_random_seed(int(rng.integers(2**31)))
        out = self.plain(image=image, bboxes=boxes, labels=labels)
        boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
        return out["image"], boxes, np.asarray(out["labels"], np.int64).reshape(-1)

    def mosaicked(self, items: list[Example], rng: np.random.Generator) -> Example:
        """Four examples in a 2x2 Mosaic; boxes left with less than ``min_visibility`` of their
        area (as their image fills its cell) are dropped."""
        cell_h, cell_w = self.input_size
        full_areas, tagged, first = [], [], 0
        for image, boxes, labels in items:
            ih, iw = image.shape[:2]
            scale = (max if self.fit == "cover" else min)(cell_h / ih, cell_w / iw)  # albumentations' Smallest/LongestMaxSize
            full_areas.append(box_area(boxes) * scale**2)
            tagged.append({"image": image, "bboxes": boxes, "labels": labels, "box_ids": np.arange(first, first + len(boxes))})
            first += len(boxes)
        self.mosaic.set_random_seed(int(rng.integers(2**31)))
        out = self.mosaic(**tagged[0], mosaic_metadata=tagged[1:])
        boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
        ids = np.asarray(out["box_ids"], np.int64).reshape(-1)
        keep = box_area(boxes) >= self.config.min_visibility * np.concatenate(full_areas)[ids]
        return out["image"], boxes[keep], np.asarray(out["labels"], np.int64).reshape(-1)[keep]

    def __call__(self, index: int, rng: np.random.Generator) -> Example:
        image, boxes, labels = self.augmented(index, rng)
        if rng.random() < self.config.mixup:
            other = self.augmented(int(rng.integers(self.size)), rng)
            image, boxes, labels = mixup(image, boxes, labels, *other, ratio=float(rng.beta(32.0, 32.0)))
        if rng.random() < self.config.cutmix:
            other = self.augmented(int(rng.integers(self.size)), rng)
            rect = random_cutmix_rect(*image.shape[:2], rng)
            image, boxes, labels = cutmix(image, boxes, labels, *other, rect, self.config.min_visibility, self.config.min_size)
        return image, boxes, labels

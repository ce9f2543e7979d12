"""The data protocol: EXIF orientation, VOC difficult objects, tiny's shared anchor, aspect-keeping
affine augmentation. Each test would fail with the behaviour it replaced."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from yolo4.core.coco import detections_to_coco, evaluate_results, ground_truth_from_set
from yolo4.core.config import PreprocessConfig
from yolo4.core.datasets import load_split
from yolo4.core.image_io import read_image
from yolo4.core.presets import preset
from yolo4.serving.uploads import decode_image
from yolo4.training.assign import assign_targets
from yolo4.training.augment import AugmentConfig, Augmenter

RED = (0, 0, 255)  # BGR


def write_voc(root: Path, images: dict[str, tuple[np.ndarray, dict]], objects: dict[str, list[tuple]], difficult=None) -> Path:
    """A VOC folder: ``images`` name -> (BGR pixels as stored, PIL save options), ``objects``
    name -> [(class, x1, y1, x2, y2, difficult)]."""
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name, (pixels, options) in images.items():
        Image.fromarray(pixels[..., ::-1]).save(root / "JPEGImages" / f"{name}.jpg", quality=98, **options)
        xml = "".join(
            f"<object><name>{c}</name><difficult>{int(d)}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
            f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
            for c, x1, y1, x2, y2, d in objects[name]
        )
        (root / "Annotations" / f"{name}.xml").write_text(f"<annotation><filename>{name}.jpg</filename>{xml}</annotation>")
    (root / "ImageSets/Main/train.txt").write_text("\n".join(images))
    extra = f"difficult: {difficult}\n" if difficult else ""
    yaml = root / "data.yaml"
    yaml.write_text(f"format: voc\nroot: {root}\nnames: [red, green]\n{extra}splits:\n  train: {{list: ImageSets/Main/train.txt}}\n")
    return yaml


def test_exif_rotated_photo_gets_its_displayed_size_everywhere(tmp_path):
    # Stored 160 wide x 96 tall with a red square at the top-left; EXIF orientation 6 (a phone
    # held upright) displays it 96 wide x 160 tall, the square at the top-right.
    stored = np.full((96, 160, 3), 40, np.uint8)
    stored[8:40, 8:40] = RED
    exif = Image.Exif()
    exif[0x0112] = 6
    # The annotation is drawn on the displayed image, as labelling tools show it.
    yaml = write_voc(tmp_path, {"phone": (stored, {"exif": exif})}, {"phone": [("red", 56, 8, 88, 40, 0)]})
    (sample,) = load_split(yaml, "train").samples
    pixels = read_image(sample.image_path)
    assert sample.size == pixels.shape[:2] == (160, 96)  # PIL's header alone says (96, 160)
    assert decode_image((tmp_path / "JPEGImages" / "phone.jpg").read_bytes(), 10**8).shape == pixels.shape
    x1, y1, x2, y2 = sample.boxes[0].astype(int)
    on_box = pixels[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2].astype(int)
    assert np.abs(on_box - np.array(RED)).max() < 60  # the box lies on the square in the pixels the model sees


def two_object_set(tmp_path, difficult: str | None):
    image = np.full((96, 128, 3), 40, np.uint8)
    objects = [("red", 10, 10, 40, 40, 0), ("green", 60, 30, 100, 80, 1)]  # the green one is marked difficult
    return load_split(write_voc(tmp_path, {"a": (image, {})}, {"a": objects}, difficult), "train")


def mAP50(dataset, boxes, classes) -> float:
    gt = ground_truth_from_set(dataset)
    (sample,) = dataset.samples
    results = detections_to_coco(sample.image_id, np.array(boxes, np.float32), np.full(len(boxes), 0.9), np.array(classes),
                                 dataset.category_ids)  # fmt: skip
    return evaluate_results(gt, results).metrics["mAP50"]


@pytest.mark.parametrize("difficult", [None, "ignore"])
def test_difficult_objects_are_neither_hits_nor_misses_by_default(tmp_path, difficult):
    dataset = two_object_set(tmp_path, difficult)
    (sample,) = dataset.samples
    assert sample.labels.tolist() == [0] and sample.ignored_labels.tolist() == [1]  # not a training target
    assert mAP50(dataset, [[10, 10, 40, 40]], [0]) == pytest.approx(1.0)  # missing it costs nothing
    # Finding it is not a false positive either: green has no scorable object, so mAP is red's AP.
    assert mAP50(dataset, [[10, 10, 40, 40], [60, 30, 100, 80]], [0, 1]) == pytest.approx(1.0)


def test_difficult_keep_makes_them_ordinary_objects(tmp_path):
    dataset = two_object_set(tmp_path, "keep")
    assert dataset.samples[0].labels.tolist() == [0, 1] and not len(dataset.samples[0].ignored)
    assert mAP50(dataset, [[10, 10, 40, 40]], [0]) == pytest.approx(0.5)  # green missed: AP 0 for its class


def test_a_box_best_matching_tinys_shared_anchor_is_a_positive_on_both_heads():
    config = preset("yolov4-tiny")
    anchors = [torch.tensor(h.anchors, dtype=torch.float32) for h in config.heads]
    strides = [h.stride for h in config.heads]
    grids = [(416 // s, 416 // s) for s in strides]
    shared = [tuple(a) for a in config.heads[0].anchors if tuple(a) in map(tuple, config.heads[1].anchors)]
    assert shared == [(81, 82)]
    targets = torch.tensor([[0, 5, 160.0, 160.0, 241.0, 242.0]])  # an 81x82 box
    assigned = assign_targets(targets, anchors, strides, grids, iou_thresh=1.0)  # best anchor only
    got = [(head, anchors[head][int(a)].tolist()) for head, t in enumerate(assigned) for a in t.anchor]
    assert got == [(0, [81.0, 82.0]), (1, [81.0, 82.0])]


@pytest.mark.parametrize("keep_ratio", [True, False])
def test_affine_scaling_keeps_the_aspect_unless_asked_not_to(keep_ratio):
    image = np.full((200, 200, 3), 60, np.uint8)
    image[80:120, 70:130] = RED  # a 60x40 rectangle (3:2) in the middle: never clipped at scale <= 1.5
    item = (image, np.array([[70, 80, 130, 120]], np.float32), np.array([0]))
    config = AugmentConfig(mosaic=0.0, flip=0.0, translate=0.0, hue=0, saturation=0, brightness=0, keep_ratio=keep_ratio)
    augmenter = Augmenter(lambda i: item, 1, (160, 160), PreprocessConfig(), config)
    ratios = []
    for seed in range(24):
        _, boxes, _ = augmenter(0, np.random.default_rng(seed))
        (x1, y1, x2, y2), = boxes
        ratios.append((x2 - x1) / (y2 - y1) / 1.5)
    stretched = np.mean(np.abs(np.log(ratios)) > np.log(1.1))
    if keep_ratio:
        assert stretched == 0, ratios
    else:
        assert stretched > 0.3  # albumentations' keep_ratio=False draws x and y scales apart


def test_upload_decoding_matches_read_image_for_a_plain_photo(tmp_path):
    path = tmp_path / "p.jpg"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    np.testing.assert_array_equal(decode_image(path.read_bytes(), 10**8), read_image(path))

import math

import numpy as np
import pytest
import torch
from yolo4.core.config import PreprocessConfig, Thresholds
from yolo4.core.preprocess import ContractMismatch, boxes_to_original, resize_image
from yolo4.core.presets import yolov4_nano
from yolo4.detector.postprocess import postprocess
from yolo4.detector.predictor import Predictor


def test_letterbox_geometry_and_inverse_by_hand():
    image = np.zeros((200, 400, 3), np.uint8)  # h=200, w=400 into 416x416
    resized, t = resize_image(image, (416, 416), PreprocessConfig(resize="letterbox", pad_value=114))
    assert resized.shape == (416, 416, 3)
    assert (t.scale_x, t.scale_y, t.pad_x, t.pad_y) == (1.04, 1.04, 0.0, 104.0)  # 400*1.04=416, (416-208)/2
    assert resized[0, 0, 0] == 114 and resized[104, 0, 0] == 0 and resized[312, 0, 0] == 114
    # A box over the whole image in input pixels maps back to the whole image.
    back = boxes_to_original(np.array([[0, 104, 416, 312], [52, 156, 104, 208]]), t)
    np.testing.assert_allclose(back, [[0, 0, 400, 200], [50, 50, 100, 100]], atol=1e-4)


def test_stretch_inverse_and_clipping():
    image = np.zeros((100, 300, 3), np.uint8)
    _, t = resize_image(image, (320, 320), PreprocessConfig(resize="stretch"))
    assert (t.pad_x, t.pad_y) == (0.0, 0.0)
    back = boxes_to_original(np.array([[32, 32, 160, 352]]), t)
    np.testing.assert_allclose(back, [[30, 10, 150, 100]], atol=1e-4)  # y2 clipped at the height


def _predictions(rows):
    """(1, N, 5 + 2) decoded rows from (cx, cy, w, h, obj, p0, p1)."""
    return torch.tensor([rows], dtype=torch.float32)


def test_nms_suppresses_overlaps_of_one_class_only():
    preds = _predictions([
        [50, 50, 20, 20, 0.9, 1.0, 0.0],  # kept
        [52, 50, 20, 20, 0.8, 1.0, 0.0],  # IoU 0.82 with the first, same class: suppressed
        [52, 50, 20, 20, 0.7, 0.0, 1.0],  # same place, other class: kept
        [150, 150, 20, 20, 0.6, 1.0, 0.0],  # far away: kept
        [10, 10, 4, 4, 0.2, 1.0, 0.0],  # below the threshold
    ])  # fmt: skip
    boxes, scores, classes = postprocess(preds, Thresholds(conf=0.25, iou=0.45))[0]
    assert scores.tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert classes.tolist() == [0, 1, 0]
    assert boxes[0].tolist() == [40, 40, 60, 60]
    assert len(postprocess(preds, Thresholds(0.25, 0.45, max_det=2))[0][1]) == 2


def test_multi_label_keeps_a_box_for_every_class_above_the_threshold():
    preds = _predictions([[50, 50, 20, 20, 0.9, 0.5, 0.4], [150, 150, 20, 20, 0.9, 0.9, 0.1]])
    _, scores, classes = postprocess(preds, Thresholds(conf=0.3, multi_label=True))[0]
    assert scores.tolist() == pytest.approx([0.81, 0.45, 0.36]) and classes.tolist() == [0, 0, 1]
    _, scores, classes = postprocess(preds, Thresholds(conf=0.3))[0]  # one class per box
    assert scores.tolist() == pytest.approx([0.81, 0.45]) and classes.tolist() == [0, 0]


def test_score_is_objectness_times_class_probability():
    preds = _predictions([[50, 50, 20, 20, 0.5, 0.4, 0.6]])
    _, scores, classes = postprocess(preds, Thresholds(conf=0.29))[0]
    assert scores.tolist() == pytest.approx([0.3]) and classes.tolist() == [1]
    assert len(postprocess(preds, Thresholds(conf=0.31))[0][1]) == 0


class OneBoxModel(torch.nn.Module):
    """Raw maps with a single confident prediction: cell (x=5, y=3) of the stride-32 head,
    anchor 0, centred in the cell, twice the anchor's size, class 1."""

    def __init__(self, config):
        super().__init__()
        self.config = config

    def forward(self, images):
        b, _, h, w = images.shape
        maps = []
        for head in self.config.heads:
            raw = torch.full((b, 3, h // head.stride, w // head.stride, 5 + 2), -20.0)
            raw[..., :4] = 0.0
            maps.append(raw)
        cell = maps[2][:, 0, 3, 5]
        cell[:, 2:4] = math.log(2.0)
        cell[:, 4] = 20.0
        cell[:, 6] = 20.0
        return maps


def test_predictor_maps_a_planted_box_back_to_the_original_image():
    config = yolov4_nano(class_names=["a", "b"])  # letterbox, 416
    predictor = Predictor(OneBoxModel(config), config, device="cpu")
    image = np.zeros((208, 832, 3), np.uint8)  # scale 0.5 -> 416x104, letterbox pads 156 px above
    dets = predictor(image)
    anchor_w, anchor_h = config.heads[2].anchors[0]
    cx, cy = (5 + 0.5) * 32, (3 + 0.5) * 32  # scale_x_y keeps a centred offset at the centre
    expected = np.array([cx - anchor_w, cy - anchor_h - 156, cx + anchor_w, cy + anchor_h - 156]) / 0.5
    expected = expected.clip([0, 0, 0, 0], [832, 208, 832, 208])
    assert len(dets) == 1 and dets.class_names == ["b"] and dets.image_size == (208, 832)
    np.testing.assert_allclose(dets.boxes[0], expected, atol=1e-2)
    assert dets.to_dict()["detections"][0]["label"] == "b"


def test_predictor_accepts_paths_pil_and_grayscale(tmp_path):
    import cv2
    from PIL import Image

    config = yolov4_nano(class_names=["a", "b"])
    predictor = Predictor(OneBoxModel(config), config, device="cpu")
    image = np.full((416, 416, 3), 90, np.uint8)
    cv2.imwrite(str(tmp_path / "x.png"), image)
    results = predictor([tmp_path / "x.png", Image.fromarray(image), image[..., 0]])
    assert [len(r) for r in results] == [1, 1, 1]
    np.testing.assert_allclose(results[0].boxes, results[1].boxes)
    with pytest.raises(ValueError, match="cannot read image"):
        predictor(tmp_path / "missing.jpg")


def test_a_runtime_contract_that_differs_from_the_model_is_refused():
    config = yolov4_nano(class_names=["a"])
    with pytest.raises(ContractMismatch, match="resize: model 'letterbox', runtime 'stretch'"):
        Predictor(OneBoxModel(config), config, preprocess=PreprocessConfig(resize="stretch"))
    Predictor(OneBoxModel(config), config, preprocess=config.preprocess)  # identical is fine
